"""Mapper benchmark: our index-based Mapper against KeplerMapper on activation-like data.

Data: ReLU of a Gaussian mixture with a per-point gain (so the L2-norm lens spreads),
``N × D`` float32. Parameters: L2-norm lens, ``--intervals`` intervals, ``--overlap``
overlap, DBSCAN with the ``"auto"`` ε (min_samples 3), KeplerMapper's cover formula on
both sides so the node memberships can be compared.

Prints: full build (index + first graph) against ``kmapper.map`` (lens included on both
sides; both libraries imported before timing), the build's breakdown by step
(``MapperIndex.timings``; GEMM, masking, earlier-side assembly and selection are summed
over the build threads, "blocks (wall)" is their wall time), the distance pairs each side
computes, the time of parameter changes after the precompute, coverage, node/edge counts,
whether the nodes equal KeplerMapper's, and peak traced memory of each side.

``--device cuda`` builds our index's distance blocks on that torch device (the product's
GPU path); KeplerMapper stays on the CPU, as its users run it. The device is warmed up
(CUDA context, kernels) by a small build before timing.

Examples:
    python bench/bench_mapper.py --n 30000            # a few minutes on 2 cores
    python bench/bench_mapper.py --n 100000 --no-kmapper
    python bench/bench_mapper.py --n 100000 --device cuda --no-memory
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compute.topology.mapper import MapperIndex, MapperParams, compute_lens, cover_bounds


def synthetic_activations(n: int, dim: int, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """float32 ``[n, dim]`` ReLU(gain × (centre + noise)): sparse, non-negative, clustered."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    which = rng.integers(0, clusters, n)
    x = centres[which]
    x += 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
    x *= rng.uniform(0.5, 1.5, (n, 1)).astype(np.float32)
    np.maximum(x, 0.0, out=x)
    return x


def timed(fn: Callable[[], Any], memory: bool, repeat: int = 1) -> tuple[Any, float, float]:
    """``(result, best seconds of repeat runs, peak MiB traced)``; memory in an extra run.

    The best of several runs is the fairest figure on a machine shared with other work;
    tracemalloc slows Python-level allocation, so the traced run is not timed.
    """
    seconds = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        seconds = min(seconds, time.perf_counter() - start)
    peak = float("nan")
    if memory:
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return result, seconds, peak


def kmapper_pairs(index: MapperIndex, intervals: int, overlap: float) -> int:
    """Distances KeplerMapper computes: ``m²`` for each interval of ``m`` points."""
    keys = index.lens[index.order]
    bounds = cover_bounds(intervals, overlap, "kmapper")
    m = np.searchsorted(keys, bounds[:, 1], "right") - np.searchsorted(keys, bounds[:, 0], "left")
    return int((m.astype(np.int64) ** 2).sum())


