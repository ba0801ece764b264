"""Helpers shared by the views: the view context, notes, help text, error guard."""

from __future__ import annotations

import functools
import json
import logging
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dash import Dash, Input, Output, State, ctx, dcc, html, no_update

from compute.export import graphml_text, json_text
from dashboard import ids
from dashboard.atlases import AtlasGone
from dashboard.data import AtlasData, LayerPair
from dashboard.links import query_changes
from dashboard.state import StateBounds, ViewState
from dashboard.views.summit import ids as summit_ids
from dashboard.views.training.data import trace_data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViewContext:
    """What every view needs: the atlas data and where atlas files are served.

    Attributes:
        data: the opened atlas and its derived arrays.
        file_prefix: URL prefix of the atlas file route (ends with ``/``).
        spark_prefix: URL prefix of the sparkline route (ends with ``/``).
        page_prefix: URL prefix of the app's pages (``/`` unless served below a path).
    """

    data: AtlasData
    file_prefix: str
    spark_prefix: str = "/atlas-spark/"
    page_prefix: str = "/"

    def spark_url(self, class_index: int) -> str | None:
        """URL of a class's confidence sparkline; the atlas digest makes it immutable."""
        if not self.data.has_sparklines:
            return None
        return f"{self.spark_prefix}{class_index}.svg?v={self.data.digest}"

    def state(self, stored: Any) -> ViewState:
        """The view state from a ``dcc.Store`` value, validated against this atlas."""
        return ViewState.from_dict(
            stored,
            num_classes=self.data.num_classes,
            num_layers=self.data.num_layers,
            channels=self.data.channels,
        )

    def bounds(self) -> StateBounds:
        """What an event may select in this atlas (the reducers' bounds)."""
        data = self.data
        try:
            trace = trace_data(data)
        except (OSError, ValueError, KeyError):  # a broken trace part: its view says so
            trace = None
        return StateBounds(
            num_classes=data.num_classes,
            num_layers=data.num_layers,
            channels=tuple(int(c) for c in data.channels),
            trace_images=None if trace is None else trace.num_images,
            trace_layers=None if trace is None else trace.num_layers,
        )

    def layer(self, state: ViewState) -> int:
        """The state's layer, or the atlas's default layer."""
        return self.data.default_layer if state.layer is None else state.layer


def note(text: str | list[Any], *, kind: str = "info") -> html.Div:
    """A friendly inline note (``kind``: ``info``, ``missing`` or ``error``); ``text`` may
    mix strings and components (links)."""
    return html.Div(text, className=f"note note-{kind}")


def labelled(label: str, control: Any, tip: str = "") -> html.Div:
    """A control with its label above it (``tip``: the label's tooltip)."""
    return html.Div([html.Label(label, title=tip), control], className="slider-block")


#: An image atlas's words and a text atlas's: a text model's neurons are hidden units and
#: its inputs are texts (``worded``).
_TEXT_WORDS = (
    (re.compile(r"\bchannels\b"), "units"),
    (re.compile(r"\bchannel\b"), "unit"),
    (re.compile(r"\bChannels\b"), "Units"),
    (re.compile(r"\bChannel\b"), "Unit"),
    (re.compile(r"\bimages\b"), "texts"),
    (re.compile(r"\bimage\b"), "text"),
)


def worded(data: AtlasData, text: str) -> str:
    """``text``, written for an image atlas, in the words of ``data``'s modality: for a
    text atlas, channels are units and images are texts (sentences about pictures need a
    text atlas's own sentence instead).

    Examples:
        >>> class Text: text = True
        >>> worded(Text(), "classes whose images use similar channels")
        'classes whose texts use similar units'
    """
    if not data.text:
        return text
    for pattern, word in _TEXT_WORDS:
        text = pattern.sub(word, text)
    return text


def how_to_read(*paragraphs: str, extra: Sequence[Any] = ()) -> html.Details:
    """The collapsible "How to read this" note of a view (``extra``: components after the
    paragraphs, e.g. facts of the atlas shown)."""
    return html.Details(
        [html.Summary("How to read this"), *[html.P(p) for p in paragraphs], *extra],
        className="help",
    )


