"""Shared set-up of the end-to-end tests: serve the dashboard on an atlas, poll, drive
cytoscape and take full-page screenshots (used by every ``tests/e2e/test_*_e2e.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SCREENSHOTS = Path(__file__).resolve().parents[2] / "out" / "screenshots"

# JavaScript prefix: binds ``cy`` to the cytoscape.js instance dash-cytoscape mounted inside
# the component whose id is ``arguments[0]`` (``null`` when it is not mounted).
CY_INSTANCE = (
    "const root = document.getElementById(arguments[0]);"
    "const all = root ? [root, ...root.querySelectorAll('div')] : [];"
    "const host = all.find(el => el._cyreg && el._cyreg.cy);"
    "const cy = host ? host._cyreg.cy : null;"
)


def serve_app(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, atlas: Path | None, tmp_path: Path
) -> None:
    """Start a fresh ``dashboard.app`` serving ``atlas`` (``None``: the default atlas) with
    its cache under ``tmp_path``, in a 1440x1200 window."""
    from dash.testing.application_runners import import_app

    if atlas is None:
        monkeypatch.delenv("NETWORK_ATLAS_DIR", raising=False)
    else:
        monkeypatch.setenv("NETWORK_ATLAS_DIR", str(atlas))
    monkeypatch.setenv("NETWORK_ATLAS_CACHE_DIR", str(tmp_path / "cache"))
    dash_duo.start_server(import_app("dashboard.app"))
    dash_duo.driver.set_window_size(1440, 1200)


def wait_until(condition: Callable[[], Any], timeout: float = 15.0, message: str = "") -> Any:
    """Poll ``condition()`` until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or "condition not met in time")
        time.sleep(0.1)


def save_full_page(dash_duo: Any, name: str) -> Path:
    """Screenshot the whole page (window as tall as the document) into ``out/screenshots``;
    returns the file."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = dash_duo.driver.execute_script("return document.documentElement.scrollHeight")
    dash_duo.driver.set_window_size(1440, min(int(height) + 120, 4000))
    dash_duo.driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(1.0)  # let cytoscape and plotly redraw at the new size
    path = SCREENSHOTS / name
    dash_duo.driver.save_screenshot(str(path))
    return path
