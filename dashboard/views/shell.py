"""The page around the views: its layout and the one state reducer (which writes the URL).

Data flow (no cycles): every control is an *input* of :func:`apply_event`'s callback,
which writes the single ``ViewState`` store; every view renders *from* that store. The
reducers (this one, Topology's and Training's) also write the new state into the URL (a
``dcc.Location(refresh=False)``, so the page is not reloaded). The URL is read once, by
the Dash Pages layout function.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from dash import Dash, Input, Output, State, ctx, dcc, html, no_update

from dashboard import ids
from dashboard.state import ViewState, parse_node_id, view_groups
from dashboard.views import compare, embedding, graph, neuron, sidebar, topology, training
from dashboard.views.common import ViewContext, note, percent, register_class_searches
from dashboard.views.sidebar import ROWS_PAGE


def atlas_picker(choices: Sequence[tuple[str, str]], current: str | None) -> html.Div | None:
    """The dropdown choosing the deployment's atlas (``None`` with fewer than two).

    Args:
        choices: ``(key, label)`` of every atlas, ``key`` as ``NAME@VERSION``.
        current: the key of the atlas shown.
    """
    if len(choices) < 2:
        return None
    return html.Div(
        [
            html.Label("atlas", htmlFor=ids.ATLAS_PICKER, className="copy-label"),
            dcc.Dropdown(
                id=ids.ATLAS_PICKER,
                options=[{"label": label, "value": key} for key, label in choices],
                value=current,
                clearable=False,
                searchable=len(choices) > 8,
                style={"minWidth": "14em"},
            ),
        ],
        className="atlas-block",
        style={"display": "flex", "alignItems": "center", "gap": "6px"},
    )


def approximate_badge(info: dict[str, Any]) -> html.Span | None:
    """The header badge of an atlas built in mixed precision (``info["approximate"]``, the
    precision, from :meth:`AtlasData.header`); ``None`` for an exact build or one that does
    not record its precision (older atlases): nothing to warn about that is known."""
    precision = info.get("approximate")
    if not precision:
        return None
    return html.Span(
        f"approximate: {precision}",
        id=ids.APPROXIMATE_BADGE,
        className="badge badge-approximate",
        title=(
            f"Built with --precision {precision}: the counts come from a mixed-precision "
            "forward pass and may differ slightly from an exact (fp32) build, mostly for "
            "channels near a selection or top-k threshold."
        ),
    )


def header(
    context: ViewContext,
    atlases: Sequence[tuple[str, str]] = (),
    current: str | None = None,
) -> html.Header:
    """Title, model, dataset and totals of the atlas, the atlas picker (with several
    atlases: ``atlases`` are their ``(key, label)``, ``current`` the shown one's key) and
    the copy-link button."""
    info = context.data.header()
    facts = [
        ("model", info["model"]),
        ("dataset", info["dataset"] + (f" ({info['split']})" if info.get("split") else "")),
        ("classes", f"{info['num_classes']:,}"),
    ]
    if info.get("num_images") is not None:
        facts.append(("images", f"{int(info['num_images']):,}"))
    if info.get("train_accuracy") is not None:
        facts.append(("train acc.", percent(info["train_accuracy"])))
    if info.get("test_accuracy") is not None:
        facts.append(("test acc.", percent(info["test_accuracy"])))
    return html.Header(
        [
            html.Div(
                [
                    html.Span("Network Atlas", className="brand"),
                    html.Div(
                        [html.H1(info["title"], className="title"), approximate_badge(info)],
                        className="title-row",
                    ),
                ],
                className="title-block",
            ),
            html.Dl(
                [
                    html.Div(
                        [html.Dt(key), html.Dd(value, className="fact")], className="fact-pair"
                    )
                    for key, value in facts
                ],
                className="facts",
            ),
            atlas_picker(atlases, current),
            html.Div(
                [
                    dcc.Clipboard(
                        id=ids.COPY_LINK, title="Copy a link to this view", className="copy-link"
                    ),
                    html.Span("copy link", className="copy-label"),
                ],
                className="copy-block",
            ),
        ],
        className="app-header",
    )


def page_layout(context: ViewContext, state: ViewState, ignored: Sequence[str] = ()) -> html.Div:
    """The explorer page for ``state`` (cheap: the views fill themselves by callback).

    ``ignored``: the link's parameters that could not be used
    (:func:`dashboard.state.ignored_parameters`), said in a note rather than dropped quietly.
    """
    return html.Div(
        [
            html.Div(
                note(
                    f"Ignored in this link (unknown, or not valid for this atlas): "
                    f"{', '.join(ignored[:8])}{' …' if len(ignored) > 8 else ''}.",
                    kind="info",
                )
                if ignored
                else None,
                id=ids.URL_NOTE,
            ),
            dcc.Store(id=ids.STATE, data=state.to_dict()),
            *[dcc.Store(id=store, data=state.to_dict()) for store in GROUP_STORES.values()],
            dcc.Store(id=ids.ROWS_LIMIT, data=ROWS_PAGE),
            dcc.Store(id=ids.ROW_CLICK, data=None),
            dcc.Location(id=ids.STATE_URL, refresh=False),
            html.Div(
                [
                    html.Aside(
                        [embedding.layout(context, state), sidebar.layout(context, state)],
                        className="column-left",
                    ),
                    html.Main(
                        [
                            graph.layout(context, state),
                            neuron.layout(context, state),
                            compare.layout(context, state),
                        ],
                        className="column-right",
                    ),
                ],
                className="columns",
            ),
            topology.layout(context, state),
            training.layout(context, state),
        ],
        className="page",
    )


def _class_from_click(value: Any) -> int | None:
    """The class index carried in ``customdata`` of a Plotly click, if any."""
    try:
        point = value["points"][0]
        custom = point["customdata"]
        return int(custom[0] if isinstance(custom, list) else custom)
    except (KeyError, IndexError, TypeError, ValueError, OverflowError):
        return None


def _as_int(value: Any) -> int | None:
    """``value`` as an int, or ``None`` when it is not a finite number (hostile payloads)."""
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def apply_event(state: ViewState, trigger: Any, value: Any) -> ViewState:
    """The state after one user event (pure; bounds are checked by the caller).

    A value that is not what the control sends (a string, NaN, Infinity, a list) leaves
    the state as it was.

    Args:
        state: the current state.
        trigger: the id of the component that fired (``ctx.triggered_id``).
        value: the new value of its property.
    """
    if trigger == ids.ROW_CLICK:
        picked = _as_int(value.get("cls")) if isinstance(value, dict) else None
        return state if picked is None else state.with_(cls=picked)
    if trigger in (ids.EMBEDDING, ids.NEURON_BARS):
        picked = _class_from_click(value)
        return state if picked is None else state.with_(cls=picked)
    if trigger == ids.COMPARE and value is None:
        return state.with_(compare=None)
    number_fields = {
        ids.SEARCH: "cls",
        ids.COMPARE: "compare",
        ids.LAYER: "layer",
        ids.NODE_THRESHOLD: "node_min",
        ids.EDGE_THRESHOLD: "edge_min",
    }
    if isinstance(trigger, str) and trigger in number_fields:
        number = _as_int(value)
        return state if number is None else state.with_(**{number_fields[trigger]: number})
    if trigger == ids.SORT and value is not None:
        return state.with_(sort=str(value))
    if trigger in (ids.GRAPH, ids.COMPARE_GRAPH):
        node = (value or {}).get("id") if isinstance(value, dict) else None
        return state.with_(node=node) if parse_node_id(node or "") else state
    if trigger == ids.NEURON_CLOSE:
        return state.with_(node=None)
    if trigger == ids.PICTURES and value is not None:
        return state.with_(pics=str(value))
    return state


_EVENTS: list[tuple[Any, str]] = [
    (ids.EMBEDDING, "clickData"),
    (ids.ROW_CLICK, "data"),
    (ids.SEARCH, "value"),
    (ids.NEURON_BARS, "clickData"),
    (ids.COMPARE, "value"),
    (ids.LAYER, "value"),
    (ids.NODE_THRESHOLD, "value"),
    (ids.EDGE_THRESHOLD, "value"),
    (ids.SORT, "value"),
    (ids.GRAPH, "tapNodeData"),
    (ids.COMPARE_GRAPH, "tapNodeData"),
    (ids.NEURON_CLOSE, "n_clicks"),
    (ids.PICTURES, "value"),
]


def update_state(context: ViewContext, stored: Any) -> tuple[Any, Any, Any, Any]:
    """Body of the reducer callback: apply the triggering event to the stored state.

    Returns:
        The new stored state, the search box's and the compare dropdown's values, and the
        URL query (``no_update`` where nothing changes).
    """
    state = context.state(stored)
    triggered = ctx.triggered[0] if ctx.triggered else {}
    trigger = ctx.triggered_id
    value = triggered.get("value")
    try:
        new = apply_event(state, trigger, value)
    except (TypeError, ValueError):  # junk from a hand-crafted request: ignore it
        new = state
    new = context.state(new.to_dict())  # bounds-check whatever the client sent
    if new == state:
        # e.g. comparing a class with itself: keep the dropdown honest.
        if trigger == ids.COMPARE and value != new.compare:
            return no_update, no_update, new.compare, no_update
        return no_update, no_update, no_update, no_update
    return (
        new.to_dict(),
        new.cls if trigger != ids.SEARCH else no_update,
        new.compare if new.compare != state.compare or trigger == ids.COMPARE else no_update,
        new.to_search(),
    )


#: Opens the chosen atlas: a full page load, as a link to it would (the views, their state
#: and the header all belong to one atlas).
#: The state copy each group of views listens to (groups: :func:`dashboard.state.view_groups`).
GROUP_STORES: dict[str, str] = {
    "summit": ids.STATE_SUMMIT,
    "topology": ids.STATE_TOPOLOGY,
    "training": ids.STATE_TRAINING,
}

# Copies the state into each group's store only where a field of that group changed
# (values are ids, numbers, strings or null: compared as JSON).
_SPLIT_STATE_JS = """function(state, ...held) {
    const groups = %s;
    const same = (a, b) => JSON.stringify(a === undefined ? null : a)
        === JSON.stringify(b === undefined ? null : b);
    return groups.map((fields, k) => {
        const before = held[k];
        const changed = !before || !state || fields.some(f => !same(before[f], state[f]));
        return changed ? state : window.dash_clientside.no_update;
    });
}"""


_OPEN_ATLAS_JS = """function(key) {
    if (!key) { return; }
    const url = new URL(window.location.href);
    if (url.searchParams.get("atlas") === key) { return; }
    window.location.assign(%s + "?atlas=" + encodeURIComponent(key).replace("%%40", "@"));
}"""


def register_atlas_picker(app: Dash, page_prefix: str) -> None:
    """Open the atlas chosen in the header's picker (register only with several atlases)."""
    app.clientside_callback(
        _OPEN_ATLAS_JS % json.dumps(page_prefix),
        Input(ids.ATLAS_PICKER, "value"),
        prevent_initial_call=True,
    )


def register(app: Dash, context: ViewContext) -> None:
    """Register the reducer (it also writes the URL), the copy-link, every view's callbacks
    and the class dropdowns' options."""

    # Every reducer writes the URL with the state it writes (``to_search``): no callback
    # listens to the state just to write the URL back, one request fewer per event.
    @app.callback(
        Output(ids.STATE, "data"),
        Output(ids.SEARCH, "value"),
        Output(ids.COMPARE, "value"),
        Output(ids.STATE_URL, "search", allow_duplicate=True),
        *[Input(component, prop) for component, prop in _EVENTS],
        State(ids.STATE, "data"),
        prevent_initial_call=True,
    )
    def reduce_state(*args: Any) -> tuple[Any, Any, Any, Any]:
        return update_state(context, args[-1])

    # Each group of views hears only the state changes it reads (no request otherwise).
    groups = view_groups()
    app.clientside_callback(
        _SPLIT_STATE_JS % json.dumps([list(groups[name]) for name in GROUP_STORES]),
        *[Output(store, "data") for store in GROUP_STORES.values()],
        Input(ids.STATE, "data"),
        *[State(store, "data") for store in GROUP_STORES.values()],
        prevent_initial_call=True,
    )

    # The copied link is the current address (the state is already in its query).
    app.clientside_callback(
        "function(n) { return window.location.href; }",
        Output(ids.COPY_LINK, "content"),
        Input(ids.COPY_LINK, "n_clicks"),
        prevent_initial_call=True,
    )

    for view in (embedding, sidebar, graph, neuron, compare, topology, training):
        view.register(app, context)
    # Both class dropdowns' options in one request per state change.
    register_class_searches(
        app,
        context,
        [(ids.SEARCH, sidebar.search_options), (ids.COMPARE, compare.compare_options)],
    )
