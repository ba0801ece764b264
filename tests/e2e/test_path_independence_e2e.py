"""Path independence in a real browser: a view reached by clicking equals the same URL loaded
fresh.

One generic property instead of one test per bug: random sequences of what a user does
(class rows, compare, layer, thresholds, node taps, Mapper parameters and nodes, Training
picks, back and forward) run in headless Chromium; after each sequence, everything the page
draws (every Cytoscape element with its endpoints, data, position and classes; every Plotly
trace; the text of the headers and notes) must equal what a fresh load of the URL then shown
draws. CI runs a fixed seed; ``NETWORK_ATLAS_PATH_SEQUENCES`` / ``..._SEED`` run more
(``bench/`` or by hand before resolving a dashboard issue).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.keys import Keys

from tests.e2e.browser import serve_app, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("chromedriver") is None, reason="needs chromedriver"),
]

SEQUENCES = int(os.environ.get("NETWORK_ATLAS_PATH_SEQUENCES", "4"))
STEPS = int(os.environ.get("NETWORK_ATLAS_PATH_STEPS", "4"))
SEED = int(os.environ.get("NETWORK_ATLAS_PATH_SEED", "13"))

GRAPHS = ("attribution-graph", "compare-graph", "topo-graph", "instance-graph")
TEXTS = (
    "graph-header",
    "graph-note",
    "compare-legend",
    "neuron-panel-title",
    "topo-status",
    "topo-note",
    "trace-header",
    "trace-note",
    "instance-header",
    "instance-note",
)

# Everything the page draws, as one JSON-able value. Cytoscape draws on a canvas, so its
# elements are read from the cytoscape.js instance; Plotly figures from their graph divs.
SNAPSHOT_JS = """
const out = {graphs: {}, plots: {}, texts: {}};
for (const id of arguments[0]) {
  const root = document.getElementById(id);
  const all = root ? [root, ...root.querySelectorAll('div')] : [];
  const host = all.find(el => el._cyreg && el._cyreg.cy);
  if (!host) { out.graphs[id] = null; continue; }
  const cy = host._cyreg.cy;
  out.graphs[id] = cy.elements().map(e => {
    const item = {id: e.id(), data: e.data(), classes: e.classes().slice().sort()};
    if (e.isNode()) {
      const p = e.position();
      item.position = [Math.round(p.x * 2) / 2, Math.round(p.y * 2) / 2];
    } else {
      item.source = e.source().id();
      item.target = e.target().id();
    }
    return item;
  }).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}
