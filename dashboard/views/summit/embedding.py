"""(A) Class embedding: one point per class; click selects, the layer selector re-projects."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from dash import Dash, Input, Output, Patch, State, dcc, html, no_update

from dashboard import ids as page_ids
from dashboard.data import PART_EMBEDDING, AtlasData
from dashboard.state import ViewState
from dashboard.views.common import ViewContext, guarded, how_to_read, note, worded
from dashboard.views.summit import ids
from dashboard.views.summit.figures import embedding_figure, embedding_highlights, embedding_points


def layout(context: ViewContext, state: ViewState) -> html.Section:
    """The embedding card: layer selector, scatter (or a note if the part is missing)."""
    data = context.data
    has_embedding = data.has(PART_EMBEDDING)
    options = [{"label": f"{i + 1}. {name}", "value": i} for i, name in enumerate(data.layer_names)]
    return html.Section(
        [
            html.Div(
                [
                    html.H2([html.Span("A", className="view-tag"), "Class embedding"]),
                    dcc.Dropdown(
                        id=ids.LAYER,
                        options=options,
                        value=context.layer(state),
                        clearable=False,
                        searchable=False,
                        className="layer-select",
                    ),
                ],
                className="card-head",
            ),
            dcc.Store(id=ids.EMBEDDING_LAYER, data=None),
            html.Div(
                None if has_embedding else note(data.missing_note(PART_EMBEDDING), kind="missing"),
                id=ids.EMBEDDING_NOTE,
            ),
            dcc.Graph(
                id=ids.EMBEDDING,
                config={
                    "displaylogo": False,
                    "scrollZoom": True,
                    "modeBarButtonsToRemove": ["select2d", "lasso2d", "toImage"],
                },
                style={"height": "330px"} if has_embedding else {"display": "none"},
                className="embedding-graph",
            ),
            how_to_read(
                worded(
                    context.data,
                    "Each dot is a class, placed so that classes whose images use similar "
                    "channels of the chosen layer lie close together (a 2-D projection of the "
                    "rows of the activation-count matrix). Colour is the class's top-1 accuracy.",
                ),
                "Click a dot to select its class; the orange ring marks the selected class, "
                "the purple ring the compared one, and thin grey rings the classes the model "
                "most often predicts instead of the selected one (are its confusions its "
                "neighbours here?). Change the layer to see how class neighbourhoods form "
                "from low-level to high-level features.",
            ),
        ],
        className="card card-embedding",
    )


def coincident_classes(xy: np.ndarray, tolerance: float = 1e-4) -> list[list[int]]:
    """Groups of two or more classes drawn on one point (coordinates within
    ``tolerance`` of the group's first; the layout is scaled into ``[-1, 1]``).

    Examples:
        >>> coincident_classes(np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 0.00001]]))
        [[0, 2]]
    """
    points = np.asarray(xy, dtype=np.float64)
    groups: list[list[int]] = []
    placed = np.zeros(len(points), dtype=bool)
    for c in range(len(points)):
        if placed[c]:
            continue
        close = np.flatnonzero(np.abs(points - points[c]).max(axis=1) <= tolerance)
        close = close[~placed[close]]
        placed[close] = True
        if len(close) > 1:
            groups.append(close.tolist())
    return groups


def coincident_note(data: AtlasData, layer: int) -> html.Div | None:
    """Says which classes share one point of the layer's embedding (their labels would
    print over each other, as if the layout had failed), and why: at this layer their
    activation counts point the same way."""
    # A class without inputs has no counts to compare: it sits wherever the layout puts
    # empty rows, which says nothing of the model.
    counted = np.flatnonzero(np.asarray(data.num_images) > 0)
    groups = [
        [int(counted[k]) for k in group]
        for group in coincident_classes(data.embedding(layer)[counted])
    ]
    if not groups:
        return None
    shown = [", ".join(data.names[c] for c in group[:6]) + ("…" if len(group) > 6 else "")
             for group in groups[:3]]  # fmt: skip
    return note(
        worded(
            data,
            f"At {data.layer_names[layer]}, these classes sit on one point: "
            + "; ".join(shown)
            + ". Their images select the same channels in the same proportions here "
            "(cosine similarity 1), so this layer does not tell them apart; another "
            "layer may.",
        )
    )


@lru_cache(maxsize=64)
def _points(data: AtlasData, layer: int) -> dict[str, Any]:
    """The every-class trace of a layer (built once per worker and layer)."""
    return embedding_points(data.embedding(layer), data.names, data.accuracy)


def render(context: ViewContext, stored: Any, shown_layer: Any = None) -> tuple[Any, Any]:
    """The embedding figure for the stored state, and the layer it shows.

    When the figure already shows the state's layer (``shown_layer``), only the two
    highlight traces are sent, as a ``Patch`` (about 1 kB instead of the whole scatter).
    """
    data = context.data
    if not data.has(PART_EMBEDDING):
        return no_update, no_update
    state = context.state(stored)
    layer = context.layer(state)
    xy = data.embedding(layer)
    if shown_layer == layer:
        patch = Patch()
        mistaken = [c for c, _ in data.mistaken_for(state.cls)]
        highlights = embedding_highlights(xy, data.names, state.cls, state.compare, mistaken)
        for k, trace in enumerate(highlights, start=1):
            patch["data"][k] = trace
        return patch, no_update
    figure = embedding_figure(
        xy,
        data.names,
        data.accuracy,
        state.cls,
        state.compare,
        data.layer_names[layer],
        points=_points(data, layer),
        mistaken=[c for c, _ in data.mistaken_for(state.cls)],
    )
    return figure, layer


def register(app: Dash, context: ViewContext) -> None:
    """Callbacks of the embedding view."""

    @app.callback(
        Output(ids.EMBEDDING, "figure"),
        Output(ids.EMBEDDING_LAYER, "data"),
        Output(ids.EMBEDDING_NOTE, "children"),
        Input(page_ids.STATE_SUMMIT, "data"),
        State(ids.EMBEDDING_LAYER, "data"),
    )
    @guarded(no_update, None, None, note_at=2)
    def update_embedding(stored: Any, shown_layer: Any) -> tuple[Any, Any, Any]:
        figure, layer = render(context, stored, shown_layer)
        if layer is no_update:  # same layer: the note stands
            return figure, layer, no_update
        return figure, layer, coincident_note(context.data, layer)
