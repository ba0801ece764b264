"""Several atlases per deployment: discovery, ``?atlas=NAME@VERSION``, per-request atlas
for callbacks, file routes per atlas, the health route and friendly unknown-atlas pages."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import dash
import pytest
from plotly.utils import PlotlyJSONEncoder

from compute.atlas import MANIFEST, AtlasError
from dashboard import atlases, ids
from dashboard.atlases import AtlasRegistry, discover, parse_key
from dashboard.config import Settings
from dashboard.factory import RequestContext, create_app
from dashboard.links import class_href, neuron_href
from tests.helpers.dash_payloads import pages_callback_body


def _retitle(atlas: Path, title: str) -> None:
    manifest = json.loads((atlas / MANIFEST).read_text())
    manifest["title"] = title
    (atlas / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, make_atlas: Any) -> Path:
    """A folder of two atlases, ``alpha`` (6 classes) and ``beta`` (9 classes), plus junk."""
    root = tmp_path_factory.mktemp("atlases")
    _retitle(make_atlas(root / "alpha", num_classes=6, seed=1), "Alpha atlas")
    _retitle(make_atlas(root / "beta", num_classes=9, seed=2), "Beta atlas")
    (root / "notes").mkdir()  # no manifest: not an atlas
    (root / "README.txt").write_text("not an atlas")
    return root


@pytest.fixture
def app(folder: Path, tmp_path: Path) -> dash.Dash:
    return create_app(Settings(atlas_dir=folder, cache_dir=tmp_path / "cache"))


def render(layout: Any) -> str:
    return json.dumps(layout, cls=PlotlyJSONEncoder)


def test_discover_a_folder_and_a_single_atlas(folder: Path) -> None:
    entries, multi = discover(folder)
    assert multi and [e.key for e in entries] == ["alpha@1", "beta@1"]
    entries, multi = discover(folder / "beta")
    assert not multi and [e.key for e in entries] == ["beta@1"]


def test_registry_find(folder: Path) -> None:
    registry = AtlasRegistry(folder, None)
    assert registry.find(None) is registry.default and registry.default.name == "alpha"
    assert registry.find("beta@1").name == "beta"  # type: ignore[union-attr]
    assert registry.find("beta").name == "beta"  # type: ignore[union-attr]
    assert registry.find(["beta@1", "alpha@1"]).name == "beta"  # type: ignore[union-attr]
    for junk in ("beta@2", "gamma@1", "../beta", "beta@", "@1", "b eta", "x" * 200, 7):
        assert registry.find(junk) is None, junk
    assert AtlasRegistry(folder, None, default="beta").default.name == "beta"
    with pytest.raises(AtlasError, match="NETWORK_ATLAS_DEFAULT names 'gamma'"):
        AtlasRegistry(folder, None, default="gamma")


def test_parse_key() -> None:
    assert parse_key("digits@1") == ("digits", 1)
    assert parse_key("digits") == ("digits", None)
    assert parse_key("dig its") is None and parse_key(None) is None


def test_a_corrupt_manifest_in_the_folder_refuses_to_start(folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(folder, root)
    (root / "beta" / MANIFEST).write_text("{not json")
    with pytest.raises(AtlasError, match=r"manifest.json in atlas .*beta is not valid JSON"):
        create_app(Settings(atlas_dir=root, cache_dir=tmp_path / "cache"))


def test_an_empty_folder_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AtlasError, match="neither an atlas nor a folder of atlases"):
        create_app(Settings(atlas_dir=tmp_path / "empty", cache_dir=tmp_path / "cache"))


def test_pages_show_the_atlas_their_url_names(app: dash.Dash) -> None:
    explorer = dash.page_registry["explorer"]["layout"]
    default = render(explorer())
    assert "Alpha atlas" in default and ids.ATLAS_PICKER in default
    beta = render(explorer(**{"atlas": "beta@1", "class": "8"}))
    assert "Beta atlas" in beta and "class 008" in beta
    # The store (and so the URL written back) carries the atlas key.
    assert '"atlas": "beta@1"' in beta and '"cls": 8' in beta
    # Class 8 does not exist in alpha: the link's class falls back to the default.
    assert '"cls": 0' in render(explorer(**{"atlas": "alpha@1", "class": "8"}))


@pytest.mark.parametrize("asked", ["gamma@1", "beta@7", "<script>", "../../etc"])
def test_unknown_atlas_gives_a_friendly_page(app: dash.Dash, asked: str) -> None:
    page = render(dash.page_registry["explorer"]["layout"](atlas=asked))
    assert "Atlas not found" in page and "?atlas=beta@1" in page
    neuron = dash.page_registry["neuron"]["layout"]
    assert "Atlas not found" in render(neuron(layer="layer0", channel="1", atlas=asked))


def test_neuron_page_of_the_named_atlas(app: dash.Dash) -> None:
    page = render(dash.page_registry["neuron"]["layout"](layer="0", channel="3", atlas="beta@1"))
    assert "Beta atlas" in page and "Atlas not found" not in page
    # Links inside stay on the atlas.
    assert "atlas=beta@1" in page


def test_links_carry_the_current_atlas() -> None:
    assert neuron_href("conv.1", 3) == "/neuron/conv.1/3"
    with atlases.use("beta@1"):
        assert neuron_href("conv.1", 3) == "/neuron/conv.1/3?atlas=beta@1"
        assert class_href(2) == "/?v=1&atlas=beta@1&class=2"
    assert class_href(2) == "/?v=1&class=2"


def _callback_request(app: dash.Dash, payload: dict[str, Any]) -> Any:
    """A request context of a Dash callback POST, with the request hooks run."""
    # The first callback that runs on the server (a clientside one is refused there).
    output, spec = next((o, s) for o, s in app.callback_map.items() if callable(s.get("callback")))
    body = {
        "output": output,
        "outputs": [
            {"id": o.split(".")[0], "property": o.split(".", 1)[1]}
            for o in output[2:-2].split("...")
        ]
        if output.startswith("..")
        else {"id": output.split(".")[0], "property": output.split(".", 1)[1]},
        "inputs": [{**item, "value": None} for item in spec["inputs"]],
        "state": [{**item, "value": None} for item in spec.get("state", [])],
        "changedPropIds": [f"{spec['inputs'][0]['id']}.{spec['inputs'][0]['property']}"],
    }
    ctx = app.server.test_request_context(
        "/_dash-update-component", method="POST", json={**body, **payload}
    )
    ctx.push()
    try:
        assert app.server.preprocess_request() is None
    except BaseException:
        ctx.pop()  # a context left pushed would make every later register_page fail
        raise
    return ctx


def test_callbacks_serve_the_atlas_named_by_the_request(app: dash.Dash) -> None:
    context = next(c for c in registered_contexts(app))
    for payload, classes in (({"atlas": "beta@1"}, 9), ({}, 6)):
        ctx = _callback_request(app, payload)
        try:
            assert context.data.num_classes == classes
            key = "beta@1" if classes == 9 else "alpha@1"
            assert context.file_prefix == f"/atlas-file/{key}/~{context.data.digest}/"
            assert (context.spark_url(1) or "").startswith(f"/atlas-spark/{key}/1.svg?v=")
        finally:
            ctx.pop()
    # An atlas not served (here: never was) is never replaced by the default one.
    for named in ("zz@1", "beta@2", 7):
        ctx = _callback_request(app, {"atlas": named})
        try:
            with pytest.raises(atlases.AtlasGone):
                _ = context.data
        finally:
            ctx.pop()


def registered_contexts(app: dash.Dash) -> list[RequestContext]:
    """The RequestContext the factory registered the views with (found in the closures)."""
    found = []
    for callback in app.callback_map.values():
        function = callback.get("callback")
        for cell in getattr(getattr(function, "__wrapped__", function), "__closure__", None) or ():
            if isinstance(cell.cell_contents, RequestContext):
                found.append(cell.cell_contents)
    assert found, "the views are registered with a RequestContext"
    return found


def test_file_and_sparkline_routes_per_atlas(app: dash.Dash, folder: Path) -> None:
    client = app.server.test_client()
    for key in ("alpha@1", "beta@1"):
        assert client.get(f"/atlas-file/{key}/images/00/0-0.png").status_code == 200
        assert client.get(f"/atlas-spark/{key}/1.svg").status_code == 200
    assert client.get("/atlas-spark/beta@1/8.svg").status_code == 200
    assert client.get("/atlas-spark/alpha@1/8.svg").status_code == 404  # alpha has 6
    assert client.get("/atlas-file/images/00/0-0.png").status_code == 200  # the default
    for path in (
        "/atlas-file/gamma@1/images/00/0-0.png",
        "/atlas-file/beta@2/images/00/0-0.png",
        "/atlas-file/beta@1/manifest.json",
        "/atlas-file/beta@1/../alpha@1/images/00/0-0.png",
        "/atlas-spark/gamma@1/1.svg",
    ):
        assert client.get(path).status_code == 404, path


def test_health_route(app: dash.Dash) -> None:
    response = app.server.test_client().get("/healthz")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["status"] == "ok" and body["default"] == "alpha@1"
    assert [a["key"] for a in body["atlases"]] == ["alpha@1", "beta@1"]
    assert all(a["format_version"] == 1 for a in body["atlases"])
    assert "/" not in json.dumps(body), "no server path is revealed"


def test_single_atlas_keeps_links_without_a_parameter(folder: Path, tmp_path: Path) -> None:
    create_app(Settings(atlas_dir=folder / "beta", cache_dir=tmp_path / "cache"))
    explorer = dash.page_registry["explorer"]["layout"]
    page = render(explorer(**{"class": "3"}))
    assert "Beta atlas" in page and ids.ATLAS_PICKER not in page and '"atlas": null' in page
    # Its own name is accepted; another name is a friendly not-found page.
    assert "Atlas not found" not in render(explorer(atlas="beta@1"))
    assert "Atlas not found" in render(explorer(atlas="alpha@1"))


def test_link_previews_name_the_linked_atlas(app: dash.Dash) -> None:
    client = app.server.test_client()
    beta = client.get("/?atlas=beta@1&class=2").get_data(as_text=True)
    assert 'og:title" content="Beta atlas · Network Atlas"' in beta
    default = client.get("/").get_data(as_text=True)
    assert 'og:title" content="Alpha atlas · Network Atlas"' in default


def test_the_request_atlas_ends_with_the_request(app: dash.Dash) -> None:
    client = app.server.test_client()
    assert client.get("/?atlas=beta@1").status_code == 200
    assert atlases.current_key() is None
    ctx = _callback_request(app, {"atlas": "beta@1"})
    assert atlases.current_key() == "beta@1"
    ctx.pop()
    assert atlases.current_key() is None


def test_dash_is_set_up_before_the_first_request(app: dash.Dash) -> None:
    # Threaded workers must never meet a half set-up app (scripts, callback map).
    assert app._got_first_request["setup_server"]
    assert "dash" in app.registered_paths and len(app.callback_map) > 10


# -- atlases added and removed while the app runs -------------------------------------------


def _pages_callback(client: Any, search: str, atlas: str | None) -> Any:
    """The Dash Pages callback of the explorer for ``search``, as the renderer sends it
    (with the ``atlas`` its request hook copies from the page's URL)."""
    body = pages_callback_body("/", search)
    if atlas is not None:
        body["atlas"] = atlas
    return client.post("/_dash-update-component", json=body)


def _served(client: Any) -> list[str]:
    return [a["key"] for a in client.get("/healthz").get_json()["atlases"]]


def test_atlases_added_and_removed_without_a_restart(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new complete atlas appears (health, picker, its links, pages, files, callbacks);
    half-written ones never do; a removed one gives the friendly page, never a 500."""
    monkeypatch.setattr(atlases, "RESCAN_SECONDS", 0.0)  # look at every page load
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(folder / "alpha", root / "alpha")
    app = create_app(Settings(atlas_dir=root, cache_dir=tmp_path / "cache"))
    client = app.server.test_client()
    explorer = dash.page_registry["explorer"]["layout"]
    assert _served(client) == ["alpha@1"]
    assert ids.ATLAS_PICKER not in render(explorer())  # one atlas: no picker

    # Being written: the writer's temporary sibling (manifest and all), and a folder whose
    # manifest is not there yet. Neither is an atlas.
    shutil.copytree(folder / "beta", root / ".beta.tmp-1234")
    (root / "gamma" / "images").mkdir(parents=True)
    assert _served(client) == ["alpha@1"]
    assert "Atlas not found" in render(explorer(atlas="beta@1"))
    assert "Atlas not found" in _pages_callback(client, "?atlas=beta@1", "beta@1").text

    # Committed (renamed into place): served at once.
    (root / ".beta.tmp-1234").rename(root / "beta")
    assert _served(client) == ["alpha@1", "beta@1"]
    page = render(explorer())
    assert ids.ATLAS_PICKER in page and '"value": "beta@1"' in page  # in the picker
    beta = _pages_callback(client, "?atlas=beta@1&class=8", "beta@1")
    assert beta.status_code == 200 and "Beta atlas" in beta.text and "class 008" in beta.text
    assert client.get("/atlas-file/beta@1/images/00/0-0.png").status_code == 200
    assert client.get("/atlas-spark/beta@1/8.svg").status_code == 200
    context = registered_contexts(app)[0]
    ctx = _callback_request(app, {"atlas": "beta@1"})
    try:
        assert context.data.num_classes == 9
    finally:
        ctx.pop()

    # Removed: links to it get the friendly page; its files 404; nothing answers 500.
    shutil.rmtree(root / "beta")
    assert _served(client) == ["alpha@1"]
    gone = _pages_callback(client, "?atlas=beta@1&class=8", "beta@1")
    assert gone.status_code == 200 and "Atlas not found" in gone.text
    assert "?atlas=alpha@1" in gone.text  # it lists what is served
    assert client.get("/?atlas=beta@1").status_code == 200
    assert client.get("/atlas-file/beta@1/images/00/0-0.png").status_code == 404
    assert client.get("/atlas-spark/beta@1/8.svg").status_code == 404
    assert ids.ATLAS_PICKER not in render(explorer())


def test_a_corrupt_or_rebuilt_atlas_while_running(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A corrupt manifest appearing later is skipped (the others stay served); an atlas
    rebuilt under the same name is opened afresh."""
    monkeypatch.setattr(atlases, "RESCAN_SECONDS", 0.0)
    root = tmp_path / "root"
    shutil.copytree(folder, root)
    app = create_app(Settings(atlas_dir=root, cache_dir=tmp_path / "cache"))
    client = app.server.test_client()
    (root / "broken").mkdir()
    (root / "broken" / MANIFEST).write_text("{not json")
    assert _served(client) == ["alpha@1", "beta@1"]
    assert "Atlas not found" in render(dash.page_registry["explorer"]["layout"](atlas="broken"))
    # Rebuild beta as the writer does: a temporary sibling renamed over it.
    shutil.copytree(root / "beta", root / ".beta.tmp-1")
    _retitle(root / ".beta.tmp-1", "Beta rebuilt")
    (root / "beta").rename(root / ".beta.old-1")
    (root / ".beta.tmp-1").rename(root / "beta")
    shutil.rmtree(root / ".beta.old-1")
    page = _pages_callback(client, "?atlas=beta@1", "beta@1").text
    assert "Beta rebuilt" in page and "Beta atlas" not in page


def test_rescans_are_rate_limited_and_cheap(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Page loads look at the folder at most every RESCAN_SECONDS, and read manifests
    only when it changed (or every FULL_RESCAN_SECONDS); an unknown name looks at once."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(folder / "alpha", root / "alpha")
    now = [100.0]
    registry = AtlasRegistry(root, None, clock=lambda: now[0])
    scans = []
    real = atlases.discover

    def counted(path: Path, *, strict: bool = True) -> Any:
        scans.append(path)
        return real(path, strict=strict)

    monkeypatch.setattr(atlases, "discover", counted)
    shutil.copytree(folder / "beta", root / "beta")
    assert registry.refresh() is False and not scans  # looked at less than 2 s ago
    now[0] += atlases.RESCAN_SECONDS + 0.1
    assert registry.refresh() is True and len(scans) == 1
    assert [e.key for e in registry.entries] == ["alpha@1", "beta@1"]
    now[0] += atlases.RESCAN_SECONDS + 0.1
    assert registry.refresh() is False and len(scans) == 1  # unchanged folder: one stat
    now[0] += atlases.FULL_RESCAN_SECONDS
    assert registry.refresh() is False and len(scans) == 2  # the periodic full scan
    # A request naming an atlas this worker does not know yet looks at once.
    shutil.copytree(folder / "alpha", root / "delta")
    assert registry.find("delta@1") is not None and len(scans) == 3
    assert registry.find("nothing@1") is None and len(scans) == 3  # folder unchanged
    assert registry.find("../x") is None and len(scans) == 3  # junk: no look at all


def test_the_default_atlas_stays_while_atlases_come_and_go(folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(folder / "beta", root / "beta")
    registry = AtlasRegistry(root, None)
    assert registry.default.name == "beta"
    shutil.copytree(folder / "alpha", root / "alpha")  # sorts first: not the new default
    assert registry.refresh(now=True) and registry.default.name == "beta"
    shutil.rmtree(root / "beta")
    assert registry.refresh(now=True) and registry.default.name == "alpha"
    shutil.rmtree(root / "alpha")  # an empty folder keeps the last atlases
    assert not registry.refresh(now=True) and [e.name for e in registry.entries] == ["alpha"]


# -- a page left open on an atlas that is then removed -------------------------------------


def _callback_body(app: dash.Dash, output: str, values: dict[str, Any], atlas: str | None) -> Any:
    """The renderer's request body for the callback whose output key contains ``output``:
    ``values`` by ``"id.property"`` for its inputs and states (the others ``None``), the
    first input as the trigger, and the page's ``atlas`` as the request hook sends it."""
    key = next(k for k in app.callback_map if output in k)
    spec = app.callback_map[key]
    outputs = [
        {"id": part.rsplit(".", 1)[0], "property": part.rsplit(".", 1)[1].split("@")[0]}
        for part in (key[2:-2].split("...") if key.startswith("..") else [key])
    ]

    def filled(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**item, "value": values.get(f"{item['id']}.{item['property']}")} for item in items]

    inputs = filled(spec["inputs"])
    body: dict[str, Any] = {
        "output": key,
        "outputs": outputs if key.startswith("..") else outputs[0],
        "inputs": inputs,
        "state": filled(spec["state"]),
        "changedPropIds": [f"{inputs[0]['id']}.{inputs[0]['property']}"],
    }
    if atlas is not None:
        body["atlas"] = atlas
    return body


def test_a_page_whose_atlas_was_removed_says_so(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Callbacks of a page opened on beta, after beta is removed: an alert in the page (the
    alert's content as a side update), every output left as it was, never alpha's data
    under beta's name, never a 500 or a trace. The default atlas's pages keep working."""
    monkeypatch.setattr(atlases, "RESCAN_SECONDS", 0.0)
    root = tmp_path / "root"
    shutil.copytree(folder, root)
    app = create_app(Settings(atlas_dir=root, cache_dir=tmp_path / "cache"))
    client = app.server.test_client()
    page = render(dash.page_registry["explorer"]["layout"](atlas="beta@1"))
    # The page carries a hidden alert naming its atlas (the renderer sends it along when
    # the URL names none).
    assert f'"id": "{ids.ATLAS_ALERT}"' in page and '"data-atlas": "beta@1"' in page
    state = {"cls": 8, "atlas": "beta@1"}
    graph = _callback_body(
        app, "attribution-graph.elements", {f"{ids.STATE_SUMMIT}.data": state}, "beta@1"
    )
    sidebar = _callback_body(
        app, "..sidebar-rows.children...", {f"{ids.STATE_SUMMIT}.data": state}, "beta@1"
    )
    before = client.post("/_dash-update-component", json=graph)
    assert before.status_code == 200 and "class 008" in before.text
    assert "sideUpdate" not in before.get_json()

    shutil.rmtree(root / "beta")
    for body in (graph, sidebar):
        response = client.post("/_dash-update-component", json=body)
        assert response.status_code == 200, response.status_code
        answer = response.get_json()
        assert answer["response"] == {}, "no output is updated"
        alert = answer["sideUpdate"][ids.ATLAS_ALERT]
        assert alert["hidden"] is False
        said = json.dumps(alert["children"])
        assert "The atlas beta@1 is no longer served here" in said
        assert "?atlas=beta@1" in said and "?atlas=alpha@1" in said  # the list; the default
        assert "Traceback" not in response.text and "class 00" not in response.text

    # A removed default moves nobody: a page of alpha naming no atlas in its URL sends
    # alpha's key (data-atlas), and alpha's callbacks still answer with alpha's data.
    fine = client.post(
        "/_dash-update-component",
        json=_callback_body(
            app, "attribution-graph.elements", {f"{ids.STATE_SUMMIT}.data": {"cls": 5}}, None
        ),
    )
    assert fine.status_code == 200 and "class 005" in fine.text and "sideUpdate" not in fine.text
    # Navigating within the removed atlas's tab: the friendly not-found page and title.
    navigated = _pages_callback(client, "?atlas=beta@1&class=2", "beta@1")
    assert navigated.status_code == 200 and "Atlas not found" in navigated.text
    # Parsed, not matched in the raw text: JSON encoders differ in escaping "·" (\u00b7).
    title = navigated.get_json()["response"]["_pages_store"]["data"]["title"]
    assert title == "Atlas not found · Network Atlas"
    missing = client.post(
        "/_dash-update-component",
        json={
            **pages_callback_body("/no/such/page", "?atlas=beta@1"),
            "atlas": "beta@1",
        },
    )
    assert missing.status_code == 200 and "Atlas not found" in missing.text


def test_a_single_atlas_updated_or_replaced_while_serving(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single-atlas deployment picks up ``featurevis`` added in place (it kept "no feature
    visualizations yet" until restarted), and a rebuild renamed over its folder switches
    whole: pages, arrays and files from the new atlas, never a mix."""
    from tests.conftest import add_fake_featurevis

    monkeypatch.setattr(atlases, "RESCAN_SECONDS", 0.0)
    root = tmp_path / "single"
    shutil.copytree(folder / "alpha", root)
    app = create_app(Settings(atlas_dir=root, cache_dir=tmp_path / "cache"))
    client = app.server.test_client()
    assert "No feature visualizations in this atlas yet" in _pages_callback(client, "", None).text
    assert client.get("/atlas-file/featurevis/00/0-vis.png").status_code == 404

    add_fake_featurevis(root)  # the featurevis command updates the atlas in place
    page = _pages_callback(client, "", None).text
    assert "No feature visualizations in this atlas yet" not in page
    assert re.search(r'"value":\s*"vis"', page)  # the nodes now show them
    assert client.get("/atlas-file/featurevis/00/0-vis.png").status_code == 200

    # Rebuilt as the writer does: a new folder (another atlas: 9 classes) renamed into place.
    shutil.copytree(folder / "beta", tmp_path / ".single.tmp-1")
    _retitle(tmp_path / ".single.tmp-1", "Replaced")
    root.rename(tmp_path / ".single.old-1")
    (tmp_path / ".single.tmp-1").rename(root)
    shutil.rmtree(tmp_path / ".single.old-1")
    page = _pages_callback(client, "?class=8", None).text
    assert "Replaced" in page and "class 008" in page
    assert client.get("/atlas-file/featurevis/00/0-vis.png").status_code == 404  # beta has none
    context = registered_contexts(app)[0]
    ctx = _callback_request(app, {})
    try:
        assert context.data.num_classes == 9
    finally:
        ctx.pop()
