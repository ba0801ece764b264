"""Callback bodies called directly, the page layout, the file routes and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from contextvars import copy_context
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dash
import numpy as np
import pytest
from dash._callback_context import context_value
from dash._utils import AttributeDict
from plotly.utils import PlotlyJSONEncoder

from compute.atlas import AtlasError
from dashboard import data as atlas_data
from dashboard import ids
from dashboard.config import Settings
from dashboard.factory import IMMUTABLE_MAX_AGE, create_app
from dashboard.links import neuron_href
from dashboard.state import StateBounds, ViewState
from dashboard.views import shell
from dashboard.views.common import ViewContext, guarded
from dashboard.views.summit import compare, embedding, graph, neuron, sidebar
from dashboard.views.summit import ids as summit_ids
from dashboard.views.summit import state as summit_state
from tests.helpers.components import components

ROOT = Path(__file__).resolve().parents[2]


def make_app(atlas: Path, tmp_path: Path) -> tuple[dash.Dash, ViewContext]:
    app = create_app(Settings(atlas_dir=atlas, cache_dir=tmp_path / "cache"))
    context = ViewContext(
        data=atlas_data.load(str(atlas), str(tmp_path / "cache")),
        file_prefix="/atlas-file/",
        spark_prefix="/atlas-spark/",
    )
    return app, context


@pytest.fixture
def small(small_atlas: Path, tmp_path: Path) -> tuple[dash.Dash, ViewContext]:
    return make_app(small_atlas, tmp_path)


def find_component(root: Any, component_id: Any) -> Any:
    """The component with ``component_id`` anywhere below ``root`` (``None``: absent)."""
    if getattr(root, "id", None) == component_id:
        return root
    children = getattr(root, "children", None)
    for child in children if isinstance(children, (list, tuple)) else [children]:
        if child is not None and not isinstance(child, (str, int, float)):
            found = find_component(child, component_id)
            if found is not None:
                return found
    return None


def run_with_trigger(prop_id: str, value: Any, function: Any, *args: Any) -> Any:
    """Call a callback body as Dash would after ``prop_id`` changed to ``value``."""

    def run() -> Any:
        context_value.set(AttributeDict(triggered_inputs=[{"prop_id": prop_id, "value": value}]))
        return function(*args)

    return copy_context().run(run)


# -- the state reducer ------------------------------------------------------------------------


BOUNDS = StateBounds(num_classes=10, num_layers=3, channels=(8, 8, 8))


@pytest.mark.parametrize(
    ("trigger", "value", "expected"),
    [
        (summit_ids.SEARCH, 4, {"cls": 4}),
        (ids.ROW_CLICK, {"cls": 5, "at": 1}, {"cls": 5}),
        (summit_ids.EMBEDDING, {"points": [{"customdata": 3}]}, {"cls": 3}),
        (summit_ids.NEURON_BARS, {"points": [{"customdata": 1, "y": "x"}]}, {"cls": 1}),
        (summit_ids.COMPARE, 2, {"compare": 2}),
        (summit_ids.LAYER, 0, {"layer": 0}),
        (summit_ids.NODE_THRESHOLD, 40, {"node_min": 40}),
        (summit_ids.EDGE_THRESHOLD, 15, {"edge_min": 15}),
        (summit_ids.SORT, "acc-desc", {"sort": "acc-desc"}),
        (summit_ids.GRAPH, {"id": "1-4", "label": "4"}, {"node": "1-4"}),
        (summit_ids.COMPARE_GRAPH, {"id": "2-3"}, {"node": "2-3"}),
        (summit_ids.GRAPH, {"id": "row-1"}, {}),  # a row label is not a channel
        (summit_ids.EMBEDDING, {"points": []}, {}),
        (ids.ROW_CLICK, {"junk": 1}, {}),
    ],
)
def test_apply_event(trigger: str, value: Any, expected: dict[str, Any]) -> None:
    state = ViewState(cls=0, node="0-1")
    assert summit_state.apply_event(state, trigger, value, BOUNDS) == state.with_(**expected)


def test_close_button_clears_the_node() -> None:
    assert (
        summit_state.apply_event(ViewState(node="0-1"), summit_ids.NEURON_CLOSE, 1, BOUNDS).node
        is None
    )


def test_reducer_refuses_what_the_atlas_lacks() -> None:
    """Out-of-range and malformed values leave the state as it was (the browser's reducer
    agrees: tests/e2e/test_reducers_e2e.py); selecting the compared class drops the
    comparison."""
    state = ViewState(cls=0, compare=3)
    for junk in (99, -1, "abc", [1], {"x": 1}, True, 2.5, None):
        assert summit_state.apply_event(state, summit_ids.SEARCH, junk, BOUNDS) == state
    assert summit_state.apply_event(state, summit_ids.LAYER, 3, BOUNDS) == state
    assert summit_state.apply_event(state, summit_ids.GRAPH, {"id": "0-8"}, BOUNDS) == state
    assert summit_state.apply_event(state, summit_ids.NODE_THRESHOLD, 101, BOUNDS) == state
    assert summit_state.apply_event(state, summit_ids.SORT, "bogus", BOUNDS) == state
    picked = summit_state.apply_event(state, ids.ROW_CLICK, {"cls": 3}, BOUNDS)
    assert picked.cls == 3 and picked.compare is None


# -- views ------------------------------------------------------------------------------------


def test_embedding_sends_a_patch_when_the_layer_is_unchanged(small: Any) -> None:
    _, context = small
    stored = ViewState(cls=1, layer=1).to_dict()
    figure, layer = embedding.render(context, stored, None)
    assert layer == 1 and len(figure["data"]) == 4
    patch, same = embedding.render(context, stored, 1)
    assert isinstance(patch, dash.Patch) and same is dash.no_update


def test_embedding_says_which_classes_share_one_point() -> None:
    """Classes whose counts point the same way sit on one point, labels printed over each
    other: the view names them and says why, in the atlas's words."""
    layout = np.array([[0.0, 0.0], [1.0, -1.0], [0.0, 0.0], [-1.0, 1.0]])
    data = SimpleNamespace(
        text=True, names=["food", "sport", "weather", "plants"], layer_names=["L3"],
        embedding=lambda layer: layout, num_images=np.array([5, 5, 5, 5]),
    )  # fmt: skip
    shown = embedding.coincident_note(data, 0)  # type: ignore[arg-type]
    assert shown is not None
    assert "At L3, these classes sit on one point: food, weather." in shown.children
    assert "texts select the same units" in shown.children
    layout = np.array([[0.0, 0.0], [1.0, -1.0], [0.5, 0.0], [-1.0, 1.0]])
    assert embedding.coincident_note(data, 0) is None  # type: ignore[arg-type]
    # Classes without inputs share the empty rows' point: nothing to say of the model.
    layout = np.array([[0.0, 0.0], [1.0, -1.0], [0.0, 0.0], [0.0, 0.0]])
    data.num_images = np.array([5, 5, 0, 0])
    assert embedding.coincident_note(data, 0) is None  # type: ignore[arg-type]
    data.num_images = np.array([5, 5, 5, 0])
    shown = embedding.coincident_note(data, 0)  # type: ignore[arg-type]
    assert shown is not None and "one point: food, weather." in shown.children