def run_kmapper(x: np.ndarray, eps: float, intervals: int, overlap: float) -> dict:
    import kmapper as km
    from sklearn.cluster import DBSCAN

    mapper = km.KeplerMapper(verbose=0)
    lens = mapper.fit_transform(x, projection="l2norm")
    return mapper.map(
        lens, x, clusterer=DBSCAN(eps=eps, min_samples=3), cover=km.Cover(intervals, overlap)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="points (default 100,000)")
    parser.add_argument("--dim", type=int, default=512, help="dimensions (default 512)")
    parser.add_argument("--intervals", type=int, default=70)
    parser.add_argument("--overlap", type=float, default=0.3)
    parser.add_argument("--max-neighbors", type=int, default=64, help="index cap (0 = none)")
    parser.add_argument("--no-kmapper", action="store_true", help="skip KeplerMapper")
    parser.add_argument("--no-memory", action="store_true", help="skip the traced re-runs")
    parser.add_argument("--repeat", type=int, default=1, help="best of this many runs")
    parser.add_argument(
        "--device", default=None, help="torch device of our index build (default: numpy, CPU)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    memory = not args.no_memory

    print(
        f"machine: {os.cpu_count()} cores visible, load average {os.getloadavg()[0]:.1f}; "
        f"N={args.n:,} D={args.dim} intervals={args.intervals} overlap={args.overlap}"
    )
    x = synthetic_activations(args.n, args.dim)
    if not args.no_kmapper:
        import kmapper  # noqa: F401 - imported before timing, as our module is
    if args.device is not None:
        # Start-up (torch import, CUDA context, kernel loading) is a once-per-process cost
        # of the build command, not of a layer's index: paid before timing.
        MapperIndex.build(x[:2000], max_neighbors=args.max_neighbors, device=args.device)
        print(f"ours on device {args.device}; kmapper on the CPU")

    params = MapperParams(intervals=args.intervals, overlap=args.overlap, cover="kmapper")

    def ours() -> tuple[MapperIndex, Any]:
        index = MapperIndex.build(x, max_neighbors=args.max_neighbors, device=args.device)
        return index, index.mapper(params)

    def kmapper_run() -> dict:
        return run_kmapper(x, eps, args.intervals, args.overlap)

    # Alternate the two sides so a change in the machine's load hits both alike.
    t_build = t_km = float("inf")
    km_graph: dict = {}
    for _ in range(args.repeat):
        (run_index, run_graph), t, _ = timed(ours, False)
        if t < t_build:  # report the breakdown of the fastest run
            t_build, index, graph = t, run_index, run_graph
        eps = index.resolve_eps(params)
        if not args.no_kmapper:
            km_graph, t, _ = timed(kmapper_run, False)
            t_km = min(t_km, t)
    m_build = timed(ours, True)[2] if memory else float("nan")
    m_km = timed(kmapper_run, True)[2] if memory and not args.no_kmapper else float("nan")
    t_index = index.seconds
    print(
        f"ours   build (index + graph): {t_build:7.2f} s  (index {t_index:.2f} s, graph "
        f"{graph.seconds:.2f} s), peak {m_build:,.0f} MiB"
    )
    nnz = len(index.indices)
    print(
        f"       index: {nnz:,} neighbour entries ({nnz / args.n:.1f}/point, "
        f"{sum(a.nbytes for a in index.to_arrays().values()) / 2**20:.0f} MiB), "
        f"{index.truncated:,} points capped at {args.max_neighbors}"
    )
    print(
        f"       eps {eps:.4g} (auto), {graph.num_nodes} nodes, {graph.num_edges} edges, "
        f"coverage {graph.coverage:.1%}"
    )
    steps = ", ".join(f"{k} {v:.2f}" for k, v in index.timings.items())
    print(f"       breakdown (s): {steps}")
    keys = index.lens[index.order]
    band = min(index.max_window, index.max_radius / float(np.ptp(np.linalg.norm(x, axis=1))))
    ends = np.searchsorted(keys, keys + band, side="right")
    print(
        f"       distance pairs: ours {int((ends - np.arange(args.n) - 1).sum()):,} in the "
        f"lens band (each once), kmapper {kmapper_pairs(index, args.intervals, args.overlap):,}"
    )

    # The corners of the dashboard's ranges (intervals 10-100, overlap 10-60 %, ε 0.5-2×),
    # then the default again: the worst case is what a user can hit.
    changes = [
        MapperParams(intervals=i, overlap=o, eps_scale=e)
        for i in (10, 40, 100)
        for o in (0.1, 0.6)
        for e in (0.5, 2.0)
    ] + [MapperParams(intervals=args.intervals, overlap=args.overlap)]
    seconds = []
    for p in changes:
        g, t, _ = timed(lambda p=p: index.mapper(p), False, args.repeat)
        seconds.append(t)
        print(
            f"       change → intervals={p.intervals:3d} overlap={p.overlap:.1f} "
            f"eps×{p.eps_scale:<4}: {t:5.2f} s, {g.num_nodes} nodes, coverage {g.coverage:.1%}"
            + ("" if g.exact else " (approximate)")
        )
    print(
        f"       parameter change: max {max(seconds):.2f} s, median "
        f"{float(np.median(seconds)):.2f} s over {len(seconds)} settings"
    )

    if args.no_kmapper:
        return
    print(f"kmapper map (lens + map):     {t_km:7.2f} s, peak {m_km:,.0f} MiB")
    mine = {k: graph.members(i).tolist() for i, k in enumerate(graph.kmapper_ids())}
    theirs = {k: sorted(v) for k, v in km_graph["nodes"].items()}
    links = sum(len(v) for v in km_graph["links"].values())
    same = mine == theirs
    print(
        f"       {len(theirs)} nodes, {links} edges; nodes identical to ours: {same}"
        + ("" if same or index.truncated == 0 else " (index capped: approximate)")
    )
    print(
        f"ratio  kmapper / ours build: {t_km / t_build:.1f}x; "
        f"kmapper / parameter change: {t_km / max(graph.seconds, 1e-9):.0f}x"
    )
    lens_ok = np.allclose(compute_lens(x)[0], index.lens)
    print(f"       lens check: {lens_ok}; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
