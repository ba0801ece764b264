"""(E) Instance view callbacks: the picker, the header and the graph of the input the
state names (or the picker's first), drawn over its class's graph."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from dash import Dash, Input, Output, html, no_update

from compute.export import instance_data, instance_file_stem
from dashboard import ids as page_ids
from dashboard.data import PART_GRAPHS, PART_INSTANCES, PART_SUBSETS, file_url
from dashboard.snippets import seen_text
from dashboard.state import ViewState
from dashboard.views.common import (
    ViewContext,
    graph_file,
    guarded,
    note,
    percent,
    register_graph_downloads,
    state_link,
)
from dashboard.views.instance import ids
from dashboard.views.instance.data import (
    PICKER_LIMIT,
    input_graph,
    instance_crop_path,
    picked_row,
    picker_rows,
)
from dashboard.views.instance.state import INSTANCE_FILTERS
from dashboard.views.summit.compare import legend_item
from dashboard.views.summit.figures import ONLY_A, ONLY_B, SHARED, compare_elements
from dashboard.views.summit.graph import pictures_mode
from dashboard.views.training.data import trace_data

_FILTER_LABELS = {
    "all": "all recorded",
    "wrong": "misclassified",
    "uncertain": "wrong or uncertain",
}
_EMPTY = {
    "all": "No input of this class was recorded.",
    "wrong": "The model classifies every recorded input of this class correctly.",
    "uncertain": "The model classifies every recorded input of this class correctly and "
    "confidently.",
}


def picker(context: ViewContext, state: ViewState, rows: np.ndarray, shown: int | None) -> Any:
    """Links to the class's recorded inputs (the shown one marked) and the filter links."""
    data = context.data
    records = data.atlas.instances()
    confusion = confusion_of(state)
    shown_index = None if shown is None else int(records.image_index[shown])
    filters = []
    for mode in INSTANCE_FILTERS:
        listed = picker_rows(data, state.cls, mode, confusion)
        keeps = shown is not None and shown in set(listed.tolist())
        changes: dict[str, Any] = {"inst_filter": mode}
        changes["inst_index"] = shown_index if keeps else None  # the input stays if listed
        filters.append(
            state_link(
                _FILTER_LABELS[mode],
                state,
                context.page_prefix,
                changes,
                className="pill" + (" pill-on" if mode == state.inst_filter else ""),
            )
        )
    if confusion is not None and 0 <= confusion < data.num_classes:
        filters.append(
            html.Span(
                f"mistaken for {data.names[confusion]}",
                className="pill pill-subset",
                title="the attribution graph shows this confusion: the picker lists its inputs",
            )
        )
    chips = []
    for row in rows[:PICKER_LIMIT].tolist():
        index, pred = int(records.image_index[row]), int(records.prediction[row])
        wrong = pred != int(records.label[row])
        name = data.names[pred] if 0 <= pred < data.num_classes else "?"
        image = file_url(context.file_prefix, data.atlas.instance_input(index))
        # Under a "mistaken for d" graph every chip is predicted d: the pill above says it.
        text = f"#{index}" + (f" → {name}" if wrong and pred != confusion else "")
        chips.append(
            state_link(
                [html.Img(src=image, alt="", className="instance-thumb"), text] if image else text,
                state,
                context.page_prefix,
                {"inst_index": index},
                className="pill instance-chip"
                + (" instance-wrong" if wrong else "")
                + (" pill-on" if row == shown else ""),
                title=f"input {index}"
                + (f", predicted {name}" if wrong else "")
                + f", confidence {percent(float(records.confidence[row]))}",
            )
        )
    more = len(rows) - PICKER_LIMIT
    return [
        html.Div(filters, className="instance-filters"),
        html.Div(chips, className="instance-chips"),
        html.Span(
            f"and {more} more: narrow the list with the filters, or open one by its number "
            "(inst=N in the address)",
            className="muted",
        )
        if more > 0
        else None,
    ]


def training_link(context: ViewContext, state: ViewState, image_index: int) -> Any:
    """A link to the Training view of the same input, when the training trace explains it
    (``None`` otherwise: :meth:`TraceData.record_row`)."""
    trace = trace_data(context.data)
    record = context.data.atlas.instance_row(image_index)
    row = None if trace is None or record is None else trace.row_of_record(record)
    if row is None:
        return None
    return state_link(
        "its training trace",
        state,
        context.page_prefix,
        {"trace_row": row, "trace_filter": "all", "trace_all": 1},
        className="pill trace-instance",
        title=f"the training examples whose updates built input #{image_index}'s "
        "representation (the Training view)",
    )


