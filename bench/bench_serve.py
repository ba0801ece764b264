"""Serve a 1,000-class atlas with real gunicorn (2 workers) and time what a browser asks for.

Everything goes over loopback HTTP to the Procfile's server, with the requests the Dash
renderer sends: the page shell, the callback map (``/_dash-dependencies``), the Pages
callback and then ``/_dash-update-component`` with payloads built from that map and the
current property values (as the renderer fills them). Printed figures:

* first page load: index, scripts, layout, page content and every initial callback (sent
  six at a time, like a browser's connections to one host), cold worker;
* class switch: every callback that listens to the state, in parallel (wall time), and
  the slowest single callback (the state reducer runs in the browser); target p95 <= 100 ms;
* neuron page: the Pages callback of ``/neuron/<layer>/<channel>`` and its pictures;
* Mapper parameter change: the Topology graph callback (new
  parameters, so not memoised: the real recomputation), then all state listeners;
* memory per worker: RSS and USS (psutil) after the runs.

Usage:
    python bench/bench_serve.py [--atlas DIR] [--switches 200] [--workers 2]

Without ``--atlas`` it writes the synthetic atlas (``python -m compute synthetic``, every
part) to a temporary directory first (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dashboard import ids  # noqa: E402  (after the path: the bench runs from a checkout)
from dashboard.state import StateBounds, ViewState, view_groups  # noqa: E402
from dashboard.views.shell import GROUP_STORES, apply_any_event  # noqa: E402

DEMO_ATLAS = ROOT / "dashboard" / "demos" / "digits"
#: Parallel connections a browser opens to one host.
BROWSER_CONNECTIONS = 6
_NO_VALUE: Any = None


# ---------------------------------------------------------------------------------------
# A small Dash HTTP client: the renderer's payloads, built from the callback map
# ---------------------------------------------------------------------------------------


def parse_outputs(output: str) -> list[tuple[Any, str]]:
    """``"..a.b...c.d@x.."`` or ``"a.b"`` -> ``[(id, property), ...]`` (ids JSON-decoded
    when they are pattern-matching dicts; the property keeps any ``@hash`` suffix)."""
    text = output[2:-2] if output.startswith("..") else output
    parts = text.split("...") if output.startswith("..") else [text]
    out = []
    for part in parts:
        component, prop = part.rsplit(".", 1)
        out.append((json.loads(component) if component.startswith("{") else component, prop))
    return out


def component_values(tree: Any, into: dict[str, dict[str, Any]] | None = None) -> dict:
    """Every component with a string id in a serialised Dash layout: ``{id: props}``."""
    into = {} if into is None else into
    if isinstance(tree, dict):
        props = tree.get("props")
        if isinstance(props, dict) and "type" in tree:
            if isinstance(props.get("id"), str):
                into[props["id"]] = props
            for value in props.values():
                component_values(value, into)
    elif isinstance(tree, list):
        for item in tree:
            component_values(item, into)
    return into


@dataclass
class Callback:
    """One server callback of the map (clientside ones are left out)."""

    output: str
    outputs: list[tuple[Any, str]]
    inputs: list[tuple[Any, str]]
    state: list[tuple[Any, str]]
    prevent_initial_call: bool

    @classmethod
    def from_dependency(cls, dep: dict[str, Any]) -> Callback:
        """From one entry of ``/_dash-dependencies``."""
        return cls(
            output=dep["output"],
            outputs=parse_outputs(dep["output"]),
            inputs=[(i["id"], i["property"]) for i in dep["inputs"]],
            state=[(s["id"], s["property"]) for s in dep["state"]],
            prevent_initial_call=bool(dep.get("prevent_initial_call")),
        )

    @property
    def pattern_matching(self) -> bool:
        """Whether any id is a pattern-matching dict (left out by this client)."""
        ids = [i for i, _ in self.inputs + self.state + self.outputs]
        return any(not isinstance(i, str) for i in ids)

    @property
    def label(self) -> str:
        """A short name for statistics: the first output (``+N`` more)."""
        component, prop = self.outputs[0]
        more = f" +{len(self.outputs) - 1}" if len(self.outputs) > 1 else ""
        return f"callback {component}.{prop.split('@')[0]}{more}"

    def listens_to(self, component: str, prop: str) -> bool:
        return (component, prop) in self.inputs

    def payload(self, values: dict[str, dict[str, Any]], changed: Iterable[str]) -> dict:
        """The request body the renderer sends, with property values from ``values``."""

        def filled(pairs: list[tuple[Any, str]]) -> list[Any]:
            # A pattern-matching (ALL) input is a list of the matched components, as the
            # renderer sends it; this client tracks none of them: an empty list.
            return [
                []
                if isinstance(i, str) and i.startswith("{")
                else {"id": i, "property": p, "value": values.get(i, {}).get(p, _NO_VALUE)}
                for i, p in pairs
            ]

        outputs = [{"id": i, "property": p} for i, p in self.outputs]
        body: dict[str, Any] = {
            "output": self.output,
            "outputs": outputs if self.output.startswith("..") else outputs[0],
            "inputs": filled(self.inputs),
            "changedPropIds": list(changed),
        }
        if self.state:
            body["state"] = filled(self.state)
        return body


@dataclass
class DashSession:
    """One simulated browser tab: property values, and requests timed in milliseconds."""

    base: str
    callbacks: list[Callback] = field(default_factory=list)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    http: requests.Session = field(default_factory=requests.Session)
    #: Pass ``name=`` to each request (a locust ``HttpSession``: statistics per callback).
    named: bool = False

    def _name(self, label: str) -> dict[str, str]:
        return {"name": label} if self.named else {}

    def get(self, path: str) -> tuple[float, requests.Response]:
        start = time.perf_counter()
        label = path.split("?", 1)[0] if path.startswith("/_dash") else "atlas file"
        response = self.http.get(self.base + path, timeout=120, **self._name(label))
        return (time.perf_counter() - start) * 1000.0, response

    def load_map(self) -> None:
        """Read ``/_dash-layout`` (the shell) and ``/_dash-dependencies`` (the map)."""
        _, layout = self.get("/_dash-layout")
        layout.raise_for_status()
        self.values = component_values(layout.json())
        _, deps = self.get("/_dash-dependencies")
        deps.raise_for_status()
        self.callbacks = [
            Callback.from_dependency(d) for d in deps.json() if not d.get("clientside_function")
        ]

    def call(self, callback: Callback, changed: Iterable[str]) -> tuple[float, dict[str, Any]]:
        """POST one callback; apply its outputs to the values; ``(ms, response json)``."""
        body = callback.payload(self.values, changed)
        start = time.perf_counter()
        response = self.http.post(
            self.base + "/_dash-update-component",
            json=body,
            timeout=120,
            **self._name(callback.label),
        )
        ms = (time.perf_counter() - start) * 1000.0
        if response.status_code == 204:  # PreventUpdate
            return ms, {}
        response.raise_for_status()
        data = response.json()
        for component, props in data.get("response", {}).items():
            target = self.values.setdefault(component, {})
            for prop, value in props.items():
                if isinstance(value, dict) and "__dash_patch_update" in value:
                    continue  # a Patch of a figure: the old value is close enough here
                target[prop] = value
                if isinstance(value, (dict, list)):
                    component_values(value, self.values)
        return ms, data

    def find(self, output_prefix: str) -> Callback:
        """The callback whose output string contains ``output_prefix``."""
        for callback in self.callbacks:
            if output_prefix in callback.output:
                return callback
        raise KeyError(output_prefix)

    def listeners(self, component: str, prop: str) -> list[Callback]:
        return [
            c
            for c in self.callbacks
            if c.listens_to(component, prop) and not c.pattern_matching and c.inputs
        ]

    def fire(self, callbacks: list[Callback], changed: list[str]) -> tuple[float, list[float]]:
        """Send ``callbacks`` in parallel (browser connections); wall ms and each ms."""
        start = time.perf_counter()
        with ThreadPoolExecutor(BROWSER_CONNECTIONS) as pool:
            times = [ms for ms, _ in pool.map(lambda c: self.call(c, changed), callbacks)]
        return (time.perf_counter() - start) * 1000.0, times

    def open_page(self, pathname: str, search: str = "") -> float:
        """What a browser does to show ``pathname``: the Pages callback, then every initial
        callback whose inputs are on the page; returns wall ms."""
        self.values.setdefault("_pages_location", {}).update(
            {"pathname": pathname, "search": search}
        )
        start = time.perf_counter()
        pages = self.find("_pages_content.children")
        self.call(pages, ["_pages_location.pathname", "_pages_location.search"])
        initial = [
            c
            for c in self.callbacks
            if not c.prevent_initial_call
            and not c.pattern_matching
            and c is not pages
            and all(i in self.values for i, _ in c.inputs)
        ]
        self.fire(initial, [f"{i}.{p}" for c in initial for i, p in c.inputs[:1]])
        return (time.perf_counter() - start) * 1000.0

    def change(self, component: str, prop: str, value: Any) -> dict[str, Any]:
        """Set a control's value as the user does; run its callback chain (the browser's
        state reducer, here its Python reference; the server callbacks listening to the
        control itself; then the state listeners in parallel). Returns timings in ms."""
        self.values.setdefault(component, {})[prop] = value
        changed = [f"{component}.{prop}"]
        first = self.listeners(component, prop)
        before = dict(self.values.get(ids.STATE, {}).get("data") or {})
        wall_start = time.perf_counter()
        rules = self.values.get(ids.STATE_RULES, {}).get("data")
        if rules is not None:
            bounds = StateBounds.from_dict(rules["bounds"])
            reduced = apply_any_event(ViewState.from_dict(before), component, value, bounds)
            self.values.setdefault(ids.STATE, {})["data"] = reduced.to_dict()
        first_ms = [self.call(c, changed)[0] for c in first]
        # The browser copies the new state into the store of each group of views whose
        # fields changed (a clientside callback); those groups' listeners run.
        after = self.values.get(ids.STATE, {}).get("data") or {}
        groups = view_groups()
        stores = [
            store
            for name, store in GROUP_STORES.items()
            if any(before.get(f) != after.get(f) for f in groups[name])
        ]
        second: list[Callback] = []
        for store in stores:
            self.values.setdefault(store, {})["data"] = after
            second += [c for c in self.listeners(store, "data") if c not in first + second]
        wall, times = self.fire(second, [f"{store}.data" for store in stores])
        named = {c.output: ms for c, ms in zip(second, times, strict=True)}
        return {
            "wall": (time.perf_counter() - wall_start) * 1000.0,
            "first": sum(first_ms),
            "listeners": wall,
            "slowest": max(times, default=0.0),
            "named": named,
        }


# ---------------------------------------------------------------------------------------
# gunicorn
# ---------------------------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on loopback (asked of the OS)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gunicorn(
    atlas: Path | None, workers: int, cache: Path, port: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """The Procfile's command on loopback; waits until ``/`` answers. ``atlas=None``: the
    shipped demo atlas."""
    port = port or free_port()
    procfile = (ROOT / "Procfile").read_text().split(":", 1)[1].strip()
    gunicorn = shlex.quote(str(Path(sys.executable).parent / "gunicorn"))
    command = procfile.replace("gunicorn", gunicorn, 1).replace("0.0.0.0", "127.0.0.1")
    env = {
        **os.environ,
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "NETWORK_ATLAS_CACHE_DIR": str(cache),
    }
    env.pop("NETWORK_ATLAS_DIR", None)
    if atlas is not None:
        env["NETWORK_ATLAS_DIR"] = str(atlas)
    process = subprocess.Popen(
        ["bash", "-c", "exec " + command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"gunicorn exited with {process.returncode}: {err[-2000:]}")
        try:
            if requests.get(base + "/", timeout=5).status_code == 200:
                return process, base
        except requests.RequestException:
            time.sleep(0.3)
    stop_gunicorn(process)
    raise RuntimeError("gunicorn did not answer within 180 s")


def stop_gunicorn(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group and wait for it."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


def worker_memory(process: subprocess.Popen[bytes]) -> list[tuple[float, float]]:
    """``(RSS MiB, USS MiB)`` of each gunicorn worker (children of the master)."""
    out = []
    for child in psutil.Process(process.pid).children():
        info = child.memory_full_info()
        out.append((info.rss / 2**20, info.uss / 2**20))
    return out


# ---------------------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------------------


def first_page_load(base: str) -> dict[str, float]:
    """A new tab on ``/``: index HTML, its scripts and styles (six at a time), the shell,
    the map, the page content and every initial callback. Milliseconds."""
    tab = DashSession(base)
    start = time.perf_counter()
    ms_index, index = tab.get("/")
    assets = re.findall(r'(?:src|href)="(/[^"]+\.(?:js|css)[^"]*)"', index.text)
    with ThreadPoolExecutor(BROWSER_CONNECTIONS) as pool:
        list(pool.map(tab.get, assets))
    ms_assets = (time.perf_counter() - start) * 1000.0 - ms_index
    tab.load_map()
    ms_page = tab.open_page("/")
    return {
        "index": ms_index,
        "scripts": ms_assets,
        "content+callbacks": ms_page,
        "total": (time.perf_counter() - start) * 1000.0,
        "files": float(len(assets)),
    }


def percentiles(values: list[float]) -> str:
    array = np.asarray(values)
    return (
        f"p50 {np.percentile(array, 50):7.1f}  p95 {np.percentile(array, 95):7.1f}  "
        f"max {array.max():7.1f}  (n={len(array)})"
    )


def run(atlas: Path | None, switches: int, workers: int, seed: int) -> None:
    """Start gunicorn, run every measurement, print figures."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        process, base = start_gunicorn(atlas, workers, Path(cache))
        print(f"gunicorn ({workers} workers) answered after {time.perf_counter() - started:.1f} s")
        idle = ", ".join(f"{rss:.0f} / {uss:.0f}" for rss, uss in worker_memory(process))
        print(f"memory per worker before any callback (RSS / USS MiB): {idle}")
        try:
            manifest = json.loads(((atlas or DEMO_ATLAS) / "manifest.json").read_text())
            _measure(base, process, rng, switches, manifest)
        finally:
            stop_gunicorn(process)


