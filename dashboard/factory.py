"""Build the Dash app for a deployment: pages, views, callbacks, file routes, health, auth.

:mod:`dashboard.app` calls :func:`create_app` once at import; tests call it directly.

A deployment serves one atlas or a folder of atlases (:mod:`dashboard.atlases`). With
several, the page's URL names its atlas (``?atlas=NAME@VERSION``): the page layouts read it
from their query, and every Dash callback request carries it too (a ``request_pre`` hook of
the renderer copies the page's ``atlas`` parameter into the payload), so a request hook
makes it the request's atlas and the views, which reach their data through one
:class:`RequestContext`, serve that atlas. File URLs carry the atlas key in their path.

A page left open on an atlas that is then removed from the folder keeps naming it: its
callbacks raise :class:`~dashboard.atlases.AtlasGone` where they reach the data, and the
app's callback error handler turns that into a page-wide alert (:func:`atlas_gone_alert`)
with every output left as it was, so no view shows another atlas's data under the page's
name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import flask
from dash import Dash, dcc, html, page_container, register_page, set_props
from dash.exceptions import DependencyException

from compute.atlas import SUPPORTED_VERSIONS, AtlasError
from dashboard import atlases, auth, ids
from dashboard.atlases import AtlasEntry, AtlasGone, AtlasRegistry
from dashboard.config import Settings, assets_dir
from dashboard.data import AtlasData
from dashboard.links import NEURON_TEMPLATE
from dashboard.state import ViewState, ignored_parameters
from dashboard.views import shell
from dashboard.views.common import ViewContext, note
from dashboard.views.instance.data import instance_crop, parse_instance_crop_path
from dashboard.views.summit import neuron_page

log = logging.getLogger(__name__)

#: Route (below the app's prefix) that serves files listed in the atlas manifest; with
#: several atlases the first path segment is the atlas key (``NAME@VERSION``).
FILE_ROUTE = "atlas-file/"
#: Route that serves each class's confidence-histogram sparkline as a small SVG.
SPARK_ROUTE = "atlas-spark/"
#: The health check (no credentials needed; see :mod:`dashboard.auth`).
HEALTH_ROUTE = auth.HEALTH_PATH.lstrip("/")
#: Atlas files never change under the same manifest entry: cache them for a year.
IMMUTABLE_MAX_AGE = 365 * 24 * 3600

#: Copies the page's ``?atlas=`` into every callback request (read by the request hook);
#: a page whose URL names none (the default atlas's ``/``) sends the atlas it was built for
#: (the alert's ``data-atlas``), so it is not silently moved to a new default once its
#: atlas is removed.
RENDERER_WITH_ATLAS = """var renderer = new DashRenderer({
    request_pre: function (payload) {
        var atlas = new URLSearchParams(window.location.search).get("atlas");
        if (!atlas) {
            var shown = document.getElementById("ALERT_ID");
            atlas = shown && shown.getAttribute("data-atlas");
        }
        if (atlas) { payload.atlas = atlas; }
    }
});""".replace("ALERT_ID", ids.ATLAS_ALERT)


class RequestContext(ViewContext):
    """The :class:`ViewContext` of the atlas the current request shows.

    Views register their callbacks once, with this object; its ``data``, ``file_prefix``
    and ``spark_prefix`` resolve, on each access, to the current request's atlas
    (:func:`dashboard.atlases.current_key`; the default atlas outside a request).

    Args:
        resolve: returns the current request's real :class:`ViewContext`.
        page_prefix: URL prefix of the app's pages.
    """

    def __init__(self, resolve: Callable[[], ViewContext], page_prefix: str) -> None:
        object.__setattr__(self, "_resolve", resolve)
        object.__setattr__(self, "page_prefix", page_prefix)

    @property  # type: ignore[override]
    def data(self) -> AtlasData:
        return self._resolve().data

    @property  # type: ignore[override]
    def file_prefix(self) -> str:
        return self._resolve().file_prefix

    @property  # type: ignore[override]
    def spark_prefix(self) -> str:
        return self._resolve().spark_prefix


class Deployment:
    """The atlases of one app and a :class:`ViewContext` per atlas (built lazily).

    Args:
        registry: the atlases.
        prefix: the app's ``requests_pathname_prefix`` (URLs the browser uses).
    """

    def __init__(self, registry: AtlasRegistry, prefix: str) -> None:
        self.registry = registry
        self.prefix = prefix
        self._contexts: dict[AtlasEntry, ViewContext] = {}

    def context(self, entry: AtlasEntry) -> ViewContext:
        """The view context of ``entry`` (opens the atlas on first use in this worker).

        Kept per entry, which identifies the manifest read: an atlas rebuilt under the same
        key gets a new context; those of atlases no longer served are dropped.
        """
        found = self._contexts.get(entry)
        if found is None:
            below = f"{quote(entry.key, safe='@')}/" if self.registry.multi else ""
            data = self.registry.data(entry)
            found = ViewContext(
                data=data,
                # The manifest's digest in every picture's URL: a rebuilt atlas has new URLs,
                # so browsers and CDNs never keep its old pictures (served immutable).
                file_prefix=f"{self.prefix}{FILE_ROUTE}{below}{DIGEST_MARK}{data.digest}/",
                spark_prefix=f"{self.prefix}{SPARK_ROUTE}{below}",
                page_prefix=self.prefix,
            )
            served = set(self.registry.entries)
            kept = {e: c for e, c in self._contexts.items() if e in served}
            self._contexts = {**kept, entry: found}  # one assignment: readers see either
        return found

    def current_entry(self) -> AtlasEntry:
        """The atlas of the current request (the default one if it names none).

        Raises:
            AtlasGone: the request names an atlas no longer served (a callback of a page
                opened before its atlas was removed; see :func:`register_atlas_hook`).
        """
        key = atlases.current_key()
        entry = self.registry.find(key)
        if entry is None:
            raise AtlasGone(str(key))
        return entry

    def current(self) -> ViewContext:
        """The view context of the current request's atlas."""
        return self.context(self.current_entry())

    def choices(self) -> list[tuple[str, str]]:
        """``(key, label)`` of every atlas, for the picker (empty with one atlas)."""
        if not self.registry.multi:
            return []
        return [(e.key, f"{e.name} · {e.title}") for e in self.registry.entries]