for (const gd of document.querySelectorAll('.js-plotly-plot')) {
  const owner = gd.closest('[id]');
  const key = owner ? owner.id : '?';
  out.plots[key] = JSON.stringify({
    data: gd.data || null,
    annotations: ((gd.layout || {}).annotations || []).map(a => a.text),
    shapes: ((gd.layout || {}).shapes || []).length,
  });
}
for (const id of arguments[1]) {
  const el = document.getElementById(id);
  out.texts[id] = el && el.offsetParent !== null ? el.innerText : null;
}
out.loading = document.querySelectorAll('[data-dash-is-loading="true"]').length;
return out;
"""


def snapshot(dash_duo: Any) -> dict[str, Any]:
    """What the page draws once it has settled (no callback pending, three equal reads)."""
    previous: dict[str, Any] | None = None
    equal_reads = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.4)
        current = dash_duo.driver.execute_script(SNAPSHOT_JS, list(GRAPHS), list(TEXTS))
        pending = current.pop("loading")
        # Parsed, so that key order (a patched figure lists keys in another order) is no
        # difference.
        # A key set to null and a key left out draw the same in Plotly: both dropped.
        current["plots"] = {
            key: without_nulls(json.loads(value)) for key, value in current["plots"].items()
        }
        if pending == 0 and current == previous:
            equal_reads += 1
            if equal_reads >= 2:
                return current
        else:
            equal_reads = 0
        previous = current
    raise AssertionError("the page never settled")


def without_nulls(value: Any) -> Any:
    """``value`` with every ``None`` dictionary entry removed, recursively."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def differences(clicked: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """Human-readable differences between two snapshots (empty when they are equal)."""
    found: list[str] = []
    for gid in GRAPHS:
        a, b = clicked["graphs"].get(gid), fresh["graphs"].get(gid)
        if a == b:
            continue
        if a is None or b is None:
            found.append(f"{gid}: mounted {a is not None} after clicks, {b is not None} fresh")
            continue
        by_id_a = {e["id"]: e for e in a}
        by_id_b = {e["id"]: e for e in b}
        only_a = sorted(set(by_id_a) - set(by_id_b))
        only_b = sorted(set(by_id_b) - set(by_id_a))
        changed = [k for k in by_id_a.keys() & by_id_b.keys() if by_id_a[k] != by_id_b[k]]
        found.append(
            f"{gid}: {len(a)} elements after clicks, {len(b)} fresh; only after clicks "
            f"{only_a[:5]}, only fresh {only_b[:5]}, differing {sorted(changed)[:5]}"
            + (f" e.g. {by_id_a[changed[0]]} vs {by_id_b[changed[0]]}" if changed else "")
        )
    for key in sorted(clicked["plots"].keys() | fresh["plots"].keys()):
        if clicked["plots"].get(key) != fresh["plots"].get(key):
            found.append(f"plot {key}: {plot_difference(clicked['plots'], fresh['plots'], key)}")
    for key in TEXTS:
        if clicked["texts"].get(key) != fresh["texts"].get(key):
            found.append(
                f"text {key}: {clicked['texts'].get(key)!r} vs {fresh['texts'].get(key)!r}"
            )
    return found


def plot_difference(clicked: dict[str, Any], fresh: dict[str, Any], key: str) -> str:
    """Where one Plotly figure differs: the first trace and field."""
    if key not in clicked or key not in fresh:
        return f"drawn after clicks {key in clicked}, fresh {key in fresh}"
    a, b = clicked[key], fresh[key]
    for field in ("annotations", "shapes"):
        if a[field] != b[field]:
            return f"{field}: {a[field]} vs {b[field]}"
    traces_a, traces_b = a["data"] or [], b["data"] or []
    if len(traces_a) != len(traces_b):
        names = [t.get("name") for t in traces_a], [t.get("name") for t in traces_b]
        return f"{len(traces_a)} traces after clicks, {len(traces_b)} fresh: {names}"
    for i, (ta, tb) in enumerate(zip(traces_a, traces_b, strict=True)):
        for field in sorted(ta.keys() | tb.keys()):
            if ta.get(field) != tb.get(field):
                return (
                    f"trace {i} ({ta.get('name')}) field {field}: "
                    f"{str(ta.get(field))[:200]} vs {str(tb.get(field))[:200]}"
                )
    return "?"


# ------------------------------------------------------------------------------------
# what a user does (each returns a description, or None when it did not apply)
# ------------------------------------------------------------------------------------

Action = Callable[[Any, random.Random], str | None]


def _click_js(dash_duo: Any, element: Any) -> None:
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def click_class_row(dash_duo: Any, rng: random.Random) -> str | None:
    rows = dash_duo.find_elements("#sidebar-rows .class-row[data-class]")
    if not rows:
        return None
    row = rng.choice(rows[:12])
    cls = row.get_attribute("data-class")
    _click_js(dash_duo, row)
    return f"class row {cls}"


def pick_dropdown(selector: str) -> Action:
    def act(dash_duo: Any, rng: random.Random) -> str | None:
        if not dash_duo.find_elements(selector):
            return None
        dash_duo.find_element(selector).click()
        options = wait_until(lambda: dash_duo.find_elements(".dash-dropdown-option"), timeout=5)
        option = rng.choice(options[:10])
        text = option.text
        _click_js(dash_duo, option)
        return f"{selector} -> {text}"

    return act


def click_mark(selectors: tuple[str, ...]) -> Action:
    def act(dash_duo: Any, rng: random.Random) -> str | None:
        selector = rng.choice(selectors)
        marks = dash_duo.find_elements(f"{selector} .rc-slider-mark-text")
        if not marks:
            return None
        mark = rng.choice(marks)
        text = mark.text
        _click_js(dash_duo, mark)
        return f"{selector} mark {text}"

    return act


def click_radio(selectors: tuple[str, ...]) -> Action:
    def act(dash_duo: Any, rng: random.Random) -> str | None:
        selector = rng.choice(selectors)
        inputs = [i for i in dash_duo.find_elements(f"{selector} input") if i.is_enabled()]
        if not inputs:
            return None
        choice = rng.choice(inputs)
        value = choice.get_attribute("value")
        _click_js(dash_duo, choice)
        return f"{selector} = {value}"

    return act


def click_confusion_link(dash_duo: Any, rng: random.Random) -> str | None:
    """A "mistaken for" link of the class header (the comparison, and the graph of the
    images mistaken for that class where the atlas stores it)."""
    links = dash_duo.find_elements("#graph-header a.confusion-link")
    if not links:
        return None
    link = rng.choice(links)
    text = link.text
    _click_js(dash_duo, link)
    return f"mistaken for {text}"


def click_instance_link(dash_duo: Any, rng: random.Random) -> str | None:
    """A link of the Instance view: an input, a filter, or a mistake's comparison."""
    links = dash_duo.find_elements("#instance-picker a, #instance-header a")
    if not links:
        return None
    link = rng.choice(links[:20])
    text = link.text
    _click_js(dash_duo, link)
    return f"instance link {text}"


