"""A text atlas in a real browser (issue 16): the graph's nodes carry their top token, a
hovered unit lists its texts with the token of its maximum marked, a misclassified input's
Instance view shows its text, and a clicked state equals the same URL loaded fresh."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from compute.atlas import Atlas
from tests.e2e.browser import CY_INSTANCE, serve_app, wait_until


def cy_labels(dash_duo: Any, component_id: str) -> dict[str, str]:
    script = CY_INSTANCE + (
        "return cy ? Object.fromEntries(cy.nodes('[size]').map(n => [n.id(), n.data('label')]))"
        " : {};"
    )
    return dict(dash_duo.driver.execute_script(script, component_id))


def test_explore_a_text_atlas(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text_atlas: Path
) -> None:
    atlas = Atlas.open(text_atlas)
    records = atlas.instances()
    wrong = np.flatnonzero(records.prediction != records.label)
    row = int(wrong[0]) if wrong.size else 0
    index, label = int(records.image_index[row]), int(records.label[row])
    serve_app(dash_duo, monkeypatch, text_atlas, tmp_path)
    dash_duo.driver.get(dash_duo.server_url + f"/?v=1&class={label}")
    labels = wait_until(lambda: cy_labels(dash_duo, "attribution-graph"), message="no graph")
    # Every node is labelled "unit word".
    assert all(len(text.split(" ", 1)) == 2 for text in labels.values()), labels
    assert "texts" in dash_duo.find_element("header").text.lower()
    node = sorted(labels)[0]
    dash_duo.driver.execute_script(
        CY_INSTANCE + "cy.getElementById(arguments[1]).emit('mouseover');",
        "attribution-graph",
        node,
    )
    marks = wait_until(
        lambda: dash_duo.find_elements(".snippet mark"), message="no snippet in the hover panel"
    )
    assert marks[0].text.strip()
    # The misclassified input's own graph, with its text.
    chip = next(
        a for a in dash_duo.find_elements("#instance-picker a") if a.text.startswith(f"#{index}")
    )
    chip.location_once_scrolled_into_view  # noqa: B018
    chip.click()
    wait_until(
        lambda: parse_qs(urlparse(dash_duo.driver.current_url).query).get("inst") == [str(index)],
        message="no inst in the URL",
    )
    text = atlas.text_input(index).text
    dash_duo.wait_for_contains_text("#instance-header", text, timeout=10)
    clicked = dash_duo.find_element("#instance-header").text
    dash_duo.driver.get(dash_duo.driver.current_url)
    dash_duo.wait_for_contains_text("#instance-header", text, timeout=20)
    assert dash_duo.find_element("#instance-header").text == clicked
    errors = [
        entry
        for entry in dash_duo.driver.get_log("browser")
        if entry["level"] == "SEVERE" and "favicon" not in entry["message"]
    ]
    assert not errors, json.dumps(errors)[:500]
