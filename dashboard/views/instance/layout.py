"""The Instance view's layout: the picker, the input's header and its graph on its
class's graph (filled by ``callbacks.py``)."""

from __future__ import annotations

from dash import html

from dashboard.data import PART_INSTANCES
from dashboard.state import ViewState
from dashboard.views.common import (
    ViewContext,
    card_actions,
    graph_buttons,
    how_to_read,
    note,
    worded,
)
from dashboard.views.instance import ids
from dashboard.views.summit.graph import attribution_cytoscape

TITLE = html.H2([html.Span("E", className="view-tag"), "Instance: one input's own graph"])


def layout(context: ViewContext, state: ViewState) -> html.Section:
    """The Instance card (cheap: the callback fills it)."""
    data = context.data
    available = data.has(PART_INSTANCES)
    return html.Section(
        [
            html.Div(
                [
                    TITLE,
                    html.Div(id=ids.INSTANCE_HEADER, className="class-header"),
                    card_actions(
                        graph_buttons(
                            ids.INSTANCE_JSON, ids.INSTANCE_GRAPHML, "this input's graph"
                        ),
                        ids.INSTANCE_DOWNLOAD,
                        ids.INSTANCE_PNG,
                    ),
                ],
                className="card-head",
            ),
            html.Div(
                None if available else note(data.missing_note(PART_INSTANCES), kind="missing"),
                id=ids.INSTANCE_NOTE,
            ),
            html.Div(
                [
                    html.Div(id=ids.INSTANCE_PICKER, className="instance-picker"),
                    html.Div(id=ids.INSTANCE_LEGEND, className="legend"),
                    attribution_cytoscape(ids.INSTANCE_GRAPH, data),
                ],
                id=ids.INSTANCE_BODY,
                style=None if available else {"display": "none"},
            ),
            how_to_read(
                worded(
                    context.data,
                    "One input's own attribution graph: the channels its class's selection "
                    "rule keeps for this input (each layer) and its own strongest influences "
                    "between them, drawn over its class's graph. Teal channels are on both, "
                    "orange ones only on the class's graph (the input does not use them), "
                    "purple ones only on the input's (appended to the right of their row); a "
                    "dashed border marks a channel that fewer than 10% of the class's images "
                    "use.",
                ),
                "Node size is the unit's share of the input's activation in its layer; the "
                "overlap is the mean over layers of the share that lies on the class's graph. "
                "A unit the input uses is labelled by the word it fired on in this input; "
                "the class's other units by the token they fire on most over the dataset. "
                "The filter 'wrong or uncertain' adds the inputs whose softmax lead over the "
                "runner-up is among the lowest tenth of all recorded inputs."
                if context.data.text
                else "Node size is the channel's share of the input's activation in its layer; "
                "the overlap is the mean over layers of the share that lies on the class's "
                "graph. A channel the input uses shows what it saw in this input: the "
                "receptive field around its maximum, cut from the input's stored image; the "
                "class's other channels show their usual picture (feature visualization or "
                "top dataset crop). The filter 'wrong or uncertain' adds the inputs whose "
                "softmax lead over the runner-up is among the lowest tenth of all recorded "
                "inputs.",
            ),
        ],
        className="card card-instance",
        id="instance",
    )
