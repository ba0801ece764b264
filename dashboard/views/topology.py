"""(E) Activation topology: TopoAct's Mapper graph of a layer, recomputed live.

Nodes are clusters of sampled activation vectors (one per image) that share a slice of
the L2-norm lens; edges join clusters sharing images. Nodes are pies of their class
composition (or coloured by mean L2 norm / share of the selected class), sized by member
count. Parameters live in the URL; a change recomputes the graph from the stored index
(:mod:`dashboard.mapper`). The selected class (from the Summit views) rings the nodes that
hold it; opening a node shows its class table and member crops, and highlights its
classes in the class embedding. Flares and loops are listed, ranked, and clickable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import dash_cytoscape as cyto
from dash import (
    ALL,
    ClientsideFunction,
    Dash,
    Input,
    Output,
    Patch,
    State,
    ctx,
    dcc,
    html,
    no_update,
)

from compute.export import MAPPER_COLUMNS, csv_text, mapper_file_name, mapper_member_rows
from compute.topology import MapperParams, Shape
from dashboard import ids
from dashboard.data import PART_EMBEDDING, PART_MAPPER, AtlasData, file_url
from dashboard.mapper import (
    PALETTE,
    MapperData,
    MapperResult,
    class_colour,
    class_table,
    legend_classes,
    node_classes,
    node_label,
    shape_summary,
    topology_elements,
    topology_stylesheet,
)
from dashboard.state import (
    TOPO_CHOICES,
    TOPO_CLUSTERERS,
    TOPO_COLOURS,
    TOPO_EPS,
    TOPO_INTERVALS,
    TOPO_METRICS,
    TOPO_NUMBERS,
    TOPO_OVERLAP,
    StateBounds,
    ViewState,
    clamp,
    is_index,
)
from dashboard.views.common import (
    ViewContext,
    card_actions,
    guarded,
    how_to_read,
    labelled,
    note,
    register_png_export,
)

STYLESHEET = topology_stylesheet()
#: Member crops shown for an opened node.
CROPS_SHOWN = 12
#: Above this many nodes the view suggests coarser parameters (the browser slows down).
LARGE_GRAPH = 1_500
#: Shapes listed (each kind is ranked largest first).
SHAPES_SHOWN = 12
_SHAPE_TYPE = "topo-shape"

_COLOUR_LABELS = {"pie": "class pies", "norm": "mean L2 norm", "share": "share of class"}
#: The hover line when no node is under the pointer.
HOVER_HINT = "Hover a node for its size, main class and mean norm."

# The hover line: node name, images, main class and its share, the selected class's share
# and the mean L2 norm, from the element's data (no request). New elements (a parameter
# change, a layer, a class switch) clear it: the node under the pointer may be gone.
_HOVER_JS = """function(node, elements) {
    const ctx = window.dash_clientside.callback_context;
    const redrawn = ctx.triggered.some(t => t.prop_id.endsWith('.elements'));
    if (!node || redrawn) { return %s; }
    const parts = ['node ' + node.name, node.count + (node.count === 1 ? ' image' : ' images')];
    if (node.title) { parts.push('mostly ' + node.title); }
    if (node.share) { parts.push('selected class ' + Math.round(100 * node.share) + '%%'); }
    parts.push('mean L2 ' + Number(node.norm).toFixed(2));
    return parts.join(' · ');
}"""


def empty_graph_hint(params: MapperParams, fewest_intervals: int) -> str:
    """What to change when a Mapper graph has no node: only the controls that apply to the
    clusterer in use and that can still move in the helpful direction.

    >>> hint = empty_graph_hint(MapperParams(intervals=10, clusterer="hdbscan"), 10)
    >>> hint.startswith("No node at these parameters: try a larger overlap (HDBSCAN")
    True
    """
    tips = []
    if params.clusterer == "dbscan":
        tips.append("a larger ε")
    if params.intervals > fewest_intervals:
        tips.append("fewer intervals")
    tips.append("a larger overlap")
    choices = f"{', '.join(tips[:-1])} or {tips[-1]}" if len(tips) > 1 else tips[0]
    text = f"No node at these parameters: try {choices}"
    if params.clusterer == "hdbscan":
        text += f" (HDBSCAN needs {params.min_cluster_size} points per cluster in an interval)"
    return text + "."


def shape_id(rank: int) -> dict[str, Any]:
    """Pattern-matching id of the ``rank``-th shape button."""
    return {"type": _SHAPE_TYPE, "index": rank}


@lru_cache(maxsize=8)
def mapper_data(data: AtlasData) -> MapperData:
    """The memoised Mapper graphs of an atlas (one per worker)."""
    return MapperData(data)


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
                    min=0,
                    max=100,
                    step=5,
                    value=state.topo_jaccard,
                    marks={0: "0", 50: "0.5", 100: "1"},
                    updatemode="mouseup",
                ),
                "hide edges whose nodes share fewer images (|a∩b| / |a∪b|)",
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
                    value=state.topo_metric or _index_metric(data),
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
                    html.H2([html.Span("E", className="view-tag"), "Activation topology"]),
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
                        "CSV",
                        ids.TOPO_CSV,
                        ids.TOPO_DOWNLOAD,
                        "Download the members of every node of this graph as CSV "
                        "(node, sample row, image index, label, class)",
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
                "TopoAct's Mapper graph of the layer: every sampled image contributes one "
                "activation vector (at one spatial position); vectors are sliced by their "
                "L2 norm into overlapping intervals, each slice is clustered (DBSCAN), and "
                "each cluster is a node. Nodes sharing images are joined; edge width is "
                "their Jaccard index. Norms grow from left to right.",
                "Each node is a pie of the classes of its images (the selected class in "
                "orange; nodes holding it have an orange ring), sized by image count. "
                "Branches (flares) that end in one class and loops are found automatically "
                "and listed; click one to highlight it, or click a node to see its classes, "
                "images and the activation inversion of its mean vector (its classes are "
                "also highlighted in the class embedding).",
            ),
        ],
        className="card card-topology",
        id="topology",
    )


def _index_metric(data: AtlasData) -> str:
    settings = data.atlas.parameters.get("mapper") or {}
    return str(settings.get("metric", "euclidean"))


# -- the state reducer of this view ---------------------------------------------------------

#: Fields whose change makes a new graph (so the opened node and shape are dropped).
_GRAPH_FIELDS: tuple[str, ...] = (
    "topo_layer",
    "topo_intervals",
    "topo_overlap",
    "topo_eps",
    "topo_cluster",
    "topo_metric",
)
#: Number controls: ``component -> (field, (lo, hi), label)``; values outside are clamped
#: (the bounds and labels: ``dashboard.state.TOPO_NUMBERS``).
_BOUNDS: dict[str, tuple[str, tuple[int, int], str]] = {
    component: (field, *TOPO_NUMBERS[field])
    for component, field in (
        (ids.TOPO_INTERVALS, "topo_intervals"),
        (ids.TOPO_OVERLAP, "topo_overlap"),
        (ids.TOPO_EPS, "topo_eps"),
        (ids.TOPO_JACCARD, "topo_jaccard"),
    )
}
#: Choice controls: ``component -> (field, options)`` (``dashboard.state.TOPO_CHOICES``).
_CHOICES: dict[str, tuple[str, tuple[str, ...]]] = {
    component: (field, TOPO_CHOICES[field])
    for component, field in (
        (ids.TOPO_CLUSTER, "topo_cluster"),
        (ids.TOPO_METRIC, "topo_metric"),
        (ids.TOPO_COLOUR, "topo_colour"),
    )
}


def reducer_rules() -> dict[str, Any]:
    """This view's events for the browser's reducer (``assets/state.js``)."""
    return {
        "shape_type": _SHAPE_TYPE,
        "graph": ids.TOPO_GRAPH,
        "layer": ids.TOPO_LAYER,
        "intervals": ids.TOPO_INTERVALS,
        "bounds": {k: [field, lo, hi, label] for k, (field, (lo, hi), label) in _BOUNDS.items()},
        "choices": {k: [field, list(options)] for k, (field, options) in _CHOICES.items()},
        "graph_fields": list(_GRAPH_FIELDS),
    }


def apply_topology_event(
    state: ViewState, trigger: Any, value: Any, bounds: StateBounds
) -> tuple[ViewState, str | None]:
    """The state after one Topology control event, and a message if a value was refused.

    The reference of the browser's reducer (``assets/state.js``). Numbers outside their
    range are clamped (the message says so); junk is refused and leaves the state
    unchanged. A new graph drops the opened node and shape.

    Args:
        state: the current state.
        trigger: the id of the component that fired.
        value: its new value.
        bounds: what the atlas holds.
    """
    if isinstance(trigger, dict):
        rank = trigger.get("index")
        if trigger.get("type") != _SHAPE_TYPE or not is_index(rank, None) or not value:
            return state, None
        return state.with_(topo_shape=None if state.topo_shape == rank else rank), None
    if trigger == ids.TOPO_GRAPH:
        node = value.get("node") if isinstance(value, dict) else None
        return (state.with_(topo_node=node) if is_index(node, None) else state), None
    message: str | None = None
    if trigger == ids.TOPO_LAYER:
        if not bounds.is_layer(value):
            return state, "Unknown layer: ignored."
        field, new = "topo_layer", value
    elif trigger in _BOUNDS:
        field, (lo, hi), label = _BOUNDS[trigger]
        # (``clamp`` reads a list as its first item, as a repeated URL key: not here.)
        number = None if isinstance(value, (list, dict)) else clamp(value, lo, hi)
        if number is None:
            return state, f"{label} must be a number from {lo} to {hi}: value ignored."
        new = int(number)
        if float(value) != number:
            message = f"{label} {value} is outside {lo}–{hi}: using {new}."
    elif trigger in _CHOICES:
        field, options = _CHOICES[trigger]
        if value not in options:
            return state, "Unknown choice: ignored."
        new = value
    else:
        return state, None
    if getattr(state, field) == new:
        return state, message
    resets = {"topo_node": None, "topo_shape": None} if field in _GRAPH_FIELDS else {}
    return state.with_(**{field: new}, **resets), message


# -- rendering -----------------------------------------------------------------------------


def _status(result: MapperResult, selected: int, name: str) -> list[Any]:
    graph = result.graph
    holding = int((result.stats.class_counts[:, selected] > 0).sum()) if graph.num_nodes else 0
    exact = result.approximation is None
    pills = [
        html.Span(f"{graph.num_nodes:,} nodes", className="pill"),
        html.Span(f"{graph.num_edges:,} edges", className="pill"),
        html.Span(
            f"coverage {100 * graph.coverage:.0f}%",
            className="pill",
            title="share of the sampled images that fall in at least one node",
        ),
        html.Span(
            "exact" if exact else "approximate",
            className="pill " + ("pill-ok" if exact else "pill-warn"),
            title="equal to DBSCAN on every interval (KeplerMapper's graph)"
            if exact
            else f"approximate: {result.approximation}",
        ),
        html.Span(f"ε {graph.eps:.3g}" if graph.eps == graph.eps else "HDBSCAN", className="pill"),
        html.Span(
            f"{name}: {holding} node{'' if holding == 1 else 's'}",
            className="pill pill-class",
            title="nodes holding images of the selected class (orange ring)",
        ),
    ]
    return pills


def colour_legend(result: MapperResult, colour: str, selected: int, names: tuple[str, ...]) -> Any:
    """What the node colours mean: the classes of the pies (colour by class), or the ends
    of the norm or share scale."""
    if result.graph.num_nodes == 0:
        return None
    if colour == "norm":
        return html.Div(
            "colour: mean L2 norm of a node's activation vectors, dark blue (lowest) to "
            "yellow (highest)",
            className="topo-legend",
        )
    if colour == "share":
        return html.Div(
            f"colour: share of {names[selected]} among a node's images, white (none) to "
            "orange (all)",
            className="topo-legend",
        )
    items = [
        html.Span(
            [
                html.Span(className="swatch", style={"background": swatch}),
                " " + (names[c] if c >= 0 else "other classes"),
            ],
            className="topo-legend-item" + (" selected" if c == selected else ""),
        )
        for c, swatch in legend_classes(result.stats.class_counts, selected)
    ]
    repeat = len(names) > len(PALETTE)
    return html.Div(
        [
            html.Span("pie slices: ", className="topo-legend-label"),
            *items,
            html.Span(
                f" (colours repeat every {len(PALETTE)} classes: hover a node for its "
                "largest class)"
                if repeat
                else "",
                className="topo-legend-label",
            ),
        ],
        className="topo-legend",
    )


def node_panel(
    context: ViewContext, mapper: MapperData, result: MapperResult, node: int, selected: int
) -> list[Any]:
    """The opened node: size, mean norm, class table and member crops."""
    data = context.data
    graph, stats = result.graph, result.stats
    rows = [
        html.Tr(
            [
                html.Td(
                    html.Span(className="swatch", style={"background": class_colour(c, selected)})
                ),
                html.Td(name, className="topo-class-name"),
                html.Td(f"{count:,}", className="num"),
                html.Td(f"{pct:.0f}%", className="num"),
            ],
            className="topo-class-row selected" if c == selected else "topo-class-row",
            title="click to select this class in every view",
            **{"data-class": str(c)},
        )
        for c, name, count, pct in class_table(result, node, data.names)
    ]
    members = graph.members(node)
    crops = []
    for row in members.tolist():
        path = mapper.crop(result.layer, row)
        if path is not None:
            crops.append((row, path))
        if len(crops) >= CROPS_SHOWN:
            break
    sample = mapper.sample(result.layer)
    images = [
        html.Img(
            src=file_url(context.file_prefix, path),
            className="crop",
            title=f"image #{int(sample.image_index[row])} · {data.names[int(sample.label[row])]}",
            alt="member crop",
        )
        for row, path in crops
    ]
    return [
        html.H3(f"Node {node_label(graph, node)}", className="topo-node-title"),
        html.Div(
            f"{int(stats.count[node]):,} images · mean L2 {float(stats.mean_norm[node]):.3g}",
            className="topo-node-facts",
        ),
        inversion_block(context, mapper, result, node),
        html.Table(html.Tbody(rows), className="topo-class-table", id="topo-class-table"),
        html.Div(images, className="crop-grid")
        if images
        else note("No crops are stored for this node's images."),
    ]


def inversion_block(
    context: ViewContext, mapper: MapperData, result: MapperResult, node: int
) -> html.Div:
    """The node's activation-inversion image, or why there is none and how to make it.

    Images are stored per member set (``mapper/inversions``, rendered for the nodes of the
    default graph), so any graph showing the same node shows its image.
    """
    key = result.graph.node_key(node)
    path = mapper.data.atlas.mapper_inversion(result.layer, key)
    if path is not None:
        return html.Div(
            [
                html.Img(
                    src=file_url(context.file_prefix, path),
                    className="topo-inversion-img",
                    alt="activation inversion of the node's mean vector",
                    title="image whose activation at this layer points along the node's "
                    "mean activation vector (activation inversion)",
                ),
                html.Span("inversion of the node's mean activation", className="topo-caption"),
            ],
            id=ids.TOPO_INVERSION,
            className="topo-inversion",
        )
    settings = mapper.data.atlas.parameters.get("mapper") or {}
    if settings.get("inversions"):
        defaults = mapper.defaults()
        text = (
            "Inversion images are rendered for the nodes of the default graph "
            f"({defaults.intervals} intervals, {100 * defaults.overlap:.0f}% overlap, "
            f"ε × {defaults.eps_scale:g}); this node is not one of them."
        )
    else:
        text = (
            "No activation-inversion image: render them for the default graph's nodes with "
            "python -m compute featurevis --atlas DIR --mapper-only (needs torch and the "
            "model's weights in the atlas)."
        )
    return html.Div(note(text), id=ids.TOPO_INVERSION, className="topo-inversion")


def shape_list(result: MapperResult, names: tuple[str, ...], picked: int | None) -> list[Any]:
    """The ranked flares and loops, each a button."""
    shapes = result.shapes[:SHAPES_SHOWN]
    if not shapes:
        return [html.H3("Flares and loops"), note("No flare or loop in this graph.")]
    # Numbered within their kind ("flare 2", "loop 1"); buttons keep the overall rank.
    ordinal = [sum(s.kind == shape.kind for s in shapes[:i]) for i, shape in enumerate(shapes)]
    return [
        html.H3("Flares and loops"),
        html.Div(
            [
                html.Button(
                    shape_summary(shape, ordinal[rank], names),
                    id=shape_id(rank),
                    n_clicks=0,
                    className="topo-shape" + (" selected" if rank == picked else ""),
                    title="click to highlight its nodes (again to clear)",
                )
                for rank, shape in enumerate(shapes)
            ],
            className="topo-shape-list",
        ),
    ]


def approximation_note(reason: str, cap: int) -> str:
    """What an approximate graph means, in the view's words (``cap``: the index's cap)."""
    nearest = f"the {cap} nearest on each side in lens order, " if cap > 0 else ""
    return (
        f"Approximate graph ({reason}). To answer any parameters within a second, the "
        f"stored index keeps for each image only its nearest neighbours ({nearest}within "
        "the default interval's width and twice the automatic ε); DBSCAN then sees only "
        "those, so a few clusters may split or points drop to noise compared with exact "
        "DBSCAN on each interval. "
        "“Recompute exactly” runs the exact clustering for these parameters."
    )


@dataclass(frozen=True)
class _Drawn:
    """What one render of the view draws: the state, the graph and the picked node/shape."""

    state: ViewState
    mapper: MapperData
    result: MapperResult
    notes: list[str]
    node: int | None
    shape_rank: int | None
    shape: Shape | None

    def key(self, digest: str) -> dict[str, Any]:
        """What the drawn elements depend on (JSON-able, no server path); ``cls`` apart."""
        graph = self.result.graph
        return {
            "atlas": digest,
            "layer": self.result.layer,
            "params": repr(self.result.params),
            "exact": self.result.approximation is None,
            "size": [graph.num_nodes, graph.num_edges],
            "colour": self.state.topo_colour,
            "jaccard": self.state.topo_jaccard,
            "node": self.node,
            "shape": self.shape_rank if self.shape is not None else None,
            "cls": self.state.cls,
        }


def _draw(context: ViewContext, stored: Any, exact: bool) -> _Drawn:
    """The graph the stored state shows (memoised per worker) and its picked parts."""
    data = context.data
    state = context.state(stored)
    mapper = mapper_data(data)
    layer = topo_layer(context, state)
    params, notes = mapper.params(state, layer)
    refusal = mapper.exact_refusal(layer, params) if exact else None
    if refusal is not None:
        notes.append(refusal)
    result = mapper.result(layer, params, exact=exact and refusal is None)
    node = state.topo_node
    if node is not None and node >= result.graph.num_nodes:
        node = None
    shape_rank = state.topo_shape
    shape = (
        result.shapes[shape_rank]
        if shape_rank is not None and shape_rank < min(len(result.shapes), SHAPES_SHOWN)
        else None
    )
    return _Drawn(state, mapper, result, notes, node, shape_rank, shape)


def render(context: ViewContext, stored: Any, exact: bool = False) -> tuple[Any, ...]:
    """Elements, status, note, shape list, node panel, node classes and exact-button style.

    Args:
        context: the view context.
        stored: the stored view state.
        exact: recompute the graph exactly (the "Recompute exactly" button).
    """
    data = context.data
    hidden = {"display": "none"}
    if not data.has(PART_MAPPER):
        return [], None, no_update, None, None, None, hidden
    drawn = _draw(context, stored, exact)
    return _render_drawn(context, drawn)


def _render_drawn(context: ViewContext, drawn: _Drawn) -> tuple[Any, ...]:
    """:func:`render`'s outputs for a drawn graph."""
    data = context.data
    state, mapper, result, node = drawn.state, drawn.mapper, drawn.result, drawn.node
    notes = list(drawn.notes)
    elements = topology_elements(
        result,
        selected=state.cls,
        colour=state.topo_colour,
        jaccard_min=state.topo_jaccard / 100.0,
        picked=node,
        shape=drawn.shape,
        names=data.names,
    )
    if result.approximation is not None:
        notes.append(
            approximation_note(result.approximation, mapper.index(result.layer).max_neighbors)
        )
    messages = [note(text) for text in notes]
    if result.graph.num_nodes == 0:
        messages.append(note(empty_graph_hint(result.params, TOPO_INTERVALS[0])))
    elif result.graph.num_nodes > LARGE_GRAPH:
        messages.append(
            note(
                f"{result.graph.num_nodes:,} nodes are slow to draw: fewer intervals or a "
                "larger ε give a smaller graph."
            )
        )
    panel: Any
    classes = None
    if node is not None:
        panel = node_panel(context, mapper, result, node, state.cls)
        classes = node_classes(result, node)
    else:
        panel = note("Click a node to see its classes and images.")
    return (
        elements,
        [
            *_status(result, state.cls, data.names[state.cls]),
            colour_legend(result, state.topo_colour, state.cls, data.names),
        ],
        messages or None,
        shape_list(result, data.names, drawn.shape_rank if drawn.shape is not None else None),
        panel,
        classes,
        None if result.approximation is not None else {"display": "none"},
    )


