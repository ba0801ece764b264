"""Property-based fuzzing (hypothesis) of what a URL can carry: any query gives a valid
view state and a page, never an exception; any path below the file routes gives 200 (a
listed file) or 404, never a server error."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import dash
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from plotly.utils import PlotlyJSONEncoder

from dashboard.config import Settings
from dashboard.factory import create_app
from dashboard.state import ViewState
from dashboard.views.summit.state import PICTURES, SORT_ORDERS
from dashboard.views.topology.state import TOPO_CLUSTERERS, TOPO_COLOURS, TOPO_EPS, TOPO_METRICS
from dashboard.views.training.state import TRACE_FILTERS

NUM_CLASSES, CHANNELS = 6, (8, 12, 10)
KEYS = [*sorted(ViewState._KEYS.values()), "whatever", ""]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Values that look almost right: numbers, near-misses, node ids, atlas keys, junk.
near = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.sampled_from(
        [
            "",
            " 3",
            "3 ",
            "1e3",
            "0x10",
            "nan",
            "inf",
            "-0",
            "1-5",
            "2-11",
            "9-1",
            "0-99",
            "alpha@1",
            "beta@2",
            "../x",
            "%00",
            "vis",
            "crop",
            "acc-asc",
            "cosine",
            "hdbscan",
            "wrong",
            "\u0663",
            "１",
            "None",
            "true",
            "[]",
            "{}",
        ]
    ),
    st.text(max_size=40),
)
query_value = st.one_of(near, st.lists(near, max_size=3))
queries = st.dictionaries(st.sampled_from(KEYS), query_value, max_size=12)


def check_valid(state: ViewState) -> None:
    """Every field of ``state`` is one the views can show for the test atlas."""
    assert 0 <= state.cls < NUM_CLASSES
    assert state.compare is None or (
        0 <= state.compare < NUM_CLASSES and state.compare != state.cls
    )
    assert state.layer is None or 0 <= state.layer < len(CHANNELS)
    assert 0 <= state.node_min <= 100 and 0 <= state.edge_min <= 100
    assert state.sort in SORT_ORDERS and state.pics in (None, *PICTURES)
    if state.node is not None:
        layer, channel = map(int, state.node.split("-"))
        assert layer < len(CHANNELS) and channel < CHANNELS[layer]
    assert state.topo_cluster in TOPO_CLUSTERERS and state.topo_colour in TOPO_COLOURS
    assert state.topo_metric in (None, *TOPO_METRICS) and state.trace_filter in TRACE_FILTERS
    assert state.trace_all in (0, 1)
    for value, (low, high) in (
        (state.topo_intervals, (10, 100)),
        (state.topo_overlap, (10, 60)),
        (state.topo_eps, TOPO_EPS),
    ):
        assert value is None or low <= value <= high  # None: the atlas's default


def parse(query: Any) -> ViewState:
    return ViewState.from_query(
        query, num_classes=NUM_CLASSES, num_layers=len(CHANNELS), channels=CHANNELS
    )


@FUZZ
@given(st.text(max_size=300))
def test_any_query_string_gives_a_valid_state(text: str) -> None:
    state = parse(text)
    check_valid(state)
    # The URL it writes reads back as the same state (links are stable).
    assert parse(state.to_search()) == state


@FUZZ
@given(queries)
@example({"class": "0\x1f"})  # found by this test: \s admitted a character int() refuses
def test_any_query_mapping_gives_a_valid_state(query: dict[str, Any]) -> None:
    state = parse(query)  # as Dash Pages passes it: str, or list for a repeated key
    check_valid(state)
    assert parse(state.to_search()) == state


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_values, st.dictionaries(st.sampled_from(list(ViewState._KEYS)), json_values)))
def test_any_store_value_gives_a_valid_state(stored: Any) -> None:
    # The dcc.Store is client data: a hand-crafted callback may send anything.
    check_valid(
        ViewState.from_dict(
            stored, num_classes=NUM_CLASSES, num_layers=len(CHANNELS), channels=CHANNELS
        )
    )


# -- the page and the file routes, on a deployment of two atlases ----------------------------


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, make_atlas: Any) -> dash.Dash:
    root = tmp_path_factory.mktemp("fuzz-atlases")
    make_atlas(root / "alpha", seed=1)
    make_atlas(root / "beta", seed=2)
    (root / "alpha" / "secret.txt").write_text("not listed")
    return create_app(Settings(atlas_dir=root, cache_dir=root / ".cache"))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queries)
def test_any_query_renders_a_page(deployment: dash.Dash, query: dict[str, Any]) -> None:
    layout = dash.page_registry["explorer"]["layout"]
    page = json.dumps(layout(**query), cls=PlotlyJSONEncoder)
    assert page.startswith("{")


SEGMENTS = [
    "..", ".", "", "%2e%2e", "%2F", "%2f..", "..%2f", "%00", "\\", "..\\..", "~", "//",
    "images", "00", "0-0.png", "manifest.json", "secret.txt", "alpha@1", "beta@1",
    "gamma@1", "alpha@2", "etc", "passwd", "1.svg", "99.svg", "-1.svg", "x.svg", "layers",
]  # fmt: skip
paths = st.lists(
    st.one_of(st.sampled_from(SEGMENTS), st.text(max_size=12).map(lambda t: quote(t, safe=""))),
    min_size=1,
    max_size=6,
).map("/".join)


@FUZZ
@given(st.sampled_from(["/atlas-file/", "/atlas-spark/"]), paths)
def test_file_routes_answer_a_file_or_404(deployment: dash.Dash, route: str, path: str) -> None:
    client = deployment.server.test_client()
    response = client.get(route + path)
    assert response.status_code in (200, 404), (route + path, response.status_code)
    if response.status_code == 200:
        assert b"not listed" not in response.data and b'"files"' not in response.data
        assert response.mimetype in ("image/png", "image/svg+xml")


@pytest.mark.parametrize(
    "path",
    [
        "/atlas-file/alpha@1/secret.txt",
        "/atlas-file/alpha@1/manifest.json",
        "/atlas-file/alpha@1/../alpha@1/images/00/0-0.png",
        "/atlas-file/alpha@1/%2e%2e/beta@1/images/00/0-0.png",
        "/atlas-file/alpha@1/images/..%2f..%2fmanifest.json",
        "/atlas-file//etc/passwd",
        "/atlas-file/%2Fetc%2Fpasswd",
        "/atlas-file/beta@1//images/00/0-0.png",
        "/atlas-spark/alpha@1/6.svg",
        "/atlas-spark/alpha@1/-1.svg",
        "/atlas-spark/..%2f/1.svg",
    ],
)
def test_traversal_and_unknown_files_are_404(deployment: dash.Dash, path: str) -> None:
    assert deployment.server.test_client().get(path).status_code == 404
