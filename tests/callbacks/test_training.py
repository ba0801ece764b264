"""The Training view without a browser: grid filtering, share ordering, figures vs the
arrays, the reducer, URL state and the missing-part note."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dashboard import data as atlas_data
from dashboard.config import DEMO_ATLAS_DIR
from dashboard.state import StateBounds, ViewState
from dashboard.views.common import ViewContext
from dashboard.views.training import callbacks as training_callbacks
from dashboard.views.training import ids as training_ids
from dashboard.views.training import layout as training_layout
from dashboard.views.training import state as training_state
from dashboard.views.training.data import (
    GRID_LIMIT,
    epoch_figure,
    filter_rows,
    norms_figure,
    ridge_figure,
    share_figure,
    share_order,
    shown_classes,
    trace_data,
    uncertain_rows,
)

NAMES = ("a", "b", "c", "d")


def context_for(atlas: Path, tmp_path: Path) -> ViewContext:
    return ViewContext(data=atlas_data.load(str(atlas), str(tmp_path / "cache")), file_prefix="/f/")


# -- pure helpers ------------------------------------------------------------------------------


def test_filter_rows_modes_and_class() -> None:
    label = np.array([0, 1, 1, 2, 0, 2])
    pred = np.array([0, 1, 2, 2, 1, 2])
    unsure = np.array([False, False, False, True, False, False])
    assert filter_rows(label, pred, unsure, "all", None).tolist() == [0, 1, 2, 3, 4, 5]
    assert filter_rows(label, pred, unsure, "wrong", None).tolist() == [2, 4]
    assert filter_rows(label, pred, unsure, "uncertain", None).tolist() == [2, 3, 4]
    # A class keeps images labelled or predicted as it.
    assert filter_rows(label, pred, unsure, "all", 1).tolist() == [1, 2, 4]
    assert filter_rows(label, pred, unsure, "wrong", 2).tolist() == [2]
    assert filter_rows(label, pred, unsure, "all", 3).tolist() == []


def test_uncertain_rows_is_the_smallest_lead() -> None:
    share = np.array([[0.9, 0.1], [0.5, 0.45], [0.2, 0.8], [0.3, 0.7]])
    pred = np.array([0, 0, 1, 1])
    mask = uncertain_rows(share, pred, 0.25)
    assert mask.tolist() == [False, True, False, False]
    assert uncertain_rows(np.zeros((0, 2)), np.zeros(0, dtype=int), 0.1).tolist() == []


def test_share_order_largest_first_ties_lower_index_regularisation_excluded() -> None:
    share = np.array([0.1, 0.5, -0.2, 0.5, 9.0])  # last: regularisation
    assert share_order(share).tolist() == [1, 3, 0, 2]


def test_share_figure_matches_the_array() -> None:
    share = np.array([0.1, 0.6, -0.2, 0.45, 0.05])
    fig = share_figure(share, NAMES, predicted=1, true=3)
    bar = fig["data"][0]
    assert bar["y"] == ["b", "d", "a", "c", "regularisation"]
    assert bar["x"] == pytest.approx([0.6, 0.45, 0.1, -0.2, 0.05])
    assert bar["customdata"] == [1, 3, 0, 2, -1]
    colours = bar["marker"]["color"]
    assert colours[0] != colours[1] != colours[2]  # predicted, true, other
    assert len(set(colours[2:4])) == 1
    json.dumps(fig)


def test_ridge_figure_one_ridge_per_class_scaled_to_peak() -> None:
    hist = np.array([[0, 2, 4, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 3, 6]], dtype=float)
    edges = np.linspace(-1, 1, 5)
    fig = ridge_figure(hist, edges, NAMES, predicted=3, unit="x")
    ridges = [t for t in fig["data"] if t.get("fill") == "tonexty"]
    assert [t["name"] for t in ridges] == list(NAMES)
    assert ridges[0]["x"] == pytest.approx([-0.75, -0.25, 0.25, 0.75])
    # Class 0 sits on baseline 3 (top), scaled so its peak is 0.9 above it.
    assert np.array(ridges[0]["y"]) - 3 == pytest.approx([0, 0.45, 0.9, 0])
    assert ridges[2]["y"] == pytest.approx([1, 1, 1, 1])  # all-zero class: flat
    assert ridges[0]["customdata"] == [0, 2, 4, 0]
    assert ridges[3]["line"]["width"] > ridges[0]["line"]["width"]  # predicted highlighted
    json.dumps(fig)


def test_epoch_figure_diverging_stacks_sum_to_the_shares() -> None:
    share = np.array([[0.3, 0.5, -0.1, 0.2, 0.1], [0.2, 0.9, -0.3, 0.1, 0.1]])
    cosine = np.array([0.8, 1.0])
    fig = epoch_figure(share, cosine, NAMES, predicted=1)
    areas = [t for t in fig["data"] if "stackgroup" in t]
    up = sum(np.array(t["y"]) for t in areas if t["stackgroup"] == "up")
    down = sum(np.array(t["y"]) for t in areas if t["stackgroup"] == "down")
    assert up + down == pytest.approx(share.sum(axis=1))
    assert areas[0]["name"] == "b"  # predicted class first (next to 0)
    assert [t["name"] for t in areas if t["showlegend"]] == ["b", "a", "d", "c", "regularisation"]
    assert fig["data"][-1]["y"] == pytest.approx([0.8, 1.0])
    json.dumps(fig)


MANY = tuple(f"class {c}" for c in range(1000))


def _many_shares(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    share = rng.normal(0, 0.001, 1001)
    share[[7, 500, 999]] = [0.6, -0.3, 0.25]
    return share / share.sum()


def test_shown_classes_keeps_the_largest_and_the_predicted_and_true() -> None:
    share = _many_shares()
    shown = shown_classes(share, predicted=3, true=42, limit=6)
    assert len(shown) == 6 and {3, 42, 7, 500, 999} <= set(shown)
    assert shown == [c for c in share_order(share).tolist() if c in set(shown)]
    small = np.array([0.1, 0.6, -0.2, 0.45, 0.05])
    assert shown_classes(small, predicted=1, true=3) == share_order(small).tolist()


def test_figures_of_a_thousand_classes_stay_small_and_add_up() -> None:
    share = _many_shares()
    fig = share_figure(share, MANY, predicted=3, true=7)
    bar = fig["data"][0]
    assert len(bar["y"]) == 12 + 2 and bar["y"][-2:] == ["988 other classes", "regularisation"]
    assert bar["customdata"][-2:] == [-2, -1] and sum(bar["x"]) == pytest.approx(1.0)
    epochs = np.stack([share * 0.5, share])
    efig = epoch_figure(epochs, np.array([0.9, 1.0]), MANY, predicted=3)
    areas = [t for t in efig["data"] if "stackgroup" in t]
    assert len({t["name"] for t in areas}) <= 14
    assert sum(np.array(t["y"]) for t in areas) == pytest.approx(epochs.sum(axis=1))
    hist = np.random.default_rng(1).random((1000, 20))
    rfig = ridge_figure(hist, np.linspace(-1, 1, 21), MANY, predicted=3, unit="x", classes=[3, 7])
    ridges = [t for t in rfig["data"] if t.get("fill") == "tonexty"]
    assert [t["name"] for t in ridges] == ["class 3", "class 7"]
    assert rfig["layout"]["yaxis"]["ticktext"] == ["class 3", "class 7"]
    default = ridge_figure(hist, np.linspace(-1, 1, 21), MANY, predicted=3, unit="x")
    assert 1 < len([t for t in default["data"] if t.get("fill")]) <= 12
    assert len(json.dumps(fig)) + len(json.dumps(efig)) + len(json.dumps(rfig)) < 60_000


def test_norms_figure_matches_the_array() -> None:
    norms = np.array([[1.0, 2.0, 2.5], [3.0, 1.0, 3.5]])
    fig = norms_figure(norms, ("l1", "l2"), picked=1)
    assert [t["y"] for t in fig["data"][:3]] == [[1.0, 3.0], [2.0, 1.0], [2.5, 3.5]]
    assert fig["data"][3]["y"] == pytest.approx([0.5, 3.0])
    json.dumps(fig)


# -- state and reducer --------------------------------------------------------------------------


def test_url_round_trip_and_junk_falls_back() -> None:
    state = ViewState(cls=2, trace_row=7, trace_layer=1, trace_filter="wrong", trace_all=1)
    assert ViewState.from_query(state.to_search(), num_classes=10) == state
    junk = ViewState.from_query("?trow=-3&trlayer=x&tf=bogus&tall=5", num_classes=10)
    assert (junk.trace_row, junk.trace_layer, junk.trace_filter, junk.trace_all) == (
        None,
        None,
        "all",
        0,
    )


def test_reducer_events() -> None:
    state = ViewState()
    apply = training_state.apply_training_event
    bounds = StateBounds(
        num_classes=10, num_layers=3, channels=(8,) * 3, trace_images=10, trace_layers=3
    )
    no_trace = StateBounds(num_classes=10, num_layers=3, channels=(8,) * 3)
    assert apply(state, training_ids.TRACE_PICK, {"row": 4, "at": 1}, bounds).trace_row == 4
    assert apply(state, training_ids.TRACE_PICK, {"row": 99}, bounds) == state
    assert apply(state, training_ids.TRACE_PICK, "junk", bounds) == state
    assert apply(state, training_ids.TRACE_LAYER, 2, bounds).trace_layer == 2
    assert apply(state, training_ids.TRACE_LAYER, 3, bounds) == state
    assert apply(state, training_ids.TRACE_FILTER, "uncertain", bounds).trace_filter == "uncertain"
    assert apply(state, training_ids.TRACE_FILTER, "nope", bounds) == state
    assert apply(state, training_ids.TRACE_ALL, [1], bounds).trace_all == 1
    assert apply(state.with_(trace_all=1), training_ids.TRACE_ALL, [], bounds).trace_all == 0
    assert apply(state, training_ids.TRACE_PICK, {"row": 4}, no_trace) == state  # no trace part
    assert apply(state, training_ids.TRACE_LAYER, True, bounds) == state  # a bool is not a layer


# -- render on the shipped demo atlas ---------------------------------------------------------


def test_render_demo_atlas(tmp_path: Path) -> None:
    context = context_for(Path(DEMO_ATLAS_DIR), tmp_path)
    trace = trace_data(context.data)
    assert trace is not None and trace.layer(None) == trace.num_layers - 1
    assert trace.layer(99) == trace.default_layer
    out = training_callbacks.render(context, ViewState(cls=3).to_dict())
    note, grid_note, grid, header, props, opps, share, ridge, epochs, norms = out
    assert note is None
    rows = trace.rows("all", 3)
    assert len(grid) == len(rows) and "labelled or predicted three" in grid_note
    # Default pick: the first image of the grid, at the last layer.
    arrays = trace.arrays
    row = int(rows[0])
    layer = trace.default_layer
    assert share["data"][0]["x"][0] == pytest.approx(float(arrays["class_share"][row, layer].max()))
    assert norms["data"][0]["y"] == pytest.approx(arrays["norms"][row, :, 0].tolist())
    assert len(props.children) == len(opps.children) == int(trace.meta["top_k"])
    assert "layer head" in json.dumps(header, default=lambda o: o.to_plotly_json())
    first = props.children[0]
    assert first.title.startswith(
        f"training example #{int(arrays['proponent_index'][row, layer, 0])}"
    )
    json.dumps([share, ridge, epochs, norms])
    # Every class: the grid is capped; an out-of-range row or layer falls back.
    out = training_callbacks.render(
        context, ViewState(trace_all=1, trace_row=10_000, trace_layer=50).to_dict()
    )
    assert len(out[2]) == GRID_LIMIT and "first" in out[1]
    # Misclassified only, every class: only wrong tiles.
    out = training_callbacks.render(context, ViewState(trace_all=1, trace_filter="wrong").to_dict())
    assert out[2] and all("wrong" in tile.className for tile in out[2])
    # A misclassified image links to the comparison of its label and the prediction; a
    # correct one does not.
    encode = {"default": lambda o: o.to_plotly_json()}
    wrong = trace.rows("wrong", None)
    assert len(wrong) > 0
    row = int(wrong[0])
    label, pred = int(trace.label[row]), int(trace.prediction[row])
    out = training_callbacks.render(
        context, ViewState(cls=label, trace_all=1, trace_row=row).to_dict()
    )
    header = json.dumps(out[3], **encode)
    assert f"compare {context.data.names[label]} with {context.data.names[pred]}" in header
    assert f"class={label}" in header and f"compare={pred}" in header
    every = trace.rows("all", None)
    right = int(every[trace.label[every] == trace.prediction[every]][0])
    out = training_callbacks.render(context, ViewState(trace_all=1, trace_row=right).to_dict())
    assert "compare " not in json.dumps(out[3], **encode)


def test_missing_trace_part_is_a_note(small_atlas: Path, tmp_path: Path) -> None:
    context = context_for(small_atlas, tmp_path)
    assert trace_data(context.data) is None
    section = training_layout.layout(context, ViewState())
    text = json.dumps(section.to_plotly_json(), default=str)
    assert "python -m compute demo" in text and "docs/trace.md" in text
    out = training_callbacks.render(context, None)
    assert "no training trace" in out[0].children


def test_a_picked_image_of_another_class_gives_way_to_the_new_class() -> None:
    """Picked a zero, then selected class six in the sidebar: the view explained the zero
    beside six's grid. The picked image counts only while the grid's filters keep it."""
    import numpy as np

    from dashboard.state import ViewState
    from dashboard.views.training.callbacks import picked_row

    class Trace:
        num_images = 10

    rows_of_six = np.array([3, 5, 8])
    assert picked_row(Trace(), ViewState(cls=6, trace_row=5), rows_of_six) == 5
    assert picked_row(Trace(), ViewState(cls=6, trace_row=2), rows_of_six) == 3
    assert picked_row(Trace(), ViewState(cls=6, trace_row=None), rows_of_six) == 3
    assert picked_row(Trace(), ViewState(cls=6, trace_row=2), np.array([], dtype=int)) is None


def test_a_links_row_beyond_the_trace_is_said_not_dropped(tmp_path: Path) -> None:
    """``trow=5000`` on a trace of 360 images: the grid note says the row is not one of
    them (the first image is shown), as an unknown class gets a note."""
    context = ViewContext(
        data=atlas_data.load(str(DEMO_ATLAS_DIR), str(tmp_path / "cache")), file_prefix="/f/"
    )
    state = ViewState(cls=3, trace_row=5000)
    grid_note = training_callbacks.render(context, state.to_dict())[1]
    assert "the link's row 5000 is not one of the 360 explained images" in grid_note
