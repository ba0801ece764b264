"""Neuron pictures (issue 3, dashboard side): URL parsing, influence sums against a dense
computation, the neuron page's parts, the featurevis toggle and its fallbacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from compute.atlas import Atlas
from dashboard import data as atlas_data
from dashboard.data import AtlasData, incoming_counts, outgoing_counts, top_entries
from dashboard.links import class_href, neuron_href, parse_neuron_path
from dashboard.state import StateBounds, ViewState
from dashboard.views.common import ViewContext
from dashboard.views.summit import graph, neuron, neuron_page
from dashboard.views.summit import ids as summit_ids
from dashboard.views.summit import state as summit_state

NAMES = ("conv1", "features.3", "a/b", "3")
CHANNELS = (8, 12, 10, 5)


def context_for(atlas: Path, tmp_path: Path) -> ViewContext:
    data = atlas_data.load(str(atlas), str(tmp_path / "cache"))
    return ViewContext(data=data, file_prefix="/atlas-file/", page_prefix="/")


@pytest.fixture
def fv(featurevis_atlas: Path, tmp_path: Path) -> ViewContext:
    return context_for(featurevis_atlas, tmp_path)


@pytest.fixture
def plain(small_atlas: Path, tmp_path: Path) -> ViewContext:
    return context_for(small_atlas, tmp_path)


# -- URLs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "channel", "expected"),
    [
        ("conv1", "0", (0, 0)),
        ("features.3", "11", (1, 11)),
        ("a%2Fb", "9", (2, 9)),  # URL-quoted name
        ("a/b", "9", (2, 9)),
        ("1", "4", (1, 4)),  # a layer index
        ("3", "4", (3, 4)),  # a layer literally called "3" wins over index 3 (same here)
        ("2", "4", (2, 4)),
        ("features.3", "12", None),  # channel out of range
        ("features.3", "-1", None),
        ("features.3", "1.5", None),
        ("features.3", "x", None),
        ("features.3", "", None),
        ("nope", "1", None),
        ("9", "1", None),  # layer index out of range
        ("", "1", None),
        (None, None, None),
        (["conv1"], "1", None),
    ],
)
def test_parse_neuron_path(layer: Any, channel: Any, expected: Any) -> None:
    assert parse_neuron_path(layer, channel, NAMES, CHANNELS) == expected


def test_name_wins_over_index() -> None:
    names, channels = ("x", "0"), (3, 7)
    assert parse_neuron_path("0", "5", names, channels) == (1, 5)
    assert parse_neuron_path("1", "5", names, channels) == (1, 5)


@pytest.mark.parametrize("name", NAMES)
def test_neuron_href_round_trips(name: str) -> None:
    href = neuron_href(name, 4, "/")
    assert href.startswith("/neuron/") and href.count("/") == 3  # slashes in names are quoted
    _, _, layer, channel = href.split("/")
    assert parse_neuron_path(layer, channel, NAMES, CHANNELS) == (NAMES.index(name), 4)
    assert neuron_href(name, 4, "/app/").startswith("/app/neuron/")


def test_class_href_is_an_explorer_state() -> None:
    href = class_href(3, "/", (1, 7))
    assert href == "/" + ViewState(cls=3, node="1-7").to_search()
    assert ViewState.from_query(href[1:]) == ViewState(cls=3, node="1-7")


BOUNDS = StateBounds(num_classes=10, num_layers=3, channels=(8, 8, 8))


def test_pictures_in_the_url_state() -> None:
    assert ViewState.from_query("?pics=vis").pics == "vis"
    assert ViewState.from_query("?pics=crop").pics == "crop"
    assert ViewState.from_query("?pics=junk").pics is None
    state = ViewState(cls=2, pics="crop")
    assert ViewState.from_query(state.to_search()) == state
    assert "pics" not in ViewState(cls=2).to_search()
    assert summit_state.apply_event(ViewState(), summit_ids.PICTURES, "crop", BOUNDS).pics == "crop"
    assert summit_state.apply_event(ViewState(), summit_ids.PICTURES, "junk", BOUNDS).pics is None


# -- influence sums against plain dense loops ----------------------------------------------------


def test_influence_sums_match_dense() -> None:
    rng = np.random.default_rng(1)
    classes, out, n_in = 4, 5, 6
    shape = (classes * out, n_in)
    dense = rng.integers(0, 3, size=shape) * (rng.random(shape) > 0.6)
    expected = np.zeros((out, n_in), dtype=np.int64)
    for c in range(classes):
        for i in range(out):
            for j in range(n_in):
                expected[i, j] += dense[c * out + i, j]
    matrix = sp.csr_array(dense)
    for i in range(out):
        np.testing.assert_array_equal(incoming_counts(matrix, out, i), expected[i])
    for j in range(n_in):
        np.testing.assert_array_equal(outgoing_counts(matrix, out, j), expected[:, j])


def test_top_entries() -> None:
    top, values = top_entries(np.array([0, 3, 5, 3, 0, 1]), 3)
    assert top.tolist() == [2, 1, 3] and values.tolist() == [5, 3, 3]  # ties: lower index first
    assert top_entries(np.zeros(4), 3)[0].tolist() == []
    assert top_entries(np.array([2, 1]), 10)[0].tolist() == [0, 1]


def _dense_summed(atlas: Atlas, layer: int) -> np.ndarray:
    out = atlas.layers[layer].channels
    full = atlas.influence_counts(layer).toarray()
    return sum(full[c * out : (c + 1) * out] for c in range(atlas.num_classes))


def _expected(values: np.ndarray, k: int) -> list[tuple[int, int]]:
    pairs = [(int(v), j) for j, v in enumerate(values.tolist()) if v > 0]
    pairs.sort(key=lambda p: (-p[0], p[1]))
    return [(j, v) for v, j in pairs[:k]]


@pytest.mark.parametrize(("layer", "channel"), [(0, 3), (1, 0), (1, 7), (2, 9)])
def test_incoming_and_outgoing_match_dense(plain: ViewContext, layer: int, channel: int) -> None:
    data: AtlasData = plain.data
    atlas = data.atlas
    k = 4
    if layer == 0:
        assert data.incoming(layer, channel, k) == []
    else:
        dense = _dense_summed(atlas, layer)
        expected = [(layer - 1, j, n) for j, n in _expected(dense[channel], k)]
        assert data.incoming(layer, channel, k) == expected
    if layer == data.num_layers - 1:
        assert data.outgoing(layer, channel, k) == []
    else:
        dense = _dense_summed(atlas, layer + 1)
        expected = [(layer + 1, i, n) for i, n in _expected(dense[:, channel], k)]
        assert data.outgoing(layer, channel, k) == expected


# -- the neuron page ------------------------------------------------------------------------------


def _find(component: Any, component_id: str) -> Any:
    """The component with ``component_id`` inside a layout tree, or ``None``."""
    if getattr(component, "id", None) == component_id:
        return component
    children = getattr(component, "children", None)
    if isinstance(children, (list, tuple)):
        for child in children:
            found = _find(child, component_id)
            if found is not None:
                return found
    elif children is not None and not isinstance(children, str):
        return _find(children, component_id)
    return None


def test_neuron_page_parts(fv: ViewContext) -> None:
    page = neuron_page.page(fv, layer="layer1", channel="3")
    assert page.id == summit_ids.NEURON_PAGE
    text = str(page)
    assert "/atlas-file/featurevis/01/3-vis.png" in text
    for k in range(4):
        assert f"/atlas-file/featurevis/01/3-div-{k}.png" in text
    assert "/atlas-file/images/01/3-0.png" in text
    for part in (
        summit_ids.NEURON_PAGE_VIS,
        summit_ids.NEURON_PAGE_DIVERSITY,
        summit_ids.NEURON_PAGE_EXAMPLES,
        summit_ids.NEURON_PAGE_CLASSES,
        summit_ids.NEURON_PAGE_INCOMING,
        summit_ids.NEURON_PAGE_OUTGOING,
    ):
        assert _find(page, part) is not None, part
    incoming = str(_find(page, summit_ids.NEURON_PAGE_INCOMING))
    for layer, channel, _ in fv.data.incoming(1, 3, neuron_page.TOP_INFLUENCES):
        assert neuron_href(fv.data.layer_names[layer], channel) in incoming
    classes = str(_find(page, summit_ids.NEURON_PAGE_CLASSES))
    top, _ = fv.data.top_classes(1, 3, 3)
    assert class_href(int(top[0]), "/", (1, 3)) in classes
    # The first layer has no incoming influences, the last no outgoing: a note, no error.
    assert "first layer" in str(neuron_page.page(fv, layer="0", channel="0"))
    assert "No later layer" in str(neuron_page.page(fv, layer="layer2", channel="0"))


def test_a_later_channel_without_incoming_influence_is_not_the_first_layer(
    fv: ViewContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel of a later layer that no earlier channel ever influenced (in the recorded
    top-k) says so; it once said "This is the first layer"."""
    monkeypatch.setattr(type(fv.data), "incoming", lambda self, layer, channel, top: [])
    text = str(neuron_page.page(fv, layer="layer1", channel="3"))
    assert "first layer" not in text
    assert "No channel of layer0 was ever among the strongest influences" in text
    assert "first layer" in str(neuron_page.page(fv, layer="0", channel="0"))