def set_intervals(dash_duo: Any, rng: random.Random) -> str | None:
    boxes = dash_duo.find_elements("#topo-intervals")
    if not boxes:
        return None
    value = rng.choice((6, 10, 14))
    box = boxes[0]
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.ENTER)
    return f"intervals {value}"


def tap_node(graph_id: str, selector: str) -> Action:
    def act(dash_duo: Any, rng: random.Random) -> str | None:
        script = (
            "const root = document.getElementById(arguments[0]);"
            "const all = root ? [root, ...root.querySelectorAll('div')] : [];"
            "const host = all.find(el => el._cyreg && el._cyreg.cy);"
            "return host ? host._cyreg.cy.nodes(arguments[1]).map(n => n.id()) : [];"
        )
        nodes = dash_duo.driver.execute_script(script, graph_id, selector)
        if not nodes:
            return None
        node = rng.choice(sorted(nodes))
        emit = (
            "const root = document.getElementById(arguments[0]);"
            "const all = [root, ...root.querySelectorAll('div')];"
            "all.find(el => el._cyreg && el._cyreg.cy)._cyreg.cy"
            ".getElementById(arguments[1]).emit('tap');"
        )
        dash_duo.driver.execute_script(emit, graph_id, node)
        return f"tap {graph_id} {node}"

    return act


def click_trace_tile(dash_duo: Any, rng: random.Random) -> str | None:
    tiles = dash_duo.find_elements("#trace-grid .trace-tile[data-row]")
    if not tiles:
        return None
    tile = rng.choice(tiles[:20])
    row = tile.get_attribute("data-row")
    _click_js(dash_duo, tile)
    return f"trace tile {row}"


def search_class(dash_duo: Any, rng: random.Random) -> str | None:
    """Type the start of a class name into the search box and pick the first match."""
    boxes = dash_duo.find_elements("#class-search")
    rows = dash_duo.find_elements("#sidebar-rows .class-row[data-class] .row-name")
    if not boxes or not rows:
        return None
    name = rng.choice(rows[:12]).text
    boxes[0].click()
    box = wait_until(lambda: dash_duo.find_elements(".dash-dropdown-search"), timeout=5)[0]
    box.send_keys(name[:4])
    option = wait_until(
        lambda: next(iter(dash_duo.find_elements(".dash-dropdown-option")), None), timeout=10
    )
    text = option.text
    _click_js(dash_duo, option)
    return f"search {name[:4]!r} -> {text}"


def go_back(dash_duo: Any, rng: random.Random) -> str | None:
    dash_duo.driver.back()
    if not dash_duo.driver.current_url.startswith(dash_duo.server_url):
        # Back past the app's first page (the browser's start page): not a view to check.
        dash_duo.driver.forward()
        dash_duo.wait_for_element("#graph-header .class-name", timeout=30)
        return None
    return "back"


def go_forward(dash_duo: Any, rng: random.Random) -> str | None:
    dash_duo.driver.forward()
    return "forward"


ACTIONS: tuple[tuple[Action, int], ...] = (
    (click_class_row, 3),
    (search_class, 1),
    (pick_dropdown("#compare-select"), 2),
    (pick_dropdown("#layer-select"), 1),
    (click_mark(("#node-threshold", "#edge-threshold")), 1),
    (tap_node("attribution-graph", "node[size]"), 2),
    (click_radio(("#graph-subset", "#graph-pictures")), 1),
    (click_confusion_link, 1),
    (click_instance_link, 1),
    (click_radio(("#topo-cluster", "#topo-colour", "#topo-metric")), 1),
    (click_mark(("#topo-overlap", "#topo-eps", "#topo-jaccard")), 1),
    (set_intervals, 1),
    (tap_node("topo-graph", "node[count]"), 1),
    (click_trace_tile, 1),
    (go_back, 1),
    (go_forward, 1),
)