#: Marks the atlas-digest segment of a file URL (``/atlas-file/~DIGEST/images/...``).
DIGEST_MARK = "~"


def _cached_immutable(response: flask.Response) -> flask.Response:
    response.headers["Cache-Control"] = f"public, max-age={IMMUTABLE_MAX_AGE}, immutable"
    return response


def register_file_route(server: flask.Flask, deployment: Deployment, prefix: str) -> None:
    """Serve ``{prefix}{FILE_ROUTE}[<atlas key>/]<relpath>`` (only manifest-listed files,
    else 404) and ``{prefix}{SPARK_ROUTE}[<atlas key>/]<class>.svg`` (class sparklines).

    Without a key (or with one atlas) the default atlas is meant; an unknown key is a 404.
    """
    registry = deployment.registry
    ours = ("atlas_file", "atlas_sparkline", "atlas_sparkline_of")

    @server.before_request
    def only_our_routes_below_the_prefixes() -> None:
        # Anything else below our prefixes (odd slashes, encoded separators, bad ids) would
        # otherwise fall through to Dash's catch-all page route and answer 200.
        path = flask.request.path
        if path.startswith((f"{prefix}{FILE_ROUTE}", f"{prefix}{SPARK_ROUTE}")) and (
            flask.request.endpoint not in ours
        ):
            flask.abort(404)

    def data_of(key: str | None) -> AtlasData:
        entry = registry.default if key is None else registry.find(key)
        if entry is None:
            flask.abort(404)
        try:
            return deployment.context(entry).data
        except AtlasError as exc:  # a lazily opened atlas that is corrupt: log, no trace
            log.error("atlas %s cannot be opened: %s", entry.name, exc)
            flask.abort(404)

    @server.route(f"{prefix}{FILE_ROUTE}<path:relpath>", endpoint="atlas_file")
    def atlas_file(relpath: str) -> flask.Response:
        key = None
        first, slash, rest = relpath.partition("/")
        if registry.multi and slash and "@" in first:
            key, relpath = first, rest
        data = data_of(key)
        digest = None
        first, slash, rest = relpath.partition("/")
        if slash and first.startswith(DIGEST_MARK):
            digest, relpath = first[len(DIGEST_MARK) :], rest
            if digest != data.digest:  # a page of an atlas since rebuilt: that file is gone
                flask.abort(404)
        crop = parse_instance_crop_path(relpath)
        if crop is not None:  # made on request from the input's stored image
            try:
                png = instance_crop(data, *crop)
            except AtlasError as exc:  # a corrupt stored image: log, no trace
                log.error("%s", exc)
                png = None
            if png is None:
                flask.abort(404)
            response = flask.Response(png, mimetype="image/png")
        else:
            path = data.file_path(relpath)
            if path is None or not path.is_file():
                flask.abort(404)
            response = flask.send_file(path, conditional=True)
        if digest is None:  # a URL without the atlas's digest may show other content later
            response.headers["Cache-Control"] = "no-cache"
            return response
        return _cached_immutable(response)

    def sparkline(key: str | None, class_index: int) -> flask.Response:
        svg = data_of(key).sparkline(class_index)
        if svg is None:
            flask.abort(404)
        # The URL carries the atlas digest (?v=...), so its content never changes.
        return _cached_immutable(flask.Response(svg, mimetype="image/svg+xml"))

    server.add_url_rule(
        f"{prefix}{SPARK_ROUTE}<int:class_index>.svg",
        endpoint="atlas_sparkline",
        view_func=lambda class_index: sparkline(None, class_index),
    )
    server.add_url_rule(
        f"{prefix}{SPARK_ROUTE}<key>/<int:class_index>.svg",
        endpoint="atlas_sparkline_of",
        view_func=sparkline,
    )