@pytest.mark.parametrize(
    ("layer", "channel"),
    [("nope", "1"), ("layer1", "99"), ("layer1", "x"), (None, None), ("layer1", "-3")],
)
def test_unknown_neuron_is_a_friendly_page(fv: ViewContext, layer: Any, channel: Any) -> None:
    page = neuron_page.page(fv, layer=layer, channel=channel)
    assert page.id == summit_ids.NEURON_NOT_FOUND and "Neuron not found" in str(page)
    assert neuron_page.title(fv, layer=layer, channel=channel).startswith("Neuron not found")


def test_any_other_unknown_path_is_a_friendly_page(fv: ViewContext) -> None:
    page = neuron_page.page_not_found(fv)
    assert page.id == summit_ids.PAGE_NOT_FOUND and "/neuron/" in str(page)


def test_neuron_page_without_featurevis_says_how(plain: ViewContext) -> None:
    page = str(neuron_page.page(plain, layer="layer1", channel="3"))
    assert "python -m compute featurevis --atlas" in page and "featurevis/" not in page
    # The atlas is named by its directory only: a deployment never shows its server paths.
    atlas = plain.data.atlas.path
    assert f"--atlas {atlas.name}" in page and str(atlas.parent) not in page


def test_neuron_page_on_a_bare_atlas(make_atlas: Any, tmp_path: Path) -> None:
    context = context_for(make_atlas(tmp_path / "bare", parts=("summit",)), tmp_path)
    page = str(neuron_page.page(context, layer="layer1", channel="3"))
    assert "python -m compute build" in page and "--out bare --overwrite" in page
    assert "python -m compute featurevis" in page


