"""The Topology view without a browser: pie slices, parameter clamping, URL state, render."""

from __future__ import annotations

import copy
import itertools
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dash import no_update

from compute.atlas import Atlas, update_atlas
from compute.topology.part import default_graph
from dashboard import data as atlas_data
from dashboard.state import StateBounds, ViewState, clamp
from dashboard.views.common import ViewContext
from dashboard.views.topology import callbacks as topology_callbacks
from dashboard.views.topology import data as topology_data
from dashboard.views.topology import ids as topology_ids
from dashboard.views.topology import layout as topology_layout
from dashboard.views.topology import state as topology_state
from dashboard.views.topology.data import (
    MAX_SLICES,
    SELECTED,
    legend_classes,
    pie_slices,
    topology_elements,
)
from tests.topology_atlas import CAPPED_LAYER, SHAPES_QUERY, write_topology_atlas


@pytest.fixture(scope="module")
def topo_atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_topology_atlas(tmp_path_factory.mktemp("topo") / "atlas")


def context_for(atlas: Path, tmp_path: Path) -> ViewContext:
    data = atlas_data.load(str(atlas), str(tmp_path / "cache"))
    return ViewContext(data=data, file_prefix="/atlas-file/")


# -- pies ------------------------------------------------------------------------------


def test_pie_slices_top_classes_other_and_selected() -> None:
    counts = np.arange(40, 0, -1)  # 40 classes, class 0 largest
    slices = pie_slices(counts, selected=39)
    assert len(slices) == MAX_SLICES
    assert [c for c, _ in slices[:14]] == list(range(14))
    assert slices[14][0] == 39 and slices[-1][0] == -1  # the selected class, then "other"
    assert sum(p for _, p in slices) == pytest.approx(100.0)
    few = pie_slices(np.array([0, 2, 6, 0]), selected=0)  # selected absent: not shown
    assert few == [(2, 75.0), (1, 25.0)]
    assert pie_slices(np.zeros(5, dtype=int), selected=1) == []


def test_elements_pies_sizes_and_jaccard_filter(topo_atlas: Path, tmp_path: Path) -> None:
    context = context_for(topo_atlas, tmp_path)
    mapper = topology_data.mapper_data(context.data)
    state = ViewState.from_query("?" + SHAPES_QUERY, num_classes=6, num_layers=3)
    result = mapper.result(0, mapper.params(state, 0)[0])
    elements = topology_elements(result, selected=1, jaccard_min=0.0)
    nodes = [e for e in elements if "source" not in e["data"]]
    edges = [e for e in elements if "source" in e["data"]]
    assert len(nodes) == result.graph.num_nodes and len(edges) == result.graph.num_edges
    for e in nodes:
        shares = [e["data"][f"p{i}"] for i in range(1, MAX_SLICES + 1)]
        assert sum(shares) == pytest.approx(100.0, abs=0.01)
        assert "pie" in e["classes"]
    big = max(nodes, key=lambda e: e["data"]["count"])
    assert big["data"]["size"] == max(e["data"]["size"] for e in nodes)
    fewer = topology_elements(result, selected=1, jaccard_min=0.5)
    kept = [e for e in fewer if "source" in e["data"]]
    assert all(e["data"]["jaccard"] >= 0.5 for e in kept) and len(kept) < len(edges)
    norm = topology_elements(result, selected=1, colour="norm")
    assert all(e["data"]["colour"].startswith("#") for e in norm if "source" not in e["data"])
    # Every colouring carries the same data keys (only the classes differ): a colouring
    # switch patches the elements, and a key left out would keep the pie's old value.
    for colour in ("norm", "share"):
        other = topology_elements(result, selected=1, colour=colour)
        assert [sorted(e["data"]) for e in other] == [sorted(e["data"]) for e in elements]


def test_colour_legend_names_what_the_colours_mean(topo_atlas: Path, tmp_path: Path) -> None:
    context = context_for(topo_atlas, tmp_path)
    names = context.data.names
    base = f"?{SHAPES_QUERY}&tlayer=0&class=1"
    pies = ViewState.from_query(base, num_classes=6, num_layers=3)
    status = str(topology_callbacks.render(context, pies.to_dict())[1])
    mapper = topology_data.mapper_data(context.data)
    result = mapper.result(0, mapper.params(pies, 0)[0])
    named = legend_classes(result.stats.class_counts, 1)
    assert named[0] == (1, SELECTED)  # the selected class first, in orange
    totals = result.stats.class_counts.sum(axis=0)
    assert [c for c, _ in named[1:] if c >= 0] == sorted(
        (c for c in range(6) if c != 1 and totals[c] > 0), key=lambda c: (-totals[c], c)
    )[: len(named) - 1]
    for c, colour in named:
        if c >= 0:
            assert names[c] in status and colour in status
    for colour, words in (("norm", "mean L2 norm"), ("share", f"share of {names[1]}")):
        state = ViewState.from_query(f"{base}&tcol={colour}", num_classes=6, num_layers=3)
        assert words in str(topology_callbacks.render(context, state.to_dict())[1])


