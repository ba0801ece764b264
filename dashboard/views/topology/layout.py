"""The Topology view's layout: its parameters, the Mapper graph, node panel and shapes.

Every control's limits and choices come from the view's state slice (``state.py``), so a
link, the reducer and the control agree.
"""

from __future__ import annotations

import dash_cytoscape as cyto
from dash import dcc, html

from dashboard.data import PART_MAPPER
from dashboard.state import ViewState
from dashboard.views.common import (
    FileButton,
    ViewContext,
    card_actions,
    how_to_read,
    labelled,
    note,
    worded,
)
from dashboard.views.topology import ids
from dashboard.views.topology.data import index_metric, mapper_data, topology_stylesheet
from dashboard.views.topology.state import (
    TOPO_CLUSTERERS,
    TOPO_COLOURS,
    TOPO_EPS,
    TOPO_INTERVALS,
    TOPO_JACCARD,
    TOPO_METRICS,
    TOPO_OVERLAP,
)

STYLESHEET = topology_stylesheet()
_COLOUR_LABELS = {"pie": "class pies", "norm": "mean L2 norm", "share": "share of class"}
#: The hover line when no node is under the pointer.
HOVER_HINT = "Hover a node for its size, main class and mean norm."


def topo_layer(context: ViewContext, state: ViewState) -> int:
    """The Topology view's layer (default: the atlas's default layer)."""
    return context.data.default_layer if state.topo_layer is None else state.topo_layer


