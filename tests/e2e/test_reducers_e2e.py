"""The browser's state reducers (``assets/state.js``) agree with the Python reference.

The reducers run in the browser so that events apply in the order they happen (server
reducers raced). Their logic is written twice, once in Python (``apply_event``,
``apply_topology_event``, ``apply_training_event``: plain, the reference) and once in the
script; this test runs thousands of random (state, event) pairs, with the values the
controls send and junk, through both and asks for the same state, message and URL. A
second test clicks the real controls and checks what the reducers write back into them.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from dashboard import data as atlas_data
from dashboard import ids
from dashboard.config import DEMO_ATLAS_DIR
from dashboard.state import StateBounds, ViewState
from dashboard.views import shell
from dashboard.views.common import ViewContext
from dashboard.views.summit import ids as summit_ids
from dashboard.views.summit import state as summit_state
from dashboard.views.summit.state import GRAPH_SUBSETS, PICTURES, SORT_ORDERS
from dashboard.views.topology import ids as topology_ids
from dashboard.views.topology import state as topology_state
from dashboard.views.topology.state import TOPO_CLUSTERERS, TOPO_COLOURS, TOPO_METRICS
from dashboard.views.training import ids as training_ids
from dashboard.views.training import state as training_state
from dashboard.views.training.state import TRACE_FILTERS
from tests.e2e.browser import serve_app, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("chromedriver") is None, reason="needs chromedriver"),
]

CASES = 3000

# Values a number control may carry: in and out of range, and junk (no NaN: JSON has none).
JUNK: tuple[Any, ...] = (None, True, False, "abc", "", "3", " 7 ", "2.5", 2.5, 3.5, [1], {"x": 1})


def numbers(size: int) -> list[Any]:
    return [0, 1, size - 1, size, -1, 10**6, *JUNK]


def random_state(rng: random.Random, b: StateBounds) -> ViewState:
    """A state the URL can hold, every field random."""
    layer = rng.randrange(b.num_layers)

    def maybe(value: Any) -> Any:
        return value if rng.random() < 0.6 else None

    return ViewState(
        cls=rng.randrange(b.num_classes),
        compare=maybe(rng.randrange(b.num_classes)),
        layer=maybe(rng.randrange(b.num_layers)),
        node_min=rng.choice([0, 5, 100]),
        edge_min=rng.choice([0, 40]),
        sort=rng.choice(SORT_ORDERS),
        node=maybe(f"{layer}-{rng.randrange(b.channels[layer])}"),
        pics=maybe(rng.choice(PICTURES)),
        # (a URL with "for" holds the mistaken images: ViewState.from_query)
        **rng.choice(
            [{"subset": s} for s in GRAPH_SUBSETS]
            + [{"subset": "mistaken", "mistaken_for": rng.randrange(b.num_classes)}]
        ),
        topo_layer=maybe(rng.randrange(b.num_layers)),
        topo_intervals=maybe(rng.choice([10, 20, 100])),
        topo_overlap=maybe(rng.choice([10, 30, 60])),
        topo_eps=maybe(rng.choice([50, 100, 200])),
        topo_cluster=rng.choice(TOPO_CLUSTERERS),
        topo_metric=maybe(rng.choice(TOPO_METRICS)),
        topo_jaccard=rng.choice([0, 20]),
        topo_colour=rng.choice(TOPO_COLOURS),
        topo_node=maybe(rng.randrange(40)),
        topo_shape=maybe(rng.randrange(3)),
        trace_row=maybe(rng.randrange(b.trace_images or 1)),
        trace_layer=maybe(rng.randrange(b.trace_layers or 1)),
        trace_filter=rng.choice(TRACE_FILTERS),
        trace_all=rng.choice([0, 1]),
    ).with_()


def random_event(rng: random.Random, b: StateBounds) -> tuple[str, Any, Any]:
    """``(reducer, trigger, value)``: an event of a real control, with a value it sends or
    junk."""
    layer = rng.randrange(b.num_layers)
    node = f"{layer}-{rng.randrange(b.channels[layer])}"
    summit: dict[str, list[Any]] = {
        ids.ROW_CLICK: [{"cls": v, "at": 1} for v in numbers(b.num_classes)] + [None, [1]],
        summit_ids.EMBEDDING: [{"points": [{"customdata": v}]} for v in numbers(b.num_classes)]
        + [{"points": [{"customdata": [2, "x"]}]}, {"points": []}, {"points": [{}]}, None],
        summit_ids.NEURON_BARS: [{"points": [{"customdata": rng.randrange(b.num_classes)}]}],
        summit_ids.SEARCH: numbers(b.num_classes),
        summit_ids.COMPARE: numbers(b.num_classes),
        summit_ids.LAYER: numbers(b.num_layers),
        summit_ids.NODE_THRESHOLD: numbers(101),
        summit_ids.EDGE_THRESHOLD: numbers(101),
        summit_ids.SORT: [*SORT_ORDERS, "bogus", None, 1],
        summit_ids.GRAPH: [
            {"id": node},
            {"id": f"{b.num_layers}-0"},
            {"id": "row-1"},
            {"id": 3},
            None,
        ],
        summit_ids.COMPARE_GRAPH: [{"id": node}, {"id": f"{layer}-{10**5}"}],
        summit_ids.NEURON_CLOSE: [1, None],
        summit_ids.PICTURES: [*PICTURES, "x", None],
        summit_ids.SUBSET: [*GRAPH_SUBSETS, "wrong", None, 1, ["all"]],
    }
    topo: dict[Any, list[Any]] = {
        topology_ids.TOPO_LAYER: numbers(b.num_layers),
        topology_ids.TOPO_INTERVALS: [*numbers(101), 5, 250, "250", 10.5, 11.5],
        topology_ids.TOPO_OVERLAP: [*numbers(61), 5, 70.5],
        topology_ids.TOPO_EPS: [*numbers(201), 12, 300, "150"],
        topology_ids.TOPO_JACCARD: numbers(101),
        topology_ids.TOPO_CLUSTER: [*TOPO_CLUSTERERS, "kmeans", None, 1],
        topology_ids.TOPO_METRIC: [*TOPO_METRICS, "manhattan", None],
        topology_ids.TOPO_COLOUR: [*TOPO_COLOURS, "red", None],
        topology_ids.TOPO_GRAPH: [{"node": v} for v in (0, 7, -1, "3", True, 2.5)] + [None, {}],
    }
    train: dict[str, list[Any]] = {
        training_ids.TRACE_PICK: [{"row": v, "at": 1} for v in numbers(b.trace_images or 1)]
        + [None],
        training_ids.TRACE_LAYER: numbers(b.trace_layers or 1),
        training_ids.TRACE_FILTER: [*TRACE_FILTERS, "odd", None],
        training_ids.TRACE_ALL: [[], [1], None, 0, 1, {}, {"a": 1}, ""],
    }
    reducer = rng.choice(["summit", "summit", "topology", "training"])
    if reducer == "topology" and rng.random() < 0.15:
        shape = {"index": rng.choice([0, 1, 2, -1, True, "1"]), "type": "topo-shape"}
        return reducer, shape, rng.choice([0, 1, 2, None])
    pool = {"summit": summit, "topology": topo, "training": train}[reducer]
    trigger = rng.choice(sorted(pool))
    return reducer, trigger, rng.choice(pool[trigger])


def python_reduce(
    reducer: str, state: ViewState, trigger: Any, value: Any, b: StateBounds
) -> tuple[ViewState, str | None]:
    if reducer == "summit":
        return summit_state.apply_event(state, trigger, value, b), None
    if reducer == "topology":
        return topology_state.apply_topology_event(state, trigger, value, b)
    return training_state.apply_training_event(state, trigger, value, b), None


BROWSER_REDUCE = """
const api = window.dash_clientside.network_atlas_state;
const [cases, rules] = arguments;
return cases.map(([reducer, state, trigger, value]) => {
  let next, message = null;
  if (reducer === "summit") { next = api.applySummit(state, trigger, value, rules); }
  else if (reducer === "topology") {
    [next, message] = api.applyTopology(state, trigger, value, rules);
  }
  else { next = api.applyTraining(state, trigger, value, rules); }
  return [next, message, api.toSearch(next, rules)];
});
"""


@pytest.fixture
def demo_page(dash_duo: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ViewContext:
    serve_app(dash_duo, monkeypatch, None, tmp_path)
    dash_duo.driver.get(dash_duo.server_url + "/")
    dash_duo.wait_for_element("#graph-header .class-name", timeout=30)
    data = atlas_data.load(str(DEMO_ATLAS_DIR), str(tmp_path / "cache"))
    return ViewContext(data=data, file_prefix="/atlas-file/")


def test_browser_reducers_equal_the_python_reference(dash_duo: Any, demo_page: ViewContext) -> None:
    rules = shell.state_rules(demo_page)
    b = demo_page.bounds()
    assert b.trace_images and b.trace_layers, "the demo has a trace part: every event is live"
    rng = random.Random(20261207)
    cases = []
    for _ in range(CASES):
        reducer, trigger, value = random_event(rng, b)
        cases.append((reducer, random_state(rng, b), trigger, value))
    # JSON both ways, as Dash sends them (tuples become lists on both sides).
    sent = json.loads(json.dumps([[r, s.to_dict(), t, v] for r, s, t, v in cases]))
    browser = dash_duo.driver.execute_script(BROWSER_REDUCE, sent, rules)
    mismatches = []
    changed = 0
    for (reducer, state, trigger, value), (js_state, js_message, js_search) in zip(
        cases, browser, strict=True
    ):
        trigger, value = json.loads(json.dumps([trigger, value]))
        new, message = python_reduce(reducer, state, trigger, value, b)
        changed += new != state
        # A reduced state is one a link can hold: it survives its own URL.
        assert demo_page.state(new.to_dict()) == new, (reducer, trigger, value)
        got = (js_state, js_message, js_search)
        want = (new.to_dict(), message, new.to_search())
        if got != want:
            mismatches.append(f"{reducer} {trigger!r}={value!r} on {state}: {got} != {want}")
    assert not mismatches, f"{len(mismatches)} of {CASES}:\n" + "\n".join(mismatches[:10])
    assert changed > CASES // 4, "most random events should change the state"


def test_controls_echo_what_the_reducer_kept(dash_duo: Any, demo_page: ViewContext) -> None:
    """Selecting the compared class drops the comparison and clears its dropdown; the
    class search shows the class picked elsewhere; a clamped interval count is echoed."""
    driver = dash_duo.driver
    driver.get(dash_duo.server_url + "/?v=1&class=0&compare=3")
    dash_duo.wait_for_element("#graph-header .class-name", timeout=30)
    row = dash_duo.find_element("#sidebar-rows .class-row[data-class='3']")
    driver.execute_script("arguments[0].scrollIntoView(); arguments[0].click();", row)
    wait_until(lambda: "class=3" in driver.current_url)
    assert "compare=" not in driver.current_url
    names = demo_page.data.names
    wait_until(lambda: names[3] in dash_duo.find_element(f"#{summit_ids.SEARCH}").text)
    wait_until(lambda: not dash_duo.find_elements(f"#{summit_ids.COMPARE} .Select-value-label"))
    box = dash_duo.find_element(f"#{topology_ids.TOPO_INTERVALS}")
    box.clear()
    box.send_keys("250\n")
    wait_until(lambda: "ti=100" in driver.current_url)
    wait_until(lambda: "using 100" in dash_duo.find_element(f"#{topology_ids.TOPO_MESSAGE}").text)
    assert dash_duo.get_logs() == []