def test_sidebar_rows_html(small: Any) -> None:
    _, context = small
    rows, more = sidebar.render_rows(context, ViewState(cls=2).to_dict(), 4)
    assert rows.count('class="class-row') == 4
    assert 'class="class-row selected" data-class="2"' in rows
    assert "/atlas-spark/2.svg?v=" in rows and more == {}
    rows, more = sidebar.render_rows(context, ViewState(cls=2).to_dict(), 150)
    assert rows.count("data-class=") == 6 and more == {"display": "none"}


def test_sidebar_escapes_class_names(make_atlas: Any, tmp_path: Path) -> None:
    names = ("<script>alert(1)</script>", 'quote " name', "a & b")
    atlas = make_atlas(tmp_path / "evil", num_classes=3, class_names=names)
    _, context = make_app(atlas, tmp_path)
    rows, _ = sidebar.render_rows(context, ViewState().to_dict(), 10)
    assert "<script>" not in rows and "&lt;script&gt;" in rows and "&quot;" in rows


def test_graph_view(small: Any) -> None:
    _, context = small
    elements, header, message = graph.render_graph(context, ViewState(cls=1, node="0-3").to_dict())
    assert any("source" in e["data"] for e in elements)
    # no warning; at most the note naming units the graph leaves out (tested below)
    assert message is None or str(message.children[0]).startswith("Not on this graph")
    assert header[0].children == "class 001"
    node = next(e["data"]["id"] for e in elements if "size" in e["data"])
    sheet, panel = run_with_trigger(
        f"{summit_ids.GRAPH}.mouseoverNodeData",
        {"id": node},
        graph.render_hover,
        context,
        {"id": node},
        ViewState(cls=1).to_dict(),
    )
    assert len(sheet) > len(graph.BASE_STYLESHEET)
    assert "channel" in panel[0].children
    # A state change resets the highlight.
    sheet, _ = run_with_trigger(
        f"{ids.STATE}.data", {}, graph.render_hover, context, {"id": node}, ViewState().to_dict()
    )
    assert sheet == graph.BASE_STYLESHEET


