"""Neuron panel: the clicked channel's dataset examples, the classes that use it most and a
link to its own page (:mod:`dashboard.views.summit.neuron_page`)."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, dcc, html, no_update

from dashboard import ids as page_ids
from dashboard.data import PART_SUMMIT
from dashboard.links import neuron_href
from dashboard.state import ViewState, parse_node_id
from dashboard.views.common import ViewContext, guarded, how_to_read, note, worded
from dashboard.views.summit import ids
from dashboard.views.summit.figures import neuron_bar_figure
from dashboard.views.summit.graph import example_strip

HIDDEN = {"display": "none"}
TOP_CLASSES = 10


def layout(context: ViewContext, state: ViewState) -> html.Section:
    """The (initially hidden) neuron panel; its contents are filled by callback."""
    return html.Section(
        [
            html.Div(
                [
                    html.H2(
                        [html.Span("N", className="view-tag"), worded(context.data, "Channel")],
                        id=ids.NEURON_TITLE,
                    ),
                    html.Button(
                        "×",
                        id=ids.NEURON_CLOSE,
                        className="close",
                        title=worded(context.data, "Close the channel panel"),
                        n_clicks=0,
                    ),
                ],
                className="card-head",
            ),
            html.Div(id=ids.NEURON_BODY),
            html.H3(
                worded(context.data, "Classes that use this channel most"), className="subhead"
            ),
            dcc.Graph(
                id=ids.NEURON_BARS, config={"displayModeBar": False}, className="neuron-bars"
            ),
            how_to_read(
                "The snippets are the texts this unit fires on most, the token of its "
                "maximum marked."
                if context.data.text
                else "The crops are the dataset image regions that activate this channel most "
                "(its receptive field around the strongest position).",
                worded(
                    context.data,
                    "The bars count, for each class, how many of its images select this "
                    "channel; click a bar to select that class.",
                ),
            ),
        ],
        id=ids.NEURON_PANEL,
        className="card card-neuron",
        style=HIDDEN,
    )


def render(context: ViewContext, stored: Any) -> tuple[Any, Any, Any, Any]:
    """Panel style, title, body and bar figure for the stored state."""
    data = context.data
    state = context.state(stored)
    parsed = parse_node_id(state.node or "")
    if parsed is None:
        return HIDDEN, no_update, no_update, no_update
    layer, channel = parsed
    title = [
        html.Span("N", className="view-tag"),
        f"{worded(data, 'Channel')} {channel} of {data.layer_names[layer]}",
    ]
    link = dcc.Link(
        "open neuron page →",
        id=ids.NEURON_OPEN,
        href=neuron_href(data.layer_names[layer], channel, context.page_prefix),
        className="open-page",
        title="its feature visualization, examples, classes and influences on one page",
    )
    crops = html.Div(
        example_strip(context, layer, channel),
        className="snippet-list" if data.text else "crop-grid crop-grid-large",
    )
    body = html.Div([link, crops])
    if not data.has(PART_SUMMIT):
        return {}, title, [body, note(data.missing_note(PART_SUMMIT), kind="missing")], {}
    top, counts = data.top_classes(layer, channel, TOP_CLASSES)
    words = (data.inputs, "unit" if data.text else "channel")
    figure = neuron_bar_figure(data.names, top, counts, data.num_images, state.cls, words)
    return {}, title, body, figure


def register(app: Dash, context: ViewContext) -> None:
    """Callbacks of the neuron panel."""

    @app.callback(
        Output(ids.NEURON_PANEL, "style"),
        Output(ids.NEURON_TITLE, "children"),
        Output(ids.NEURON_BODY, "children"),
        Output(ids.NEURON_BARS, "figure"),
        Input(page_ids.STATE_SUMMIT, "data"),
    )
    @guarded({}, no_update, None, no_update, note_at=2)
    def update_neuron(stored: Any) -> tuple[Any, Any, Any, Any]:
        return render(context, stored)