def influence_methods(
    data: AtlasData, pairs: Sequence[LayerPair], component_id: str | None = None
) -> html.Ul:
    """How the influence counts of ``pairs`` were made: one line per distinct connection
    kind (not per pair, so a 50-layer ResNet stays short), naming its layer pairs.

    Args:
        data: the atlas (for layer names).
        pairs: the layer pairs shown (:meth:`AtlasData.layer_pairs` or a subset).
        component_id: the list's id (tests and browser tests find it).
    """
    kinds: dict[str, list[LayerPair]] = {}
    for pair in pairs:
        kinds.setdefault(pair.connection, []).append(pair)
    names = data.layer_names
    lines = [
        html.Li(
            [
                html.Span(group[0].label, className=f"influence-kind kind-{kind}"),
                ": " + ", ".join(f"{names[p.source]} → {names[p.target]}" for p in group),
            ]
        )
        for kind, group in kinds.items()
    ]
    extra = {} if component_id is None else {"id": component_id}
    return html.Ul(lines, className="influence-kinds", **extra)


def percent(value: float | None) -> str:
    """``0.873 -> "87.3%"``; unknown values as an en dash."""
    if value is None or value != value:  # NaN
        return "–"
    return f"{100 * float(value):.1f}%"


def guarded(*fallback: Any, note_at: int | None = None) -> Callable[[Callable[..., Any]], Any]:
    """Turn any exception of a callback into a friendly note instead of a stack trace.

    Args:
        *fallback: the outputs to return on error (``no_update`` where nothing changes).
        note_at: index of the output that receives the error note.
    """

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except AtlasGone:  # not this view's fault: the page-wide alert says it
                raise
            except Exception:  # the user sees a short note; the log keeps the details
                # The exception's text can name server paths and internals: it goes to the
                # log only, under a request id the note gives for the operator.
                request_id = secrets.token_hex(4)
                log.exception("callback %s failed [request %s]", function.__name__, request_id)
                outputs = list(fallback) if fallback else [no_update]
                if note_at is not None:
                    outputs[note_at] = note(
                        f"Could not show this view (request {request_id}; the server's log "
                        "has the details).",
                        kind="error",
                    )
                return outputs[0] if len(outputs) == 1 else tuple(outputs)

        return wrapper

    return decorate


# Options of a class dropdown from (context, typed text, view state).
ClassOptions = Callable[[ViewContext, str | None, ViewState], list[Any]]

#: Options a class dropdown lists at most (matches of the typed text, or suggestions).
SEARCH_LIMIT = 50

# Filters the class names in the browser as the user types (the same rule as
# ``AtlasData.match_classes``: word-prefix matches first, then other substring matches, at
# most ``limit``; the current value pinned first). Without text: the server's suggestions
# (with the current value).
_SEARCH_JS = """
function(search, names, suggestions, value) {
    const limit = LIMIT;
    const needle = (search || "").trim().toLowerCase();
    if (!needle || !Array.isArray(names)) {
        if (!Array.isArray(suggestions)) { return window.dash_clientside.no_update; }
        // The search text is cleared as an option is picked, before the server has sent
        // suggestions holding it: keep the picked value among the options, or the
        // dropdown drops it.
        const known = Array.isArray(names) && Number.isInteger(value)
            && value >= 0 && value < names.length;
        if (known && !suggestions.some(o => o.value === value)) {
            return [{label: String(names[value]), value: value}].concat(suggestions);
        }
        return suggestions;
    }
    const prefix = [], inner = [];
    for (let c = 0; c < names.length && prefix.length < limit; c++) {
        const name = String(names[c]).toLowerCase();
        const at = name.indexOf(needle);
        if (at === 0 || (at > 0 && name[at - 1] === " ")) { prefix.push(c); }
        else if (at > 0) { inner.push(c); }
    }
    const picked = [];
    if (Number.isInteger(value) && value >= 0 && value < names.length) { picked.push(value); }
    for (const c of prefix.concat(inner)) {
        if (picked.length > limit) { break; }
        if (picked.indexOf(c) < 0) { picked.push(c); }
    }
    return picked.map(c => ({label: String(names[c]), value: c}));
}
""".replace("LIMIT", str(SEARCH_LIMIT))


def names_store_id(dropdown_id: str) -> str:
    """Id of the store holding the class names a dropdown searches in the browser."""
    return f"{dropdown_id}-names"


def suggestions_store_id(dropdown_id: str) -> str:
    """Id of the store holding a dropdown's options before typing (the server's)."""
    return f"{dropdown_id}-suggestions"


def class_search_stores(context: ViewContext, dropdown_id: str) -> list[dcc.Store]:
    """The stores a class dropdown registered with :func:`register_class_searches` needs in
    its view's layout: the class names (sent once with the page) and the suggestions."""
    return [
        dcc.Store(id=names_store_id(dropdown_id), data=list(context.data.names)),
        dcc.Store(id=suggestions_store_id(dropdown_id)),
    ]