# -- parameters and URL --------------------------------------------------------------------


def test_clamp_and_events() -> None:
    bounds = StateBounds(num_classes=10, num_layers=3, channels=(8, 8, 8))
    assert clamp("250", 10, 100) == 100 and clamp(-3, 0, 100) == 0 and clamp("x", 0, 1) is None
    state = ViewState(topo_node=3, topo_shape=1)
    new, message = topology_state.apply_topology_event(
        state, topology_ids.TOPO_INTERVALS, 500, bounds
    )
    assert new.topo_intervals == 100 and "using 100" in (message or "")
    assert new.topo_node is None and new.topo_shape is None  # a new graph
    same, message = topology_state.apply_topology_event(
        state, topology_ids.TOPO_INTERVALS, "abc", bounds
    )
    assert same == state and "must be a number" in (message or "")
    kept, _ = topology_state.apply_topology_event(state, topology_ids.TOPO_JACCARD, 40, bounds)
    assert kept.topo_jaccard == 40 and kept.topo_node == 3  # same graph, fewer edges
    bad, message = topology_state.apply_topology_event(
        state, topology_ids.TOPO_METRIC, "manhattan", bounds
    )
    assert bad == state and message
    picked, _ = topology_state.apply_topology_event(
        state, topology_ids.TOPO_GRAPH, {"node": 7}, bounds
    )
    assert picked.topo_node == 7
    shape, _ = topology_state.apply_topology_event(
        state, {"type": "topo-shape", "index": 2}, 1, bounds
    )
    assert shape.topo_shape == 2
    cleared, _ = topology_state.apply_topology_event(
        shape, {"type": "topo-shape", "index": 2}, 2, bounds
    )
    assert cleared.topo_shape is None  # clicking the selected shape again clears it
    layer, message = topology_state.apply_topology_event(state, topology_ids.TOPO_LAYER, 9, bounds)
    assert layer == state and message


def test_url_round_trip_of_topology_fields() -> None:
    state = ViewState(
        cls=2, topo_layer=1, topo_intervals=25, topo_overlap=45, topo_eps=150,
        topo_cluster="hdbscan", topo_metric="cosine", topo_jaccard=20, topo_colour="share",
        topo_node=4, topo_shape=0,
    )  # fmt: skip
    search = state.to_search()
    assert "ti=25" in search and "tcol=share" in search and "tshape=0" in search
    assert ViewState.from_query(search, num_classes=6, num_layers=3) == state
    assert ViewState.from_dict(state.to_dict(), num_classes=6, num_layers=3) == state
    assert "ti=" not in ViewState().to_search()  # defaults stay out of the URL
    odd = ViewState.from_query("?ti=5&to=99&te=x&tc=kmeans&tlayer=7", num_layers=3)
    assert (odd.topo_intervals, odd.topo_overlap) == (10, 60)
    assert odd.topo_eps in (100, None)  # junk: the default (None = the atlas's, once optional)
    assert odd.topo_cluster == "dbscan" and odd.topo_layer is None


# -- render --------------------------------------------------------------------------------


def test_render_node_panel_shapes_and_embedding_classes(topo_atlas: Path, tmp_path: Path) -> None:
    context = context_for(topo_atlas, tmp_path)
    state = ViewState.from_query(
        f"?{SHAPES_QUERY}&tlayer=0&tnode=0&tshape=1&class=1", num_classes=6, num_layers=3
    )
    elements, status, message, shapes, panel, classes, button = topology_callbacks.render(
        context, state.to_dict()
    )
    assert button == {"display": "none"}  # exact: no recompute button
    text = str(status)
    assert "exact" in text and "coverage" in text
    assert message is None
    assert str(shapes).count("flare") == 3
    assert "Node" in str(panel) and "topo-class-table" in str(panel)
    # The short name "interval/cluster" is spelled out beside it.
    # the short name "i/c" spelled out with the same numbers (not 1-based beside 0-based)
    name = re.search(r"Node (\d+)/(\d+) ", str(panel))
    assert name is not None
    spelled = f"(lens interval {name[1]}, cluster {name[2]}, both counted from 0)"
    assert spelled in str(panel)
    assert "mapper/crops/00/" in str(panel)
    assert "mapper/inversions/00/" in str(panel)  # the node's inversion image
    assert classes and all(0 <= c < 6 for c in classes)
    shape_nodes = [e for e in elements if "in-shape" in e.get("classes", "")]
    assert len(shape_nodes) >= 3
    loop = ViewState.from_query(f"?{SHAPES_QUERY}&tlayer=1", num_classes=6, num_layers=3)
    assert "loop 1" in str(topology_callbacks.render(context, loop.to_dict())[3])
    # Layer 1 has no inversion images: the panel says which nodes have them.
    other = ViewState.from_query(f"?{SHAPES_QUERY}&tlayer=1&tnode=0", num_classes=6, num_layers=3)
    panel = str(topology_callbacks.render(context, other.to_dict())[4])
    assert "mapper/inversions/" not in panel and "not one of them" in panel


