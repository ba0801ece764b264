"""(B) Class sidebar: search, sort (similarity / accuracy) and one clickable row per class.

Rows are plain HTML (a name, the accuracy, a confidence sparkline as an inline SVG image,
a similarity bar) so that hundreds render quickly; only the first ``limit`` rows are
sent, with a "show more" button for the rest.
"""

from __future__ import annotations

from functools import lru_cache
from html import escape
from typing import Any

import numpy as np
from dash import Dash, Input, Output, State, dcc, html, no_update

from compute.export import class_table_csv, classes_file_name
from dashboard import ids as page_ids
from dashboard.data import PART_SUMMIT
from dashboard.state import ViewState
from dashboard.views.common import (
    FileButton,
    ViewContext,
    card_actions,
    class_search_stores,
    guarded,
    how_to_read,
    note,
    percent,
    worded,
)
from dashboard.views.summit import ids

#: Rows sent at first and added per "show more" (Summit showed 250; fewer keep a class
#: switch snappy in the browser, since every switch re-sends and re-parses the rows).
ROWS_PAGE = 150

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
                [
                    html.H2([html.Span("B", className="view-tag"), "Classes"]),
                    card_actions(
                        [
                            FileButton(
                                "CSV",
                                ids.CLASSES_CSV,
                                "Download the class table as CSV (index, name, images, "
                                "correct, accuracy), as python -m compute export writes it",
                            )
                        ],
                        ids.CLASSES_DOWNLOAD,
                    ),
                ],
                className="card-head",
            ),
            *class_search_stores(context, ids.SEARCH),
            dcc.Dropdown(
                id=ids.SEARCH,
                options=search_options(context, None, state),
                debounce=False,
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
            dcc.Markdown(id=ids.SIDEBAR_ROWS, className="class-rows", dangerously_allow_html=True),
            html.Button("Show more", id=ids.SHOW_MORE, className="show-more", n_clicks=0),
            how_to_read(
                worded(
                    context.data,
                    "Rows list the classes, the selected one pinned on top. 'Most similar' sorts "
                    "by the cosine similarity of the classes' channel-usage counts in the "
                    "current layer (the blue bar); the accuracy orders help find weak classes.",
                ),
                worded(
                    context.data,
                    "The small histogram shows how confident the model is on the class's "
                    "images (left: low top-1 probability, right: high). Click a row to select "
                    "the class.",
                ),
            ),
        ],
        className="card card-sidebar",
    )


@lru_cache(maxsize=8)
def _static_cells(context: ViewContext) -> tuple[str, ...]:
    """Per class, the HTML of the row cells that never change: name, accuracy, sparkline."""
    data = context.data
    cells = []
    for c, name in enumerate(data.names):
        safe = escape(name)
        html_cells = (
            f'<span class="row-name" title="{safe}">{safe}</span>'
            f'<span class="row-acc">{percent(data.accuracy[c])}</span>'
        )
        spark = context.spark_url(c)
        if spark:
            # Self-closed: dcc.Markdown's HTML parser drops a block with an unclosed <img>.
            html_cells += f'<img class="row-hist" src="{escape(spark)}" alt="" />'
        cells.append(html_cells)
    return tuple(cells)


def row(index: int, cells: str, similarity: float | None, selected: bool) -> str:
    """One sidebar row as HTML: a button (keyboard-accessible) whose ``data-class`` is read
    by ``assets/rows.js``, which turns a click into the ``ROW_CLICK`` store."""
    sim = ""
    if similarity is not None:
        sim = (
            f'<span class="row-sim" title="similarity {similarity:.2f}">'
            f'<span style="width:{max(0.0, similarity) * 100:.0f}%"></span></span>'
        )
    klass = "class-row selected" if selected else "class-row"
    return f'<button type="button" class="{klass}" data-class="{index}">{cells}{sim}</button>'


