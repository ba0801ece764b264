"""The page around the views: its layout and the state reducers' wiring.

Data flow (no cycles): every control is an *input* of one of three reducers (Summit,
Topology, Training), which run in the browser (``assets/state.js``) so that events apply in
the order they happen; each writes the single ``ViewState`` store and the URL (a
``dcc.Location(refresh=False)``, so the page is not reloaded). Every view renders *from*
that store (through its group's copy). The URL is read once, by the Dash Pages layout
function. The Python ``apply_*event`` functions are the reducers' reference
implementation; the script gets every id, bound and choice from :func:`state_rules`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from dash import ClientsideFunction, Dash, Input, Output, State, dcc, html

from dashboard import ids
from dashboard.state import StateBounds, ViewState, view_groups
from dashboard.views.common import ViewContext, note, percent, register_class_searches
from dashboard.views.instance import callbacks as instance_callbacks
from dashboard.views.instance import layout as instance_layout
from dashboard.views.summit import compare, embedding, graph, neuron, sidebar
from dashboard.views.summit import ids as summit_ids
from dashboard.views.summit import state as summit_state
from dashboard.views.summit.sidebar import ROWS_PAGE
from dashboard.views.topology import callbacks as topology_callbacks
from dashboard.views.topology import layout as topology_layout
from dashboard.views.topology import state as topology_state
from dashboard.views.training import callbacks as training_callbacks
from dashboard.views.training import layout as training_layout
from dashboard.views.training import state as training_state


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


def random_weights_badge(info: dict[str, Any]) -> html.Span | None:
    """The header badge of an atlas of an untrained model (``info["random_weights"]``: a
    torchvision architecture built without ``--weights``); ``None`` otherwise."""
    if not info.get("random_weights"):
        return None
    return html.Span(
        "random weights",
        className="badge badge-approximate",
        title="Built from the architecture's seeded random initialisation (no --weights): "
        "what it shows is an untrained network's, not a trained model's.",
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
        what = "texts" if context.data.text else "images"
        facts.append((what, f"{int(info['num_images']):,}"))
    if info.get("train_accuracy") is not None:
        facts.append(("train acc.", percent(info["train_accuracy"])))
    if info.get("test_accuracy") is not None:
        facts.append(("test acc.", percent(info["test_accuracy"])))
    if (
        info.get("train_accuracy") is None
        and info.get("test_accuracy") is None
        and info.get("data_accuracy") is not None
    ):  # the build recorded no metrics: the accuracy on the atlas's own inputs, named
        # by their split where the build knows it ("test acc."), else "top-1 acc."
        split = info.get("split")
        facts.append((f"{split} acc." if split else "top-1 acc.", percent(info["data_accuracy"])))
    return html.Header(
        [
            html.Div(
                [
                    html.Span("Network Atlas", className="brand"),
                    html.Div(
                        [
                            html.H1(info["title"], className="title"),
                            approximate_badge(info),
                            random_weights_badge(info),
                        ],
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
            dcc.Store(id=ids.STATE_RULES, data=state_rules(context)),
            *[dcc.Store(id=store, data=state.to_dict()) for store in GROUP_STORES.values()],
            dcc.Store(id=summit_ids.ROWS_LIMIT, data=ROWS_PAGE),
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
                            instance_layout.layout(context, state),
                        ],
                        className="column-right",
                    ),
                ],
                className="columns",
            ),
            topology_layout.layout(context, state),
            training_layout.layout(context, state),
        ],
        className="page",
    )


def state_rules(context: ViewContext) -> dict[str, Any]:
    """What the browser's reducers (``assets/state.js``) need to apply an event: the
    atlas's bounds, the URL's keys and defaults, and each view's events and choices (every
    fact defined here in Python, none repeated in the script)."""
    return {
        "bounds": context.bounds().to_dict(),
        "url": ViewState.url_rules(),
        "summit": summit_state.reducer_rules(),
        "topology": topology_state.reducer_rules(),
        "training": training_state.reducer_rules(),
    }


def apply_any_event(state: ViewState, trigger: Any, value: Any, bounds: StateBounds) -> ViewState:
    """The state after any event of the page: what the browser's three reducers do (for
    clients that are not a browser: ``bench/``, load tests)."""
    if isinstance(trigger, str) and trigger in summit_state.EVENT_KINDS:
        return summit_state.apply_event(state, trigger, value, bounds)
    if isinstance(trigger, str) and trigger in training_state.EVENT_KINDS:
        return training_state.apply_training_event(state, trigger, value, bounds)
    return topology_state.apply_topology_event(state, trigger, value, bounds)[0]


#: The state copy each group of views listens to (groups: :func:`dashboard.state.view_groups`).
GROUP_STORES: dict[str, str] = {
    "summit": ids.STATE_SUMMIT,
    "topology": ids.STATE_TOPOLOGY,
    "training": ids.STATE_TRAINING,
    "instance": ids.STATE_INSTANCE,
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


#: Opens the chosen atlas: a full page load, as a link to it would (the views, their state
#: and the header all belong to one atlas).
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
    """Register the Summit reducer (it also writes the URL), the copy-link, every view's
    callbacks and the class dropdowns' options."""

    # The reducers run in the browser (``assets/state.js``): each event applies, in the
    # order it happened, to the state the previous one wrote, and writes the URL. (Server
    # reducers reading ``State(STATE)`` raced: Dash drops a request still in flight when
    # the same callback fires again, and two reducers' requests each overwrote the other.)
    app.clientside_callback(
        ClientsideFunction(ids.REDUCERS, "reduceSummit"),
        Output(ids.STATE, "data"),
        Output(summit_ids.SEARCH, "value"),
        Output(summit_ids.COMPARE, "value"),
        Output(ids.STATE_URL, "search", allow_duplicate=True),
        *[Input(component, prop) for component, prop, _ in summit_state.EVENTS],
        State(ids.STATE, "data"),
        State(ids.STATE_RULES, "data"),
        prevent_initial_call=True,
    )

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

    for register_view in (
        embedding.register,
        sidebar.register,
        graph.register,
        neuron.register,
        compare.register,
        topology_callbacks.register,
        training_callbacks.register,
        instance_callbacks.register,
    ):
        register_view(app, context)
    # Both class dropdowns' options in one request per state change.
    register_class_searches(
        app,
        context,
        [
            (summit_ids.SEARCH, sidebar.search_options),
            (summit_ids.COMPARE, compare.compare_options),
        ],
    )