def register_class_searches(
    app: Dash, context: ViewContext, searches: Sequence[tuple[str, ClassOptions]]
) -> None:
    """Keep the options of searchable class dropdowns current.

    The server sends ``options(context, None, state)`` (the value and suggestions) when the
    Summit views' state changes (``ids.STATE_SUMMIT``: the dropdowns are theirs), for every
    dropdown of ``searches`` in one callback (one request per state change, not one per
    dropdown); typed text is matched in the browser against the class names (a clientside
    callback), so a keystroke never waits for the server: with a thousand classes and a
    busy server the per-keystroke round trip made the search box lag by seconds. Each
    dropdown's view layout must include
    :func:`class_search_stores`.

    Args:
        app: the app.
        context: the view context.
        searches: ``(dropdown id, options function)`` of each dropdown.
    """

    def update_options(stored: Any) -> tuple[list[Any], ...]:
        state = context.state(stored)
        out: list[list[Any]] = []
        for _, options in searches:
            values = options(context, None, state)
            out += [values, values]
        return tuple(out)

    names = "_".join(options.__name__ for _, options in searches)
    update_options.__name__ = update_options.__qualname__ = f"update_{names}"
    outputs = []
    for dropdown_id, _ in searches:
        outputs += [
            Output(dropdown_id, "options"),
            Output(suggestions_store_id(dropdown_id), "data"),
        ]
    app.callback(*outputs, Input(ids.STATE_SUMMIT, "data"))(
        guarded(*([no_update] * len(outputs)))(update_options)
    )
    for dropdown_id, _ in searches:
        app.clientside_callback(
            _SEARCH_JS,
            Output(dropdown_id, "options", allow_duplicate=True),
            Input(dropdown_id, "search_value"),
            State(names_store_id(dropdown_id), "data"),
            State(suggestions_store_id(dropdown_id), "data"),
            State(dropdown_id, "value"),
            prevent_initial_call=True,
        )


# Downloads the cytoscape graph as a PNG drawn by cytoscape itself (twice the on-screen
# resolution, the whole graph, white background), named after the class names the page
# shows at ``selector`` ("-vs-" between several). Node pictures are same-origin URLs, so
# they never taint the canvas.
_PNG_EXPORT_JS = """function(n_clicks) {
    if (!n_clicks) { return window.dash_clientside.no_update; }
    const names = Array.from(document.querySelectorAll(%s))
        .map(e => e.textContent.trim().replace(/[^A-Za-z0-9._-]+/g, '-')
            .replace(/^-+|-+$/g, '').slice(0, 40))
        .filter(name => name);
    return {
        type: 'png',
        action: 'download',
        filename: [%s, names.join('-vs-')].filter(part => part).join('-'),
        options: {full: true, scale: 2, bg: '#ffffff'},
    };
}"""


def png_button(button_id: str) -> html.Button:
    """A small button that downloads the graph of its card as a PNG image
    (wire it with :func:`register_png_export`)."""
    return html.Button(
        "PNG",
        id=button_id,
        n_clicks=0,
        className="png-export",
        title="Download this graph as a PNG image (the whole graph, at twice screen resolution)",
    )


@dataclass(frozen=True)
class FileButton:
    """A card's button that downloads a file (the card's ``dcc.Download``, filled by the
    view's callback).

    Attributes:
        label: the button's text (the format, e.g. ``"CSV"``).
        button_id: the button's id.
        title: its tooltip: what the file holds.
    """

    label: str
    button_id: str
    title: str


def card_actions(
    files: Sequence[FileButton], download_id: str, png_id: str | None = None
) -> html.Div:
    """A card's export buttons, together at its right end: each of ``files`` downloads a
    file through the one ``dcc.Download`` ``download_id``; ``png_id`` (if given) the card's
    graph as an image (:func:`png_button`)."""
    return html.Div(
        [
            *[
                html.Button(
                    f.label, id=f.button_id, n_clicks=0, className="png-export", title=f.title
                )
                for f in files
            ],
            dcc.Download(id=download_id),
            None if png_id is None else png_button(png_id),
        ],
        className="card-actions",
    )


#: Media types of the graph downloads, by format (``compute.export.GRAPH_FORMATS``).
GRAPH_MEDIA_TYPES = {"json": "application/json", "graphml": "application/graphml+xml"}


def graph_file(data: dict[str, Any], stem: str, fmt: str) -> dict[str, Any]:
    """A ``dcc.Download`` value: node-link ``data`` as ``{stem}.json`` or ``{stem}.graphml``
    (``fmt``), the text ``python -m compute export`` writes."""
    text = graphml_text(data) if fmt == "graphml" else json_text(data)
    return {"content": text, "filename": f"{stem}.{fmt}", "type": GRAPH_MEDIA_TYPES[fmt]}