# -- the graph with featurevis --------------------------------------------------------------------


def _images(elements: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["img"] for e in elements if "img" in e["data"]]


def test_graph_nodes_show_featurevis_by_default(fv: ViewContext) -> None:
    elements, _, _ = graph.render_graph(fv, ViewState(cls=1).to_dict())
    images = _images(elements)
    assert images and all("/featurevis/" in i and i.endswith("-vis.png") for i in images)
    elements, _, _ = graph.render_graph(fv, ViewState(cls=1, pics="crop").to_dict())
    assert all("/images/" in i for i in _images(elements))
    toggle = _find(graph.pictures_toggle(fv.data, ViewState()), summit_ids.PICTURES)
    assert toggle.value == "vis" and not toggle.options[0]["disabled"]


def test_graph_without_featurevis_explains(plain: ViewContext) -> None:
    elements, _, _ = graph.render_graph(plain, ViewState(cls=1, pics="vis").to_dict())
    assert all("/images/" in i for i in _images(elements))
    block = graph.pictures_toggle(plain.data, ViewState(pics="vis"))
    toggle = _find(block, summit_ids.PICTURES)
    assert toggle.value == "crop" and toggle.options[0]["disabled"]
    assert "python -m compute featurevis --atlas" in str(_find(block, summit_ids.PICTURES_NOTE))