def update(context: ViewContext, stored: Any, shown: Any, exact: bool = False) -> tuple[Any, ...]:
    """The view's callback: :func:`render`'s outputs plus the key of what is drawn.

    ``shown`` is the key of what the browser draws (the ``TOPO_SHOWN`` store). When the new
    state draws the same graph the same way (another view's change), nothing is sent;
    otherwise the whole graph is. A class switch used to send a patch of the nodes holding
    either class, addressed by list index: with a slow recomputation still in flight the
    browser's list was not the one the patch assumed, and the graph lost nodes and edges
    (clicks during a metric change; tests/e2e/test_topology_e2e.py). Whole renders cannot
    be applied to the wrong list.

    Args:
        context: the view context.
        stored: the stored view state.
        shown: the ``TOPO_SHOWN`` store (``None`` before the first render).
        exact: recompute the graph exactly (the "Recompute exactly" button).
    """
    data = context.data
    if not data.has(PART_MAPPER):
        return (*render(context, stored, exact), None)
    drawn = _draw(context, stored, exact)
    key = drawn.key(data.digest)
    if not exact and isinstance(shown, dict):
        same = {k: v for k, v in shown.items() if k != "cls"} == {
            k: v for k, v in key.items() if k != "cls"
        }
        if same and shown.get("cls") == key["cls"]:
            return (no_update,) * 8
    return (*_render_drawn(context, drawn), key)


