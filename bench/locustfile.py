"""Load test of the dashboard: simulated users doing what people do with the explorer.

Each user opens the explorer (page shell, callback map, page content, initial callbacks),
then, with think times of 0.3-1.5 s, switches classes (the search box's value: the state
reducer, then every callback listening to the state), hovers attribution-graph nodes,
fetches node pictures, changes Mapper parameters, picks Training-view images and opens
neuron pages. The Dash requests are the renderer's payloads,
built from ``/_dash-dependencies`` by :class:`bench_serve.DashSession`; each callback is
reported under its own name. Loopback only; start the server first (e.g. the Procfile's
gunicorn) and run, headless and bounded in time:

    python -m locust -f bench/locustfile.py --headless -u 50 -r 10 -t 60s \\
        --host http://127.0.0.1:PORT --only-summary

Target: 0 failures; the summary prints p50/p95/p99 per request. ``--exit-code-on-error 1``
(locust's default) makes any failure the exit status.
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from locust import HttpUser, between, events, task

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serve import DashSession

_IMAGE = re.compile(r"/atlas-file/[^\"'\s)]+")
_TILE_ROW = re.compile(r'"data-row": "(\d+)"')


@events.test_start.add_listener
def _loopback_only(environment: Any, **_kwargs: Any) -> None:
    """Refuse any host but loopback: this is a load test of one's own server."""
    host = urlparse(environment.host or "").hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"locustfile: load tests run on loopback only, not {host!r}")


class ExplorerUser(HttpUser):
    """One person exploring the atlas in a browser tab."""

    # Think time stays below gunicorn's default keep-alive (2 s): unlike a browser, a Python
    # client does not retry a request sent on a kept-alive connection that the server closes
    # at that instant (RemoteDisconnected), which would count client artefacts as failures.
    wait_time = between(0.3, 1.5)

    def on_start(self) -> None:
        """Open the explorer and try each action once (a first look around), so that even a
        run of a few seconds exercises every kind of request."""
        self.tab = DashSession("", http=self.client, named=True)
        self._open_explorer()
        self.switch_class()
        self.hover_node()
        self.fetch_images()
        self.change_mapper()
        self.pick_training_image()
        self.open_neuron_page()

    def _open_explorer(self) -> None:
        self.client.get("/", name="page /")
        self.tab.load_map()
        self.tab.open_page("/")

    def _nodes(self) -> list[dict[str, Any]]:
        elements = self.tab.values.get("attribution-graph", {}).get("elements") or []
        return [
            e["data"]
            for e in elements
            if "source" not in e.get("data", {}) and re.fullmatch(r"\d+-\d+", e["data"]["id"])
        ]

    @task(4)
    def switch_class(self) -> None:
        """Pick one of the search box's suggestions (classes similar to the current one)."""
        options = self.tab.values.get("class-search", {}).get("options") or []
        values = [o["value"] for o in options if isinstance(o, dict)]
        if values:
            self.tab.change("class-search", "value", random.choice(values))

    @task(3)
    def hover_node(self) -> None:
        """Hover a node of the attribution graph (stylesheet and hover panel)."""
        nodes = self._nodes()
        if not nodes:
            return
        self.tab.values.setdefault("attribution-graph", {})["mouseoverNodeData"] = random.choice(
            nodes
        )
        # The hover callback (the graph render also writes the stylesheet, to reset it).
        hover = next(
            c for c in self.tab.callbacks if c.listens_to("attribution-graph", "mouseoverNodeData")
        )
        self.tab.call(hover, ["attribution-graph.mouseoverNodeData"])

    @task(3)
    def fetch_images(self) -> None:
        """Fetch a few pictures shown in the views (graph nodes, hover panel)."""
        found = sorted(set(_IMAGE.findall(json.dumps(self.tab.values))))
        for url in random.sample(found, min(4, len(found))):
            self.client.get(url, name="atlas file")

    @task(2)
    def change_mapper(self) -> None:
        """Change a Topology parameter (intervals or overlap): the Mapper graph is recomputed
        (or read from the per-worker memo and the shared cache)."""
        if "topo-intervals" not in self.tab.values:
            return
        if random.random() < 0.5:
            self.tab.change("topo-intervals", "value", random.choice((8, 10, 12, 15, 20)))
        else:
            self.tab.change("topo-overlap", "value", random.choice((20, 30, 40, 50)))

    @task(2)
    def pick_training_image(self) -> None:
        """Click a test image of the Training view's grid (its explanation is drawn)."""
        grid = json.dumps(self.tab.values.get("trace-grid", {}).get("children"))
        rows = sorted(set(_TILE_ROW.findall(grid)))
        if rows:
            pick = {"row": int(random.choice(rows)), "at": int(time.time() * 1000)}
            self.tab.change("trace-pick", "data", pick)

    @task(1)
    def open_neuron_page(self) -> None:
        """Open a graph node's own page, as from the neuron panel's link."""
        nodes = self._nodes()
        if not nodes:
            return
        layer, channel = random.choice(nodes)["id"].split("-")
        page = DashSession("", http=self.client, named=True)
        self.client.get(f"/neuron/{layer}/{channel}", name="page /neuron/<layer>/<channel>")
        page.load_map()
        page.open_page(f"/neuron/{layer}/{channel}")
