"""Time the class-switch callbacks of the dashboard on a 1,000-class synthetic atlas.

A class switch runs the state reducer (in the browser; here its Python reference) and then
every view's render
callback (embedding, sidebar rows, the two selectors' options, attribution graph, neuron
panel, compare graph, Topology view (after the first switch a patch of the nodes holding
the old or the new class), training view, Instance view). "instance pick" times picking a
random recorded input in the Instance view (issue 17: p95 <= 100 ms). This calls
the same Python functions the callbacks call, plus Dash's JSON serialisation of their
outputs, over random switches, and prints p50/p95 per callback and for their sum (the
sum is pessimistic: the browser sends the view callbacks in parallel).

Usage:
    python bench/bench_dashboard.py [--atlas DIR] [--switches 200] [--seed 0]

Without ``--atlas`` it generates the synthetic atlas (``compute.synthetic``, PCA
embedding) in a temporary directory first (about a minute).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from dash import no_update
from plotly.io.json import to_json_plotly

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dashboard import data as atlas_data  # noqa: E402
from dashboard.state import ViewState  # noqa: E402
from dashboard.views.common import ViewContext  # noqa: E402
from dashboard.views.instance import callbacks as instance_callbacks  # noqa: E402
from dashboard.views.summit import compare, embedding, graph, neuron, sidebar  # noqa: E402
from dashboard.views.summit import ids as summit_ids  # noqa: E402
from dashboard.views.summit.sidebar import ROWS_PAGE  # noqa: E402
from dashboard.views.summit.state import apply_event  # noqa: E402
from dashboard.views.topology import callbacks as topology_callbacks  # noqa: E402
from dashboard.views.training import callbacks as training_callbacks  # noqa: E402

# The callbacks a class switch fires, in the order the table prints them.
CALLBACKS = (
    "reducer",
    "embedding",
    "sidebar",
    "options",
    "graph",
    "neuron",
    "compare",
    "topology",
    "training",
    "instance",
)


def _timed(function: Callable[[], Any]) -> tuple[float, int]:
    """Milliseconds to run ``function`` and serialise its result, and the payload bytes."""
    start = time.perf_counter()
    payload = to_json_plotly(function())
    return (time.perf_counter() - start) * 1000.0, len(payload)


def _options(context: ViewContext, state: ViewState) -> tuple[Any, Any]:
    """The search box's and the compare selector's options (both follow the state)."""
    return sidebar.search_options(context, None, state), compare.compare_options(
        context, None, state
    )


def run(atlas_dir: Path, switches: int, seed: int) -> dict[str, np.ndarray]:
    """Time ``switches`` random class switches; returns milliseconds per callback."""
    data = atlas_data.load(str(atlas_dir), None)
    context = ViewContext(data=data, file_prefix="/atlas-file/")
    bounds = context.bounds()
    rng = np.random.default_rng(seed)
    state = ViewState(cls=0, compare=1, node="4-0")
    # One warm-up pass over every layer's arrays, as a worker has after its first requests.
    for layer in range(data.num_layers):
        data.similarity_matrix(layer)
        data.counts(layer)
    times: dict[str, list[float]] = {name: [] for name in CALLBACKS}
    sizes: dict[str, list[int]] = {name: [] for name in times}
    shown_layer = None  # the layer the browser's embedding figure shows (Patch after the first)
    topo_shown: list[Any] = [None]  # what the browser's Mapper graph draws (its store)

    def topology_update(stored: dict[str, Any]) -> Any:
        out = topology_callbacks.update(context, stored, topo_shown[0])
        if out[-1] is not no_update:
            topo_shown[0] = out[-1]
        return out

    for _ in range(switches):
        target = int(rng.integers(data.num_classes))
        start = time.perf_counter()
        new = apply_event(state, summit_ids.SEARCH, target, bounds)
        new = context.state(new.to_dict())
        stored = new.to_dict()
        times["reducer"].append((time.perf_counter() - start) * 1000.0)
        sizes["reducer"].append(len(str(stored)))
        calls: list[tuple[str, Callable[[], Any]]] = [
            ("embedding", partial(embedding.render, context, stored, shown_layer)),
            ("sidebar", partial(sidebar.render_rows, context, stored, ROWS_PAGE)),
            ("options", partial(_options, context, new)),
            ("graph", partial(graph.render_graph, context, stored)),
            ("neuron", partial(neuron.render, context, stored)),
            ("compare", partial(compare.render, context, stored)),
            ("topology", partial(topology_update, stored)),
            ("training", partial(training_callbacks.render, context, stored)),
            ("instance", partial(instance_callbacks.render, context, stored)),
        ]
        for name, function in calls:
            ms, size = _timed(function)
            times[name].append(ms)
            sizes[name].append(size)
        state = new
        shown_layer = context.layer(state)
    result = {name: np.array(values) for name, values in times.items()}
    result["total"] = np.sum([result[name] for name in times], axis=0)
    # Picking inputs in the Instance view (a link: the input and its class), each new.
    if data.has("instances"):
        records = data.atlas.instances()
        picks: list[float] = []
        picked_sizes: list[int] = []
        for row in rng.choice(records.num_instances, size=switches, replace=False).tolist():
            stored = ViewState(
                cls=int(records.label[row]), inst_index=int(records.image_index[row])
            ).to_dict()
            ms, size = _timed(partial(instance_callbacks.render, context, stored))
            picks.append(ms)
            picked_sizes.append(size)
        result["instance pick"] = np.array(picks)
        result["bytes:instance pick"] = np.array(picked_sizes)
    for name, values in sizes.items():
        result[f"bytes:{name}"] = np.array(values)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--atlas",
        type=Path,
        default=None,
        help="an existing 1,000-class atlas (default: generate one)",
    )
    parser.add_argument("--switches", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        atlas_dir = args.atlas
        if atlas_dir is None:
            from compute.synthetic import write_synthetic_atlas

            start = time.perf_counter()
            atlas_dir = write_synthetic_atlas(
                Path(tmp) / "synthetic", num_classes=1000, embedding="pca", seed=0
            )
            print(f"generated the synthetic atlas in {time.perf_counter() - start:.1f} s")
        result = run(atlas_dir, args.switches, args.seed)
    data = atlas_data.load(str(atlas_dir), None)
    print(
        f"atlas: {data.num_classes} classes, {data.num_layers} layers; "
        f"{args.switches} random class switches (compare class and neuron panel open)"
    )
    print(f"{'callback':<10} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'payload kB':>11}")
    for name in (*CALLBACKS, "total", "instance pick"):
        if name not in result:
            continue
        values = result[name]
        size = result.get(f"bytes:{name}")
        kb = f"{np.median(size) / 1024:.1f}" if size is not None else ""
        print(
            f"{name:<10} {np.percentile(values, 50):8.2f} {np.percentile(values, 95):8.2f} "
            f"{values.max():8.2f} {kb:>11}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
