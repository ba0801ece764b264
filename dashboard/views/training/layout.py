"""The Training view's layout: the image grid and its filters, the traced layer, and the
proponents, opponents and figures of the picked image (filled by ``callbacks.py``)."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from dashboard.state import ViewState
from dashboard.views.common import ViewContext, how_to_read, labelled, note, worded
from dashboard.views.training import ids
from dashboard.views.training.data import trace_data
from dashboard.views.training.state import TRACE_FILTERS

MISSING = (
    "This atlas has no training trace (part 'trace'). `python -m compute demo --out DIR` "
    "builds the demo atlas with it; for your own model, record training with the Tracer "
    "(the snippet in docs/trace.md, 'Adding the tracer to your training script') and "
    "write the part with write_trace_part, then reload."
)
FILTER_LABELS = {
    "all": "all",
    "wrong": "misclassified",
    "uncertain": "wrong or uncertain",
}
TITLE = html.H2([html.Span("G", className="view-tag"), "Training: what shaped a prediction"])
_GRAPH_CONFIG = {"displaylogo": False, "displayModeBar": False}
EMPTY_FIGURE: dict[str, Any] = {"data": [], "layout": {"height": 40}}


def _graph(component_id: str) -> dcc.Graph:
    return dcc.Graph(id=component_id, figure=EMPTY_FIGURE, config=_GRAPH_CONFIG)


def layout(context: ViewContext, state: ViewState) -> html.Section:
    """The Training card (filled by :func:`render`; cheap: reads the manifest only)."""
    trace = trace_data(context.data)
    if trace is None:
        # The callbacks serve every atlas of a deployment, so their components exist here
        # too (hidden, inert): the renderer reports outputs missing from the layout.
        inert = html.Div(
            [
                dcc.Store(id=ids.TRACE_PICK, data=None),
                dcc.Dropdown(id=ids.TRACE_LAYER, options=[], value=None),
                dcc.RadioItems(id=ids.TRACE_FILTER, options=[], value=None),
                dcc.Checklist(id=ids.TRACE_ALL, options=[], value=[]),
                *[
                    html.Div(id=component)
                    for component in (
                        ids.TRACE_NOTE,
                        ids.TRACE_GRID_NOTE,
                        ids.TRACE_GRID,
                        ids.TRACE_HEADER,
                        ids.TRACE_PROPONENTS,
                        ids.TRACE_OPPONENTS,
                    )
                ],
                *[
                    dcc.Graph(id=component)
                    for component in (
                        ids.TRACE_SHARE,
                        ids.TRACE_RIDGE,
                        ids.TRACE_EPOCHS,
                        ids.TRACE_NORMS,
                    )
                ],
            ],
            hidden=True,
        )
        return html.Section(
            [TITLE, note(MISSING, kind="missing"), inert],
            className="card card-training",
            id="training",
        )
    layers = [{"label": f"{i + 1}. {n}", "value": i} for i, n in enumerate(trace.layer_names)]
    controls = html.Div(
        [
            labelled(
                "Traced layer",
                dcc.Dropdown(
                    id=ids.TRACE_LAYER,
                    options=layers,
                    value=trace.layer(state.trace_layer),
                    clearable=False,
                    searchable=False,
                ),
            ),
            labelled(
                "Show",
                dcc.RadioItems(
                    id=ids.TRACE_FILTER,
                    options=[{"label": FILTER_LABELS[m], "value": m} for m in TRACE_FILTERS],
                    value=state.trace_filter,
                    inline=True,
                    className="topo-radio",
                ),
                "wrong: prediction differs from the label; uncertain: the predicted class "
                "barely leads the others in the last traced layer's class shares",
            ),
            dcc.Checklist(
                id=ids.TRACE_ALL,
                options=[{"label": " every class (not only the selected one)", "value": 1}],
                value=[1] if state.trace_all else [],
                className="trace-all",
            ),
        ],
        className="controls topo-controls trace-controls",
    )
    return html.Section(
        [
            dcc.Store(id=ids.TRACE_PICK, data=None),
            TITLE,
            html.Div(id=ids.TRACE_NOTE),
            controls,
            html.Div(id=ids.TRACE_GRID_NOTE, className="trace-grid-note"),
            html.Div(id=ids.TRACE_GRID, className="trace-grid"),
            html.Div(
                [
                    html.Div(id=ids.TRACE_HEADER, className="trace-header"),
                    html.Div(
                        [
                            html.Div(
                                [html.H3("Proponents"), html.Div(id=ids.TRACE_PROPONENTS)],
                                className="trace-examples-block",
                            ),
                            html.Div(
                                [html.H3("Opponents"), html.Div(id=ids.TRACE_OPPONENTS)],
                                className="trace-examples-block",
                            ),
                        ],
                        className="trace-examples-row",
                    ),
                    how_to_read(
                        worded(
                            context.data,
                            "The layer's output on this image is what the initial weights "
                            "give plus a refinement r that every training step added. "
                            "Proponents are the training examples whose own updates point "
                            "most along r (score π: their projection on r); opponents point "
                            "most against it. Click a proponent or opponent to select its "
                            "class in the other views. For sketched layers the scores are "
                            "unbiased estimates.",
                        ),
                    ),
                    html.Div(
                        [
                            html.Div(
                                [
                                    _graph(ids.TRACE_SHARE),
                                    how_to_read(
                                        "Each class's updates contributed a part of r; the "
                                        "bars are those parts projected on r, as a share of "
                                        "‖r‖ (they sum to 100% with regularisation, the "
                                        "weight-decay part; negative: that class pushed "
                                        "against r). The predicted class is orange, the "
                                        "true class blue when they differ.",
                                    ),
                                ],
                                className="trace-chart",
                            ),
                            html.Div(
                                [
                                    _graph(ids.TRACE_RIDGE),
                                    how_to_read(
                                        "Per class, how the cosines between single "
                                        "contributions (training examples, or epoch×class "
                                        "groups for sketched layers) and r are spread, "
                                        "weighted by each contribution's size; each ridge "
                                        "is scaled to its own peak. Mass right of 0 helped "
                                        "build r, left of 0 worked against it.",
                                    ),
                                ],
                                className="trace-chart",
                            ),
                            html.Div(
                                [
                                    _graph(ids.TRACE_EPOCHS),
                                    how_to_read(
                                        "Class shares of the refinement accumulated up to "
                                        "the end of each epoch (stacked; the predicted "
                                        "class on top, outlined). The dotted line is the "
                                        "cosine between the refinement so far and the "
                                        "final one: once it is near 1 the direction was "
                                        "settled.",
                                    ),
                                ],
                                className="trace-chart",
                            ),
                            html.Div(
                                [
                                    _graph(ids.TRACE_NORMS),
                                    how_to_read(
                                        "For every traced layer: the size of the refinement "
                                        "‖r‖ against what the initial weights alone give "
                                        "(‖W₀⋆a‖) and the final output (‖W_T⋆a‖). Bars: "
                                        "their ratio, the picked layer highlighted. A large "
                                        "ratio means training, not initialisation, made "
                                        "this layer's response.",
                                    ),
                                ],
                                className="trace-chart",
                            ),
                        ],
                        className="trace-charts",
                    ),
                ],
                id=ids.TRACE_BODY,
            ),
        ],
        className="card card-training",
        id="training",
    )
