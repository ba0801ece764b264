"""(F) Activation topology: TopoAct's Mapper graph of a layer, recomputed live (callbacks).

Nodes are clusters of sampled activation vectors (one per image) that share a slice of
the L2-norm lens; edges join clusters sharing images. Nodes are pies of their class
composition (or coloured by mean L2 norm / share of the selected class), sized by member
count. Parameters live in the URL; a change recomputes the graph from the stored index
(``data.py``). The selected class (from the Summit views) rings the nodes that
hold it; opening a node shows its class table and member crops, and highlights its
classes in the class embedding. Flares and loops are listed, ranked, and clickable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dash import (
    ALL,
    ClientsideFunction,
    Dash,
    Input,
    Output,
    Patch,
    State,
    ctx,
    html,
    no_update,
)

from compute.export import csv_text, mapper_file_name, mapper_table
from compute.topology import MapperGraph, MapperParams, Shape
from dashboard import ids as page_ids
from dashboard.data import PART_EMBEDDING, PART_MAPPER, file_url
from dashboard.snippets import snippet
from dashboard.state import ViewState
from dashboard.views.common import ViewContext, guarded, note, register_png_export, worded
from dashboard.views.summit import ids as summit_ids
from dashboard.views.topology import ids
from dashboard.views.topology.data import (
    PALETTE,
    MapperData,
    MapperResult,
    class_colour,
    class_table,
    legend_classes,
    mapper_data,
    node_classes,
    node_label,
    shape_summary,
    topology_elements,
)
from dashboard.views.topology.layout import HOVER_HINT, topo_layer
from dashboard.views.topology.state import EVENTS, SHAPE_TYPE, TOPO_INTERVALS

#: Member crops shown for an opened node.
CROPS_SHOWN = 12
#: Above this many nodes the view suggests coarser parameters (the browser slows down).
LARGE_GRAPH = 1_500
#: Shapes listed (each kind is ranked largest first).
SHAPES_SHOWN = 12


# The hover line: node name, images, main class and its share, the selected class's share
# and the mean L2 norm, from the element's data (no request). New elements (a parameter
# change, a layer, a class switch) clear it: the node under the pointer may be gone.
_HOVER_JS = """function(node, elements) {
    const ctx = window.dash_clientside.callback_context;
    const redrawn = ctx.triggered.some(t => t.prop_id.endsWith('.elements'));
    if (!node || redrawn) { return %s; }
    // The card says what its inputs are called (a text atlas: texts).
    const card = document.getElementById('topology');
    const plural = (card && card.dataset.inputs) || 'images';
    const noun = node.count === 1 ? plural.slice(0, -1) : plural;
    const parts = ['node ' + node.name, node.count + ' ' + noun];
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
    return {"type": SHAPE_TYPE, "index": rank}


# -- rendering -----------------------------------------------------------------------------


def _status(result: MapperResult, selected: int, name: str, inputs: str = "images") -> list[Any]:
    graph = result.graph
    holding = int((result.stats.class_counts[:, selected] > 0).sum()) if graph.num_nodes else 0
    exact = result.approximation is None
    pills = [
        html.Span(f"{graph.num_nodes:,} nodes", className="pill"),
        html.Span(f"{graph.num_edges:,} edges", className="pill"),
        html.Span(
            f"coverage {100 * graph.coverage:.0f}%",
            className="pill",
            title=f"share of the sampled {inputs} that fall in at least one node",
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
            title=f"nodes holding {inputs} of the selected class (orange ring)",
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
    if data.text:  # members as snippets: the sampled token of each member marked
        return [
            _node_heading(graph, node),
            html.Div(
                f"{int(stats.count[node]):,} texts · mean L2 {float(stats.mean_norm[node]):.3g}",
                className="topo-node-facts",
            ),
            html.Table(html.Tbody(rows), className="topo-class-table", id="topo-class-table"),
            html.Div(
                member_snippets(context, mapper, result.layer, members), className="snippet-list"
            ),
        ]
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
        _node_heading(graph, node),
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


def member_snippets(
    context: ViewContext, mapper: MapperData, layer: int, members: Any
) -> list[Any]:
    """Up to :data:`CROPS_SHOWN` members of a text atlas's node: each input's text around
    its sampled token (the vector the node holds), the token marked."""
    data = context.data
    sample = mapper.sample(layer)
    rows = []
    for row in members.tolist()[:CROPS_SHOWN]:
        index, token = int(sample.image_index[row]), int(sample.position[row][1])
        rows.append(
            html.Div(
                snippet(
                    data.atlas.text_input(index),
                    token,
                    title=f"input #{index} · {data.names[int(sample.label[row])]}",
                ),
                className="snippet-row",
            )
        )
    return rows or [note("No member of this node is stored.")]


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
            "python -m compute featurevis --atlas DIR --mapper-only (needs torch, and "
            "--weights FILE when the atlas does not store the model's weights)."
        )
    return html.Div(note(text), id=ids.TOPO_INVERSION, className="topo-inversion")


def shape_list(
    result: MapperResult,
    names: tuple[str, ...],
    picked: int | None,
    inputs: str = "images",
) -> list[Any]:
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
                    shape_summary(shape, ordinal[rank], names, inputs),
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
        panel = note(worded(context.data, "Click a node to see its classes and images."))
    return (
        elements,
        [
            *_status(result, state.cls, data.names[state.cls], data.inputs),
            colour_legend(result, state.topo_colour, state.cls, data.names),
        ],
        messages or None,
        shape_list(
            result,
            data.names,
            drawn.shape_rank if drawn.shape is not None else None,
            data.inputs,
        ),
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
    columns, rows = mapper_table(
        data.atlas, drawn.result.graph, drawn.mapper.sample(layer), data.names
    )
    return {
        "content": csv_text(columns, rows),
        "filename": mapper_file_name(
            data.atlas.path.name, data.layer_names[layer], drawn.result.params
        ),
        "type": "text/csv",
    }


def register(app: Dash, context: ViewContext) -> None:
    """Callbacks of the Topology view: its reducer, the render, the embedding highlight.

    ``context.data`` is read inside each callback: it follows the request's atlas.
    """

    def png_name(stored: Any, _fmt: str) -> dict[str, Any] | None:
        """The PNG is named as the members CSV (atlas, layer, parameters), and an empty
        graph downloads nothing."""
        data = context.data
        if not data.has(PART_MAPPER):
            return None
        result = _draw(context, stored, exact=False).result
        if not result.graph.num_nodes:
            return None
        name = mapper_file_name(data.atlas.path.name, data.layer_names[result.layer], result.params)
        return {"filename": name.removesuffix(".csv") + ".json"}

    register_png_export(
        app,
        ids.TOPO_PNG,
        ids.TOPO_GRAPH,
        "mapper-graph",
        store=page_ids.STATE_TOPOLOGY,
        download=png_name,
    )

    @app.callback(
        Output(ids.TOPO_DOWNLOAD, "data"),
        Input(ids.TOPO_CSV, "n_clicks"),
        State(page_ids.STATE_TOPOLOGY, "data"),
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
        ClientsideFunction(page_ids.REDUCERS, "reduceTopology"),
        Output(page_ids.STATE, "data", allow_duplicate=True),
        Output(ids.TOPO_MESSAGE, "children"),
        Output(ids.TOPO_INTERVALS, "value"),
        Output(page_ids.STATE_URL, "search", allow_duplicate=True),
        *[Input(component, prop) for component, prop in EVENTS],
        Input({"type": SHAPE_TYPE, "index": ALL}, "n_clicks"),
        State(page_ids.STATE, "data"),
        State(page_ids.STATE_RULES, "data"),
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
        Input(page_ids.STATE_TOPOLOGY, "data"),
        Input(ids.TOPO_EXACT, "n_clicks"),
        State(ids.TOPO_SHOWN, "data"),
    )
    @guarded(
        no_update, no_update, None, no_update, no_update, no_update, no_update, None, note_at=2
    )
    def update_topology(stored: Any, _clicks: Any, shown: Any) -> tuple[Any, ...]:
        return update(context, stored, shown, exact=ctx.triggered_id == ids.TOPO_EXACT)

    @app.callback(
        Output(summit_ids.EMBEDDING, "figure", allow_duplicate=True),
        Input(ids.TOPO_CLASSES, "data"),
        Input(summit_ids.EMBEDDING_LAYER, "data"),
        prevent_initial_call=True,
    )
    def highlight_embedding(classes: Any, shown_layer: Any) -> Any:
        """Mark the opened node's classes in the class embedding (others faded)."""
        data = context.data
        if not data.has(PART_EMBEDDING) or shown_layer is None:
            return no_update
        if ctx.triggered_id == summit_ids.EMBEDDING_LAYER and not classes:
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


def _node_heading(graph: MapperGraph, node: int) -> html.H3:
    """The node panel's title: its short name, and what the name means."""
    interval, cluster = int(graph.node_interval[node]), int(graph.node_cluster[node])
    return html.H3(
        [
            f"Node {node_label(graph, node)} ",
            html.Span(
                # The short name counts from 0, as the CSV's node_name does: say so.
                f"(lens interval {interval}, cluster {cluster}, both counted from 0)",
                className="muted topo-node-name",
            ),
        ],
        className="topo-node-title",
    )
