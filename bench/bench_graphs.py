"""Benchmark: attribution graphs of every class of the synthetic ImageNet-shaped atlas.

Target: all 1,000 classes (InceptionV1's nine mixed layers, 5,484 channels) in at most
60 s on 2 cores. The original ran networkx per class (~27 s per class, 7.5 h in all);
``--networkx N`` times that per-class approach on N classes of the same data for scale.

Examples:
    python bench/bench_graphs.py                  # 1000 classes, pinned to 2 cores
    python bench/bench_graphs.py --classes 200 --cores 0 --networkx 3
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compute.summit.config import GraphConfig
from compute.summit.graph import attribution_graphs
from compute.synthetic import DEFAULT_CHANNELS, synthetic_counts

TARGET_S = 60.0


def pin_cores(cores: int) -> str:
    """Restrict this process (and its threads) to the first ``cores`` CPUs, where possible."""
    if cores <= 0 or not hasattr(os, "sched_setaffinity"):
        return "all cores"
    available = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, available[:cores])
    return f"{min(cores, len(available))} cores"


def networkx_seconds_per_class(counts, influence, classes: int) -> float:
    """Time the original's per-class ``nx.pagerank`` (graph build included)."""
    import networkx as nx

    channels = [a.shape[1] for a in counts]
    started = time.perf_counter()
    for c in range(classes):
        graph = nx.Graph()
        graph.add_nodes_from((t, j) for t, n in enumerate(channels) for j in range(n))
        for t in range(1, len(channels)):
            block = influence[t][c * channels[t] : (c + 1) * channels[t]].tocoo()
            graph.add_weighted_edges_from(
                ((t, int(i)), (t - 1, int(j)), float(w))
                for i, j, w in zip(block.row, block.col, block.data, strict=True)
            )
        prior = {}
        for t, a in enumerate(counts):
            peak = a[c].max()
            prior.update({(t, j): (a[c, j] / peak if peak else 0.0) for j in range(channels[t])})
        nx.pagerank(graph, alpha=0.85, personalization=prior, weight="weight")
    return (time.perf_counter() - started) / max(classes, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--cores", type=int, default=2, help="pin to N cores (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--networkx", type=int, default=0, help="also time networkx on N classes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    where = pin_cores(args.cores)
    started = time.perf_counter()
    counts, influence, _ = synthetic_counts(args.classes, DEFAULT_CHANNELS, rng=args.seed)
    generated = time.perf_counter() - started
    nnz = sum(m.nnz for m in influence[1:] if m is not None)
    print(
        f"input: {args.classes} classes x {sum(DEFAULT_CHANNELS)} channels in "
        f"{len(DEFAULT_CHANNELS)} layers, {nnz:,} influence entries (generated in "
        f"{generated:.1f} s)"
    )

    started = time.perf_counter()
    graphs = attribution_graphs(counts, influence, GraphConfig(), progress=False)
    seconds = time.perf_counter() - started
    nodes = np.diff(graphs.node_offsets)
    edges = np.diff(graphs.edge_offsets)
    print(
        f"attribution_graphs: {seconds:.1f} s for {args.classes} classes on {where} "
        f"({1000 * seconds / args.classes:.1f} ms per class); target <= {TARGET_S:.0f} s for "
        f"1000 classes: {'OK' if seconds * 1000 / args.classes <= TARGET_S else 'MISSED'}"
    )
    print(
        f"graphs: nodes per class median {np.median(nodes):.0f} ({nodes.min()}-{nodes.max()}), "
        f"edges per class median {np.median(edges):.0f} ({edges.min()}-{edges.max()}); "
        "published Summit: 55.5 (36-91) nodes, 181 (71-440) edges"
    )
    if args.networkx:
        per_class = networkx_seconds_per_class(counts, influence, args.networkx)
        print(
            f"networkx per class (PageRank only, {args.networkx} classes): {per_class:.2f} s, "
            f"i.e. {per_class * args.classes / 60:.1f} min for {args.classes} classes; "
            f"speed-up x{per_class * args.classes / seconds:.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
