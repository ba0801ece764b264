"""Shapes in a Mapper graph: flares (branches) and loops, found automatically (torch-free).

TopoAct's authors spotted branches and loops by eye; here they are listed and ranked.

* **Flare**: a path of at least ``min_nodes`` nodes from a branch node (degree ≥ 3) out to a
  leaf (degree 1) through nodes of degree 2, whose arm (the path without the shared branch
  node) has at least ``min_share`` of its members from one class.
* **Loop**: a cycle of at least ``min_nodes`` nodes in a fundamental cycle basis (BFS
  spanning forest; each non-tree edge closes one cycle). Triangles from overlapping
  intervals are not loops.

Both are ranked by size (distinct members), largest first, ties by first node id.

Examples:
    >>> import numpy as np
    >>> from compute.topology.mapper import MapperIndex, MapperParams
    >>> x = np.random.default_rng(0).random((300, 3))
    >>> g = MapperIndex.build(x).mapper(MapperParams(intervals=10))
    >>> shapes = find_shapes(g, np.zeros(300, dtype=int))
    >>> all(s.kind in ("flare", "loop") for s in shapes)
    True
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from compute.topology.graph import MapperGraph

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shape:
    """One flare or loop.

    Attributes:
        kind: ``"flare"`` or ``"loop"``.
        nodes: node ids; a flare runs from its branch node to its leaf, a loop in cycle order.
        size: distinct members of the counted nodes (a flare's arm, a loop's nodes).
        dominant_class: most frequent class among those members (lowest on ties).
        dominant_share: its share.
    """

    kind: str
    nodes: tuple[int, ...]
    size: int
    dominant_class: int
    dominant_share: float


def _neighbours(graph: MapperGraph) -> list[list[int]]:
    adj: list[list[int]] = [[] for _ in range(graph.num_nodes)]
    for a, b in zip(graph.edge_source.tolist(), graph.edge_target.tolist(), strict=True):
        adj[a].append(b)
        adj[b].append(a)
    for row in adj:
        row.sort()
    return adj


def _summary(graph: MapperGraph, nodes: list[int], labels: np.ndarray) -> tuple[int, int, float]:
    """``(size, dominant class, share)`` of the union of ``nodes``' members."""
    members = np.unique(np.concatenate([graph.members(k) for k in nodes]))
    if not len(members):
        return 0, -1, 0.0
    counts = np.bincount(labels[members])
    top = int(counts.argmax())
    return len(members), top, float(counts[top] / len(members))


def _rank(shapes: list[Shape]) -> list[Shape]:
    return sorted(shapes, key=lambda s: (-s.size, s.nodes))


def find_flares(
    graph: MapperGraph, labels: np.ndarray, min_nodes: int = 3, min_share: float = 0.5
) -> list[Shape]:
    """Flares: branch node → degree-2 chain → leaf, class-dominated, ranked by size.

    Args:
        graph: a Mapper graph.
        labels: int ``[num_points]`` class of each sample row.
        min_nodes: minimum path length in nodes, branch node and leaf included.
        min_share: minimum share of the dominant class among the arm's members.

    Returns:
        Flares, largest first; ``nodes`` runs from the branch node to the leaf.
    """
    labels = np.asarray(labels, dtype=np.int64)
    adj = _neighbours(graph)
    degree = [len(a) for a in adj]
    flares = []
    for leaf in range(graph.num_nodes):
        if degree[leaf] != 1:
            continue
        path = [leaf]
        prev, node = leaf, adj[leaf][0]
        while degree[node] == 2:
            path.append(node)
            prev, node = node, next(v for v in adj[node] if v != prev)
        if degree[node] < 3:  # reached another leaf: an isolated chain, not a branch
            continue
        path.append(node)
        if len(path) < min_nodes:
            continue
        size, top, share = _summary(graph, path[:-1], labels)
        if share >= min_share:
            flares.append(Shape("flare", tuple(reversed(path)), size, top, share))
    return _rank(flares)


def find_loops(graph: MapperGraph, labels: np.ndarray, min_nodes: int = 4) -> list[Shape]:
    """Loops: cycles of a BFS fundamental cycle basis with at least ``min_nodes`` nodes.

    Args:
        graph: a Mapper graph.
        labels: int ``[num_points]`` class of each sample row.
        min_nodes: minimum cycle length in nodes.

    Returns:
        Loops, largest first; ``nodes`` in cycle order.
    """
    labels = np.asarray(labels, dtype=np.int64)
    adj = _neighbours(graph)
    n = graph.num_nodes
    parent = [-1] * n
    depth = [-1] * n
    loops = []
    for root in range(n):
        if depth[root] >= 0:
            continue
        depth[root] = 0
        queue = deque([root])
        tree_edges: set[tuple[int, int]] = set()
        component = []
        while queue:
            u = queue.popleft()
            component.append(u)
            for v in adj[u]:
                if depth[v] < 0:
                    depth[v] = depth[u] + 1
                    parent[v] = u
                    tree_edges.add((min(u, v), max(u, v)))
                    queue.append(v)
        for u in component:
            for v in adj[u]:
                if u < v and (u, v) not in tree_edges:
                    cycle = _tree_cycle(u, v, parent, depth)
                    if len(cycle) >= min_nodes:
                        size, top, share = _summary(graph, cycle, labels)
                        loops.append(Shape("loop", tuple(cycle), size, top, share))
    return _rank(loops)


def _tree_cycle(u: int, v: int, parent: list[int], depth: list[int]) -> list[int]:
    """The cycle closed by non-tree edge ``(u, v)``: u → LCA → v along the tree."""
    left, right = [u], [v]
    a, b = u, v
    while depth[a] > depth[b]:
        a = parent[a]
        left.append(a)
    while depth[b] > depth[a]:
        b = parent[b]
        right.append(b)
    while a != b:
        a, b = parent[a], parent[b]
        left.append(a)
        right.append(b)
    return left + right[-2::-1]


def find_shapes(
    graph: MapperGraph,
    labels: np.ndarray,
    flare_min_nodes: int = 3,
    flare_min_share: float = 0.5,
    loop_min_nodes: int = 4,
) -> list[Shape]:
    """Flares then loops, each list ranked by size (see :func:`find_flares`, :func:`find_loops`)."""
    flares = find_flares(graph, labels, flare_min_nodes, flare_min_share)
    loops = find_loops(graph, labels, loop_min_nodes)
    logger.info("Mapper shapes: %d flares, %d loops", len(flares), len(loops))
    return flares + loops