def graph_buttons(json_id: str, graphml_id: str, what: str) -> list[FileButton]:
    """A graph card's JSON and GraphML buttons; ``what`` names the graph in their
    tooltips."""
    return [
        FileButton(
            "JSON",
            json_id,
            f"Download {what} as node-link JSON (networkx.node_link_graph reads it)",
        ),
        FileButton(
            "GraphML",
            graphml_id,
            f"Download {what} as GraphML (Gephi, Cytoscape desktop, networkx.read_graphml)",
        ),
    ]


def register_graph_downloads(
    app: Dash,
    buttons: tuple[str, str],
    download_id: str,
    store_id: str,
    download: Callable[[Any, str], dict[str, Any] | None],
    png: tuple[str, str] | None = None,
) -> None:
    """Wire a card's JSON and GraphML buttons (``buttons``, :func:`graph_buttons`) to its
    ``dcc.Download``: ``download(stored state, "json" | "graphml")`` makes the file from
    the group's state copy ``store_id``; with ``png`` (its PNG button and cytoscape
    graph), the PNG is named as the JSON file (:func:`register_png_export`)."""
    json_id, graphml_id = buttons
    if png is not None:
        button_id, graph_id = png
        register_png_export(app, button_id, graph_id, "", store=store_id, download=download)

    @app.callback(
        Output(download_id, "data"),
        Input(json_id, "n_clicks"),
        Input(graphml_id, "n_clicks"),
        State(store_id, "data"),
        prevent_initial_call=True,
    )
    @guarded(no_update)
    def download_graph(_json: Any, _graphml: Any, stored: Any) -> Any:
        return download(stored, "graphml" if ctx.triggered_id == graphml_id else "json")


def register_png_export(
    app: Dash,
    button_id: str,
    graph_id: str,
    stem: str,
    names: str = f"#{summit_ids.GRAPH_HEADER} .class-name",
    *,
    store: str | None = None,
    download: Callable[[Any, str], dict[str, Any] | None] | None = None,
) -> None:
    """Clicking ``button_id`` downloads cytoscape ``graph_id`` as a PNG (drawn in the
    browser).

    With ``download`` (the card's JSON download, ``download(stored, "json")``), the PNG
    is named as the card's JSON file (the atlas, the view and its parameters) and an
    empty graph (``download`` gives ``None``) downloads nothing; the name takes a request
    to the server. Without it, the file is ``{stem}-{class}.png`` (``names``: CSS selector
    of the class names ending the name), named in the browser.

    Args:
        app: the app.
        button_id: the :func:`png_button`.
        graph_id: the cytoscape component.
        stem: start of the file name (without ``download``).
        names: CSS selector of the class names that end the file name (without
            ``download``; default: the selected class in the attribution graph's header).
        store: the view group's state store (with ``download``).
        download: the card's graph download, as :func:`register_graph_downloads` takes it.
    """
    if download is None or store is None:
        app.clientside_callback(
            _PNG_EXPORT_JS % (json.dumps(names), json.dumps(stem)),
            Output(graph_id, "generateImage"),
            Input(button_id, "n_clicks"),
            prevent_initial_call=True,
        )
        return

    @app.callback(
        Output(graph_id, "generateImage"),
        Input(button_id, "n_clicks"),
        State(store, "data"),
        prevent_initial_call=True,
    )
    @guarded(no_update)
    def png(clicks: int | None, stored: Any) -> Any:
        found = download(stored, "json") if clicks else None
        if found is None:  # nothing drawn: no empty file
            return no_update
        name = str(found["filename"]).removesuffix(".json")
        return {
            "type": "png",
            "action": "download",
            "filename": name,
            "options": {"full": True, "scale": 2, "bg": "#ffffff"},
        }


def state_link(
    children: Any, state: ViewState, prefix: str, changes: Mapping[str, Any], **props: Any
) -> html.A:
    """A link that changes only ``changes`` (``ViewState`` fields) of the view shown.

    Its ``href`` is ``state`` with the changes (a fallback: ``state`` is the group's copy
    and may be older than the URL in other groups' fields); on a click the browser applies
    the changes to the current URL instead (``assets/links.js``, ``data-query``), so what
    the other views show is kept.
    """
    changes = state.class_changes(changes)  # another class: the previous one's input goes
    href = f"{prefix}{state.with_(**changes).to_search()}"
    return html.A(
        children, href=href, **{"data-query": json.dumps(query_changes(changes))}, **props
    )
