"""End-to-end: the dashboard in headless Chromium (``pytest --headless -m e2e``).

Every test loads ``dashboard.app`` with :func:`import_app` (which re-runs the module, so
callbacks register on a fresh app) after pointing ``NETWORK_ATLAS_DIR`` at a test atlas.
Cytoscape draws on a canvas, so graph contents are read from the cytoscape.js instance.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from selenium.webdriver.common.by import By

from dashboard.views.summit.sidebar import ROWS_PAGE
from tests.e2e.browser import CY_INSTANCE, save_full_page, serve_app, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("chromedriver") is None, reason="needs chromedriver"),
]


def start(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, atlas: Path, tmp_path: Path, query: str = ""
) -> None:
    """Serve the app on ``atlas``, open ``/{query}`` and wait for the first render."""
    serve_app(dash_duo, monkeypatch, atlas, tmp_path)
    if query:
        dash_duo.driver.get(dash_duo.server_url + "/" + query)
    dash_duo.wait_for_element("#graph-header .class-name", timeout=20)


def cy_count(dash_duo: Any, component_id: str, selector: str) -> int:
    """How many elements match ``selector`` in a cytoscape graph (-1: not mounted)."""
    script = CY_INSTANCE + f"return cy ? cy.elements({json.dumps(selector)}).length : -1;"
    return int(dash_duo.driver.execute_script(script, component_id))


def cy_ids(dash_duo: Any, component_id: str, selector: str) -> list[str]:
    script = CY_INSTANCE + f"return cy ? cy.elements({json.dumps(selector)}).map(e => e.id()) : [];"
    return list(dash_duo.driver.execute_script(script, component_id))


def cy_emit(dash_duo: Any, component_id: str, node_id: str, event: str) -> None:
    """Fire a cytoscape event on a node (what a real click or hover does)."""
    script = CY_INSTANCE + "cy.getElementById(arguments[1]).emit(arguments[2]);"
    dash_duo.driver.execute_script(script, component_id, node_id, event)


def query(dash_duo: Any) -> dict[str, str]:
    """The current URL query as a flat dict."""
    parsed = parse_qs(urlparse(dash_duo.driver.current_url).query)
    return {key: values[0] for key, values in parsed.items()}


def search_class(dash_duo: Any, name: str) -> None:
    """Type into the class search box and pick the first match (autocomplete)."""
    dash_duo.find_element("#class-search").click()
    box = dash_duo.wait_for_element(".dash-dropdown-search")
    box.send_keys(name)
    option = wait_until(
        lambda: next(
            (o for o in dash_duo.find_elements(".dash-dropdown-option") if o.text == name), None
        ),
        timeout=30,
        message=f"no search result {name!r}",
    )
    option.click()


def header_class(dash_duo: Any) -> str:
    return dash_duo.find_element("#graph-header .class-name").text


def test_explore_a_small_atlas(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, small_atlas: Path, tmp_path: Path
) -> None:
    start(dash_duo, monkeypatch, small_atlas, tmp_path)
    wait_until(lambda: cy_count(dash_duo, "attribution-graph", "node[size]") > 0)

    # Search a class: every view follows, and the URL records it.
    search_class(dash_duo, "class 004")
    dash_duo.wait_for_text_to_equal("#graph-header .class-name", "class 004")
    wait_until(lambda: query(dash_duo).get("class") == "4")
    dash_duo.wait_for_text_to_equal("#sidebar-rows .class-row.selected .row-name", "class 004")
    nodes = wait_until(lambda: cy_ids(dash_duo, "attribution-graph", "node[size]"))

    # Hover a node: its examples appear; click it: the neuron panel opens.
    cy_emit(dash_duo, "attribution-graph", nodes[0], "mouseover")
    dash_duo.wait_for_element("#hover-panel img.crop")
    cy_emit(dash_duo, "attribution-graph", nodes[0], "tap")
    dash_duo.wait_for_contains_text("#neuron-panel-title", "Channel")
    assert dash_duo.find_element("#neuron-panel").is_displayed()
    wait_until(lambda: query(dash_duo).get("node") == nodes[0])

    # Switch layer.
    dash_duo.select_dcc_dropdown("#layer-select", index=0)
    wait_until(lambda: query(dash_duo).get("layer") == "0")

    # Compare two classes: a merged graph with a legend.
    dash_duo.select_dcc_dropdown("#compare-select", value="class 001")
    dash_duo.wait_for_contains_text("#compare-legend", "shared")
    wait_until(lambda: cy_count(dash_duo, "compare-graph", "node[group]") > 0)
    wait_until(lambda: query(dash_duo).get("compare") == "1")
    save_full_page(dash_duo, "small-atlas.png")

    # A copied link reproduces the view.
    link = dash_duo.driver.current_url
    legend = dash_duo.find_element("#compare-legend").text
    dash_duo.driver.get("about:blank")
    dash_duo.driver.get(link)
    dash_duo.wait_for_text_to_equal("#graph-header .class-name", "class 004")
    dash_duo.wait_for_contains_text("#neuron-panel-title", "Channel")
    dash_duo.wait_for_text_to_equal("#compare-legend", legend)
    assert "layer0" in dash_duo.find_element("#layer-select").text
    assert query(dash_duo) == parse_qs_flat(link)
    assert dash_duo.get_logs() == []


def parse_qs_flat(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlparse(url).query).items()}


def test_sidebar_rows_select_and_sort(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, small_atlas: Path, tmp_path: Path
) -> None:
    start(dash_duo, monkeypatch, small_atlas, tmp_path, query="?class=2")
    rows = dash_duo.find_elements("#sidebar-rows .class-row")
    assert len(rows) == 6 and "class 002" in rows[0].text  # selected class pinned on top
    target = rows[3].find_element(By.CSS_SELECTOR, ".row-name").text
    rows[3].click()
    dash_duo.wait_for_text_to_equal("#graph-header .class-name", target)
    # Accuracy ascending: after the pinned class, accuracies never decrease.
    dash_duo.find_elements("#sort-select label")[1].click()
    wait_until(lambda: query(dash_duo).get("sort") == "acc-asc")

    def accuracies() -> list[float]:
        cells = dash_duo.find_elements("#sidebar-rows .row-acc")[1:]
        return [float(c.text.rstrip("%")) for c in cells]

    wait_until(lambda: accuracies() == sorted(accuracies()))
    # The node slider filters the graph.
    before = wait_until(lambda: cy_count(dash_duo, "attribution-graph", "node[size]"))
    dash_duo.driver.get(dash_duo.server_url + f"/?class={2}&nodes=100")
    dash_duo.wait_for_element("#graph-header .class-name")
    wait_until(lambda: 0 < cy_count(dash_duo, "attribution-graph", "node[size]") < before)
    assert dash_duo.get_logs() == []


def test_junk_link_and_missing_parts(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_atlas: Any
) -> None:
    atlas = make_atlas(tmp_path / "summit-only", parts=("summit",))
    start(
        dash_duo,
        monkeypatch,
        atlas,
        tmp_path,
        query="?v=9&class=zz&layer=99&node=../x&sort=bogus&nodes=-5",
    )
    assert header_class(dash_duo) == "class 000"
    for view in ("#embedding-note", "#graph-note"):
        dash_duo.wait_for_contains_text(view, "python -m compute")
    dash_duo.wait_for_contains_text("#compare-note", "python -m compute")
    assert len(dash_duo.find_elements("#sidebar-rows .class-row")) == 6
    assert dash_duo.get_logs() == []


def test_large_atlas(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, large_atlas: Path, tmp_path: Path
) -> None:
    """The 1,000-class, 9-layer synthetic atlas: search, graph, sidebar paging."""
    start(dash_duo, monkeypatch, large_atlas, tmp_path)
    wait_until(lambda: cy_count(dash_duo, "attribution-graph", "node[size]") > 0, timeout=30)
    rows = wait_until(lambda: dash_duo.find_elements("#sidebar-rows .class-row"))
    assert len(rows) == ROWS_PAGE
    dash_duo.find_element("#sidebar-show-more").click()
    wait_until(
        lambda: len(dash_duo.find_elements("#sidebar-rows .class-row")) == 2 * ROWS_PAGE, timeout=30
    )

    names = dash_duo.driver.execute_script(
        "return Array.from(document.querySelectorAll('#sidebar-rows .row-name'))"
        ".map(e => e.textContent);"
    )
    target = names[-1]
    started = time.perf_counter()
    search_class(dash_duo, target)
    dash_duo.wait_for_text_to_equal("#graph-header .class-name", target, timeout=30)
    wait_until(lambda: cy_count(dash_duo, "attribution-graph", "node[size]") > 0, timeout=30)
    print(f"\n[large atlas] class switch rendered in {time.perf_counter() - started:.2f} s")
    assert cy_count(dash_duo, "attribution-graph", "node[size]") >= 9

    # A shared link with a comparison and an open channel, on the large atlas.
    node = cy_ids(dash_duo, "attribution-graph", "node[size]")[0]
    dash_duo.driver.get(dash_duo.server_url + f"/?v=1&class=7&compare=8&layer=4&node={node}")
    dash_duo.wait_for_contains_text("#compare-legend", "shared", timeout=20)
    dash_duo.wait_for_contains_text("#neuron-panel-title", "Channel", timeout=30)
    wait_until(lambda: cy_count(dash_duo, "compare-graph", "node[group]") > 0, timeout=30)
    save_full_page(dash_duo, "large-atlas.png")
    assert dash_duo.get_logs() == []


def test_demo_atlas_is_the_default(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without NETWORK_ATLAS_DIR the shipped demo atlases are served, the digits first."""
    serve_app(dash_duo, monkeypatch, None, tmp_path)
    dash_duo.wait_for_element("#graph-header .class-name", timeout=20)
    wait_until(lambda: cy_count(dash_duo, "attribution-graph", "node[size]") > 0)
    node = cy_ids(dash_duo, "attribution-graph", "node[size]")[-1]
    dash_duo.driver.get(dash_duo.server_url + f"/?v=1&class=3&compare=8&node={node}")
    dash_duo.wait_for_contains_text("#compare-legend", "shared", timeout=20)
    dash_duo.wait_for_contains_text("#neuron-panel-title", "Channel")
    wait_until(lambda: cy_count(dash_duo, "compare-graph", "node[group]") > 0)
    save_full_page(dash_duo, "demo-atlas.png")
    # The header's picker offers both shipped demos; choosing the text demo opens it.
    dash_duo.select_dcc_dropdown(
        "#atlas-picker", value="wordnet · Text demo: MiniLM on the topics of WordNet definitions"
    )
    dash_duo.wait_for_contains_text("#graph-header", "texts", timeout=30)
    wait_until(
        lambda: (
            "atlas=wordnet%401" in dash_duo.driver.current_url
            or "atlas=wordnet@1" in dash_duo.driver.current_url
        )
    )
    wait_until(lambda: cy_count(dash_duo, "attribution-graph", "node[size]") > 0)
    dash_duo.wait_for_contains_text("#trace-header", "Test text #", timeout=30)
    save_full_page(dash_duo, "text-demo-atlas.png")
    # Back returns to the digits, and the picker says so (not the atlas it opened last).
    dash_duo.driver.back()
    dash_duo.wait_for_contains_text("#graph-header", "images", timeout=30)
    wait_until(lambda: "digits" in dash_duo.find_element("#atlas-picker").text)
    assert "wordnet" not in dash_duo.find_element("#atlas-picker").text
    assert dash_duo.get_logs() == []