def layout(context: ViewContext, state: ViewState) -> html.Section:
    """The Topology card: parameters, Mapper graph, node panel, shape list."""
    data = context.data
    available = data.has(PART_MAPPER)
    options = [{"label": f"{i + 1}. {name}", "value": i} for i, name in enumerate(data.layer_names)]
    radio = {"inline": True, "className": "topo-radio"}
    intervals, overlap, eps = (
        mapper_data(data).settings(state)
        if available
        else (state.topo_intervals, state.topo_overlap, state.topo_eps)
    )
    controls = html.Div(
        [
            labelled(
                "Layer",
                dcc.Dropdown(
                    id=ids.TOPO_LAYER,
                    options=options,
                    value=topo_layer(context, state),
                    clearable=False,
                    searchable=False,
                ),
            ),
            labelled(
                f"Intervals ({TOPO_INTERVALS[0]}–{TOPO_INTERVALS[1]})",
                dcc.Input(
                    id=ids.TOPO_INTERVALS,
                    type="number",
                    value=intervals,
                    step=1,
                    debounce=True,
                    className="topo-number",
                ),
                "number of overlapping slices of the L2-norm lens",
            ),
            labelled(
                "Overlap",
                dcc.Slider(
                    id=ids.TOPO_OVERLAP,
                    min=TOPO_OVERLAP[0],
                    max=TOPO_OVERLAP[1],
                    step=5,
                    value=overlap,
                    marks={v: f"{v}%" for v in (10, 30, 60)},
                    updatemode="mouseup",
                ),
                "share of an interval shared with its neighbour",
            ),
            labelled(
                "ε (× auto)",
                dcc.Slider(
                    id=ids.TOPO_EPS,
                    min=TOPO_EPS[0],
                    max=TOPO_EPS[1],
                    step=10,
                    value=eps,
                    marks={50: "0.5×", 100: "auto", 200: "2×"},
                    updatemode="mouseup",
                ),
                "DBSCAN radius, relative to the automatic one",
            ),
            labelled(
                "Edges: Jaccard ≥",
                dcc.Slider(
                    id=ids.TOPO_JACCARD,
                    min=TOPO_JACCARD[0],
                    max=TOPO_JACCARD[1],
                    step=5,
                    value=state.topo_jaccard,
                    marks={0: "0", 50: "0.5", 100: "1"},
                    updatemode="mouseup",
                ),
                worded(context.data, "hide edges whose nodes share fewer images (|a∩b| / |a∪b|)"),
            ),
            labelled(
                "Clusterer",
                dcc.RadioItems(
                    id=ids.TOPO_CLUSTER,
                    options=[{"label": c.upper(), "value": c} for c in TOPO_CLUSTERERS],
                    value=state.topo_cluster,
                    **radio,
                ),
            ),
            labelled(
                "Metric",
                dcc.RadioItems(
                    id=ids.TOPO_METRIC,
                    options=[{"label": m, "value": m} for m in TOPO_METRICS],
                    value=state.topo_metric or index_metric(data),
                    **radio,
                ),
            ),
            labelled(
                "Colour",
                dcc.RadioItems(
                    id=ids.TOPO_COLOUR,
                    options=[{"label": _COLOUR_LABELS[c], "value": c} for c in TOPO_COLOURS],
                    value=state.topo_colour,
                    **radio,
                ),
            ),
        ],
        className="controls topo-controls",
        style=None if available else {"display": "none"},
    )
    return html.Section(
        [
            html.Div(
                [
                    html.H2([html.Span("F", className="view-tag"), "Activation topology"]),
                    html.Div(id=ids.TOPO_STATUS, className="topo-status"),
                    html.Button(
                        "Recompute exactly",
                        id=ids.TOPO_EXACT,
                        n_clicks=0,
                        className="topo-exact",
                        title=(
                            "cluster every interval with exact DBSCAN from the sampled "
                            "vectors (slower: a fresh neighbour search for these parameters)"
                        ),
                        style={"display": "none"},
                    ),
                    card_actions(
                        [
                            FileButton(
                                "CSV",
                                ids.TOPO_CSV,
                                "Download the members of every node of this graph as CSV "
                                "(node, sample row, input index, label, class)",
                            )
                        ],
                        ids.TOPO_DOWNLOAD,
                        ids.TOPO_PNG,
                    ),
                ],
                className="card-head",
            ),
            controls,
            html.Div(id=ids.TOPO_MESSAGE),
            html.Div(
                None if available else note(data.missing_note(PART_MAPPER), kind="missing"),
                id=ids.TOPO_NOTE,
            ),
            dcc.Store(id=ids.TOPO_CLASSES, data=None),
            dcc.Store(id=ids.TOPO_SHOWN, data=None),
            html.Div(
                [
                    html.Div(HOVER_HINT, id=ids.TOPO_HOVER, className="topo-hover"),
                    cyto.Cytoscape(
                        id=ids.TOPO_GRAPH,
                        elements=[],
                        layout={"name": "preset", "fit": True, "padding": 20},
                        stylesheet=STYLESHEET,
                        minZoom=0.1,
                        maxZoom=5,
                        autoungrabify=True,
                        boxSelectionEnabled=False,
                        clearOnUnhover=True,
                        className="cytoscape topo-cytoscape",
                        style={"height": "560px", "width": "100%"}
                        if available
                        else {"display": "none"},
                    ),
                    html.Aside(
                        [
                            html.Div(id=ids.TOPO_PANEL, className="topo-panel"),
                            html.Div(id=ids.TOPO_SHAPES, className="topo-shapes"),
                        ],
                        className="hover-panel topo-side",
                    ),
                ],
                className="graph-area topo-area",
                style=None if available else {"display": "none"},
            ),
            how_to_read(
                worded(
                    context.data,
                    "TopoAct's Mapper graph of the layer: every sampled image contributes one "
                    + (
                        "activation vector (at one token, or the mean over its tokens); "
                        if context.data.text
                        else "activation vector (at one spatial position); "
                    )
                    + "vectors are sliced by their L2 norm into overlapping intervals, each "
                    "slice is clustered (DBSCAN), and each cluster is a node. Nodes sharing "
                    "images are joined; edge width is their Jaccard index. Norms grow from "
                    "left to right.",
                ),
                worded(
                    context.data,
                    "Each node is a pie of the classes of its images (the selected class in "
                    "orange; nodes holding it have an orange ring), sized by image count. "
                    "Branches (flares) that end in one class and loops are found automatically "
                    "and listed; click one to highlight it, or click a node to see its classes "
                    + (
                        "and texts, the token of each marked "
                        if context.data.text
                        else "and images and the activation inversion of its mean vector "
                    )
                    + "(its classes are also highlighted in the class embedding).",
                ),
            ),
        ],
        className="card card-topology",
        id="topology",
        **{"data-inputs": context.data.inputs},
    )
