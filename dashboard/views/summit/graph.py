"""(C) Attribution graph of the selected class (dash-cytoscape, preset positions).

Layers are horizontal rows, the top layer on top; node size is the class's activation
count of the channel, edge width its influence count; each node shows the channel's
feature visualization (when the atlas has the featurevis part) or, by the toggle, its
top dataset crop. Hovering a node fades all but its neighbours and shows its diversity
images and examples; clicking it opens the neuron panel. The Cytoscape component stays
in the static layout and only its ``elements``/``stylesheet`` change (see the Dash notes
on remounting).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import dash_cytoscape as cyto
import numpy as np
from dash import Dash, Input, Output, State, ctx, dcc, html, no_update

from compute.atlas import AtlasError
from compute.export import graph_file_stem
from dashboard import ids as page_ids
from dashboard.data import (
    PART_EXAMPLES,
    PART_FEATUREVIS,
    PART_GRAPHS,
    PART_SUBSETS,
    AtlasData,
    ClassGraph,
    file_url,
)
from dashboard.links import neuron_href
from dashboard.snippets import snippet
from dashboard.state import ViewState, parse_node_id
from dashboard.views.common import (
    ViewContext,
    card_actions,
    graph_buttons,
    graph_file,
    guarded,
    how_to_read,
    influence_methods,
    note,
    percent,
    register_graph_downloads,
    state_link,
    worded,
)
from dashboard.views.summit import ids
from dashboard.views.summit.figures import (
    base_stylesheet,
    graph_elements,
    graph_masks,
    hover_stylesheet,
)

_SLIDER_MARKS = {v: f"{v}%" for v in (0, 25, 50, 75, 100)}
BASE_STYLESHEET = base_stylesheet()


def graph_height(num_layers: int) -> str:
    """Canvas height: tall enough that a 9-layer graph keeps readable tiles."""
    return f"{max(420, min(880, 85 * num_layers + 60))}px"


def attribution_cytoscape(component_id: str, data: AtlasData, **extra: Any) -> cyto.Cytoscape:
    """An empty, preset-layout Cytoscape for attribution graphs (filled by a callback), as
    tall as the model's layers need; hidden when the atlas has no graphs. ``extra`` adds
    Cytoscape properties (e.g. ``clearOnUnhover``)."""
    return cyto.Cytoscape(
        id=component_id,
        elements=[],
        layout={"name": "preset", "fit": True, "padding": 24},
        stylesheet=BASE_STYLESHEET,
        minZoom=0.15,
        maxZoom=4,
        autoungrabify=True,
        boxSelectionEnabled=False,
        className="cytoscape",
        style={"height": graph_height(data.num_layers), "width": "100%"}
        if data.has(PART_GRAPHS)
        else {"display": "none"},
        **extra,
    )


def slider(component_id: str, label: str, value: int, tip: str) -> html.Div:
    """A labelled 0-100 % threshold slider."""
    return html.Div(
        [
            html.Label(label, htmlFor=component_id, title=tip),
            dcc.Slider(
                id=component_id,
                min=0,
                max=100,
                step=5,
                value=value,
                marks=_SLIDER_MARKS,
                updatemode="mouseup",
                tooltip={"placement": "bottom", "always_visible": False},
            ),
        ],
        className="slider-block",
    )


def pictures_mode(data: AtlasData, state: ViewState) -> str:
    """What the nodes show: the state's choice, defaulting to the feature visualization
    when the atlas has it; ``"vis"`` without the featurevis part falls back to crops."""
    has_vis = data.has(PART_FEATUREVIS)
    mode = state.pics or ("vis" if has_vis else "crop")
    return mode if has_vis else "crop"


def featurevis_missing(data: AtlasData) -> str:
    """The note shown instead of feature visualizations, with the command to add them (the
    atlas named by its directory's name only: a deployment never shows its server paths)."""
    return (
        "No feature visualizations in this atlas yet (a few minutes on a CPU for the demo): "
        f"python -m compute featurevis --atlas {data.atlas.path.name}"
    )


def featurevis_partial(data: AtlasData) -> str | None:
    """The note for a ``featurevis`` part that covers some layers only (``featurevis
    --layers``), naming them and the command that adds the rest; ``None`` when complete."""
    have = data.atlas.featurevis_channels()
    missing = [
        name
        for name, n, channels in zip(data.layer_names, have, data.channels, strict=True)
        if n < channels
    ]
    if not missing:
        return None
    covered = [name for name, n in zip(data.layer_names, have, strict=True) if n > 0]
    return (
        f"Feature visualizations only for {', '.join(covered) or 'no layer'}; the nodes of "
        f"{', '.join(missing)} show dataset crops. Add them: python -m compute featurevis "
        f"--atlas {data.atlas.path.name} --layers {' '.join(missing)}"
    )


def pictures_toggle(data: AtlasData, state: ViewState) -> html.Div:
    """The radio that switches node pictures (its value is part of the URL state)."""
    has_vis = data.has(PART_FEATUREVIS)
    partial = featurevis_partial(data) if has_vis else None
    if data.text:  # no picture to show: the radio stays (the callbacks read it), hidden
        return html.Div(
            [
                dcc.RadioItems(
                    id=ids.PICTURES, options=["crop"], value="crop", style={"display": "none"}
                ),
                html.Div(
                    note(
                        "A text model's units have no pictures: hover a unit for the inputs "
                        "it fires most on, the token of its maximum marked."
                    ),
                    id=ids.PICTURES_NOTE,
                ),
            ],
            className="slider-block pictures-block",
        )
    return html.Div(
        [
            html.Label("Nodes show", htmlFor=ids.PICTURES),
            dcc.RadioItems(
                id=ids.PICTURES,
                options=[
                    {"label": "feature visualization", "value": "vis", "disabled": not has_vis},
                    {"label": "dataset crop", "value": "crop"},
                ],
                value=pictures_mode(data, state),
                inline=True,
                className="pictures-toggle",
            ),
            html.Div(
                note(featurevis_missing(data), kind="missing")
                if not has_vis
                else (note(partial, kind="missing") if partial else None),
                id=ids.PICTURES_NOTE,
            ),
        ],
        className="slider-block pictures-block",
    )


#: The subset radio's labels (``GRAPH_SUBSETS`` values).
_SUBSET_LABELS = {"all": "all", "correct": "correct", "mistaken": "mistaken"}


def subset_toggle(data: AtlasData, state: ViewState) -> html.Div:
    """The radio choosing whose graph is shown: all the class's images, the correctly or
    the wrongly classified ones (disabled without the ``subsets`` part)."""
    has_subsets = data.has(PART_SUBSETS)
    return html.Div(
        [
            html.Label("Texts" if data.text else "Images", htmlFor=ids.SUBSET),
            dcc.RadioItems(
                id=ids.SUBSET,
                options=[
                    {"label": label, "value": value, "disabled": not has_subsets}
                    for value, label in _SUBSET_LABELS.items()
                ],
                value=state.subset,
                inline=True,
                className="pictures-toggle",
            ),
        ],
        className="slider-block pictures-block",
        title=worded(
            data,
            "the graph of all the class's images, or only of those the model classifies "
            "correctly or wrongly (same selection on that subset's counts)",
        )
        if has_subsets
        else "this atlas has no 'subsets' part",
    )


def layout(context: ViewContext, state: ViewState) -> html.Section:
    """The graph card: class header, sliders, graph, hover panel."""
    data = context.data
    has_graphs = data.has(PART_GRAPHS)
    return html.Section(
        [
            html.Div(
                [
                    html.H2([html.Span("C", className="view-tag"), "Attribution graph"]),
                    html.Div(id=ids.GRAPH_HEADER, className="class-header"),
                    card_actions(
                        graph_buttons(
                            ids.GRAPH_JSON,
                            ids.GRAPH_GRAPHML,
                            "this graph as shown (the sliders' thresholds applied)",
                        ),
                        ids.GRAPH_DOWNLOAD,
                        ids.GRAPH_PNG,
                    ),
                ],
                className="card-head",
            ),
            html.Div(
                [
                    slider(
                        ids.NODE_THRESHOLD,
                        f"Hide {'units' if data.text else 'channels'} used by fewer than",
                        state.node_min,
                        worded(data, "percent of the class's most-used channel"),
                    ),
                    slider(
                        ids.EDGE_THRESHOLD,
                        "Hide connections weaker than",
                        state.edge_min,
                        "percent of the class's strongest connection",
                    ),
                    pictures_toggle(data, state),
                    subset_toggle(data, state),
                ],
                className="controls",
            ),
            html.Div(
                None if has_graphs else note(data.missing_note(PART_GRAPHS), kind="missing"),
                id=ids.GRAPH_NOTE,
            ),
            html.Div(
                [
                    attribution_cytoscape(ids.GRAPH, data, clearOnUnhover=True),
                    html.Aside(
                        hover_placeholder(data.text),
                        id=ids.HOVER_PANEL,
                        className="hover-panel",
                    ),
                ],
                className="graph-area",
            ),
            how_to_read(
                "The graph shows which units the model relies on for the selected class and "
                "how they feed each other: each row is a layer (input side at the bottom, "
                "output side at the top), each tile a unit labelled by its index and the "
                "token it fires on most over the dataset."
                if data.text
                else "The graph shows which channels the model relies on for the selected class "
                "and how they feed each other: each row is a layer (input side at the "
                "bottom, output side at the top), each tile a channel with its feature "
                "visualization (an image optimised to excite it) or its top dataset crop, "
                "and its number the channel index.",
                worded(
                    data,
                    "Tile size is how many of the class's images activate the channel; an edge "
                    "from a lower channel to an upper one is drawn wider when the lower channel "
                    "was among the strongest influences on the upper one in more images. Use "
                    "the sliders to hide rarely used channels and weak connections. A faded, "
                    "dotted tile is a channel no image of the class (or of the correct or "
                    "mistaken ones shown) selects: it is there because channels those "
                    "images select draw on it.",
                ),
                extra=influence_note(data),
            ),
        ],
        className="card card-graph",
    )


def influence_note(data: AtlasData) -> list[Any]:
    """How the edges of each layer pair were computed (one line per kind of connection);
    nothing for an atlas of one layer."""
    pairs = data.layer_pairs()
    if not pairs:
        return []
    return [
        html.P("How each layer pair's connections (edges) were computed:"),
        influence_methods(data, pairs, ids.GRAPH_INFLUENCE_KINDS),
    ]


def confusions(context: ViewContext, state: ViewState) -> html.Span | None:
    """ "mistaken for" the classes most often predicted for the selected one, each a link
    that compares the two (``None`` when the atlas has no confusion counts or the class
    no mistakes)."""
    data = context.data
    found = data.mistaken_for(state.cls)
    if not found:
        return None
    links: list[Any] = ["mistaken for "]
    for k, (other, share) in enumerate(found):
        if k:
            links.append(", ")
        # With the pair's graph stored, the link also shows the images mistaken for it.
        pair = data.has(PART_SUBSETS) and data.atlas.pair_row(state.cls, other) is not None
        changes: dict[str, Any] = {"cls": state.cls, "compare": other}
        if pair:
            changes.update(subset="mistaken", mistaken_for=other)
        links.append(
            state_link(
                f"{data.names[other]} {percent(share)}",
                state,
                context.page_prefix,
                changes,
                className="confusion-link",
                title=f"compare with {data.names[other]}"
                + (", and show the graph of the images mistaken for it" if pair else "")
                + f": share of this class's images the model predicts as {data.names[other]}",
            )
        )
    return html.Span(links, className="pill confusions")


def class_header(context: ViewContext, state: ViewState) -> list[Any]:
    """Name, number of images, accuracy and confidence sparkline of the class."""
    data = context.data
    c = state.cls
    parts: list[Any] = [html.Span(data.names[c], className="class-name")]
    if data.num_images[c] > 0:
        inputs = "texts" if data.text else "images"
        parts.append(html.Span(f"{int(data.num_images[c]):,} {inputs}", className="pill"))
        parts.append(html.Span(f"accuracy {percent(data.accuracy[c])}", className="pill"))
    shown = subset_label(context, state)
    if shown is not None:
        parts.append(html.Span(shown, className="pill pill-subset"))
    mistakes = confusions(context, state)
    if mistakes is not None:
        parts.append(mistakes)
    spark = context.spark_url(c)
    if spark:
        parts.append(
            html.Img(
                src=spark,
                className="header-hist",
                alt="",
                title="confidence histogram (top-1 probability)",
            )
        )
    return parts


def subset_words(data: AtlasData, state: ViewState) -> str | None:
    """What the subset shown is, in words ("mistaken only", "mistaken for cat"; ``None``:
    all the class's images)."""
    if state.subset == "all":
        return None
    if state.mistaken_for is not None:
        return f"mistaken for {data.names[state.mistaken_for]}"
    return f"{state.subset} only"


def subset_label(context: ViewContext, state: ViewState) -> str | None:
    """The header's words for the subset shown and its size (``None``: all the class's
    images)."""
    data = context.data
    what = subset_words(data, state)
    if what is None:
        return None
    images = data.subset_images(state.cls, state.subset, state.mistaken_for)
    if images is None:
        return what
    noun = ("text" if data.text else "image") + ("" if images == 1 else "s")
    return f"{what}: {images:,} {noun}"


def shown_graph(data: AtlasData, state: ViewState) -> ClassGraph:
    """The graph the view shows: the class's, or its subset's (``AtlasError``: a subset
    the atlas does not hold)."""
    if state.subset != "all" and not data.has(PART_SUBSETS):
        raise AtlasError(data.missing_note(PART_SUBSETS))
    return data.graph(state.cls, state.subset, state.mistaken_for)


def render_graph(context: ViewContext, stored: Any) -> tuple[Any, Any, Any]:
    """Elements, class header and note for the stored state."""
    data = context.data
    state = context.state(stored)
    header = class_header(context, state)
    if not data.has(PART_GRAPHS):
        return [], header, no_update
    try:
        graph = shown_graph(data, state)
    except AtlasError:
        return [], header, note(missing_subset(data, state), kind="missing")
    elements = graph_elements(
        graph,
        node_min_pct=state.node_min,
        edge_min_pct=state.edge_min,
        picked=state.node,
        url_prefix=context.file_prefix,
        layer_names=data.layer_names,
        pictures=pictures_mode(data, state),
    )
    message = None
    if graph.num_nodes == 0:
        message = note(
            worded(
                data,
                "This class has no attribution graph (no channel passed selection)."
                if state.subset == "all"
                else f"No image of this class is {state.subset}ly classified: no graph."
                if state.subset == "correct"
                else "The model classifies every image of this class correctly: no graph of "
                "its mistakes.",
            )
        )
    elif not any("source" in e["data"] for e in elements) and graph.num_edges:
        message = note("Every connection is below the threshold; lower the slider.")
    elif state.subset == "all":
        message = left_out_note(context, state.cls, set(graph.ids.tolist()))
    return elements, header, message


#: A unit selected by at least this share of a class's inputs but absent from its graph is
#: named under the graph (Summit's PageRank can leave it out: see :func:`left_out_note`).
LEFT_OUT_SHARE = 0.5


def left_out_note(context: ViewContext, cls: int, shown: set[str]) -> html.Div | None:
    """Names the units most of the class's inputs select that its graph leaves out.

    Summit keeps a layer's top nodes by personalised PageRank over the influence edges: a
    unit the class uses everywhere but that has no strong connection to the layers next
    to it gets little of that mass, while a unit the class never selects can gain it along
    edges. Without this note the graph would read as if the class did not use it.
    """
    data = context.data
    total = int(data.num_images[cls])
    if total == 0:
        return None
    missing = []
    for layer in range(data.num_layers):
        counts = np.asarray(data.counts(layer)[cls])
        for channel in np.flatnonzero(counts >= LEFT_OUT_SHARE * total).tolist():
            if f"{layer}-{channel}" not in shown:
                missing.append((int(counts[channel]), layer, channel))
    if not missing:
        return None
    missing.sort(key=lambda m: (-m[0], m[1], m[2]))  # most used first; ties: lower layer
    unit, inputs = ("unit", "texts") if data.text else ("channel", "images")
    links: list[Any] = []
    for k, (count, layer, channel) in enumerate(missing[:5]):
        links += [", " if k else "", dcc.Link(
            f"{data.layer_names[layer]} {unit} {channel} ({count} of {total})",
            href=neuron_href(data.layer_names[layer], channel, context.page_prefix),
        )]  # fmt: skip
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return note(
        [
            f"Not on this graph although at least half of its {inputs} select them: ",
            *links,
            f"{more}. The graph keeps the {unit}s that rank highest by PageRank over the "
            f"connections (Summit's rule); a {unit} with no strong connection to the layers "
            "next to it ranks low however often it fires.",
        ]
    )


def missing_subset(data: AtlasData, state: ViewState) -> str:
    """Why the subset's graph is not there, and what to do."""
    if not data.has(PART_SUBSETS):
        return data.missing_note(PART_SUBSETS)
    settings = data.atlas.parameters.get("subsets") or {}
    other = state.mistaken_for
    name = data.names[other] if other is not None and 0 <= other < data.num_classes else "?"
    by_label = data.atlas.parameters.get("aggregate_by", "label") == "label"
    never = (
        by_label
        and data.confusion is not None
        and other is not None
        and 0 <= other < data.num_classes
        and int(data.confusion[state.cls, other]) == 0
    )
    inputs = "texts" if data.text else "images"
    if never:
        return (
            f"The model never mistook {'a text' if data.text else 'an image'} of "
            f"{data.names[state.cls]} for {name}: no graph. Choose 'mistaken' for the graph "
            "of all its mistakes."
        )
    return (
        f"No graph of the {inputs} of {data.names[state.cls]} mistaken for {name}: a "
        f"confusion gets its graph with at least {settings.get('confusion_min', '?')} "
        f"{inputs} (at most {settings.get('confusion_pairs', '?')} per class). Choose "
        "'mistaken' for the graph of all its mistakes."
    )


def example_strip(context: ViewContext, layer: int, channel: int, limit: int = 10) -> list[Any]:
    """Up to ``limit`` example crops of a channel (or a note saying why there are none)."""
    data = context.data
    if not data.has(PART_EXAMPLES):
        return [note(data.missing_note(PART_EXAMPLES), kind="missing")]
    if data.text:  # the input's text around the token of the unit's maximum
        return [
            html.Div(
                [
                    html.Span(
                        f"#{e['image_index']} · {e['activation']:.3g}", className="snippet-meta"
                    ),
                    snippet(
                        data.atlas.text_input(e["image_index"]),
                        e["token"],
                        title=f"input #{e['image_index']} · activation {e['activation']:.3g}",
                    ),
                ],
                className="snippet-row",
            )
            for e in data.examples(layer, channel)[:limit]
        ] or [note("No examples are stored for this unit.")]
    examples = [e for e in data.examples(layer, channel) if e["crop"]][:limit]
    if not examples:
        return [note("No example crops are stored for this channel.")]
    return [
        html.Img(
            src=file_url(context.file_prefix, e["crop"]),
            className="crop",
            title=f"image #{e['image_index']} · activation {e['activation']:.3g}",
            alt=f"example {e['rank'] + 1}",
        )
        for e in examples
    ]


def diversity_strip(context: ViewContext, layer: int, channel: int) -> list[Any]:
    """The channel's feature visualization and diversity images (empty without them)."""
    data = context.data
    paths = [data.featurevis(layer, channel), *data.diversity(layer, channel)]
    return [
        html.Img(
            src=file_url(context.file_prefix, path),
            className="crop vis",
            alt="feature visualization" if k == 0 else f"diversity image {k}",
            title="feature visualization" if k == 0 else f"diversity image {k}",
        )
        for k, path in enumerate(paths)
        if path is not None
    ]


def hover_placeholder(text: bool = False) -> html.Div:
    """The hover panel when no channel (a text atlas: unit) is hovered."""
    what = (
        "unit to see the texts it fires most on" if text else "channel to see its dataset examples"
    )
    return note(f"Hover a {what}; click it to open its neuron panel.")


def render_hover(context: ViewContext, node: Any, stored: Any) -> tuple[Any, Any]:
    """Stylesheet and hover panel when a node is hovered (or the state changed)."""
    placeholder = hover_placeholder(context.data.text)
    node_id = node.get("id") if isinstance(node, dict) else None
    parsed = parse_node_id(node_id or "")
    if ctx.triggered_id == page_ids.STATE or parsed is None:
        return BASE_STYLESHEET, placeholder
    data = context.data
    state = context.state(stored)
    layer, channel = parsed
    if layer >= data.num_layers or channel >= data.channels[layer]:
        return BASE_STYLESHEET, placeholder
    try:
        graph = shown_graph(data, state) if data.has(PART_GRAPHS) else None
    except AtlasError:
        graph = None
    neighbours = graph.neighbours(node_id) if graph is not None else []
    unit, inputs = ("unit", "texts") if data.text else ("channel", "images")
    facts = f"{data.layer_names[layer]} · {unit} {channel}"
    # The count the node is drawn with: the class's, or the subset's the graph shows.
    whose = data.names[state.cls]
    count, total = None, None
    if data.num_images[state.cls]:
        count, total = int(data.counts(layer)[state.cls, channel]), int(data.num_images[state.cls])
    subset = subset_words(data, state)
    if subset is not None and graph is not None:
        at = np.flatnonzero(graph.ids == node_id)
        total = data.subset_images(state.cls, state.subset, state.mistaken_for)
        count = int(graph.count[at[0]]) if at.size and total is not None else None
        whose = f"{whose} ({subset})"
    usage = f"active in {count:,} of {total:,} {inputs} of {whose}" if count is not None else ""
    if count == 0:
        usage += (
            f": none of these {inputs} selects this {unit}. It is on the graph (drawn "
            f"faded, dotted) because {unit}s they do select draw on it: its place comes "
            "from the connections alone."
        )
    panel: list[Any] = [html.H3(facts), html.P(usage, className="muted")]
    pictures = diversity_strip(context, layer, channel)
    if pictures:
        panel += [
            html.H4("Feature visualization and diversity", className="panel-sub"),
            html.Div(pictures, className="crop-grid"),
        ]
    # The examples are the whole dataset's (any class): say so, or a unit no input of
    # this class selects would seem to contradict its own examples.
    panel.append(html.H4("Top examples in the whole dataset", className="panel-sub"))
    strip = example_strip(context, layer, channel)
    panel.append(html.Div(strip, className="snippet-list" if data.text else "crop-grid"))
    return hover_stylesheet(BASE_STYLESHEET, node_id, neighbours), panel


def graph_download(context: ViewContext, stored: Any, fmt: str = "json") -> dict[str, Any] | None:
    """The selected class's graph as shown (its subset, the sliders' thresholds applied),
    as a node-link JSON or GraphML (``fmt``) download named after the atlas, the class,
    the subset and the thresholds: the layout ``python -m compute export`` writes
    (:meth:`compute.atlas.Atlas.graph_data`), without the nodes and edges the view hides
    (``None`` without graphs)."""
    data = context.data
    if not data.has(PART_GRAPHS):
        return None
    state = context.state(stored)
    try:
        shown = shown_graph(data, state)
    except AtlasError:
        return None  # no graph is shown: nothing to download
    # The drawable graph keeps the stored graph's node and edge order.
    nodes, edges = graph_masks(shown, state.node_min, state.edge_min)
    content = data.atlas.graph_data(state.cls, state.subset, state.mistaken_for)
    content["nodes"] = [n for n, kept in zip(content["nodes"], nodes, strict=True) if kept]
    content["edges"] = [e for e, kept in zip(content["edges"], edges, strict=True) if kept]
    content["graph"].update(node_min_pct=state.node_min, edge_min_pct=state.edge_min)
    stem = graph_file_stem(data.atlas, state.cls, state.subset, state.mistaken_for)
    return graph_file(content, f"{stem}-nodes{state.node_min}-edges{state.edge_min}", fmt)


def register(app: Dash, context: ViewContext) -> None:
    """Callbacks of the graph view."""

    register_graph_downloads(
        app,
        (ids.GRAPH_JSON, ids.GRAPH_GRAPHML),
        ids.GRAPH_DOWNLOAD,
        page_ids.STATE_SUMMIT,
        partial(graph_download, context),
        png=(ids.GRAPH_PNG, ids.GRAPH),
    )

    # A state change redraws the graph and resets the hover highlight in the same
    # request (one request fewer per class switch than a hover callback listening to the
    # state); hovering then answers on its own.
    @app.callback(
        Output(ids.GRAPH, "elements"),
        Output(ids.GRAPH_HEADER, "children"),
        Output(ids.GRAPH_NOTE, "children"),
        Output(ids.GRAPH, "stylesheet"),
        Output(ids.HOVER_PANEL, "children"),
        Input(page_ids.STATE_SUMMIT, "data"),
    )
    @guarded(no_update, no_update, None, no_update, no_update, note_at=2)
    def update_graph(stored: Any) -> tuple[Any, ...]:
        return (
            *render_graph(context, stored),
            BASE_STYLESHEET,
            hover_placeholder(context.data.text),
        )

    @app.callback(
        Output(ids.GRAPH, "stylesheet", allow_duplicate=True),
        Output(ids.HOVER_PANEL, "children", allow_duplicate=True),
        Input(ids.GRAPH, "mouseoverNodeData"),
        State(page_ids.STATE, "data"),
        prevent_initial_call=True,
    )
    @guarded(BASE_STYLESHEET, None, note_at=1)
    def update_hover(node: Any, stored: Any) -> tuple[Any, Any]:
        return render_hover(context, node, stored)
