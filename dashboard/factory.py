"""Build the Dash app for one atlas: pages, views, callbacks and the file routes.

:mod:`dashboard.app` calls :func:`create_app` once at import; tests call it directly.
"""

from __future__ import annotations

import logging

import flask
from dash import Dash, html, page_container, register_page

from dashboard import data as atlas_data
from dashboard.config import Settings, assets_dir
from dashboard.links import NEURON_TEMPLATE
from dashboard.state import ViewState
from dashboard.views import neuron_page, shell
from dashboard.views.common import ViewContext

log = logging.getLogger(__name__)

#: Route (below the app's prefix) that serves files listed in the atlas manifest.
FILE_ROUTE = "atlas-file/"
#: Route that serves each class's confidence-histogram sparkline as a small SVG.
SPARK_ROUTE = "atlas-spark/"
#: Atlas files never change under the same manifest entry: cache them for a year.
IMMUTABLE_MAX_AGE = 365 * 24 * 3600


def register_file_route(server: flask.Flask, data: atlas_data.AtlasData, prefix: str) -> None:
    """Serve ``{prefix}{FILE_ROUTE}<relpath>`` (only manifest-listed files, else 404) and
    ``{prefix}{SPARK_ROUTE}<class>.svg`` (class sparklines)."""

    @server.before_request
    def only_our_routes_below_the_prefixes() -> None:
        # Anything else below our prefixes (odd slashes, encoded separators, bad ids) would
        # otherwise fall through to Dash's catch-all page route and answer 200.
        path = flask.request.path
        if path.startswith((f"{prefix}{FILE_ROUTE}", f"{prefix}{SPARK_ROUTE}")) and (
            flask.request.endpoint not in ("atlas_file", "atlas_sparkline")
        ):
            flask.abort(404)

    @server.route(f"{prefix}{FILE_ROUTE}<path:relpath>", endpoint="atlas_file")
    def atlas_file(relpath: str) -> flask.Response:
        path = data.file_path(relpath)
        if path is None or not path.is_file():
            flask.abort(404)
        response = flask.send_file(path, max_age=IMMUTABLE_MAX_AGE, conditional=True)
        response.headers["Cache-Control"] = f"public, max-age={IMMUTABLE_MAX_AGE}, immutable"
        return response

    @server.route(f"{prefix}{SPARK_ROUTE}<int:class_index>.svg", endpoint="atlas_sparkline")
    def atlas_sparkline(class_index: int) -> flask.Response:
        svg = data.sparkline(class_index)
        if svg is None:
            flask.abort(404)
        response = flask.Response(svg, mimetype="image/svg+xml")
        # The URL carries the atlas digest (?v=...), so its content never changes.
        response.headers["Cache-Control"] = f"public, max-age={IMMUTABLE_MAX_AGE}, immutable"
        return response


def create_app(settings: Settings) -> Dash:
    """Build the app for ``settings`` (raises :class:`AtlasError` for a bad atlas)."""
    data = atlas_data.load(str(settings.atlas_dir), str(settings.cache_dir))
    title = f"{data.header()['title']} · Network Atlas"
    dash_app = Dash(
        __name__,
        use_pages=True,
        pages_folder="",
        assets_folder=str(assets_dir()),
        title=title,
        update_title=None,
        serve_locally=True,
    )
    context = ViewContext(
        data=data,
        file_prefix=dash_app.config.requests_pathname_prefix + FILE_ROUTE,
        spark_prefix=dash_app.config.requests_pathname_prefix + SPARK_ROUTE,
        page_prefix=dash_app.config.requests_pathname_prefix,
    )

    def explorer(**query: object) -> html.Div:
        """Dash Pages calls this with the URL query: the link is the view."""
        state = ViewState.from_query(
            query,
            num_classes=data.num_classes,
            num_layers=data.num_layers,
            channels=data.channels,
        )
        return shell.page_layout(context, state)

    register_page("explorer", path="/", layout=explorer, title=title, name="Explorer")

    def neuron(**variables: object) -> html.Div:
        """One neuron's page: ``/neuron/<layer name or index>/<channel>``."""
        return neuron_page.page(context, **variables)

    def neuron_title(**variables: object) -> str:
        return neuron_page.title(context, **variables)

    register_page(
        "neuron", path_template=NEURON_TEMPLATE, layout=neuron, title=neuron_title, name="Neuron"
    )
    # Dash Pages shows the page registered as "not_found_404" for any unknown path.
    register_page(
        "not_found_404",
        path="/404",
        layout=lambda **_: neuron_page.page_not_found(context),
        title=f"Page not found · {title}",
    )
    dash_app.layout = html.Div(
        [
            shell.header(context),
            page_container,
            html.Footer(
                [
                    "Network Atlas · Summit (Hohman et al. 2019), TopoAct (Rathore et al. 2021) "
                    "and training-trace (Pfahler & Morik 2021) views of the atlas ",
                    # The directory's name only: a shared deployment must not reveal its paths.
                    html.Code(settings.atlas_dir.name),
                ],
                className="app-footer",
            ),
        ],
        className="app",
    )
    shell.register(dash_app, context)
    register_file_route(dash_app.server, data, dash_app.config.routes_pathname_prefix)
    return dash_app
