"""What a deployment answers to someone probing it: only pictures, no internals, no 500."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from compute.atlas import Atlas
from dashboard.config import Settings
from dashboard.factory import create_app


@pytest.fixture
def client(small_atlas: Path, tmp_path: Path) -> Any:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = create_app(Settings(atlas_dir=small_atlas, cache_dir=tmp_path / "cache"))
    return app.server.test_client()


def test_only_pictures_are_served(client: Any, small_atlas: Path) -> None:
    """Weights, arrays and the manifest are compute-only: never served, even if listed."""
    atlas = Atlas.open(small_atlas)
    listed = sorted(atlas.files)
    pictures = [p for p in listed if p.endswith(".png")]
    others = [p for p in listed if not p.endswith(".png")]
    assert pictures and others
    assert client.get(f"/atlas-file/{pictures[0]}").status_code == 200
    for relpath in others[:20]:
        assert client.get(f"/atlas-file/{relpath}").status_code == 404, relpath
    assert client.get("/atlas-file/manifest.json").status_code == 404


def test_weights_listed_in_the_manifest_are_not_downloadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dashboard.config import DEMO_ATLAS_DIR

    assert "model/weights.pt" in Atlas.open(DEMO_ATLAS_DIR).files
    app = create_app(Settings(atlas_dir=DEMO_ATLAS_DIR, cache_dir=tmp_path / "cache"))
    response = app.server.test_client().get("/atlas-file/model/weights.pt")
    assert response.status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/_dash-component-suites/nope/x.js",
        "/_dash-component-suites/dash/nope.js",
        "/_dash-component-suites/dash/../../etc/passwd",
        "/_dash-component-suites/dash/..%2f..%2fetc%2fpasswd",
        "/_dash-component-suites/dash/deps/%2e%2e/x.js",
        "/_dash-component-suites/dash_cytoscape/%00.js",
    ],
)
def test_unknown_component_scripts_are_404(client: Any, path: str) -> None:
    assert client.get(path).status_code == 404


def test_the_page_tells_no_versions_and_has_no_reload_route(client: Any) -> None:
    import platform

    page = client.get("/").get_data(as_text=True)
    assert "python_version" not in page and platform.python_version() not in page
    assert client.get("/_reload-hash").status_code == 404
    assert client.get("/_dash-layout").status_code == 200  # what the renderer needs stays
    assert re.search(r"_dash-component-suites/dash/", page)


def test_a_failing_view_shows_a_request_id_not_the_server_s_paths(
    small_atlas: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged array that start-up cannot see (sizes are checked, not contents): the
    browser gets a short note with a request id; the path and details go to the log."""
    import shutil

    from compute.atlas import embedding_path
    from dashboard.state import ViewState

    atlas = tmp_path / "copy"
    shutil.copytree(small_atlas, atlas)
    target = atlas / embedding_path(1)
    target.write_bytes(b"\x00" * 12 + target.read_bytes()[12:])  # same size, bad header
    app = create_app(Settings(atlas_dir=atlas, cache_dir=tmp_path / "cache"))
    body = {
        "output": "..embedding-graph.figure...embedding-layer.data...embedding-note.children..",
        "outputs": [
            {"id": "embedding-graph", "property": "figure"},
            {"id": "embedding-layer", "property": "data"},
            {"id": "embedding-note", "property": "children"},
        ],
        "inputs": [
            {"id": "state-summit", "property": "data", "value": ViewState(layer=1).to_dict()}
        ],
        "state": [{"id": "embedding-layer", "property": "data", "value": None}],
        "changedPropIds": ["state-summit.data"],
    }
    with caplog.at_level(logging.ERROR):
        response = app.server.test_client().post("/_dash-update-component", json=body)
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    match = re.search(r"Could not show this view \(request ([0-9a-f]{8})", text)
    assert match, text[:500]
    assert str(tmp_path) not in text and "embedding.npy" not in text and "Traceback" not in text
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert match.group(1) in logged
