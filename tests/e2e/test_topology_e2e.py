"""End-to-end: the Topology (Mapper) view in headless Chromium (``pytest --headless -m e2e``).

Uses the planted-shape test atlas of :mod:`tests.topology_atlas`: layer 0 is a Y (three
flares). Helpers come from the main e2e module.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.keys import Keys

from dashboard import data as atlas_data
from dashboard.state import ViewState
from dashboard.views.common import ViewContext
from dashboard.views.topology import callbacks as topology_callbacks
from tests.e2e.browser import SCREENSHOTS, wait_until
from tests.e2e.test_dashboard_e2e import CY_INSTANCE, cy_count, cy_emit, query, start
from tests.topology_atlas import CAPPED_LAYER, SHAPES_QUERY, write_topology_atlas

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("chromedriver") is None, reason="needs chromedriver"),
]


@pytest.fixture(scope="module")
def topo_atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_topology_atlas(tmp_path_factory.mktemp("topo-e2e") / "atlas")


def selected_points(dash_duo: Any) -> Any:
    """``selectedpoints`` of the class embedding's every-class trace."""
    script = (
        "const g = document.querySelector('#embedding-graph .js-plotly-plot');"
        "return g && g.data ? g.data[0].selectedpoints : null;"
    )
    return dash_duo.driver.execute_script(script)


#: What a Mapper node draws (data fields compared between browser and reference).
_DRAWN = ["colour", *[f"c{i}" for i in range(1, 17)], *[f"p{i}" for i in range(1, 17)]]


def browser_nodes(dash_duo: Any) -> dict[str, Any]:
    """``{node id: (sorted classes, drawn data)}`` of the Mapper graph in the browser."""
    script = CY_INSTANCE + (
        "if (!cy) { return null; } const out = {};"
        "cy.nodes().forEach(n => { out[n.id()] = [n.classes().slice().sort(), "
        "arguments[1].map(k => n.data(k) === undefined ? null : n.data(k))]; });"
        "return out;"
    )
    found = dash_duo.driver.execute_script(script, "topo-graph", _DRAWN)
    return {k: (list(v[0]), list(v[1])) for k, v in (found or {}).items()}


def reference_nodes(atlas: Path, tmp_path: Path, url: dict[str, str]) -> dict[str, Any]:
    """:func:`browser_nodes` as a full server render of the URL's state draws them."""
    data = atlas_data.load(str(atlas), str(tmp_path / "reference-cache"))
    context = ViewContext(data=data, file_prefix="/atlas-file/")
    state = ViewState.from_query(url, num_classes=data.num_classes, num_layers=data.num_layers)
    elements = topology_callbacks.render(context, state.to_dict())[0]
    return {
        e["data"]["id"]: (
            sorted(e["classes"].split()),
            [e["data"].get(k) for k in _DRAWN],
        )
        for e in elements
        if "source" not in e["data"]
    }