def test_missing_part_note_and_refused_direct_clustering(
    small_atlas: Path, topo_atlas: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = context_for(small_atlas, tmp_path)
    page = str(topology_layout.layout(context, ViewState()))
    assert "no 'mapper' part" in page and "python -m compute build" in page
    assert topology_callbacks.render(context, ViewState().to_dict())[0] == []
    topo = context_for(topo_atlas, tmp_path)
    monkeypatch.setattr("dashboard.views.topology.data.DIRECT_LIMIT", 100)
    state = ViewState(topo_cluster="hdbscan", topo_layer=2)
    _, _, message, *_ = topology_callbacks.render(topo, state.to_dict())
    assert "limit 100" in str(message) and "DBSCAN" in str(message)


def test_approximate_graph_note_and_exact_recompute(
    topo_atlas: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A capped index gives an approximate graph, said so, until "Recompute exactly"."""
    context = context_for(topo_atlas, tmp_path)
    # Samples this small are always clustered exactly; pretend the sample is large.
    monkeypatch.setattr("dashboard.views.topology.data.EXACT_POINTS", 100)
    state = ViewState(topo_layer=CAPPED_LAYER, topo_intervals=10, topo_overlap=30)
    _, status, message, _, _, _, button = topology_callbacks.render(context, state.to_dict())
    assert "approximate" in str(status)
    assert "Approximate graph" in str(message) and "the 4 nearest" in str(message)
    assert button is None  # shown
    mapper = topology_data.mapper_data(context.data)
    params = mapper.params(state, CAPPED_LAYER)[0]
    approximate = mapper.result(CAPPED_LAYER, params)
    # Too many pairs for an exact recomputation: refused with a message, nothing breaks.
    monkeypatch.setattr("dashboard.views.topology.data.EXACT_MAX_PAIRS", 10)
    _, status, message, _, _, _, _ = topology_callbacks.render(context, state.to_dict(), exact=True)
    assert "would compare" in str(message) and "approximate" in str(status)
    monkeypatch.setattr("dashboard.views.topology.data.EXACT_MAX_PAIRS", 10**9)
    _, status, message, _, _, _, button = topology_callbacks.render(
        context, state.to_dict(), exact=True
    )
    assert "exact" in str(status) and "approximate" not in str(status)
    assert button == {"display": "none"}
    assert message is None
    exact = mapper.result(CAPPED_LAYER, params)  # remembered: a later render stays exact
    assert exact.graph.exact and exact.approximation is None
    sample = np.asarray(mapper.sample(CAPPED_LAYER).vectors)
    from compute.topology.mapper import compute_mapper

    reference = compute_mapper(sample, params)
    assert [exact.graph.members(k).tolist() for k in range(exact.graph.num_nodes)] == [
        reference.members(k).tolist() for k in range(reference.num_nodes)
    ]
    assert not approximate.graph.exact


def test_atlas_defaults_fill_unset_parameters(topo_atlas: Path, tmp_path: Path) -> None:
    """Parameters the state leaves unset (None) come from the atlas (default_params here)."""
    from dataclasses import replace

    from compute.topology.mapper import default_params

    context = context_for(topo_atlas, tmp_path)
    mapper = topology_data.mapper_data(context.data)
    unset = replace(ViewState(), topo_intervals=None, topo_overlap=None, topo_eps=None)
    expected = default_params(600)  # the test atlas stores no defaults: its sample size
    assert mapper.settings(unset) == (
        expected.intervals,
        round(100 * expected.overlap),
        round(100 * expected.eps_scale),
    )
    assert mapper.settings(ViewState(topo_intervals=25, topo_overlap=45, topo_eps=150)) == (
        25,
        45,
        150,
    )


# -- class switch: a patch of the shown graph ------------------------------------------------


def apply_patch(value: list[Any], patch: Any) -> list[Any]:
    """What the Dash renderer does with a ``Patch`` of a list (``Assign`` at an index only:
    all this view sends)."""
    out = copy.deepcopy(value)
    for op in patch.to_plotly_json()["operations"]:
        assert op["operation"] == "Assign" and len(op["location"]) == 1, op
        out[op["location"][0]] = op["params"]["value"]
    return out


@pytest.mark.parametrize("colour", ["pie", "share", "norm"])
def test_a_class_switch_sends_the_whole_graph(
    topo_atlas: Path, tmp_path: Path, colour: str
) -> None:
    """Every switch between two classes redraws the whole graph, equal to a full render of
    the new state: a patch addressed by list index was applied to another list while a
    slow recomputation was in flight (tests/e2e/test_topology_e2e.py)."""
    context = context_for(topo_atlas, tmp_path)
    base = ViewState.from_query(
        f"?{SHAPES_QUERY}&tlayer=0&tnode=0&tshape=1&tcol={colour}", num_classes=6, num_layers=3
    )
    for old, new in itertools.permutations(range(6), 2):
        shown = topology_callbacks.update(context, base.with_(cls=old).to_dict(), None)[-1]
        after = topology_callbacks.update(context, base.with_(cls=new).to_dict(), shown)
        full = topology_callbacks.render(context, base.with_(cls=new).to_dict())
        assert after[0] == full[0], (old, new)
        assert str(after[1]) == str(full[1]) and str(after[4]) == str(full[4])
        assert after[7] == {**shown, "cls": new}


def test_topology_update_sends_nothing_or_everything(topo_atlas: Path, tmp_path: Path) -> None:
    """Unchanged drawing (another view's change): nothing is sent. Another drawing (a
    parameter, the colour, an opened node) or a missing/junk key: a full render."""
    context = context_for(topo_atlas, tmp_path)
    state = ViewState.from_query(f"?{SHAPES_QUERY}&tlayer=0&class=2", num_classes=6, num_layers=3)
    first = topology_callbacks.update(context, state.to_dict(), None)
    shown = first[-1]
    assert first[0] == topology_callbacks.render(context, state.to_dict())[0]
    assert (
        topology_callbacks.update(context, state.with_(node_min=40).to_dict(), shown)
        == (no_update,) * 8
    )
    for changed in (
        state.with_(topo_colour="norm"),
        state.with_(topo_node=1),
        state.with_(topo_jaccard=50),
        state.with_(topo_layer=1),
        state.with_(topo_intervals=12),
    ):
        out = topology_callbacks.update(context, changed.to_dict(), shown)
        assert out[0] == topology_callbacks.render(context, changed.to_dict())[0]
        assert out[-1] != shown
    for junk in ({"cls": "x"}, {**shown, "cls": True}, [1], "shown", {**shown, "layer": 9}):
        out = topology_callbacks.update(context, state.with_(cls=3).to_dict(), junk)
        assert out[0] == topology_callbacks.render(context, state.with_(cls=3).to_dict())[0]
    # "Recompute exactly" always redraws.
    exact = topology_callbacks.update(context, state.to_dict(), shown, exact=True)
    assert isinstance(exact[0], list)


def test_the_default_graph_is_the_one_featurevis_inverted(topo_atlas: Path, tmp_path: Path) -> None:
    """With no Mapper parameter in the URL the view draws the atlas's default graph, every
    stored field included (``min_samples`` and unrounded numbers): the graph whose nodes
    ``compute featurevis --mapper-only`` renders inversions for. The view used to rebuild
    the parameters from rounded percentages and the class's own ``min_samples``."""
    atlas = tmp_path / "atlas"
    shutil.copytree(topo_atlas, atlas)
    defaults = {"intervals": 13, "overlap": 0.333, "eps_scale": 1.25, "min_samples": 5}
    with update_atlas(atlas) as sink:
        parameters = json.loads((atlas / "manifest.json").read_text())["parameters"]
        parameters["mapper"]["defaults"] = defaults
        sink.manifest_updates["parameters"] = parameters  # type: ignore[attr-defined]
    context = context_for(atlas, tmp_path)
    mapper = topology_data.mapper_data(context.data)
    for layer in range(3):
        params, _ = mapper.params(ViewState(), layer)
        assert (params.intervals, params.overlap, params.eps_scale, params.min_samples) == (
            13,
            0.333,
            1.25,
            5,
        )
        shown = mapper.result(layer, params).graph
        inverted = default_graph(Atlas.open(atlas), layer)
        assert [shown.node_key(k) for k in range(shown.num_nodes)] == [
            inverted.node_key(k) for k in range(inverted.num_nodes)
        ]
    # A parameter in the URL changes that field only.
    moved, _ = mapper.params(ViewState(topo_intervals=20), 0)
    assert (moved.intervals, moved.overlap, moved.min_samples) == (20, 0.333, 5)