def test_graphs_download_as_png(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each graph's PNG button downloads the whole graph, drawn by cytoscape, named as its
    JSON file (the atlas, the view, the class and the thresholds; the demo atlas:
    feature-visualization tiles and Mapper pies); an empty graph downloads nothing."""
    from PIL import Image

    serve_app(dash_duo, monkeypatch, None, tmp_path)
    dash_duo.driver.get(dash_duo.server_url + "/?v=1&class=3&compare=8")
    dash_duo.wait_for_contains_text("#graph-header .class-name", "three", timeout=20)
    wait_until(lambda: cy_count(dash_duo, "attribution-graph", "node[size]") > 0)
    wait_until(lambda: cy_count(dash_duo, "compare-graph", "node[group]") > 0)
    wait_until(lambda: cy_count(dash_duo, "topo-graph", "node") > 0, timeout=30)
    time.sleep(1.0)  # node pictures load
    folder = Path(dash_duo.download_path)
    for button, name in (
        ("attribution-graph-png", "digits-graph-0003-three-nodes0-edges0.png"),
        ("compare-graph-png", "digits-compare-0003-three-vs-0008-eight-nodes0-edges0.png"),
        # the Mapper graph: named as its members CSV (atlas, layer, parameters)
        ("topo-graph-png", "digits-mapper-features.relu*-i*.png"),
    ):
        element = dash_duo.find_element(f"#{button}")
        element.location_once_scrolled_into_view  # noqa: B018
        element.click()
        wait_until(
            lambda n=name: any(p.stat().st_size > 0 for p in folder.glob(n)),
            message=f"{name} not downloaded: {sorted(f.name for f in folder.iterdir())}",
        )
        path = next(folder.glob(name))
        time.sleep(0.3)  # the file is written in one go, but let the browser close it
        with Image.open(path) as image:
            image.load()
            assert image.format == "PNG"
            width, height = image.size
            assert width >= 300 and height >= 150, (name, image.size)
            # not a blank canvas: the graph was drawn
            colours = image.convert("L").getextrema()
            assert colours[0] < 128 < colours[1], (name, colours)
    # An empty graph (class 0 has no misclassified training image): no file at all.
    before = sorted(f.name for f in folder.iterdir())
    dash_duo.driver.get(dash_duo.server_url + "/?v=1&class=0&ifl=wrong")
    dash_duo.wait_for_contains_text("#instance-note", "correctly", timeout=20)
    element = dash_duo.find_element("#instance-graph-png")
    element.location_once_scrolled_into_view  # noqa: B018
    element.click()
    time.sleep(2.0)
    assert sorted(f.name for f in folder.iterdir()) == before
    assert dash_duo.get_logs() == []


def test_mistaken_for_link_compares_the_two_classes(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The class header's "mistaken for" link opens the comparison with that class."""
    import numpy as np

    from compute.atlas import Atlas
    from dashboard.config import DEMO_ATLAS_DIR

    confusion = np.array(Atlas.open(DEMO_ATLAS_DIR).confusion())
    np.fill_diagonal(confusion, 0)
    cls = int(confusion.sum(axis=1).argmax())  # the class with the most mistakes
    other = int(confusion[cls].argmax())
    serve_app(dash_duo, monkeypatch, None, tmp_path)
    dash_duo.driver.get(dash_duo.server_url + f"/?v=1&class={cls}")
    dash_duo.wait_for_contains_text("#graph-header", "mistaken for", timeout=20)
    link = dash_duo.find_element("#graph-header .confusion-link")
    link.click()
    wait_until(lambda: query(dash_duo).get("compare") == str(other), message="no comparison")
    assert query(dash_duo).get("class") == str(cls)
    dash_duo.wait_for_contains_text("#compare-legend", "shared", timeout=20)
    wait_until(lambda: cy_count(dash_duo, "compare-graph", "node[group]") > 0)
    assert dash_duo.get_logs() == []


def test_a_class_goes_to_its_mistakes_and_to_one_confusion(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """From class six: its mistaken images' graph (the radio), then the images mistaken for
    zero (the header's link: the pair's graph beside the comparison), then back to all; the
    graph drawn each time is the stored one of that subset, and the JSON button downloads
    it."""
    from compute.atlas import Atlas
    from dashboard.config import DEMO_ATLAS_DIR

    atlas = Atlas.open(DEMO_ATLAS_DIR)

    def stored_ids(subset: str, other: int | None = None) -> list[str]:
        graph = atlas.graph(6, subset, other)
        return sorted(f"{a}-{b}" for a, b in zip(graph.layer, graph.channel, strict=True))

    def drawn() -> list[str]:
        return sorted(cy_ids(dash_duo, "attribution-graph", "node[size]"))

    serve_app(dash_duo, monkeypatch, None, tmp_path)
    dash_duo.driver.get(dash_duo.server_url + "/?v=1&class=6")
    dash_duo.wait_for_contains_text("#graph-header .class-name", "six", timeout=20)
    wait_until(lambda: drawn() == stored_ids("all"), message="class graph")
    radio = dash_duo.find_element("#graph-subset input[value='mistaken']")
    radio.location_once_scrolled_into_view  # noqa: B018
    radio.click()
    wait_until(lambda: query(dash_duo).get("sub") == "mistaken", message="no sub in the URL")
    wait_until(lambda: drawn() == stored_ids("mistaken"), message="mistaken graph")
    dash_duo.wait_for_contains_text("#graph-header", "mistaken only: 3 images", timeout=10)
    link = next(
        a for a in dash_duo.find_elements("#graph-header .confusion-link") if "zero" in a.text
    )
    link.click()
    wait_until(lambda: query(dash_duo).get("for") == "0", message="no pair in the URL")
    assert query(dash_duo).get("compare") == "0"
    wait_until(lambda: drawn() == stored_ids("mistaken", 0), message="pair graph")
    dash_duo.wait_for_contains_text("#graph-header", "mistaken for zero: 1 image", timeout=10)
    wait_until(lambda: cy_count(dash_duo, "compare-graph", "node[group]") > 0)
    button = dash_duo.find_element("#attribution-graph-json")
    button.location_once_scrolled_into_view  # noqa: B018
    button.click()
    path = Path(dash_duo.download_path) / (
        "digits-graph-0006-six-mistaken-for-0000-zero-nodes0-edges0.json"
    )
    wait_until(lambda: path.exists() and path.stat().st_size > 0, message="no JSON download")
    time.sleep(0.3)
    nodes = sorted(node["id"] for node in json.loads(path.read_text())["nodes"])
    assert nodes == stored_ids("mistaken", 0)
    dash_duo.find_element("#graph-subset input[value='all']").click()
    wait_until(lambda: drawn() == stored_ids("all"), message="back to the class graph")
    assert "for" not in query(dash_duo) and "sub" not in query(dash_duo)
    assert dash_duo.get_logs() == []


def test_pick_a_misclassified_input_and_see_its_own_graph(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Instance view: the class's misclassified inputs, one picked, its graph drawn over its
    class's (the drawn nodes are the union of both) and its overlap in the header; its
    'compare' link opens the comparison with the graph of the images mistaken that way."""
    import numpy as np

    from compute.atlas import Atlas
    from compute.summit.instance_graph import instance_graph
    from dashboard.config import DEMO_ATLAS_DIR

    atlas = Atlas.open(DEMO_ATLAS_DIR)
    records = atlas.instances()
    row = int(np.flatnonzero((records.label == 6) & (records.prediction == 0))[0])
    index = int(records.image_index[row])
    graph = instance_graph(atlas, row)
    theirs = atlas.graph(6)
    want = sorted(
        {f"{a}-{b}" for a, b in zip(graph.layer, graph.channel, strict=True)}
        | {f"{a}-{b}" for a, b in zip(theirs.layer, theirs.channel, strict=True)}
    )
    serve_app(dash_duo, monkeypatch, None, tmp_path)
    dash_duo.driver.get(dash_duo.server_url + "/?v=1&class=6&ifl=wrong")
    dash_duo.wait_for_contains_text("#instance-header", "input #", timeout=20)
    chip = next(
        a for a in dash_duo.find_elements("#instance-picker a") if a.text.startswith(f"#{index}")
    )
    chip.location_once_scrolled_into_view  # noqa: B018
    chip.click()
    wait_until(lambda: query(dash_duo).get("inst") == str(index), message="no inst in the URL")
    dash_duo.wait_for_contains_text("#instance-header", f"input #{index}", timeout=10)
    dash_duo.wait_for_contains_text("#instance-header", f"{100 * graph.overlap:.1f}% on six")
    wait_until(
        lambda: sorted(cy_ids(dash_duo, "instance-graph", "node[size]")) == want,
        message="the input's graph over its class's",
    )
    # The input's image shows in the header, and every channel it uses shows its own crop,
    # served by the file route (each URL answers with a PNG).
    loaded = "return document.querySelector('#instance-header img.instance-input').naturalWidth"
    wait_until(lambda: dash_duo.driver.execute_script(loaded) > 0, message="no input image")
    crops = dash_duo.driver.execute_script(
        CY_INSTANCE + "return cy.nodes().map(n => n.data('img') || '')"
        ".filter(u => u.includes('/instances/crops/'));",
        "instance-graph",
    )
    assert len(crops) == len(graph.channel), "a crop per channel the input uses"
    statuses = dash_duo.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all(arguments[0].map(u => fetch(u).then(r => r.status + r.headers.get("
        "'content-type')))).then(done);",
        crops,
    )
    assert set(statuses) == {"200image/png"}, statuses
    link = dash_duo.find_element("#instance-header a.confusion-link")
    link.click()
    wait_until(lambda: query(dash_duo).get("for") == "0", message="no pair in the URL")
    assert query(dash_duo).get("compare") == "0" and query(dash_duo).get("inst") == str(index)
    # The "wrong or uncertain" filter, clicked, equals the same URL loaded fresh.
    pill = next(
        a for a in dash_duo.find_elements("#instance-picker a") if a.text == "wrong or uncertain"
    )
    pill.click()
    wait_until(lambda: query(dash_duo).get("ifl") == "uncertain", message="no filter in URL")
    wait_until(
        lambda: (
            [a.text for a in dash_duo.find_elements("#instance-picker a.pill-on")][:1]
            == ["wrong or uncertain"]
        ),
        message="the picker did not change",
    )
    clicked = dash_duo.find_element("#instance-picker").text
    dash_duo.driver.get(dash_duo.driver.current_url)
    dash_duo.wait_for_contains_text("#instance-header", "input #", timeout=20)
    assert dash_duo.find_element("#instance-picker").text == clicked


def test_every_table_and_graph_downloads_where_it_is_shown(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The class card's CSV, the attribution graph's GraphML, the comparison's JSON and
    GraphML and a neuron page's examples CSV: each click downloads its file, named after
    the atlas, the view and its parameters, holding what the page shows and what
    ``python -m compute export`` writes."""
    import networkx as nx

    from compute.atlas import Atlas
    from compute.export import EXAMPLE_COLUMNS, class_table_csv, csv_text, example_rows
    from dashboard.config import DEMO_ATLAS_DIR

    atlas = Atlas.open(DEMO_ATLAS_DIR)
    folder = Path(dash_duo.download_path)

    def download(button: str, name: str) -> Path:
        element = dash_duo.find_element(f"#{button}")
        element.location_once_scrolled_into_view  # noqa: B018
        element.click()
        path = folder / name
        wait_until(
            lambda: path.exists() and path.stat().st_size > 0,
            message=f"{name} not downloaded: {sorted(f.name for f in folder.iterdir())}",
        )
        time.sleep(0.3)  # let the browser close the file
        return path

    serve_app(dash_duo, monkeypatch, None, tmp_path)
    dash_duo.driver.get(dash_duo.server_url + "/?v=1&class=3&compare=8")
    dash_duo.wait_for_contains_text("#graph-header .class-name", "three", timeout=20)
    wait_until(lambda: cy_count(dash_duo, "attribution-graph", "node[size]") > 0)
    wait_until(lambda: cy_count(dash_duo, "compare-graph", "node[group]") > 0)

    classes = download("classes-csv", "digits-classes.csv")
    assert classes.read_text() == class_table_csv(atlas)

    graphml = download("attribution-graph-graphml", "digits-graph-0003-three-nodes0-edges0.graphml")
    drawn = sorted(cy_ids(dash_duo, "attribution-graph", "node[size]"))
    assert sorted(nx.read_graphml(graphml).nodes) == drawn

    stem = "digits-compare-0003-three-vs-0008-eight-nodes0-edges0"
    script = CY_INSTANCE + "return cy.nodes('[group]').map(n => [n.id(), n.data('group')]);"
    groups = dict(dash_duo.driver.execute_script(script, "compare-graph"))
    from_json = nx.node_link_graph(
        json.loads(download("compare-graph-json", f"{stem}.json").read_text())
    )
    assert dict(from_json.nodes(data="group")) == groups
    from_graphml = nx.read_graphml(download("compare-graph-graphml", f"{stem}.graphml"))
    assert dict(from_graphml.nodes(data="group")) == groups
    assert sorted(from_graphml.edges) == sorted(from_json.edges)

    dash_duo.driver.get(dash_duo.server_url + "/neuron/features.relu3/5")
    dash_duo.wait_for_element("#neuron-page-examples img.crop", timeout=20)
    examples = download(
        "neuron-page-examples-csv", "digits-examples-features.relu3-channel-0005.csv"
    )
    assert examples.read_text() == csv_text(EXAMPLE_COLUMNS, example_rows(atlas, 2, 5))
    assert dash_duo.get_logs() == []


def test_a_link_keeps_what_the_other_views_show(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A view's links are built from its group's copy of the state, older than the URL in
    the other groups' fields: a Topology parameter changed after the class header was drawn
    must survive a click on its "mistaken for" link (assets/links.js applies only the link's
    changes to the current address)."""
    serve_app(dash_duo, monkeypatch, None, tmp_path)
    dash_duo.driver.get(dash_duo.server_url + "/?v=1&class=6")
    dash_duo.wait_for_contains_text("#graph-header", "mistaken for", timeout=20)
    box = dash_duo.find_element("#topo-intervals")
    box.location_once_scrolled_into_view  # noqa: B018
    box.clear()
    box.send_keys("14\n")
    wait_until(lambda: query(dash_duo).get("ti") == "14", message="no ti in the URL")
    link = next(
        a for a in dash_duo.find_elements("#graph-header .confusion-link") if "zero" in a.text
    )
    link.location_once_scrolled_into_view  # noqa: B018
    link.click()
    wait_until(lambda: query(dash_duo).get("for") == "0", message="the link did not open")
    assert query(dash_duo).get("ti") == "14", query(dash_duo)
    assert query(dash_duo).get("compare") == "0"
    assert dash_duo.get_logs() == []


def test_back_and_forward_show_what_the_address_says(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A control changes the state and pushes its URL; Back returns to the previous
    address and the page shows that address's view (as if loaded fresh), Forward again."""
    serve_app(dash_duo, monkeypatch, None, tmp_path)
    dash_duo.driver.get(dash_duo.server_url + "/?v=1&class=6")
    dash_duo.wait_for_contains_text("#graph-header .class-name", "six", timeout=20)
    fresh = dash_duo.find_element("#graph-header").text
    radio = dash_duo.find_element("#graph-subset input[value='mistaken']")
    radio.location_once_scrolled_into_view  # noqa: B018
    radio.click()
    wait_until(lambda: query(dash_duo).get("sub") == "mistaken", message="no subset in URL")
    dash_duo.wait_for_contains_text("#graph-header", "mistaken", timeout=10)
    mistaken = dash_duo.find_element("#graph-header").text
    dash_duo.driver.back()
    wait_until(lambda: "sub" not in query(dash_duo), message="Back kept the subset in the URL")
    wait_until(
        lambda: dash_duo.find_element("#graph-header").text == fresh,
        message="Back changed the address but not the view",
    )
    assert dash_duo.find_element("#graph-subset input[value='all']").is_selected()
    dash_duo.driver.forward()
    wait_until(lambda: query(dash_duo).get("sub") == "mistaken", message="Forward")
    wait_until(lambda: dash_duo.find_element("#graph-header").text == mistaken, message="view")
