"""(G) Training: how training refined a layer for one test image (callbacks; docs/trace.md).

Pick an explained test image from a grid of thumbnails (filtered by the class selected in
the other views, misclassified only, or wrong-or-uncertain) and a traced layer. The view
shows the training examples whose updates pushed the layer's refinement ``r`` most towards
(proponents) and against (opponents) its final value, the share of ``r`` credited to each
class's updates (and to weight decay), the cosines of the contributions per class, the
cumulative class shares over epochs and the refinement norms across layers. Everything is
in the URL (``trow``, ``trlayer``, ``tf``, ``tall``); an atlas without the trace part gets a
note saying how to add it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from dash import ClientsideFunction, Dash, Input, Output, State, html, no_update

from dashboard import ids as page_ids
from dashboard.data import file_url
from dashboard.state import ViewState
from dashboard.views.common import ViewContext, guarded, note, state_link, worded
from dashboard.views.training import ids
from dashboard.views.training.data import (
    GRID_LIMIT,
    Example,
    TraceData,
    epoch_figure,
    norms_figure,
    ridge_figure,
    share_figure,
    shown_classes,
    trace_data,
)
from dashboard.views.training.layout import EMPTY_FIGURE, FILTER_LABELS, MISSING
from dashboard.views.training.state import EVENTS

# -- rendering --------------------------------------------------------------------------------


def grid_rows(trace: TraceData, state: ViewState) -> Any:
    """Rows of the grid for the state's filters."""
    return trace.rows(state.trace_filter, None if state.trace_all else state.cls)


def picked_row(trace: TraceData, state: ViewState, rows: Any) -> int | None:
    """The picked image: the state's row if the grid's filters keep it, else the grid's
    first row. Selecting another class (anywhere) therefore explains one of its images,
    not the previous class's image with the new class's grid beside it."""
    kept = set(np.asarray(rows).tolist())
    if state.trace_row is not None and state.trace_row in kept:
        return state.trace_row
    return int(rows[0]) if len(rows) else None


def _input_word(context: ViewContext) -> str:
    """What an explained input is called: "image" or, in a text atlas, "text"."""
    return context.data.inputs[:-1]


def _tile(context: ViewContext, trace: TraceData, row: int, picked: int | None) -> html.Div:
    names = context.data.names
    label, pred = int(trace.label[row]), int(trace.prediction[row])
    src = file_url(context.file_prefix, trace.thumbnail("test", row))
    text = trace.text("test", row)
    wrong = label != pred
    title = (
        f"test {_input_word(context)} #{int(trace.arrays['image_index'][row])}: {names[label]}"
        + (f", predicted {names[pred]}" if wrong else "")
        + (f"\n{text}" if text else "")
    )
    picture: Any
    if src:
        picture = html.Img(src=src, alt=names[label], className="trace-thumb")
    elif text:
        picture = html.Span(text, className="trace-text")
    else:
        picture = html.Span(names[label], className="trace-thumb trace-thumb-text")
    classes = "trace-tile" + (" wrong" if wrong else "") + (" picked" if row == picked else "")
    return html.Div([picture], className=classes, title=title, **{"data-row": str(row)})


def _example(context: ViewContext, example: Example, norm: float, kind: str) -> html.Div:
    names = context.data.names
    src = file_url(context.file_prefix, example.thumbnail)
    share = example.score / norm if norm > 0 else float("nan")
    picture: Any
    if src:
        picture = html.Img(src=src, alt=names[example.label], className="trace-thumb")
    elif example.text:
        picture = html.Span(example.text, className="trace-text")
    else:
        picture = html.Span(f"#{example.index}", className="trace-thumb trace-thumb-text")
    return html.Div(
        [
            picture,
            html.Div(names[example.label], className="trace-example-label"),
            html.Div(f"π {example.score:+.3g}", className="trace-example-score"),
        ],
        className=f"trace-example trace-{kind}" + (" trace-example-text" if example.text else ""),
        title=f"training example #{example.index} ({names[example.label]}): π = "
        f"{example.score:+.4g} ({share:+.1%} of ‖r‖); click to select {names[example.label]}",
        **{"data-class": str(example.label)},
    )


def _compare_link(context: ViewContext, state: ViewState, label: int, pred: int) -> Any:
    """For a misclassified image, a link comparing the attribution graphs of its label and
    the predicted class (the channels that set them apart); ``None`` otherwise."""
    names = context.data.names
    if pred == label or not (0 <= label < len(names) and 0 <= pred < len(names)):
        return None
    return state_link(
        f"compare {names[label]} with {names[pred]}",
        state,
        context.page_prefix,
        {"node": None, "cls": label, "compare": pred},
        className="pill trace-compare",
        title="open the comparison of the two classes' attribution graphs",
    )


def _instance_link(context: ViewContext, state: ViewState, trace: TraceData, row: int) -> Any:
    """A link to the Instance view of the same input, when the Summit pass recorded it
    (``None`` otherwise: :meth:`TraceData.record_row`)."""
    record = trace.record_row(row)
    if record is None:
        return None
    records = context.data.atlas.instances()
    index = int(records.image_index[record])
    return state_link(
        "its own attribution graph",
        state,
        context.page_prefix,
        {
            "node": None,
            "cls": int(records.label[record]),
            "inst_index": index,
            "inst_filter": "all",
        },
        className="pill trace-instance",
        title=f"input #{index}'s "
        + worded(context.data, "selected channels and influences on its class's graph")
        + " (the Instance view)",
    )