def register_health_route(server: flask.Flask, registry: AtlasRegistry, prefix: str) -> None:
    """``{prefix}healthz``: 200 with the atlases' names, keys and format versions (cheap: no
    atlas is opened; open without credentials, as platform probes need). The folder is
    re-scanned by the request hook (:func:`register_atlas_hook`), as for every request."""

    @server.route(f"{prefix}{HEALTH_ROUTE}", endpoint="healthz")
    def healthz() -> flask.Response:
        body = {**registry.health(), "reader_versions": sorted(SUPPORTED_VERSIONS)}
        response = flask.jsonify(body)
        response.headers["Cache-Control"] = "no-store"
        return response


def register_atlas_hook(server: flask.Flask, registry: AtlasRegistry) -> None:
    """Make the atlas a request names the request's atlas (:func:`atlases.set_current`).

    A callback request names it in its payload (``atlas``, copied from the page's URL by
    :data:`RENDERER_WITH_ATLAS`), a page load in its query; no name means the default atlas.
    A page load naming an unknown atlas gets the default's header facts and title while
    its layout shows the friendly not-found page. A callback naming one comes from a page
    whose atlas was removed since it was opened: the request keeps that name, so the views
    raise :class:`AtlasGone` instead of answering with the default atlas's data.
    """

    @server.before_request
    def choose_atlas() -> None:
        key = None
        # Added, removed, rebuilt or updated atlases: a clock check here, one stat (of the
        # folder, or of a single atlas's manifest) every few seconds per worker, manifests
        # read only when they changed.
        registry.refresh()
        if registry.multi:
            request = flask.request
            if request.method == "POST" and request.path.endswith("_dash-update-component"):
                body = request.get_json(silent=True)
                named = body.get("atlas") if isinstance(body, dict) else None
                found = registry.find(named) if named else registry.default
                key = found.key if found is not None else str(named)[:80]
            else:  # a page load (its title and meta tags name the linked atlas)
                named = request.args.get("atlas")
                key = ((registry.find(named) if named else None) or registry.default).key
        flask.g.network_atlas_token = atlases.set_current(key)

    @server.teardown_request
    def forget_atlas(_error: BaseException | None) -> None:
        token = flask.g.pop("network_atlas_token", None)
        if token is not None:
            atlases.reset_current(token)


def _matches(items: Any, expected: list[dict[str, Any]]) -> bool:
    """Whether ``items`` (a payload's inputs or state) are those of ``expected`` (the
    callback's spec), in order: the same ids and properties; a pattern-matching entry (its
    id a JSON object) is a list of dicts or one dict."""
    if not isinstance(items, list) or len(items) != len(expected):
        return False
    for item, want in zip(items, expected, strict=True):
        if str(want.get("id", "")).startswith("{"):
            entries = item if isinstance(item, list) else [item]
            if not all(isinstance(e, dict) and isinstance(e.get("id"), dict) for e in entries):
                return False
            continue
        if not isinstance(item, dict):
            return False
        if item.get("id") != want.get("id") or item.get("property") != want.get("property"):
            return False
        if item["id"] == "_pages_location" and not _page_location_ok(item):
            return False
    return True


def _page_location_ok(item: dict[str, Any]) -> bool:
    """Dash Pages' location values are strings (a pathname starting with ``/``)."""
    value = item.get("value")
    if item["property"] == "pathname":
        return isinstance(value, str) and value.startswith("/")
    return value is None or isinstance(value, str)