def test_topology_parameters_node_and_shapes(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, topo_atlas: Path, tmp_path: Path
) -> None:
    start(dash_duo, monkeypatch, topo_atlas, tmp_path, query=f"?{SHAPES_QUERY}&tlayer=0")
    wait_until(lambda: cy_count(dash_duo, "topo-graph", "node") > 0, timeout=30)
    dash_duo.wait_for_contains_text("#topo-status", "exact")
    dash_duo.find_element("#topology").location_once_scrolled_into_view  # noqa: B018

    # The three flares of the Y are listed; clicking one rings its nodes, again clears it.
    buttons = wait_until(lambda: dash_duo.find_elements(".topo-shape"))
    assert len(buttons) == 3 and all("flare" in b.text for b in buttons)
    buttons[0].click()
    wait_until(lambda: cy_count(dash_duo, "topo-graph", "node.in-shape") >= 3)
    wait_until(lambda: query(dash_duo).get("tshape") == "0")

    # Hovering a node says what it holds (drawn in the browser); leaving it restores the hint.
    cy_emit(dash_duo, "topo-graph", "m0", "mouseover")
    dash_duo.wait_for_contains_text("#topo-hover", "images · mostly ")
    assert "node 0/" in dash_duo.find_element("#topo-hover").text
    cy_emit(dash_duo, "topo-graph", "m0", "mouseout")
    dash_duo.wait_for_contains_text("#topo-hover", "Hover a node")

    # Click a node: its class table, inversion image and member crops; its classes marked
    # in the embedding.
    cy_emit(dash_duo, "topo-graph", "m0", "tap")
    dash_duo.wait_for_element("#topo-class-table tr")
    dash_duo.wait_for_element("#topo-panel img.crop")
    dash_duo.wait_for_element("#topo-inversion img.topo-inversion-img")
    wait_until(lambda: query(dash_duo).get("tnode") == "0")
    wait_until(lambda: selected_points(dash_duo), message="embedding not highlighted")

    # Click a class in the node's table: it becomes the selected class of every view.
    row = next(
        r
        for r in dash_duo.find_elements("#topo-class-table tr")
        if r.get_attribute("data-class") != query(dash_duo).get("class", "0")
    )
    picked = row.get_attribute("data-class")
    row.click()
    wait_until(lambda: query(dash_duo).get("class") == picked, message="class not selected")
    dash_duo.wait_for_contains_text("#topo-status", ": ")
    # The class switch redraws the graph: the browser's nodes are those of a full render
    # for the new state.
    expected = reference_nodes(topo_atlas, tmp_path, query(dash_duo))
    wait_until(
        lambda: browser_nodes(dash_duo) == expected, message="graph not redrawn for the class"
    )

    # Change a parameter while a node is hovered: the graph is recomputed (another node
    # count), the URL follows, and the hover line no longer describes a node that is gone.
    before = cy_count(dash_duo, "topo-graph", "node")
    cy_emit(dash_duo, "topo-graph", "m0", "mouseover")
    dash_duo.wait_for_contains_text("#topo-hover", "images · mostly ")
    box = dash_duo.find_element("#topo-intervals")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("15", Keys.ENTER)
    wait_until(lambda: query(dash_duo).get("ti") == "15", message="intervals not in the URL")
    wait_until(lambda: cy_count(dash_duo, "topo-graph", "node") not in (before, -1, 0))
    assert "tnode" not in query(dash_duo)  # a new graph closes the node
    dash_duo.wait_for_contains_text("#topo-hover", "Hover a node")
    # Out of range: clamped, with a message.
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("500", Keys.ENTER)
    dash_duo.wait_for_contains_text("#topo-message", "using 100")
    wait_until(lambda: query(dash_duo).get("ti") == "100")

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    time.sleep(0.5)
    dash_duo.find_element("#topology").screenshot(str(SCREENSHOTS / "topology-e2e.png"))
    assert dash_duo.get_logs() == []


def test_topology_recompute_exactly(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, topo_atlas: Path, tmp_path: Path
) -> None:
    """A capped index's graph is flagged approximate; the button recomputes it exactly."""
    monkeypatch.setattr(
        "dashboard.views.topology.data.EXACT_POINTS", 100
    )  # treat the sample as large
    start(dash_duo, monkeypatch, topo_atlas, tmp_path, query=f"?tlayer={CAPPED_LAYER}&ti=10")
    wait_until(lambda: cy_count(dash_duo, "topo-graph", "node") > 0, timeout=30)
    dash_duo.wait_for_contains_text("#topo-status", "approximate")
    dash_duo.wait_for_contains_text("#topo-note", "Approximate graph")
    button = dash_duo.find_element("#topo-exact")
    button.location_once_scrolled_into_view  # noqa: B018
    button.click()
    wait_until(
        lambda: "approximate" not in dash_duo.find_element("#topo-status").text,
        message="still approximate",
    )
    wait_until(lambda: not dash_duo.find_element("#topo-exact").is_displayed())
    assert "Approximate graph" not in dash_duo.find_element("#topo-note").text
    assert dash_duo.get_logs() == []


#: Records the output key of every callback request the page sends (Dash uses fetch).
_RECORD_CALLBACKS = """
window.__callbacks = [];
if (!window.__fetchRecorded) {
    window.__fetchRecorded = true;
    const original = window.fetch;
    window.fetch = function(url, options) {
        if (String(url).includes('_dash-update-component') && options && options.body) {
            try { window.__callbacks.push(JSON.parse(options.body).output); } catch (e) {}
        }
        return original.apply(this, arguments);
    };
}
"""


def sent_callbacks(dash_duo: Any) -> list[str]:
    return list(dash_duo.driver.execute_script("return window.__callbacks || [];"))


