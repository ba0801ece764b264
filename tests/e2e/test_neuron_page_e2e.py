"""End-to-end: neuron pictures and the neuron page in headless Chromium.

The featurevis atlas is the small test atlas plus fake striped PNGs added with
``update_atlas`` (``tests/conftest.py``), so these tests need no torch rendering.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.e2e.browser import CY_INSTANCE, save_full_page, serve_app, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("chromedriver") is None, reason="needs chromedriver"),
]


def serve(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, atlas: Path, tmp_path: Path, path: str
) -> None:
    """Serve the app on ``atlas`` and open ``path`` (e.g. ``/neuron/layer1/3``)."""
    serve_app(dash_duo, monkeypatch, atlas, tmp_path)
    dash_duo.driver.get(dash_duo.server_url + path)


def cy_nodes(dash_duo: Any) -> list[dict[str, Any]]:
    """The data of every channel node of the attribution graph."""
    script = CY_INSTANCE + "return cy ? cy.nodes('[size]').map(n => n.data()) : [];"
    return list(dash_duo.driver.execute_script(script, "attribution-graph"))


def cy_emit(dash_duo: Any, node_id: str, event: str) -> None:
    script = CY_INSTANCE + "cy.getElementById(arguments[1]).emit(arguments[2]);"
    dash_duo.driver.execute_script(script, "attribution-graph", node_id, event)


def url(dash_duo: Any) -> tuple[str, dict[str, str]]:
    """Path and flat query of the current address."""
    parsed = urlparse(dash_duo.driver.current_url)
    return parsed.path, {k: v[0] for k, v in parse_qs(parsed.query).items()}


def loaded_images(dash_duo: Any, selector: str) -> int:
    """How many images under ``selector`` have loaded (natural width > 0)."""
    script = (
        "return [...document.querySelectorAll(arguments[0])]"
        ".filter(i => i.complete && i.naturalWidth > 0).length;"
    )
    return int(dash_duo.driver.execute_script(script, selector))


def test_neuron_page_renders_its_parts(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, featurevis_atlas: Path, tmp_path: Path
) -> None:
    serve(dash_duo, monkeypatch, featurevis_atlas, tmp_path, "/neuron/layer1/3")
    dash_duo.wait_for_contains_text("#neuron-page .neuron-heading", "Channel 3 of layer1")
    wait_until(lambda: loaded_images(dash_duo, "#neuron-page-vis img") == 1, message="no vis")
    wait_until(lambda: loaded_images(dash_duo, "#neuron-page-diversity img") == 4)
    wait_until(lambda: loaded_images(dash_duo, "#neuron-page-examples img") >= 1)
    captions = dash_duo.find_elements("#neuron-page-examples figcaption")
    assert captions and captions[0].text.startswith("#")
    assert dash_duo.find_elements("#neuron-page-classes a.bar-row")
    assert dash_duo.find_elements("#neuron-page-incoming a.neuron-link")
    assert dash_duo.find_elements("#neuron-page-outgoing a.neuron-link")
    assert "Channel 3 of layer1" in dash_duo.driver.title
    save_full_page(dash_duo, "neuron-page.png")
    assert dash_duo.get_logs() == []


def test_walk_from_graph_to_neuron_page_and_back(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, featurevis_atlas: Path, tmp_path: Path
) -> None:
    serve(dash_duo, monkeypatch, featurevis_atlas, tmp_path, "/?class=1")
    dash_duo.wait_for_text_to_equal("#graph-header .class-name", "class 001")
    nodes = wait_until(lambda: cy_nodes(dash_duo), message="no graph nodes")
    # Nodes show the feature visualization by default.
    assert all("/featurevis/" in n["img"] for n in nodes)
    node = nodes[0]["id"]
    layer, channel = node.split("-")

    # Hover: the detail panel shows the diversity images and the dataset examples.
    cy_emit(dash_duo, node, "mouseover")
    wait_until(lambda: loaded_images(dash_duo, "#hover-panel img.vis") == 5)
    wait_until(lambda: loaded_images(dash_duo, "#hover-panel img.crop:not(.vis)") >= 1)
    save_full_page(dash_duo, "graph-featurevis.png")
    dash_duo.driver.set_window_size(1440, 1200)

    # Click: the neuron panel opens, with a link to the neuron's page.
    cy_emit(dash_duo, node, "tap")
    link = dash_duo.wait_for_element("#neuron-open-page")
    wait_until(lambda: link.get_attribute("href").endswith(f"/neuron/layer{layer}/{channel}"))
    link.click()
    dash_duo.wait_for_contains_text(
        "#neuron-page .neuron-heading", f"Channel {channel} of layer{layer}"
    )
    assert url(dash_duo)[0] == f"/neuron/layer{layer}/{channel}"

    # Back to a class graph through a class bar.
    row = dash_duo.find_elements("#neuron-page-classes a.bar-row")[1]
    name = row.find_element("css selector", ".bar-name").text
    row.click()
    dash_duo.wait_for_text_to_equal("#graph-header .class-name", name, timeout=20)
    path, query = url(dash_duo)
    assert path == "/" and query["class"] == str(int(name.split()[-1]))
    assert query["node"] == node
    dash_duo.wait_for_contains_text("#neuron-panel-title", f"Channel {channel}")

    # The picture toggle is URL state: crops instead of visualizations.
    dash_duo.find_element("#graph-pictures input[value='crop']").click()
    wait_until(lambda: url(dash_duo)[1].get("pics") == "crop")
    wait_until(lambda: all("/images/" in n.get("img", "/images/") for n in cy_nodes(dash_duo)))
    dash_duo.driver.refresh()
    dash_duo.wait_for_text_to_equal("#graph-header .class-name", name, timeout=20)
    assert dash_duo.find_element("#graph-pictures input[value='crop']").is_selected()
    assert dash_duo.get_logs() == []


def test_outgoing_influence_link_opens_that_neuron(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, featurevis_atlas: Path, tmp_path: Path
) -> None:
    serve(dash_duo, monkeypatch, featurevis_atlas, tmp_path, "/neuron/0/2")
    dash_duo.wait_for_contains_text("#neuron-page .neuron-heading", "Channel 2 of layer0")
    link = dash_duo.find_elements("#neuron-page-outgoing a.neuron-link")[0]
    target = urlparse(link.get_attribute("href")).path
    _, _, layer, channel = target.split("/")
    link.click()
    dash_duo.wait_for_contains_text("#neuron-page .neuron-heading", f"Channel {channel} of {layer}")
    assert url(dash_duo)[0] == target
    # ... and its incoming list leads back to where we came from.
    incoming = [
        urlparse(a.get_attribute("href")).path
        for a in dash_duo.find_elements("#neuron-page-incoming a.neuron-link")
    ]
    assert "/neuron/layer0/2" in incoming
    assert dash_duo.get_logs() == []


def test_unknown_neuron_and_missing_featurevis(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, small_atlas: Path, tmp_path: Path
) -> None:
    serve(dash_duo, monkeypatch, small_atlas, tmp_path, "/neuron/nope/1")
    dash_duo.wait_for_contains_text("#neuron-not-found", "Neuron not found")
    dash_duo.driver.get(dash_duo.server_url + "/neuron/layer1/999")
    dash_duo.wait_for_contains_text("#neuron-not-found", "layer1/999")
    dash_duo.driver.get(dash_duo.server_url + "/neuron/layer1")  # no channel: Pages' 404
    dash_duo.wait_for_contains_text("#page-not-found", "Page not found")
    # A real neuron of an atlas without featurevis: the page says how to compute it.
    dash_duo.driver.get(dash_duo.server_url + "/neuron/layer1/3")
    dash_duo.wait_for_contains_text("#neuron-page", "python -m compute featurevis --atlas")
    dash_duo.find_element("#neuron-page a.back").click()
    dash_duo.wait_for_element("#graph-header .class-name", timeout=20)
    dash_duo.wait_for_contains_text("#graph-pictures-note", "python -m compute featurevis")
    assert json.loads(
        dash_duo.driver.execute_script(
            "return JSON.stringify([...document.querySelectorAll('#graph-pictures input')]"
            ".map(i => [i.value, i.disabled]))"
        )
    ) == [["vis", True], ["crop", False]]
    assert dash_duo.get_logs() == []