def test_hovering_a_subset_graphs_node_counts_what_the_graph_drew(tmp_path: Path) -> None:
    """On the graph of a class's mistaken images, a node's hover counts those images (the
    count its size and its faded, dotted look come from), not the whole class's."""
    from dashboard.config import DEMO_ATLAS_DIR

    _, context = make_app(DEMO_ATLAS_DIR, tmp_path)
    data = context.data
    checked = 0
    for cls in range(data.num_classes):
        state = ViewState(cls=cls, subset="mistaken").to_dict()
        try:
            shown = data.graph(cls, "mistaken", None)
        except AtlasError:
            continue
        total = data.subset_images(cls, "mistaken", None)
        for k, node in enumerate(shown.ids.tolist()):
            _, panel = run_with_trigger(
                f"{summit_ids.GRAPH}.mouseoverNodeData", {"id": node}, graph.render_hover,
                context, {"id": node}, state,
            )  # fmt: skip
            usage = panel[1].children
            want = f"active in {int(shown.count[k]):,} of {total:,} images of"
            assert usage.startswith(want) and "(mistaken only)" in usage, usage
            assert ("none of these images selects" in usage) == (int(shown.count[k]) == 0)
            checked += 1
    assert checked


@pytest.mark.parametrize("demo_name", ["digits", "wordnet"])
def test_a_class_graph_names_the_units_its_inputs_use_but_it_leaves_out(
    demo_name: str, tmp_path: Path
) -> None:
    """Summit's PageRank can leave out a unit most of a class's inputs select (it happens
    on both demos): the graph's note names exactly those, most used first, each linking to
    its neuron page; a class with none gets no note."""
    from dashboard.config import DEMO_ATLAS_DIR

    _, context = make_app(DEMO_ATLAS_DIR.parent / demo_name, tmp_path)
    data = context.data
    named = 0
    for cls in range(data.num_classes):
        shown = set(data.graph(cls).ids.tolist())
        total = int(data.num_images[cls])
        want = sorted(
            (-int(data.counts(layer)[cls, channel]), layer, channel)
            for layer in range(data.num_layers)
            for channel in range(data.channels[layer])
            if 2 * int(data.counts(layer)[cls, channel]) >= total
            and f"{layer}-{channel}" not in shown
        )
        _, _, message = graph.render_graph(context, ViewState(cls=cls).to_dict())
        links = [c for c in components(message) if c["type"] == "Link"] if message else []
        hrefs = [link["props"]["href"] for link in links]
        assert hrefs == [
            neuron_href(data.layer_names[layer], channel) for _, layer, channel in want[:5]
        ], cls
        named += len(hrefs)
    assert named  # the case occurs on each demo