def header(context: ViewContext, state: ViewState, graph: Any) -> list[Any]:
    """The input, its label and prediction, its overlap, and links to its mistake's views."""
    data = context.data
    label, pred = graph.label, graph.prediction
    records = data.atlas.instances()
    row = data.atlas.instance_row(graph.image_index)
    confidence = "" if row is None else f" ({percent(float(records.confidence[row]))} sure)"
    image = file_url(context.file_prefix, data.atlas.instance_input(graph.image_index))
    text = data.atlas.text_input(graph.image_index) if data.text else None
    parts: list[Any] = [
        html.Img(src=image, alt=f"input {graph.image_index}", className="instance-input")
        if image
        else None,
        html.Span(f"“{seen_text(text)}”", className="instance-text") if text else None,
        html.Span(f"input #{graph.image_index}", className="class-name"),
        html.Span(f"label {data.names[label]}", className="pill"),
    ]
    if pred != label:
        name = data.names[pred] if 0 <= pred < data.num_classes else "outside the classes"
        parts.append(html.Span(f"predicted {name}{confidence}", className="pill pill-wrong"))
    else:
        parts.append(html.Span(f"classified correctly{confidence}", className="pill"))
    layers = ", ".join(
        f"{name} {percent(v)}"
        for name, v in zip(data.layer_names, graph.layer_overlap, strict=True)
        if not np.isnan(v)
    )
    parts.append(
        html.Span(
            f"{percent(graph.overlap)} on {data.names[label]}'s graph",
            className="pill pill-subset",
            title=f"share of the input's attribution mass on its class's graph, per layer: "
            f"{layers}",
        )
    )
    parts.append(training_link(context, state, graph.image_index))
    if pred != label and 0 <= pred < data.num_classes:
        changes: dict[str, Any] = {"node": None, "cls": label, "compare": pred}
        pair = data.has(PART_SUBSETS) and data.atlas.pair_row(label, pred) is not None
        if pair:
            changes.update(subset="mistaken", mistaken_for=pred)
        parts.append(
            state_link(
                f"compare {data.names[label]} with {data.names[pred]}",
                state,
                context.page_prefix,
                changes,
                className="pill confusion-link",
                title="the two classes' graphs side by side"
                + (", and the graph of the images mistaken this way" if pair else ""),
            )
        )
    return parts


def mark_input_nodes(context: ViewContext, graph: Any, elements: list[dict[str, Any]]) -> None:
    """Dash the border of the channels the class rarely uses, and show on each channel the
    input uses its own crop (what the channel saw at its maximum in this input)."""
    own = {
        f"{layer}-{channel}": (layer, channel)
        for layer, channel in zip(graph.layer.tolist(), graph.channel.tolist(), strict=True)
    }
    rare_nodes = zip(graph.layer[graph.rare], graph.channel[graph.rare], strict=True)
    rare = {f"{layer}-{channel}" for layer, channel in rare_nodes}
    data = context.data
    stored = data.atlas.instance_input(graph.image_index) is not None
    text = data.atlas.text_input(graph.image_index) if data.text else None
    token_of = {
        f"{layer}-{channel}": int(col)
        for layer, channel, col in zip(
            graph.layer.tolist(), graph.channel.tolist(), graph.position[:, 1].tolist(), strict=True
        )
    }
    for element in elements:
        node = element["data"].get("id")
        if node in rare:
            element["classes"] = element.get("classes", "") + " rare"
        if text is not None and node in token_of and 0 <= token_of[node] < len(text.tokens):
            # What the unit fired on in this input, not its usual token.
            word = text.word(token_of[node])
            element["data"]["label"] = f"{own[node][1]} {word}"
        if stored and node in own and context.data.receptive_field(own[node][0]) is not None:
            crop = instance_crop_path(graph.image_index, *own[node])
            element["data"]["img"] = file_url(context.file_prefix, crop)


def confusion_of(state: ViewState) -> int | None:
    """The class the graph's "mistaken for" confusion names (``None``: no confusion)."""
    return state.mistaken_for if state.subset == "mistaken" else None


