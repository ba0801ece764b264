"""End-to-end: the Training view on the shipped demo atlas (``pytest --headless -m e2e``).

Opens the view, picks an image from the grid, checks proponents and the four charts,
switches the traced layer, reloads the URL and gets the same view.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException

from dashboard.config import DEMO_ATLAS_DIR
from tests.e2e.browser import SCREENSHOTS, wait_until
from tests.e2e.test_dashboard_e2e import query, start

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("chromedriver") is None, reason="needs chromedriver"),
]

CHARTS = ("trace-share", "trace-ridge", "trace-epochs", "trace-norms")


def trace_count(dash_duo: Any, component_id: str) -> int:
    """Number of traces Plotly drew in a ``dcc.Graph`` (-1: not drawn yet)."""
    script = (
        "const g = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');"
        "return g && g.data ? g.data.length : -1;"
    )
    return int(dash_duo.driver.execute_script(script, component_id))


def view_snapshot(dash_duo: Any) -> tuple[str, str, tuple[str, ...]]:
    """What identifies the shown view: header text, layer dropdown text, proponent titles."""
    header = dash_duo.find_element("#trace-header").text
    layer = dash_duo.find_element("#trace-layer").text
    titles = tuple(
        e.get_attribute("title") for e in dash_duo.find_elements("#trace-proponents .trace-example")
    )
    return header, layer, titles


def tile_attribute(dash_duo: Any, index: int, name: str) -> str | None:
    """An attribute of the grid's ``index``-th tile, or ``None`` while the grid re-renders."""
    try:
        return dash_duo.find_elements("#trace-grid .trace-tile")[index].get_attribute(name)
    except (StaleElementReferenceException, IndexError):
        return None


def click_tile(dash_duo: Any, index: int) -> str | None:
    """Click the grid's ``index``-th tile; its ``data-row``, or ``None`` if the grid was
    re-rendered under us (a picked tile re-renders the grid, so found tiles go stale)."""
    try:
        tile = dash_duo.find_elements("#trace-grid .trace-tile")[index]
        row = tile.get_attribute("data-row")
        tile.click()
    except (StaleElementReferenceException, IndexError):
        return None
    return row


def test_training_view_pick_layer_and_reload(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    start(dash_duo, monkeypatch, Path(DEMO_ATLAS_DIR), tmp_path, query="?class=3")
    dash_duo.find_element("#training").location_once_scrolled_into_view  # noqa: B018
    # The grid shows class 3's images; the first one is explained by default.
    tiles = wait_until(lambda: dash_duo.find_elements("#trace-grid .trace-tile"), timeout=20)
    dash_duo.wait_for_contains_text("#trace-grid-note", "labelled or predicted three")
    assert 1 < len(tiles) < 360
    dash_duo.wait_for_contains_text("#trace-header", "layer head")

    # Pick another image: the URL and the header follow, proponents and charts are drawn.
    row = wait_until(lambda: click_tile(dash_duo, 2), message="tile not clickable")
    wait_until(lambda: query(dash_duo).get("trow") == row, message="pick not in the URL")
    wait_until(lambda: "picked" in (tile_attribute(dash_duo, 2, "class") or ""))
    proponents = wait_until(
        lambda: dash_duo.find_elements("#trace-proponents .trace-example"), timeout=10
    )
    assert len(proponents) == 10
    assert dash_duo.find_elements("#trace-proponents img.trace-thumb")  # thumbnails served
    assert len(dash_duo.find_elements("#trace-opponents .trace-example")) == 10
    for chart in CHARTS:
        wait_until(lambda c=chart: trace_count(dash_duo, c) > 0, message=f"{chart} not drawn")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    dash_duo.driver.set_window_size(1440, 2400)
    dash_duo.find_element("#training").screenshot(str(SCREENSHOTS / "training-view.png"))

    # Switch to the first traced layer.
    dash_duo.select_dcc_dropdown("#trace-layer", index=0)
    wait_until(lambda: query(dash_duo).get("trlayer") == "0", message="layer not in the URL")
    dash_duo.wait_for_contains_text("#trace-header", "features.conv1")
    before = wait_until(lambda: (s := view_snapshot(dash_duo))[2] and s)

    # Reload the URL: the same image, layer and proponents.
    dash_duo.driver.get(dash_duo.driver.current_url)
    dash_duo.wait_for_contains_text("#trace-header", "features.conv1", timeout=20)
    wait_until(lambda: view_snapshot(dash_duo) == before, message="reload shows another view")
    assert query(dash_duo).get("trow") == row

    # A proponent click selects its class in the other views.
    example = dash_duo.find_elements("#trace-proponents .trace-example")[0]
    cls = example.get_attribute("data-class")
    example.click()
    wait_until(lambda: query(dash_duo).get("class") == cls, message="class not selected")
    assert dash_duo.get_logs() == []