def render(context: ViewContext, stored: Any) -> tuple[Any, ...]:
    """Note, grid note, grid, header, proponents, opponents and the four figures."""
    trace = trace_data(context.data)
    empty = (EMPTY_FIGURE,) * 4
    if trace is None:
        return (note(MISSING, kind="missing"), None, None, None, None, None, *empty)
    data = context.data
    names = data.names
    state = context.state(stored)
    layer = trace.layer(state.trace_layer)
    rows = grid_rows(trace, state)
    row = picked_row(trace, state, rows)
    scope = "every class" if state.trace_all else f"labelled or predicted {names[state.cls]}"
    shown = rows[:GRID_LIMIT]
    word = _input_word(context)
    grid_note = f"{len(rows):,} of {trace.num_images:,} test {word}s ({scope}, " + (
        f"{FILTER_LABELS[state.trace_filter]})"
    )
    if len(rows) > GRID_LIMIT:
        grid_note += f"; the first {GRID_LIMIT} are shown"
    if not len(rows):
        grid_note += ": none match, try another filter or every class"
    if state.trace_row is not None and not 0 <= state.trace_row < trace.num_images:
        # A link's row beyond the trace (another atlas's, or edited): said, not dropped.
        grid_note += (
            f"; the link's row {state.trace_row} is not one of the {trace.num_images:,} "
            f"explained {word}s"
        )
    grid = [_tile(context, trace, int(r), row) for r in shown.tolist()]
    if row is None:
        return (None, grid_note, grid, note(f"Pick an {word} from the grid."), None, None, *empty)
    if row not in set(shown.tolist()):
        grid.insert(0, _tile(context, trace, row, row))  # picked beyond the first GRID_LIMIT
    label, pred = int(trace.label[row]), int(trace.prediction[row])
    arrays = trace.image(row, layer)
    norm = float(arrays["norms"][layer, 0])
    layer_meta = trace.meta["layers"][layer]
    per_example = str(layer_meta.get("per_example", "exact"))
    unit = str(layer_meta.get("ridge_unit", "example"))
    src = file_url(context.file_prefix, trace.thumbnail("test", row))
    text = trace.text("test", row)
    header = [
        html.Img(src=src, className="trace-picked", alt=names[label]) if src else None,
        html.Div(
            [
                html.Div(
                    f"Test {word} #{int(trace.arrays['image_index'][row])}",
                    className="trace-title",
                ),
                html.Div(text, className="trace-picked-text") if text else None,
                html.Div(
                    [
                        html.Span(f"label {names[label]}", className="pill"),
                        html.Span(
                            f"predicted {names[pred]}",
                            className="pill " + ("pill-ok" if pred == label else "pill-warn"),
                        ),
                        _compare_link(context, state, label, pred),
                        _instance_link(context, state, trace, row),
                        html.Span(f"layer {trace.layer_names[layer]}", className="pill"),
                        html.Span(f"‖r‖ {norm:.3g}", className="pill"),
                        html.Span(
                            "exact scores" if per_example == "exact" else "sketched scores",
                            className="pill",
                            title="proponent scores are exact per-example projections"
                            if per_example == "exact"
                            else "proponent scores come from a random projection (unbiased)",
                        ),
                    ],
                    className="trace-pills",
                ),
            ]
        ),
    ]
    proponents = [
        _example(context, e, norm, "proponent") for e in trace.examples(row, layer, "proponent")
    ]
    opponents = [
        _example(context, e, norm, "opponent") for e in trace.examples(row, layer, "opponent")
    ]
    unit_text = "over training examples" if unit == "example" else "over epoch×class groups"
    return (
        None,
        grid_note,
        grid,
        header,
        html.Div(proponents, className="trace-examples")
        if proponents
        else note(f"No proponents stored for this {word}."),
        html.Div(opponents, className="trace-examples")
        if opponents
        else note(f"No opponents stored for this {word}."),
        share_figure(arrays["class_share"], names, pred, label),
        ridge_figure(
            arrays["ridge_hist"],
            arrays["ridge_edges"],
            names,
            pred,
            unit_text,
            # In class order, as with every class drawn (small atlases): stable rows.
            classes=sorted(shown_classes(arrays["class_share"], pred, label)),
        ),
        epoch_figure(arrays["epoch_share"], arrays["epoch_cosine"], names, pred),
        norms_figure(arrays["norms"], trace.layer_names, layer),
    )


def register(app: Dash, context: ViewContext) -> None:
    """Callbacks of the Training view: its reducer and the render.

    Registered whatever the default atlas holds: ``context.data`` follows the request's
    atlas, and an atlas without a trace shows a note (no Training controls to fire).
    """

    # The reducer runs in the browser, in event order (``dashboard.views.shell.register``).
    app.clientside_callback(
        ClientsideFunction(page_ids.REDUCERS, "reduceTraining"),
        Output(page_ids.STATE, "data", allow_duplicate=True),
        Output(page_ids.STATE_URL, "search", allow_duplicate=True),
        *[Input(component, prop) for component, prop, _ in EVENTS],
        State(page_ids.STATE, "data"),
        State(page_ids.STATE_RULES, "data"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output(ids.TRACE_NOTE, "children"),
        Output(ids.TRACE_GRID_NOTE, "children"),
        Output(ids.TRACE_GRID, "children"),
        Output(ids.TRACE_HEADER, "children"),
        Output(ids.TRACE_PROPONENTS, "children"),
        Output(ids.TRACE_OPPONENTS, "children"),
        Output(ids.TRACE_SHARE, "figure"),
        Output(ids.TRACE_RIDGE, "figure"),
        Output(ids.TRACE_EPOCHS, "figure"),
        Output(ids.TRACE_NORMS, "figure"),
        Input(page_ids.STATE_TRAINING, "data"),
    )
    @guarded(None, *([no_update] * 9), note_at=0)
    def update_training(stored: Any) -> tuple[Any, ...]:
        return render(context, stored)
