"""ViewState: URL round trips, junk parameters and bounds (parametrised, no hypothesis)."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from dashboard.state import ViewState, ignored_parameters, node_id, parse_node_id
from dashboard.views.summit.state import SORT_ORDERS

BOUNDS = {"num_classes": 10, "num_layers": 3, "channels": (8, 12, 10)}

STATES = [
    ViewState(),
    ViewState(cls=9),
    ViewState(cls=3, compare=7),
    ViewState(cls=1, layer=2, node_min=35, edge_min=100, sort="acc-desc", node="2-9"),
    ViewState(cls=0, compare=9, layer=0, sort="acc-asc", node="0-7"),
]


@pytest.mark.parametrize("state", STATES)
def test_query_round_trip(state: ViewState) -> None:
    search = state.to_search()
    assert search.startswith("?v=1&class=")
    assert ViewState.from_query(search, **BOUNDS) == state
    assert ViewState.from_dict(state.to_dict(), **BOUNDS) == state


@pytest.mark.parametrize("state", STATES)
def test_search_is_canonical(state: ViewState) -> None:
    search = state.to_search()
    assert ViewState.from_query(search).to_search() == search


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?",
        "?class=",
        "?class=abc&layer=x&nodes=1e3&edges=-1&sort=random&node=zz",
        "?class=99&compare=-3&layer=3&node=3-0",
        "?class=1.5&nodes=101&edges=%00&node=0-8",
        "?node=../../etc/passwd&class=%27%3Bdrop",
        "?v=999&foo=bar&class=2&class=5",
        "?class=" + "9" * 50,
        "?node=1-12&layer=-0",
    ],
)
def test_junk_never_raises_and_stays_in_bounds(query: str) -> None:
    state = ViewState.from_query(query, **BOUNDS)
    assert 0 <= state.cls < 10
    assert state.compare is None or 0 <= state.compare < 10
    assert state.layer is None or 0 <= state.layer < 3
    assert 0 <= state.node_min <= 100 and 0 <= state.edge_min <= 100
    assert state.sort in SORT_ORDERS
    if state.node is not None:
        layer, channel = parse_node_id(state.node)  # type: ignore[misc]
        assert channel < BOUNDS["channels"][layer]


def test_junk_falls_back_to_defaults() -> None:
    state = ViewState.from_query("?class=abc&layer=99&sort=x&nodes=-5&node=9-1", **BOUNDS)
    assert state == ViewState()


def test_repeated_key_takes_the_first_value_as_dash_pages_passes_lists() -> None:
    assert ViewState.from_query({"class": ["4", "5"]}, **BOUNDS).cls == 4
    assert ViewState.from_query({"class": []}, **BOUNDS).cls == 0


def test_compare_with_itself_is_dropped() -> None:
    assert ViewState.from_query("?class=3&compare=3").compare is None
    assert ViewState(cls=2, compare=5).with_(cls=5).compare is None


@pytest.mark.parametrize("data", [None, 3, "x", [], {"cls": "nope"}, {"cls": -1, "sort": 5}])
def test_from_dict_tolerates_junk(data: object) -> None:
    assert ViewState.from_dict(data, **BOUNDS) == ViewState()  # type: ignore[arg-type]


def test_state_is_frozen() -> None:
    with pytest.raises(AttributeError):
        ViewState().cls = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("0-0", (0, 0)),
        ("12-345", (12, 345)),
        ("a-1", None),
        ("1-", None),
        ("", None),
        ("1-2-3", None),
        ("-1-2", None),
    ],
)
def test_node_ids(value: str, parsed: tuple[int, int] | None) -> None:
    assert parse_node_id(value) == parsed
    if parsed is not None:
        assert node_id(*parsed) == value


def test_atlas_key_round_trips_and_leads_the_query() -> None:
    state = ViewState(cls=4, atlas="vgg11@1", node="1-3")
    search = state.to_search()
    assert search == "?v=1&atlas=vgg11@1&class=4&node=1-3"
    assert ViewState.from_query(search, **BOUNDS) == state
    assert ViewState.from_dict(state.to_dict(), **BOUNDS) == state
    assert ViewState(cls=4).to_search() == "?v=1&class=4", "one atlas: no parameter"


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("vgg11@1", "vgg11@1"),
        ("vgg11", "vgg11"),
        ("res-net_50.v2@12", "res-net_50.v2@12"),
        ("../etc", None),
        ("a b", None),
        ("vgg11@", None),
        ("@1", None),
        ("vgg11@1@2", None),
        ("x" * 65, None),
        ("", None),
    ],
)
def test_atlas_key_is_checked(value: str, kept: str | None) -> None:
    assert ViewState.from_query({"atlas": value}, **BOUNDS).atlas == kept


def test_view_groups_cover_every_field_and_keep_views_apart() -> None:
    """Every field is read by some group; a view's own fields reach only its group's views;
    the class, the atlas and the schema version reach every view."""
    from dataclasses import fields

    from dashboard.state import SHARED_FIELDS, SLICES, view_groups

    groups = view_groups()
    names = {f.name for f in fields(ViewState)}
    assert set().union(*groups.values()) == names
    assert set(groups) == {"summit", "topology", "training", "instance"}
    owner = {f.name: part.name for part in SLICES for f in fields(part.fields)}
    readers = {part.name: set(part.reads) for part in SLICES}
    for name in names:
        owners = {g for g, watched in groups.items() if name in watched}
        if name in SHARED_FIELDS:
            assert owners == set(groups), name
        else:  # its own group, and the groups that say they read it
            assert owners == {owner[name]} | {g for g, r in readers.items() if name in r}, name
    # The Instance view draws the chosen pictures and follows the "mistaken for" confusion.
    assert readers["instance"] == {"pics", "subset", "mistaken_for"}
    assert {n for n, g in owner.items() if g == "topology"} == {
        n for n in names if n.startswith("topo_")
    }


def test_every_view_listens_to_its_groups_store(tmp_path) -> None:
    """No view callback listens to the whole state (it would re-render on every change)."""
    from dashboard import ids
    from dashboard.config import DEMO_ATLAS_DIR, Settings
    from dashboard.factory import create_app
    from dashboard.views.shell import GROUP_STORES

    app = create_app(Settings(atlas_dir=DEMO_ATLAS_DIR, cache_dir=tmp_path / "cache"))
    inputs = [i["id"] for spec in app.callback_map.values() for i in spec["inputs"]]
    assert set(GROUP_STORES.values()) <= set(inputs)
    # only the clientside splitter reads the whole state as an input
    assert inputs.count(ids.STATE) == 1


@pytest.mark.parametrize("state", STATES)
def test_a_link_s_own_parameters_are_never_reported_ignored(state: ViewState) -> None:
    query = dict(parse_qsl(state.to_search().lstrip("?")))
    assert ignored_parameters(query, ViewState.from_query(query, **BOUNDS)) == []
    # Defaults written out, and numbers in another spelling, are used as given too.
    spelled = {**query, "nodes": str(state.node_min), "tc": "dbscan", "class": f"0{state.cls}"}
    assert ignored_parameters(spelled, ViewState.from_query(spelled, **BOUNDS)) == []


def test_unknown_and_unusable_parameters_are_reported() -> None:
    query = {
        "class": "2", "colour": "red", "layer": "7", "node": "0-99", "sort": "random",
        "ti": "500", "compare": "2", "flag": "", "atlas": "other@1",
    }  # fmt: skip
    state = ViewState.from_query(query, **BOUNDS)
    assert ignored_parameters(query, state) == [
        "colour=red", "layer=7", "node=0-99", "sort=random", "ti=500", "compare=2", "flag",
    ]  # fmt: skip


def test_the_page_says_which_parameters_it_ignored(small_atlas, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    import dash
    from plotly.utils import PlotlyJSONEncoder

    from dashboard.config import Settings
    from dashboard.factory import create_app

    create_app(Settings(atlas_dir=small_atlas, cache_dir=tmp_path / "cache"))
    explorer = dash.page_registry["explorer"]["layout"]
    page = json.dumps(
        explorer(**{"class": "2", "bogus": "1", "layer": "42"}), cls=PlotlyJSONEncoder
    )
    assert "Ignored in this link" in page and "bogus=1, layer=42" in page
    clean = json.dumps(explorer(**{"class": "2", "layer": "1"}), cls=PlotlyJSONEncoder)
    assert "Ignored in this link" not in clean


def test_the_state_is_composed_of_the_slices() -> None:
    """Each view group's slice declares its fields, one URL key per field (unique across
    the page) and a parser that returns exactly its fields, at their defaults for an empty
    link; the composed state holds the shared fields and every slice's, nothing else."""
    from dataclasses import fields

    from dashboard.state import SHARED_FIELDS, SLICES
    from dashboard.state_kit import QueryBounds

    composed = [f.name for f in fields(ViewState)]
    from_slices = [f.name for part in SLICES for f in fields(part.fields)]
    assert composed == [*SHARED_FIELDS, *from_slices]
    url_keys = [key for part in SLICES for key in part.keys.values()]
    assert len(set(url_keys)) == len(url_keys)
    assert not set(url_keys) & {"v", "class", "atlas"}
    for part in SLICES:
        names = {f.name for f in fields(part.fields)}
        assert set(part.keys) == names, part.name
        parsed = part.parse(lambda key: None, QueryBounds())
        assert parsed == {name: getattr(part.fields(), name) for name in names}, part.name


def test_another_class_drops_the_previous_classs_input_and_confusion() -> None:
    """An input and a confusion belong to the selected class: selecting another class
    (a row, the dropdown, a link) resets them, unless the same change sets them."""
    state = ViewState(cls=6, subset="mistaken", mistaken_for=8, inst_index=401)
    other = state.with_(cls=2)
    assert (other.cls, other.inst_index, other.mistaken_for) == (2, None, None)
    assert other.subset == "mistaken"  # the new class's mistakes: still meaningful
    kept = state.with_(cls=5, inst_index=337)
    assert (kept.inst_index, kept.mistaken_for) == (337, None)
    same = state.with_(cls=6, node="1-2")
    assert (same.inst_index, same.mistaken_for) == (401, 8)
    assert ViewState.url_rules()["per_class"] == ["mistaken_for", "inst_index"]