def _well_formed_callback(body: Any, callback_map: dict[str, Any]) -> bool:
    """Whether a ``_dash-update-component`` payload has the shape the Dash renderer sends
    for the callback it names.

    Dash itself answers 500 to payloads no browser sends (an unknown output, inputs that
    do not match the callback, no ``outputs``, Pages given a location that is not a
    string, no changed input for a callback that never runs at start); those are bad
    requests.
    """
    if not isinstance(body, dict):
        return False
    output = body.get("output")
    if not isinstance(output, str) or output not in callback_map:
        return False
    spec = callback_map[output]
    if not callable(spec.get("callback")):  # a clientside callback: runs in the browser only
        return False
    if not _matches(body.get("inputs"), spec.get("inputs", [])):
        return False
    if not _matches(body.get("state", []), spec.get("state", [])):
        return False
    outputs = body.get("outputs")
    if output.startswith(".."):  # several outputs: "..a.x...b.y..", one dict each
        count = len(output[2:-2].split("..."))
        if not (isinstance(outputs, list) and len(outputs) == count):
            return False
        if not all(isinstance(o, (dict, list)) for o in outputs):
            return False
    elif not isinstance(outputs, (dict, list)):
        return False
    changed = body.get("changedPropIds", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        return False
    # The renderer sends no changed input only for a callback's initial call.
    return bool(changed) or not spec.get("prevent_initial_call")


def register_payload_guard(server: flask.Flask, dash_app: Dash) -> None:
    """Answer 400, not 500, to malformed or hostile callback payloads."""

    @server.before_request
    def refuse_malformed_callbacks() -> None:
        request = flask.request
        if request.method == "POST" and request.path.endswith("_dash-update-component"):
            try:
                body = request.get_json(silent=True)
            except RecursionError:  # absurdly nested JSON: json.loads gives up
                flask.abort(400)
            if not _well_formed_callback(body, dash_app.callback_map):
                flask.abort(400)


def unknown_atlas_page(deployment: Deployment, asked: Any) -> html.Div:
    """The friendly page for a link naming an atlas this deployment does not serve."""
    registry = deployment.registry
    shown = asked if isinstance(asked, str) else ""
    links = [
        html.Li(
            dcc.Link(
                f"{e.name} (format {e.version}): {e.title}",
                href=f"{deployment.prefix}?atlas={quote(e.key, safe='@')}"
                if registry.multi
                else deployment.prefix,
            )
        )
        for e in registry.entries
    ]
    return html.Div(
        html.Section(
            [
                html.H2("Atlas not found"),
                note(
                    f"This link names the atlas {shown[:80]!r}, which this deployment does "
                    "not serve (it may have been removed, renamed or rebuilt in another "
                    "format). Links name an atlas as NAME@FORMAT_VERSION.",
                    kind="missing",
                ),
                html.P("Atlases served here:"),
                html.Ul(links),
            ],
            className="panel",
        ),
        className="page",
    )


def atlas_gone_alert(deployment: Deployment, key: str) -> list[Any]:
    """The alert's content for a page whose atlas ``key`` is no longer served: what
    happened, that nothing on the page updates any more, and where to go."""
    prefix = deployment.prefix
    default = deployment.registry.default
    return [
        html.Strong(f"The atlas {key} is no longer served here. "),
        "It was removed, renamed or rebuilt in another format after this page was opened; "
        "the views keep what they showed and no longer update. ",
        html.A(
            "Open the atlas list",
            href=f"{prefix}?atlas={quote(key, safe='@')}",
            className="alert-link",
            title="the page listing the atlases this deployment serves",
        ),
        " · ",
        html.A(
            f"open {default.name}",
            href=f"{prefix}?atlas={quote(default.key, safe='@')}",
            className="alert-link",
        ),
    ]


def callback_error_handler(deployment: Deployment) -> Callable[[Exception], None]:
    """The app's ``on_error``: a callback that reached the data of a removed atlas
    (:class:`AtlasGone`) fills the page's alert and leaves its outputs as they were; any
    other error propagates as before (logged; the browser gets no trace)."""

    def on_callback_error(error: Exception) -> None:
        if not isinstance(error, AtlasGone):
            raise error
        log.info("callback for an atlas no longer served: %s", error.key)
        set_props(
            ids.ATLAS_ALERT,
            {"children": atlas_gone_alert(deployment, error.key), "hidden": False},
        )
        # None: Dash leaves every output as it was (no_update).

    return on_callback_error


def unopenable_atlas_page(entry: AtlasEntry) -> html.Div:
    """The friendly page for an atlas whose files are damaged (the log names the file)."""
    return html.Div(
        html.Section(
            [
                html.H2("Atlas unavailable"),
                note(
                    f"The atlas {entry.name!r} could not be opened; the server log names "
                    "the damaged file. Rebuild or verify it with `python -m compute verify`.",
                    kind="error",
                ),
            ],
            className="panel",
        ),
        className="page",
    )


def framed(deployment: Deployment, entry: AtlasEntry, body: Any) -> html.Div:
    """``body`` between the atlas's header (with the picker) and footer."""
    context = deployment.context(entry)
    # Filled by callback_error_handler if this page's atlas disappears while it is open;
    # data-atlas names the page's atlas for RENDERER_WITH_ATLAS.
    alert = html.Div(
        id=ids.ATLAS_ALERT,
        hidden=True,
        role="alert",
        className="note note-error atlas-alert",
        **({"data-atlas": entry.key} if deployment.registry.multi else {}),
    )
    return html.Div(
        [
            shell.header(context, deployment.choices(), entry.key),
            alert,
            body,
            html.Footer(
                [
                    "Network Atlas · Summit (Hohman et al. 2019), TopoAct (Rathore et al. 2021) "
                    "and training-trace (Pfahler & Morik 2021) views of the atlas ",
                    # The directory's name only: a shared deployment must not reveal its paths.
                    html.Code(entry.name),
                ],
                className="app-footer",
            ),
        ]
    )


def on_atlas(deployment: Deployment, asked: Any, build: Callable[[ViewContext], Any]) -> html.Div:
    """The page ``build(context)`` for the atlas a URL names, framed; a friendly page for
    an unknown atlas or one that cannot be opened."""
    entry = deployment.registry.find(asked)
    if entry is None:
        return unknown_atlas_page(deployment, asked)
    try:
        context = deployment.context(entry)
    except AtlasError as exc:
        log.error("atlas %s cannot be opened: %s", entry.name, exc)
        return unopenable_atlas_page(entry)
    # Links built for this page stay on its atlas (dashboard.links reads the current key).
    with atlases.use(deployment.registry.url_key(entry)):
        return framed(deployment, entry, build(context))


#: Renderer config keys that describe the server (exact Python version and libraries):
#: what a deployment does not need to tell anyone; kept in debug mode (dev tools show them).
_SERVER_FACTS = ("python_version", "dash_version", "dash_version_url", "ddk_version",
                 "plotly_version")  # fmt: skip


def hide_internals(dash_app: Dash, *, debug: bool) -> None:
    """What a deployment never answers: unknown component scripts (traversal attempts
    included) are 404, not 500; outside debug mode the page's config names no versions and
    Dash's hot-reload route ``/_reload-hash`` does not exist."""
    server = dash_app.server

    @server.errorhandler(DependencyException)
    def unknown_component_script(_error: Exception) -> tuple[str, int]:
        return "Not found", 404

    if debug:
        return
    original = dash_app._config

    def config_without_versions() -> dict[str, Any]:
        config = original()
        for key in _SERVER_FACTS:
            config.pop(key, None)
        return config

    dash_app._config = config_without_versions  # type: ignore[method-assign]
    reload_path = f"{dash_app.config.routes_pathname_prefix}_reload-hash"

    @server.before_request
    def no_reload_route() -> None:
        if flask.request.path == reload_path:
            flask.abort(404)


def register_pages(deployment: Deployment, title: str) -> None:
    """Register the app's Dash Pages: the explorer (``/``), a neuron's page and the
    not-found page, each drawn for the atlas its URL names (:func:`on_atlas`).

    Args:
        deployment: the deployment's atlases.
        title: the app's title (the not-found page's, and a neuron page's fallback).
    """

    def explorer(**query: object) -> html.Div:
        """Dash Pages calls this with the URL query: the link is the view."""

        def build(ctx: ViewContext) -> html.Div:
            data = ctx.data
            state = ViewState.from_query(
                query, num_classes=data.num_classes, num_layers=data.num_layers,
                channels=data.channels,
            )  # fmt: skip
            ignored = ignored_parameters(query, state)
            return shell.page_layout(ctx, state.with_(atlas=atlases.current_key()), ignored)

        return on_atlas(deployment, query.get("atlas"), build)

    def explorer_title(**_: object) -> str:
        # Dash passes titles no query: the request hook has chosen the atlas already.
        try:
            return f"{deployment.current_entry().title} · Network Atlas"
        except AtlasGone:  # the layout shows the friendly not-found page
            return "Atlas not found · Network Atlas"

    register_page("explorer", path="/", layout=explorer, title=explorer_title, name="Explorer")

    def neuron(**variables: object) -> html.Div:
        """One neuron's page: ``/neuron/<layer name or index>/<channel>``."""
        return on_atlas(
            deployment, variables.get("atlas"), lambda ctx: neuron_page.page(ctx, **variables)
        )

    def neuron_title(**variables: object) -> str:
        try:
            return neuron_page.title(deployment.current(), **variables)
        except AtlasGone:
            return "Atlas not found · Network Atlas"
        except AtlasError:
            return title

    register_page(
        "neuron", path_template=NEURON_TEMPLATE, layout=neuron, title=neuron_title, name="Neuron"
    )

    # Dash Pages shows the page registered as "not_found_404" for any unknown path.
    def page_not_found(**_: object) -> html.Div:
        try:
            entry = deployment.current_entry()
        except AtlasGone as gone:
            return unknown_atlas_page(deployment, gone.key)
        return framed(deployment, entry, neuron_page.page_not_found(deployment.context(entry)))

    register_page(
        "not_found_404", path="/404", layout=page_not_found, title=f"Page not found · {title}"
    )


def set_up_before_fork(dash_app: Dash, prefix: str) -> None:
    """Do now, once, what Dash does lazily on the first request of each process.

    Called by :func:`create_app` last: with gunicorn's ``--preload`` it runs in the master,
    before any worker forks, so every worker inherits a set-up app.

    Args:
        dash_app: the app, with every page, callback and route registered.
        prefix: the app's requests prefix (the router's validation request).
    """
    server = dash_app.server
    # Dash sets its server up (script registry, callback map) on the first request of each
    # process and marks that done *before* doing it, so with threaded gunicorn workers a
    # concurrent first request in a fresh worker can meet a half set-up app (a component
    # script answered 500, a partial _dash-dependencies that leaves the page blank). Set it
    # up now, once: in gunicorn's master with --preload, before any worker forks.
    dash_app._setup_server()
    # Dash Pages builds its router on the first request of each process, drawing every
    # page once for its validation layout: a default atlas removed (or an array gone) by
    # then made the first request of every fresh worker, /healthz included, answer 500.
    # Build it now, once (in the master with --preload): the workers inherit it.
    for hook in server.before_request_funcs.get(None, []):
        if getattr(hook, "__name__", "") in ("router_sync", "router_async"):
            with server.test_request_context(prefix):
                hook()


def create_app(settings: Settings) -> Dash:
    """Build the app for ``settings``.

    Raises:
        AtlasError: a missing or corrupt atlas (the message names the file).
        ConfigError: a malformed auth setting.
    """
    registry = AtlasRegistry(settings.atlas_dir, settings.cache_dir, settings.default_atlas)
    # The default atlas is opened now (in gunicorn's master with --preload): a damaged one
    # stops the start; the others open on first use in each worker.
    registry.data(registry.default)
    default_title = registry.data(registry.default).header()["title"]
    title = "Network Atlas" if registry.multi else f"{default_title} · Network Atlas"
    deployment: Deployment | None = None  # set below: the error handler needs the prefix

    def on_error(error: Exception) -> None:
        assert deployment is not None
        return callback_error_handler(deployment)(error)

    dash_app = Dash(
        __name__,
        use_pages=True,
        on_error=on_error,
        pages_folder="",
        assets_folder=str(assets_dir()),
        title=title,
        update_title=None,
        serve_locally=True,
    )
    if registry.multi:
        dash_app.renderer = RENDERER_WITH_ATLAS
    prefix = dash_app.config.requests_pathname_prefix
    deployment = Deployment(registry, prefix)
    context = RequestContext(deployment.current, page_prefix=prefix)

    register_pages(deployment, title)
    dash_app.layout = html.Div([page_container], className="app")
    shell.register(dash_app, context)
    if registry.multi:
        shell.register_atlas_picker(dash_app, prefix)
    server = dash_app.server
    routes = dash_app.config.routes_pathname_prefix
    auth.protect(dash_app, settings)  # first: nothing below runs for a refused request
    register_atlas_hook(server, registry)
    register_health_route(server, registry, routes)
    register_file_route(server, deployment, routes)
    register_payload_guard(server, dash_app)
    hide_internals(dash_app, debug=settings.debug)
    set_up_before_fork(dash_app, prefix)
    return dash_app
