"""(B) Class sidebar: search, sort (similarity / accuracy) and one clickable row per class.

Rows are plain HTML (a name, the accuracy, a confidence sparkline as an inline SVG image,
a similarity bar) so that hundreds render quickly; only the first ``limit`` rows are
sent, with a "show more" button for the rest.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from dash import Dash, Input, Output, State, dcc, html, no_update

from dashboard import ids
from dashboard.data import PART_SUMMIT
from dashboard.state import ViewState
from dashboard.views.common import ViewContext, guarded, how_to_read, note, percent

SORT_OPTIONS = [
    {"label": "Most similar", "value": "similarity"},
    {"label": "Accuracy ↑", "value": "acc-asc"},
    {"label": "Accuracy ↓", "value": "acc-desc"},
]


def layout(context: ViewContext, state: ViewState) -> html.Section:
    """The sidebar card: search box, sort order, rows (filled by callback)."""
    data = context.data
    return html.Section(
        [
            html.Div(
                [html.H2([html.Span("B", className="view-tag"), "Classes"])],
                className="card-head",
            ),
            dcc.Dropdown(
                id=ids.SEARCH,
                options=[{"label": name, "value": i} for i, name in enumerate(data.names)],
                value=state.cls,
                clearable=False,
                searchable=True,
                placeholder="Search a class…",
                className="class-search",
            ),
            dcc.RadioItems(
                id=ids.SORT,
                options=SORT_OPTIONS,
                value=state.sort,
                inline=True,
                className="sort-select",
            ),
            None if data.has(PART_SUMMIT) else note(data.missing_note(PART_SUMMIT), kind="missing"),
            html.Div(id=ids.SIDEBAR_ROWS, className="class-rows"),
            html.Button("Show more", id=ids.SHOW_MORE, className="show-more", n_clicks=0),
            how_to_read(
                "Rows list the classes, the selected one pinned on top. 'Most similar' sorts "
                "by the cosine similarity of the classes' channel-usage counts in the "
                "current layer (the blue bar); the accuracy orders help find weak classes.",
                "The small histogram shows how confident the model is on the class's "
                "images (left: low top-1 probability, right: high). Click a row to select "
                "the class.",
            ),
        ],
        className="card card-sidebar",
    )


def _html(tag: str, **props: Any) -> dict[str, Any]:
    """A pre-serialised ``dash.html`` component (the JSON Dash would send for it).

    Rows are built this way because constructing and serialising ~1,500 component
    objects per class switch costs over 100 ms; the dicts cost a few.
    """
    return {"type": tag, "namespace": "dash_html_components", "props": props}


@lru_cache(maxsize=8)
def _static_cells(context: ViewContext) -> tuple[tuple[dict[str, Any], ...], ...]:
    """Per class, the row cells that never change: name, accuracy, sparkline."""
    data = context.data
    cells = []
    for c, name in enumerate(data.names):
        row = [
            _html("Span", children=name, className="row-name", title=name),
            _html("Span", children=percent(data.accuracy[c]), className="row-acc"),
        ]
        spark = context.spark_url(c)
        if spark:
            row.append(_html("Img", src=spark, className="row-hist", alt=""))
        cells.append(tuple(row))
    return tuple(cells)


def row(
    index: int, cells: tuple[dict[str, Any], ...], similarity: float | None, selected: bool
) -> dict[str, Any]:
    """One sidebar row: a button (keyboard-accessible) with a pattern-matching id."""
    children = list(cells)
    if similarity is not None:
        children.append(
            _html(
                "Span",
                children=_html("Span", style={"width": f"{max(0.0, similarity) * 100:.0f}%"}),
                className="row-sim",
                title=f"similarity {similarity:.2f}",
            )
        )
    return _html(
        "Button",
        children=children,
        id=ids.class_row(index),
        className="class-row selected" if selected else "class-row",
        n_clicks=0,
    )


def render_rows(context: ViewContext, stored: Any, limit: int) -> tuple[list[Any], Any]:
    """The first ``limit`` rows in the state's order, and the show-more button style."""
    data = context.data
    state = context.state(stored)
    layer = context.layer(state)
    order = data.sidebar_order(state.sort, layer, state.cls)[: max(int(limit), 1)]
    similarity = (
        data.similarity(layer, state.cls)[order].tolist() if data.has(PART_SUMMIT) else None
    )
    cells = _static_cells(context)
    rows = [
        row(c, cells[c], None if similarity is None else similarity[k], c == state.cls)
        for k, c in enumerate(np.asarray(order).tolist())
    ]
    more = {"display": "none"} if len(order) >= data.num_classes else {}
    return rows, more


def register(app: Dash, context: ViewContext) -> None:
    """Callbacks of the sidebar."""

    @app.callback(
        Output(ids.SIDEBAR_ROWS, "children"),
        Output(ids.SHOW_MORE, "style"),
        Input(ids.STATE, "data"),
        Input(ids.ROWS_LIMIT, "data"),
    )
    @guarded(None, no_update, note_at=0)
    def update_rows(stored: Any, limit: Any) -> tuple[list[Any], Any]:
        return render_rows(context, stored, int(limit or 250))

    @app.callback(
        Output(ids.ROWS_LIMIT, "data"),
        Input(ids.SHOW_MORE, "n_clicks"),
        State(ids.ROWS_LIMIT, "data"),
        prevent_initial_call=True,
    )
    def show_more(_clicks: int, limit: Any) -> int:
        return int(limit or 250) + 250