def test_neuron_panel(small: Any) -> None:
    _, context = small
    style, title, body, figure = neuron.render(context, ViewState(cls=1, node="2-4").to_dict())
    assert style == {} and "Channel 4 of layer2" in title[1]
    assert "/atlas-file/images/02/4-0.png" in str(body)
    assert figure["data"][0]["type"] == "bar"
    hidden = neuron.render(context, ViewState(cls=1).to_dict())
    assert hidden[0] == {"display": "none"}


def test_compare_view(small: Any) -> None:
    _, context = small
    elements, legend, message = compare.render(context, ViewState(cls=1, compare=2).to_dict())
    assert elements and message is None and len(legend) == 3
    none = compare.render(context, ViewState(cls=1).to_dict())
    assert none[0] == [] and "Pick a class" in none[2].children


def test_missing_parts_give_friendly_notes(make_atlas: Any, tmp_path: Path) -> None:
    atlas = make_atlas(tmp_path / "bare", parts=("summit",))
    _, context = make_app(atlas, tmp_path)
    stored = ViewState(cls=1, compare=2, node="1-1").to_dict()
    assert embedding.render(context, stored, None) == (dash.no_update, dash.no_update)
    elements, _, _ = graph.render_graph(context, stored)
    assert elements == []
    _, _, body, _ = neuron.render(context, stored)
    assert "python -m compute" in str(body)
    page = shell.page_layout(context, ViewState())
    text = str(page)
    for part in ("embedding", "graphs"):
        assert f"no '{part}' part" in text


def test_guarded_turns_errors_into_a_note() -> None:
    @guarded(dash.no_update, None, note_at=1)
    def broken() -> Any:
        raise ValueError("boom")

    figure, message = broken()
    assert figure is dash.no_update and "Could not show this view (request" in message.children
    assert "boom" not in message.children  # the exception's text stays in the server's log


def test_page_layout_from_a_junk_query(small: Any) -> None:
    # The fixture registered the explorer page; Dash Pages passes the query as kwargs.
    layout = dash.page_registry["explorer"]["layout"]
    page = layout(**{"class": "zz", "layer": ["9", "1"], "node": "../x", "whatever": "1"})
    store = find_component(page, ids.STATE)
    assert store is not None and store.data == ViewState().to_dict()


# -- routes -----------------------------------------------------------------------------------


def default_data(app: Any) -> Any:
    """The default atlas's data of an app (through the registered view context)."""
    from tests.callbacks.test_atlases import registered_contexts

    with app.server.test_request_context("/"):
        app.server.preprocess_request()
        return registered_contexts(app)[0].data


def test_file_route(small: Any, small_atlas: Path) -> None:
    app, _ = small
    client = app.server.test_client()
    # Page URLs carry the atlas's manifest digest: cached for a year, immutable.
    digest = default_data(app).digest
    response = client.get(f"/atlas-file/~{digest}/images/00/0-0.png")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert f"max-age={IMMUTABLE_MAX_AGE}" in response.headers["Cache-Control"]
    assert "immutable" in response.headers["Cache-Control"]
    # Without it (an old link) the content may change under the URL: revalidated each time;
    # another atlas's digest (a page opened before a rebuild): that file is gone.
    plain = client.get("/atlas-file/images/00/0-0.png")
    assert plain.status_code == 200 and plain.headers["Cache-Control"] == "no-cache"
    assert client.get("/atlas-file/~0123456789abcdef/images/00/0-0.png").status_code == 404
    (small_atlas / "secret.txt").write_text("not listed")
    try:
        for path in (
            "/atlas-file/secret.txt",
            "/atlas-file/manifest.json",
            "/atlas-file/../manifest.json",
            "/atlas-file/images/../manifest.json",
            "/atlas-file/images/%2e%2e/%2e%2e/manifest.json",
            "/atlas-file/%2Fetc%2Fpasswd",
            "/atlas-file/images/00/999-0.png",
        ):
            assert client.get(path).status_code == 404, path
    finally:
        (small_atlas / "secret.txt").unlink()