def elsewhere_note(context: ViewContext, state: ViewState) -> Any:
    """Why the state's input is not shown: recorded under another class or filter (with a
    link that shows it), or not recorded at all."""
    data = context.data
    index = state.inst_index
    record = None if index is None else data.atlas.instance_row(index)
    if index is None:
        return None
    if record is None:
        return note(
            f"Input {index} has no instance record (the build records a sample of the "
            "inputs and their mistakes; --instances-from records chosen ones); showing "
            "the first of this class's."
        )
    label = int(data.atlas.instances().label[record])
    where = f"an input of {data.names[label]}" if label != state.cls else "not in this list"
    return note(
        [
            f"Input {index} is {where}; showing the first of this list. ",
            state_link(
                "show it",
                state,
                context.page_prefix,
                {"cls": label, "inst_index": index, "inst_filter": "all", "subset": "all"},
                className="pill",
            ),
        ]
    )


def render(context: ViewContext, stored: Any) -> tuple[Any, Any, Any, Any, Any]:
    """Note, picker, header, legend and elements of the Instance view."""
    data = context.data
    state = context.state(stored)
    if not data.has(PART_INSTANCES) or not data.has(PART_GRAPHS):
        missing = PART_INSTANCES if not data.has(PART_INSTANCES) else PART_GRAPHS
        return note(data.missing_note(missing), kind="missing"), None, None, None, []
    rows = picker_rows(data, state.cls, state.inst_filter, confusion_of(state))
    row = picked_row(data, state.inst_index, rows)
    choices = picker(context, state, rows, row)
    if row is None:
        return note(_EMPTY[state.inst_filter]), choices, None, None, []
    graph, drawn = input_graph(data, row)
    elements, counts = compare_elements(
        data.graph(graph.label),
        drawn,
        url_prefix=context.file_prefix,
        layer_names=data.layer_names,
        pictures=pictures_mode(data, state),
    )
    mark_input_nodes(context, graph, elements)
    class_name = data.names[graph.label]
    legend = [
        legend_item(ONLY_A, f"only {class_name}'s graph", counts["a"]),
        legend_item(SHARED, "both", counts["shared"]),
        legend_item(ONLY_B, "only this input", counts["b"]),
        html.Span(f"dashed: rare in {class_name} ({int(graph.rare.sum())})", className="muted"),
    ]
    message = None
    if state.inst_index is not None and int(graph.image_index) != state.inst_index:
        message = elsewhere_note(context, state)
    return message, choices, header(context, state, graph), legend, elements


def instance_download(context: ViewContext, stored: Any, fmt: str) -> dict[str, Any] | None:
    """The shown input's graph as node-link JSON or GraphML (``fmt``): the file
    ``python -m compute export --instances`` writes (``None``: no input shown)."""
    data = context.data
    if not data.has(PART_INSTANCES):
        return None
    state = context.state(stored)
    rows = picker_rows(data, state.cls, state.inst_filter, confusion_of(state))
    row = picked_row(data, state.inst_index, rows)
    if row is None:
        return None
    return graph_file(instance_data(data.atlas, row), instance_file_stem(data.atlas, row), fmt)


def register(app: Dash, context: ViewContext) -> None:
    """The Instance view's callbacks (inputs are picked by links: no reducer)."""

    register_graph_downloads(
        app,
        (ids.INSTANCE_JSON, ids.INSTANCE_GRAPHML),
        ids.INSTANCE_DOWNLOAD,
        page_ids.STATE_INSTANCE,
        partial(instance_download, context),
        png=(ids.INSTANCE_PNG, ids.INSTANCE_GRAPH),
    )

    @app.callback(
        Output(ids.INSTANCE_NOTE, "children"),
        Output(ids.INSTANCE_PICKER, "children"),
        Output(ids.INSTANCE_HEADER, "children"),
        Output(ids.INSTANCE_LEGEND, "children"),
        Output(ids.INSTANCE_GRAPH, "elements"),
        Input(page_ids.STATE_INSTANCE, "data"),
    )
    @guarded(None, no_update, no_update, no_update, no_update, note_at=0)
    def update_instance(stored: Any) -> tuple[Any, ...]:
        return render(context, stored)