def test_a_view_hears_only_the_state_it_reads(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, topo_atlas: Path, tmp_path: Path
) -> None:
    """A Topology control re-renders the Topology view only (no request for the Summit or
    Training views); a class switch still reaches every view, the Topology's included."""
    start(dash_duo, monkeypatch, topo_atlas, tmp_path, query="?tlayer=0")
    wait_until(lambda: cy_count(dash_duo, "topo-graph", "node") > 0, timeout=30)
    time.sleep(1.0)  # let the page's initial callbacks settle before recording
    dash_duo.driver.execute_script(_RECORD_CALLBACKS)
    # The Summit views' renders (the Topology's own embedding highlight may still come).
    summit_outputs = (
        "attribution-graph.elements",
        "sidebar-rows.",
        "embedding-layer.data",
        "compare-graph.",
        "neuron-panel",
        "class-search.options",
    )

    before = cy_count(dash_duo, "topo-graph", "node")
    box = dash_duo.find_element("#topo-intervals")
    box.location_once_scrolled_into_view  # noqa: B018
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("15", Keys.ENTER)
    wait_until(lambda: query(dash_duo).get("ti") == "15", message="intervals not in the URL")
    wait_until(lambda: cy_count(dash_duo, "topo-graph", "node") not in (before, -1, 0))
    time.sleep(1.0)  # any stray request would have been sent by now
    sent = sent_callbacks(dash_duo)
    assert any("topo-graph.elements" in key for key in sent), sent
    assert not [k for k in sent if any(out in k for out in summit_outputs)], sent
    assert not [k for k in sent if "training" in k or "trace" in k], sent

    picked = "1" if query(dash_duo).get("class", "0") != "1" else "2"
    dash_duo.driver.get(dash_duo.driver.current_url)  # fresh page: then switch the class
    dash_duo.wait_for_element("#graph-header .class-name", timeout=20)
    wait_until(lambda: cy_count(dash_duo, "topo-graph", "node") > 0, timeout=30)
    time.sleep(1.0)
    dash_duo.driver.execute_script(_RECORD_CALLBACKS)
    row = wait_until(
        lambda: next(
            (r for r in dash_duo.find_elements("#sidebar-rows [data-class]")
             if r.get_attribute("data-class") == picked),
            None,
        )
    )  # fmt: skip
    row.click()
    wait_until(lambda: query(dash_duo).get("class") == picked, message="class not selected")
    wait_until(
        lambda: (
            any("topo-graph.elements" in k for k in sent_callbacks(dash_duo))
            and any("attribution-graph.elements" in k for k in sent_callbacks(dash_duo))
        ),
        message="a class switch must reach the Summit and Topology views",
    )
    assert dash_duo.get_logs() == []


def test_clicks_during_a_slow_recomputation_leave_the_right_graph(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Switch the metric (a new index: a slow recomputation), then click two classes at
    once: the graph on screen equals a fresh load of the URL. A class switch used to patch
    elements by list index, and applied to another list lost 14 nodes and 27 edges."""
    from tests.e2e.browser import serve_app

    serve_app(dash_duo, monkeypatch, None, tmp_path)
    dash_duo.driver.get(dash_duo.server_url + "/?v=1&class=1&compare=3&ti=10")
    wait_until(lambda: cy_count(dash_duo, "topo-graph", "node") > 0, timeout=30)
    time.sleep(1.0)

    def click(selector: str) -> None:
        element = dash_duo.find_element(selector)
        dash_duo.driver.execute_script(
            "arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", element
        )

    click("#topo-metric input[value='cosine']")
    time.sleep(0.3)
    click("#sidebar-rows .class-row[data-class='0']")
    time.sleep(0.3)
    click("#sidebar-rows .class-row[data-class='1']")
    wait_until(
        lambda: query(dash_duo).get("tm") == "cosine" and query(dash_duo).get("class") == "1"
    )

    def drawn() -> tuple[int, int]:
        return (cy_count(dash_duo, "topo-graph", "node"), cy_count(dash_duo, "topo-graph", "edge"))

    stable: list[tuple[int, int]] = []

    def settled() -> bool:
        stable.append(drawn())
        return len(stable) >= 6 and len(set(stable[-6:])) == 1

    wait_until(settled, timeout=40, message="the graph never settled")
    clicked = stable[-1]
    url = dash_duo.driver.current_url
    dash_duo.driver.get("about:blank")
    dash_duo.driver.get(url)
    wait_until(lambda: cy_count(dash_duo, "topo-graph", "node") > 0, timeout=30)
    stable.clear()
    wait_until(settled, timeout=40, message="the fresh graph never settled")
    assert clicked == stable[-1], (clicked, stable[-1], url)