def test_sparkline_route(small: Any) -> None:
    app, _ = small
    client = app.server.test_client()
    response = client.get("/atlas-spark/1.svg")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    assert "immutable" in response.headers["Cache-Control"]
    assert client.get("/atlas-spark/6.svg").status_code == 404
    assert client.get("/atlas-spark/x.svg").status_code == 404


def test_layout_and_header(small: Any) -> None:
    app, _ = small
    client = app.server.test_client()
    index = client.get("/")
    assert index.status_code == 200 and "Test atlas (6 classes)" in index.get_data(as_text=True)
    assert client.get("/_dash-layout").status_code == 200
    # The header belongs to the page (with several atlases it shows the page's atlas).
    page = json.dumps(dash.page_registry["explorer"]["layout"](), cls=PlotlyJSONEncoder)
    assert "Test atlas (6 classes)" in page and "87.4%" in page
    assert ids.ATLAS_PICKER not in page, "no atlas picker with a single atlas"


# -- command line ----------------------------------------------------------------------------


def test_cli_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dashboard", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0
    for flag in ("--atlas", "--host", "--port", "--debug"):
        assert flag in result.stdout


def test_cli_refuses_a_corrupt_atlas_in_one_line(atlas_copy: Path) -> None:
    (atlas_copy / "layers" / "01" / "activation_counts.npy").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "dashboard", "--atlas", str(atlas_copy)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "layers/01/activation_counts.npy" in lines[0]


def test_class_header_lists_the_classes_it_is_mistaken_for(tmp_path: Path) -> None:
    """The demo atlas records true x predicted counts: the header names the most frequent
    wrong predictions, largest first, each a link comparing the two classes; a class with
    no mistakes, or an atlas without the counts, shows none."""
    from dashboard.config import DEMO_ATLAS_DIR

    _, context = make_app(DEMO_ATLAS_DIR, tmp_path)
    data = context.data
    confusion = data.confusion
    assert confusion is not None
    checked = 0
    for c in range(data.num_classes):
        wrong = [(int(confusion[c, j]), -j) for j in range(data.num_classes) if j != c]
        wrong = sorted((n, j) for n, j in wrong if n > 0)[::-1][:3]  # plain reference
        want = [(-j, n / int(data.num_images[c])) for n, j in wrong]
        assert data.mistaken_for(c) == want
        header = json.dumps(graph.class_header(context, ViewState(cls=c)), cls=PlotlyJSONEncoder)
        if not want:
            assert "mistaken for" not in header
            continue
        checked += 1
        assert "mistaken for" in header
        for other, _ in want:
            assert f"compare={other}" in header and data.names[other] in header
    assert checked > 0, "the demo model makes some mistakes"
    # The compare selector suggests those classes first, then the most similar ones.
    for c in range(data.num_classes):
        mistaken = [other for other, _ in data.mistaken_for(c)]
        options = compare.compare_options(context, None, ViewState(cls=c))
        values = [o["value"] for o in options]
        assert values[: len(mistaken)] == mistaken
        assert sorted(values) == sorted(set(range(data.num_classes)) - {c})

    _, plain = make_app(make_plain_atlas(tmp_path), tmp_path / "plain")
    assert plain.data.confusion is None and plain.data.mistaken_for(0) == []
    header = json.dumps(graph.class_header(plain, ViewState(cls=0)), cls=PlotlyJSONEncoder)
    assert "mistaken for" not in header


def make_plain_atlas(tmp_path: Path) -> Path:
    from tests.conftest import write_test_atlas

    return write_test_atlas(tmp_path / "no-confusion")