def render_rows(context: ViewContext, stored: Any, limit: int) -> tuple[str, Any]:
    """HTML of the first ``limit`` rows in the state's order, and the show-more style.

    The rows are one HTML string in a ``dcc.Markdown`` rather than Dash components: the
    Dash 4 renderer runs a store selector per component on every update, so ~1,500 row
    components made each class switch take seconds in the browser.
    """
    data = context.data
    state = context.state(stored)
    layer = context.layer(state)
    order = data.sidebar_order(state.sort, layer, state.cls)[: max(int(limit), 1)]
    similarity = (
        data.similarity(layer, state.cls)[order].tolist() if data.has(PART_SUMMIT) else None
    )
    cells = _static_cells(context)
    rows = "".join(
        row(c, cells[c], None if similarity is None else similarity[k], c == state.cls)
        for k, c in enumerate(np.asarray(order).tolist())
    )
    more = {"display": "none"} if len(order) >= data.num_classes else {}
    return f'<div class="rows-inner">{rows}</div>', more


def search_options(context: ViewContext, search: str | None, state: ViewState) -> list[Any]:
    """Options of the search box: the selected class, then matches of the typed text (or,
    before typing, the classes most similar to the selected one)."""
    data = context.data
    suggestions = data.sidebar_order("similarity", context.layer(state), state.cls)
    return data.class_options(search, [state.cls], suggestions)


def classes_download(context: ViewContext) -> dict[str, Any] | None:
    """The class table as a CSV download: the file ``python -m compute export --what
    classes`` writes, under its name (``None`` without class statistics)."""
    data = context.data
    if not data.has(PART_SUMMIT):
        return None
    return {
        "content": class_table_csv(data.atlas),
        "filename": classes_file_name(data.atlas.path.name),
        "type": "text/csv",
    }


def register(app: Dash, context: ViewContext) -> None:
    """Callbacks of the sidebar (the search box's options are kept current together with
    the compare selector's: :func:`dashboard.views.shell.register`)."""

    @app.callback(
        Output(ids.SIDEBAR_ROWS, "children"),
        Output(ids.SHOW_MORE, "style"),
        Input(page_ids.STATE_SUMMIT, "data"),
        Input(ids.ROWS_LIMIT, "data"),
    )
    @guarded("*Could not list the classes (see the server log).*", no_update)
    def update_rows(stored: Any, limit: Any) -> tuple[Any, Any]:
        return render_rows(context, stored, rows_limit(limit, context.data.num_classes))

    @app.callback(
        Output(ids.CLASSES_DOWNLOAD, "data"),
        Input(ids.CLASSES_CSV, "n_clicks"),
        prevent_initial_call=True,
    )
    @guarded(no_update)
    def download_classes(_clicks: Any) -> Any:
        return classes_download(context)

    @app.callback(
        Output(ids.ROWS_LIMIT, "data"),
        Input(ids.SHOW_MORE, "n_clicks"),
        State(ids.ROWS_LIMIT, "data"),
        prevent_initial_call=True,
    )
    def show_more(_clicks: Any, limit: Any) -> int:
        return next_limit(limit, context.data.num_classes)


def rows_limit(limit: Any, num_classes: int) -> int:
    """The rows to show from the ``ROWS_LIMIT`` store, whatever the browser sent: an integer
    in ``1..max(num_classes, ROWS_PAGE)`` (junk, NaN or a huge number give a page)."""
    try:
        value = int(limit) if limit is not None and not isinstance(limit, bool) else ROWS_PAGE
    except (TypeError, ValueError, OverflowError):
        value = ROWS_PAGE
    return min(max(value, 1), max(num_classes, ROWS_PAGE))


def next_limit(limit: Any, num_classes: int) -> int:
    """The limit after one "show more" click (a page more, up to every class)."""
    return min(rows_limit(limit, num_classes) + ROWS_PAGE, max(num_classes, ROWS_PAGE))
