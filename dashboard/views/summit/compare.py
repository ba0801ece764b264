"""(D) Compare two classes: one merged attribution graph, shared vs unique channels."""

from __future__ import annotations

from functools import partial
from typing import Any

from dash import Dash, Input, Output, dcc, html, no_update

from compute.export import compare_data, compare_file_stem
from dashboard import ids as page_ids
from dashboard.data import PART_GRAPHS
from dashboard.state import ViewState
from dashboard.views.common import (
    ViewContext,
    card_actions,
    class_search_stores,
    graph_buttons,
    graph_file,
    guarded,
    how_to_read,
    note,
    register_graph_downloads,
    worded,
)
from dashboard.views.summit import ids
from dashboard.views.summit.figures import ONLY_A, ONLY_B, SHARED, compare_elements
from dashboard.views.summit.graph import attribution_cytoscape, pictures_mode

PICK_NOTE = "Pick a class to compare with the selected one."


def layout(context: ViewContext, state: ViewState) -> html.Section:
    """The compare card: compare-class selector, legend, merged graph."""
    data = context.data
    has_graphs = data.has(PART_GRAPHS)
    return html.Section(
        [
            html.Div(
                [
                    html.H2([html.Span("D", className="view-tag"), "Compare two classes"]),
                    *class_search_stores(context, ids.COMPARE),
                    dcc.Dropdown(
                        id=ids.COMPARE,
                        options=compare_options(context, None, state),
                        value=state.compare,
                        placeholder="Compare with…",
                        clearable=True,
                        searchable=True,
                        className="compare-select",
                    ),
                    card_actions(
                        graph_buttons(
                            ids.COMPARE_JSON,
                            ids.COMPARE_GRAPHML,
                            "this comparison as shown (both graphs at the sliders' "
                            "thresholds, each node and connection in its group, both "
                            "classes' counts)",
                        ),
                        ids.COMPARE_DOWNLOAD,
                        ids.COMPARE_PNG,
                    ),
                ],
                className="card-head",
            ),
            html.Div(id=ids.COMPARE_LEGEND, className="legend"),
            html.Div(
                [
                    html.Div(
                        note(data.missing_note(PART_GRAPHS), kind="missing")
                        if not has_graphs
                        else note(PICK_NOTE),
                        id=ids.COMPARE_NOTE,
                        className="compare-note",
                    ),
                    attribution_cytoscape(ids.COMPARE_GRAPH, data),
                ],
                className="compare-area",
            ),
            how_to_read(
                worded(
                    context.data,
                    "Both classes' attribution graphs merged into one: channels (and "
                    "connections) both classes rely on are teal and in the middle of each row; "
                    "those only the selected class uses are blue on the left, those only the "
                    "compared class uses orange on the right.",
                ),
                worded(
                    context.data,
                    "Shared channels are features the classes have in common (and may confuse "
                    "them); unique ones are what tells them apart. The sliders of the "
                    "attribution graph apply here too, and its note says how each layer pair's "
                    "connections were computed.",
                ),
            ),
        ],
        className="card card-compare",
    )


def compare_options(context: ViewContext, search: str | None, state: ViewState) -> list[Any]:
    """Options of the compare selector: the compared class, then matches of the typed text
    (or, before typing, the classes the selected one is mistaken for, then the most similar
    ones)."""
    data = context.data
    similar = data.sidebar_order("similarity", context.layer(state), state.cls)[1:]
    mistaken = [c for c, _ in data.mistaken_for(state.cls)]
    order = mistaken + [c for c in similar if c not in mistaken]
    pinned = [] if state.compare is None else [state.compare]
    return data.class_options(search, pinned, order)


def legend_item(colour: str, label: str, count: int, name: str | None = None) -> html.Span:
    """A swatch and ``"{label} {name} ({count})"``; the class name in its own span (the PNG
    export names the file after the two classes)."""
    text: list[Any] = [label]
    if name is not None:
        text += [" ", html.Span(name, className="legend-class")]
    return html.Span(
        [html.Span(className="swatch", style={"borderColor": colour}), *text, f" ({count})"],
        className="legend-item",
    )


def render(context: ViewContext, stored: Any) -> tuple[Any, Any, Any]:
    """Merged elements, legend and note for the stored state."""
    data = context.data
    state = context.state(stored)
    if not data.has(PART_GRAPHS):
        return [], None, no_update
    if state.compare is None:
        return [], None, note(PICK_NOTE)
    elements, counts = compare_elements(
        data.graph(state.cls),
        data.graph(state.compare),
        node_min_pct=state.node_min,
        edge_min_pct=state.edge_min,
        url_prefix=context.file_prefix,
        layer_names=data.layer_names,
        pictures=pictures_mode(data, state),
    )
    a, b = data.names[state.cls], data.names[state.compare]
    legend = [
        legend_item(ONLY_A, "only", counts["a"], a),
        legend_item(SHARED, "shared", counts["shared"]),
        legend_item(ONLY_B, "only", counts["b"], b),
    ]
    if state.subset != "all":  # the graph above shows a subset; this compares whole classes
        legend.append(
            html.Span(
                f"(all {'texts' if context.data.text else 'images'} of both classes)",
                className="muted",
            )
        )
    return elements, legend, None


def compare_download(context: ViewContext, stored: Any, fmt: str = "json") -> dict[str, Any] | None:
    """The comparison as shown (both classes' graphs at the sliders' thresholds) as a
    node-link JSON or GraphML (``fmt``) download named after the atlas, the two classes
    and the thresholds: :func:`compute.export.compare_data`, what ``python -m compute
    export --compare`` writes at thresholds 0 (``None`` without graphs or a compared
    class)."""
    data = context.data
    state = context.state(stored)
    if not data.has(PART_GRAPHS) or state.compare is None:
        return None
    content = compare_data(data.atlas, state.cls, state.compare, state.node_min, state.edge_min)
    stem = compare_file_stem(data.atlas, state.cls, state.compare)
    return graph_file(content, f"{stem}-nodes{state.node_min}-edges{state.edge_min}", fmt)


def register(app: Dash, context: ViewContext) -> None:
    """Callbacks of the compare view (its selector's options are kept current together
    with the search box's: :func:`dashboard.views.shell.register`)."""

    register_graph_downloads(
        app,
        (ids.COMPARE_JSON, ids.COMPARE_GRAPHML),
        ids.COMPARE_DOWNLOAD,
        page_ids.STATE_SUMMIT,
        partial(compare_download, context),
        png=(ids.COMPARE_PNG, ids.COMPARE_GRAPH),
    )

    @app.callback(
        Output(ids.COMPARE_GRAPH, "elements"),
        Output(ids.COMPARE_LEGEND, "children"),
        Output(ids.COMPARE_NOTE, "children"),
        Input(page_ids.STATE_SUMMIT, "data"),
    )
    @guarded([], None, None, note_at=2)
    def update_compare(stored: Any) -> tuple[Any, Any, Any]:
        return render(context, stored)