def _measure(
    base: str,
    process: subprocess.Popen[bytes],
    rng: np.random.Generator,
    switches: int,
    manifest: dict[str, Any],
) -> None:
    cold = first_page_load(base)
    print(
        f"first page load (cold workers): {cold['total']:.0f} ms = index {cold['index']:.0f} + "
        f"{cold['files']:.0f} scripts/styles {cold['scripts']:.0f} + page content and initial "
        f"callbacks {cold['content+callbacks']:.0f}"
    )
    warm = [first_page_load(base)["total"] for _ in range(5)]
    print(f"first page load (warm workers), ms: {percentiles(warm)}")

    tab = DashSession(base)
    tab.load_map()
    tab.open_page("/")
    num_classes = len(manifest["classes"])
    layers = manifest["layers"]
    print(f"atlas: {num_classes} classes, {len(layers)} layers, parts {manifest['parts']}")

    def switch(value: Any) -> dict[str, Any]:
        return tab.change("class-search", "value", value)

    _report("class switch", [switch(int(c)) for c in rng.integers(0, num_classes, switches)])

    print(
        "class search while typing: filtered in the browser (clientside callback), "
        "no request per keystroke"
    )

    neuron_ms, pictures_ms = [], []
    for _ in range(20):
        layer = int(rng.integers(0, len(layers)))
        channel = int(rng.integers(0, layers[layer]["channels"]))
        page = DashSession(base)
        page.load_map()
        neuron_ms.append(page.open_page(f"/neuron/{layer}/{channel}"))
        content = page.values.get("_pages_content", {}).get("children")
        images = sorted(set(re.findall(r'"src": "(/atlas-file/[^"]+)"', json.dumps(content))))
        start = time.perf_counter()
        with ThreadPoolExecutor(BROWSER_CONNECTIONS) as pool:
            statuses = [r.status_code for _, r in pool.map(page.get, images)]
        assert all(s == 200 for s in statuses), statuses
        pictures_ms.append((time.perf_counter() - start) * 1000.0)
    print(f"neuron page (Pages callback), ms: {percentiles(neuron_ms)}")
    print(f"neuron page pictures (all of a page, 6 at a time), ms: {percentiles(pictures_ms)}")

    mapper = []
    for intervals in rng.permutation(np.arange(8, 40))[:12]:
        mapper.append(tab.change("topo-intervals", "value", int(intervals)))
    _report("Mapper parameter change (new parameters)", mapper, focus="topo-graph.elements")

    print("memory per worker after the runs (RSS / USS MiB):")
    for k, (rss, uss) in enumerate(worker_memory(process)):
        print(f"  worker {k}: {rss:7.1f} / {uss:7.1f}")


def _report(title: str, runs: list[dict[str, Any]], focus: str | None = None) -> None:
    print(f"{title}, ms:")
    for label, key in (
        ("wall (state listeners in parallel)", "wall"),
        ("callbacks of the control itself", "first"),
        ("slowest state listener", "slowest"),
    ):
        print(f"  {label:<50} {percentiles([r[key] for r in runs])}")
    outputs = sorted({name for r in runs for name in r["named"]})
    for name in outputs:
        if focus is None or focus in name:
            values = [r["named"][name] for r in runs if name in r["named"]]
            print(f"    {name[:48]:<48} {percentiles(values)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--atlas", type=Path, default=None, help="an atlas (default: generate)")
    parser.add_argument("--switches", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB")
    if args.atlas is not None:
        run(args.atlas, args.switches, args.workers, args.seed)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        from compute.synthetic import write_synthetic_atlas

        start = time.perf_counter()
        atlas = write_synthetic_atlas(Path(tmp) / "synthetic", num_classes=1000, seed=0)
        print(f"generated the synthetic atlas in {time.perf_counter() - start:.0f} s")
        run(atlas, args.switches, args.workers, args.seed)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