def members_download(context: ViewContext, stored: Any) -> dict[str, Any] | None:
    """The members of every node of the graph the state shows (its layer and parameters),
    as a CSV download named after them; the same table as ``compute export --what
    mapper`` writes for the default graph (``None`` without the Mapper part)."""
    data = context.data
    if not data.has(PART_MAPPER):
        return None
    drawn = _draw(context, stored, exact=False)
    layer = drawn.result.layer
    rows = mapper_member_rows(drawn.result.graph, drawn.mapper.sample(layer), data.names)
    return {
        "content": csv_text(MAPPER_COLUMNS, rows),
        "filename": mapper_file_name(
            data.atlas.path.name, data.layer_names[layer], drawn.result.params
        ),
        "type": "text/csv",
    }


def register(app: Dash, context: ViewContext) -> None:
    """Callbacks of the Topology view: its reducer, the render, the embedding highlight.

    ``context.data`` is read inside each callback: it follows the request's atlas.
    """

    register_png_export(app, ids.TOPO_PNG, ids.TOPO_GRAPH, "mapper-graph")

    @app.callback(
        Output(ids.TOPO_DOWNLOAD, "data"),
        Input(ids.TOPO_CSV, "n_clicks"),
        State(ids.STATE_TOPOLOGY, "data"),
        prevent_initial_call=True,
    )
    def download_members(_clicks: Any, stored: Any) -> Any:
        return members_download(context, stored)

    app.clientside_callback(
        _HOVER_JS % json.dumps(HOVER_HINT),
        Output(ids.TOPO_HOVER, "children"),
        Input(ids.TOPO_GRAPH, "mouseoverNodeData"),
        Input(ids.TOPO_GRAPH, "elements"),
        prevent_initial_call=True,
    )

    # The reducer runs in the browser, in event order (``dashboard.views.shell.register``).
    app.clientside_callback(
        ClientsideFunction(ids.REDUCERS, "reduceTopology"),
        Output(ids.STATE, "data", allow_duplicate=True),
        Output(ids.TOPO_MESSAGE, "children"),
        Output(ids.TOPO_INTERVALS, "value"),
        Output(ids.STATE_URL, "search", allow_duplicate=True),
        Input(ids.TOPO_LAYER, "value"),
        Input(ids.TOPO_INTERVALS, "value"),
        Input(ids.TOPO_OVERLAP, "value"),
        Input(ids.TOPO_EPS, "value"),
        Input(ids.TOPO_CLUSTER, "value"),
        Input(ids.TOPO_METRIC, "value"),
        Input(ids.TOPO_JACCARD, "value"),
        Input(ids.TOPO_COLOUR, "value"),
        Input(ids.TOPO_GRAPH, "tapNodeData"),
        Input({"type": _SHAPE_TYPE, "index": ALL}, "n_clicks"),
        State(ids.STATE, "data"),
        State(ids.STATE_RULES, "data"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output(ids.TOPO_GRAPH, "elements"),
        Output(ids.TOPO_STATUS, "children"),
        Output(ids.TOPO_NOTE, "children"),
        Output(ids.TOPO_SHAPES, "children"),
        Output(ids.TOPO_PANEL, "children"),
        Output(ids.TOPO_CLASSES, "data"),
        Output(ids.TOPO_EXACT, "style"),
        Output(ids.TOPO_SHOWN, "data"),
        Input(ids.STATE_TOPOLOGY, "data"),
        Input(ids.TOPO_EXACT, "n_clicks"),
        State(ids.TOPO_SHOWN, "data"),
    )
    @guarded(
        no_update, no_update, None, no_update, no_update, no_update, no_update, None, note_at=2
    )
    def update_topology(stored: Any, _clicks: Any, shown: Any) -> tuple[Any, ...]:
        return update(context, stored, shown, exact=ctx.triggered_id == ids.TOPO_EXACT)

    @app.callback(
        Output(ids.EMBEDDING, "figure", allow_duplicate=True),
        Input(ids.TOPO_CLASSES, "data"),
        Input(ids.EMBEDDING_LAYER, "data"),
        prevent_initial_call=True,
    )
    def highlight_embedding(classes: Any, shown_layer: Any) -> Any:
        """Mark the opened node's classes in the class embedding (others faded)."""
        data = context.data
        if not data.has(PART_EMBEDDING) or shown_layer is None:
            return no_update
        if ctx.triggered_id == ids.EMBEDDING_LAYER and not classes:
            return no_update
        patch = Patch()
        if classes:
            if not isinstance(classes, list):
                return no_update  # the store holds a list of class indices; anything else
            picked = [
                c
                for c in classes
                if isinstance(c, int) and not isinstance(c, bool) and 0 <= c < data.num_classes
            ]
            patch["data"][0]["selectedpoints"] = picked
            patch["data"][0]["unselected"] = {"marker": {"opacity": 0.15}}
        else:
            # Both keys back to what a fresh figure has: a clicked view equals its link's.
            patch["data"][0]["selectedpoints"] = None
            patch["data"][0]["unselected"] = None
        return patch