def fresh_load(dash_duo: Any, url: str) -> tuple[dict[str, Any], str | None]:
    """What a fresh load of ``url`` draws, in a new tab (the clicked tab keeps its history,
    so a later "back" stays inside the app); the second item says why the load failed."""
    clicked_tab = dash_duo.driver.current_window_handle
    dash_duo.driver.switch_to.new_window("tab")
    try:
        dash_duo.driver.get(url)
        try:
            dash_duo.wait_for_element("#graph-header .class-name", timeout=30)
        except WebDriverException:
            logs = [e.get("message", "")[:300] for e in dash_duo.get_logs() or []]
            text = dash_duo.driver.execute_script("return document.body.innerText")[:600]
            return {}, (
                f"a fresh load of {url} never drew the graph header; page text {text!r};"
                f" browser log {logs}"
            )
        return snapshot(dash_duo), None
    finally:
        dash_duo.driver.close()
        dash_duo.driver.switch_to.window(clicked_tab)


def run_sequences(
    dash_duo: Any, start_query: str, seed: int, sequences: int = SEQUENCES
) -> list[str]:
    """Runs ``sequences`` random sequences of ``STEPS`` actions; returns every failure."""
    rng = random.Random(seed)
    actions = [a for a, _ in ACTIONS]
    weights = [w for _, w in ACTIONS]
    dash_duo.driver.get(dash_duo.server_url + "/" + start_query)
    dash_duo.wait_for_element("#graph-header .class-name", timeout=30)
    snapshot(dash_duo)
    failures: list[str] = []
    for sequence in range(sequences):
        done: list[str] = []
        for _ in range(STEPS):
            action = rng.choices(actions, weights)[0]
            try:
                what = action(dash_duo, rng)
            except (WebDriverException, AssertionError) as exc:  # not clickable right now
                what = f"{action.__name__} skipped ({type(exc).__name__})"
            if what:
                done.append(what)
            snapshot(dash_duo)
        clicked = snapshot(dash_duo)
        url = dash_duo.driver.current_url
        fresh, broken = fresh_load(dash_duo, url)
        if broken:
            failures.append(f"sequence {sequence} ({' / '.join(done)}): {broken}")
            break
        found = differences(clicked, fresh)
        if found:
            failures.append(
                f"sequence {sequence} ({' / '.join(done)}) then {url}:\n  " + "\n  ".join(found)
            )
    return failures


def test_clicked_views_equal_fresh_loads_on_the_demo(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve_app(dash_duo, monkeypatch, None, tmp_path)
    failures = run_sequences(dash_duo, "", SEED)
    assert not failures, "\n".join(failures)
    errors = [e for e in dash_duo.get_logs() if e.get("level") == "SEVERE"]
    assert errors == [], errors


def test_clicked_views_equal_fresh_loads_on_a_large_atlas(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, large_atlas: Path, tmp_path: Path
) -> None:
    serve_app(dash_duo, monkeypatch, large_atlas, tmp_path)
    failures = run_sequences(dash_duo, "?v=1&class=3", SEED + 1)
    assert not failures, "\n".join(failures)


def test_a_class_switch_keeps_every_edge(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The reproduction from the issue: class zero, then class three by its row; the graph
    has exactly the edges of a fresh load of ``?class=3`` (not 6 of 74)."""
    serve_app(dash_duo, monkeypatch, None, tmp_path)
    dash_duo.driver.get(dash_duo.server_url + "/?v=1&class=3")
    dash_duo.wait_for_element("#graph-header .class-name", timeout=30)
    fresh = snapshot(dash_duo)["graphs"]["attribution-graph"]
    dash_duo.driver.get(dash_duo.server_url + "/")
    dash_duo.wait_for_element("#graph-header .class-name", timeout=30)
    snapshot(dash_duo)
    row = dash_duo.find_element("#sidebar-rows .class-row[data-class='3']")
    _click_js(dash_duo, row)
    wait_until(lambda: "class=3" in dash_duo.driver.current_url)
    clicked = snapshot(dash_duo)["graphs"]["attribution-graph"]
    edges = [e for e in clicked if "source" in e]
    assert edges and len(edges) == len([e for e in fresh if "source" in e])
    assert json.dumps(clicked, sort_keys=True) == json.dumps(fresh, sort_keys=True)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("seed", [101, 202, 303])
def test_many_more_sequences(
    dash_duo: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, seed: int
) -> None:
    """``pytest -m slow``: 12 more sequences per seed on the demo."""
    serve_app(dash_duo, monkeypatch, None, tmp_path)
    failures = run_sequences(dash_duo, "", seed, sequences=12)
    assert not failures, "\n".join(failures)