def test_hover_shows_diversity_and_examples(fv: ViewContext) -> None:
    from contextvars import copy_context

    from dash._callback_context import context_value
    from dash._utils import AttributeDict

    def run() -> Any:
        context_value.set(
            AttributeDict(triggered_inputs=[{"prop_id": f"{summit_ids.GRAPH}.mouseoverNodeData"}])
        )
        return graph.render_hover(fv, {"id": "1-3"}, ViewState(cls=1).to_dict())

    _, panel = copy_context().run(run)
    text = str(panel)
    assert "featurevis/01/3-div-0.png" in text and "images/01/3-0.png" in text


def test_neuron_panel_links_to_the_page(fv: ViewContext) -> None:
    _, _, body, _ = neuron.render(fv, ViewState(cls=1, node="1-3").to_dict())
    link = _find(body, summit_ids.NEURON_OPEN)
    assert link is not None and link.href == "/neuron/layer1/3"


def test_compare_follows_the_picture_toggle(fv: ViewContext) -> None:
    from dashboard.views.summit import compare

    elements, _, _ = compare.render(fv, ViewState(cls=1, compare=2).to_dict())
    assert all("/featurevis/" in i for i in _images(elements))
    elements, _, _ = compare.render(fv, ViewState(cls=1, compare=2, pics="crop").to_dict())
    assert all("/images/" in i for i in _images(elements))


def test_neuron_urls_are_served(featurevis_atlas: Path, tmp_path: Path) -> None:
    """Every neuron URL, known or not, answers the app's page (200), never a server error."""
    from dashboard.config import Settings
    from dashboard.factory import create_app

    app = create_app(Settings(atlas_dir=featurevis_atlas, cache_dir=tmp_path / "cache"))
    client = app.server.test_client()
    for path in ("/neuron/layer1/3", "/neuron/nope/1", "/neuron/layer1/x", "/neuron/a%2Fb/1"):
        assert client.get(path).status_code == 200, path
    assert client.get("/atlas-file/featurevis/01/3-div-2.png").status_code == 200


def test_a_partial_featurevis_part_says_which_layers_have_it(
    make_atlas: Any, tmp_path: Path
) -> None:
    """After ``featurevis --layers layer1`` the graph says the other layers show crops and
    how to add them, and ``verify`` reports the part as partial (not complete)."""
    import subprocess
    import sys

    from tests.conftest import add_fake_featurevis

    atlas = add_fake_featurevis(make_atlas(tmp_path / "partial"), layers=[1])
    assert Atlas.open(atlas).featurevis_channels() == [0, 12, 0]
    context = context_for(atlas, tmp_path)
    text = str(graph.pictures_toggle(context.data, ViewState()))
    assert "only for layer1" in text and "layer0, layer2 show dataset crops" in text
    assert "featurevis --atlas partial --layers layer0 layer2" in text
    result = subprocess.run(
        [sys.executable, "-m", "compute", "verify", str(atlas)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "featurevis: PARTIAL (layer0 0/8, layer1 12/12, layer2 0/10 channels)" in result.stdout
    complete = add_fake_featurevis(make_atlas(tmp_path / "complete"))
    assert graph.featurevis_partial(context_for(complete, tmp_path / "c").data) is None
