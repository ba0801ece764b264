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
from tests.helpers.dash_payloads import pages_callback_body


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


def _pages_body(search: Any) -> dict[str, Any]:
    return pages_callback_body("/", search)


def _sidebar_body(client: Any) -> dict[str, Any]:
    """A well-formed body of a real callback (the sidebar rows), as the renderer sends it."""
    from dashboard.state import ViewState

    return {
        "output": "..sidebar-rows.children...sidebar-show-more.style..",
        "outputs": [
            {"id": "sidebar-rows", "property": "children"},
            {"id": "sidebar-show-more", "property": "style"},
        ],
        "inputs": [
            {"id": "state-summit", "property": "data", "value": ViewState().to_dict()},
            {"id": "rows-limit", "property": "data", "value": 50},
        ],
        "changedPropIds": ["state-summit.data"],
    }


def test_malformed_callback_bodies_are_4xx_never_500(client: Any) -> None:
    """Each body of the issue answered 500 with a traceback in the log."""
    good = _sidebar_body(client)
    assert client.post("/_dash-update-component", json=good).status_code == 200
    assert client.post("/_dash-update-component", json=_pages_body("?class=1")).status_code == 200
    bad: list[Any] = [
        {"output": {"a": 1}},
        {"output": ["x"]},
        {**good, "inputs": [{"id": "zzz", "property": "value", "value": 1}]},
        {**good, "inputs": good["inputs"][:1]},
        {**good, "inputs": [good["inputs"][1], good["inputs"][0]]},
        {**good, "state": [{"id": "x", "property": "y"}]},
        {**good, "changedPropIds": [1]},
        {k: v for k, v in good.items() if k != "outputs"},
        _pages_body(5),
        _pages_body([1]),
        _pages_body({"a": 1}),
    ]
    for body in bad:
        response = client.post("/_dash-update-component", json=body)
        assert 400 <= response.status_code < 500, (body, response.status_code)
    nested = client.post(
        "/_dash-update-component", data="[" * 100_000, content_type="application/json"
    )
    assert nested.status_code == 400


def _outputs_of(key: str) -> Any:
    if key.startswith(".."):
        return [
            {"id": o.split(".")[0], "property": o.split(".", 1)[1]} for o in key[2:-2].split("...")
        ]
    return {"id": key.split(".")[0], "property": key.split(".", 1)[1]}


def test_every_callback_with_empty_values_never_500(small_atlas: Path, tmp_path: Path) -> None:
    app = create_app(Settings(atlas_dir=small_atlas, cache_dir=tmp_path / "cache"))
    client = app.server.test_client()
    client.get("/")
    statuses: dict[int, int] = {}
    for key, spec in dict(app.callback_map).items():
        items = [*spec["inputs"], *spec.get("state", [])]
        if any(str(i["id"]).startswith("{") for i in items):
            continue  # pattern-matching: fuzzed in test_fuzz_callbacks
        first = spec["inputs"][0]
        body = {
            "output": key,
            "outputs": _outputs_of(key),
            "inputs": [{**i, "value": None} for i in spec["inputs"]],
            "state": [{**i, "value": None} for i in spec.get("state", [])],
        }
        for changed in ([], [f"{first['id']}.{first['property']}"]):
            response = client.post(
                "/_dash-update-component", json={**body, "changedPropIds": changed}
            )
            assert response.status_code < 500, (key, changed, response.status_code)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    assert statuses.get(200, 0) > 10 and statuses.get(400, 0) > 0


def test_a_fresh_worker_s_first_request_never_draws_pages(
    small_atlas: Path, tmp_path: Path
) -> None:
    """Dash Pages drew every page on each process's first request: with the default atlas
    removed since start, a fresh worker's first request (/healthz too) answered 500. The
    router is built at start now; /healthz opens no atlas."""
    import shutil

    atlas = tmp_path / "atlas"
    shutil.copytree(small_atlas, atlas)
    app = create_app(Settings(atlas_dir=atlas, cache_dir=tmp_path / "cache"))
    shutil.rmtree(atlas)  # gone before any worker served a request
    client = app.server.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert "_pages_location" in str(app.callback_map)  # the router exists already
