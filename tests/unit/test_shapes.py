"""Flares and loops on planted point clouds run through Mapper, and on hand-made graphs."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from compute.topology.clustering import assemble
from compute.topology.mapper import MapperParams, compute_mapper, cover_bounds
from compute.topology.shapes import find_flares, find_loops, find_shapes

PARAMS = MapperParams(intervals=10, overlap=0.3, eps_scale=3.0)


def embed(xy: np.ndarray, rng: np.random.Generator, dim: int = 8) -> np.ndarray:
    """A planar shape in ``dim`` dimensions with a little noise off the plane."""
    x = rng.normal(scale=0.01, size=(len(xy), dim))
    x[:, :2] = xy
    return x.astype(np.float32)


def y_shape(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three arms from the origin; the L2-norm lens runs out along each arm. Label = arm."""
    rng = np.random.default_rng(seed)
    arm = rng.integers(0, 3, n)
    t = rng.uniform(0, 1, n)
    angle = arm * 2 * np.pi / 3
    xy = np.stack([t * np.cos(angle), t * np.sin(angle)], 1) + rng.normal(scale=0.02, size=(n, 2))
    return embed(xy, rng), arm


def circle(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy circle off the origin, so the L2-norm lens goes round it. Label = half."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, n)
    xy = np.stack([3 + np.cos(angle), np.sin(angle)], 1) + rng.normal(scale=0.03, size=(n, 2))
    return embed(xy, rng), (angle > np.pi).astype(np.int64)


def test_y_shape_has_three_flares() -> None:
    x, arm = y_shape()
    graph = compute_mapper(x, PARAMS)
    flares = find_flares(graph, arm)
    assert len(flares) == 3
    assert sorted(f.dominant_class for f in flares) == [0, 1, 2]
    assert all(f.dominant_share > 0.95 and len(f.nodes) >= 3 for f in flares)
    assert len({f.nodes[0] for f in flares}) == 1  # one branch node
    assert [f.size for f in flares] == sorted((f.size for f in flares), reverse=True)
    assert find_loops(graph, arm) == []


def test_circle_has_one_loop() -> None:
    x, half = circle()
    graph = compute_mapper(x, PARAMS)
    loops = find_loops(graph, half)
    assert len(loops) == 1
    loop = loops[0]
    assert len(loop.nodes) >= 8 and loop.size > 0.9 * len(x)
    adjacency = graph.adjacency()
    ring = [*loop.nodes, loop.nodes[0]]
    assert all(adjacency[a, b] for a, b in pairwise(ring))
    assert find_flares(graph, half) == []
    assert [s.kind for s in find_shapes(graph, half)] == ["loop"]


def graph_from_edges(edges: list[tuple[int, int]], n: int, labels_per_node: list[int]):
    """A MapperGraph whose nodes share one point per edge; node k owns 10 points of its label."""
    members: list[list[int]] = [list(range(10 * k, 10 * k + 10)) for k in range(n)]
    for e, (a, b) in enumerate(edges):
        members[a].append(10 * n + e)
        members[b].append(10 * n + e)
    labels = np.concatenate([np.full(10, c) for c in labels_per_node] + [np.zeros(len(edges))])
    nodes = [np.array(sorted(m)) for m in members]
    graph = assemble(
        True,
        10 * n + len(edges),
        nodes,
        list(range(n)),
        [0] * n,
        cover_bounds(n, 0.3),
        np.ones(n, dtype=np.int64),
        1.0,
        MapperParams(intervals=max(n, 2)),
        0.0,
    )
    return graph, labels.astype(np.int64)


def test_hand_made_square_with_tail_and_triangle() -> None:
    # 0-1-2-3-0 square, 3-4-5-6 tail (a flare from branch node 3), 1-7-8-1 triangle.
    edges = [(0, 1), (1, 2), (2, 3), (0, 3), (3, 4), (4, 5), (5, 6), (1, 7), (7, 8), (1, 8)]
    graph, labels = graph_from_edges(edges, 9, [0, 0, 0, 0, 1, 1, 1, 2, 2])
    loops = find_loops(graph, labels)
    assert [sorted(lp.nodes) for lp in loops] == [[0, 1, 2, 3]]
    flares = find_flares(graph, labels)
    assert [f.nodes for f in flares] == [(3, 4, 5, 6)]
    assert flares[0].dominant_class == 1
    # A mixed arm is not a flare.
    _, mixed = graph_from_edges(edges, 9, [0, 0, 0, 0, 1, 2, 0, 2, 2])
    assert find_flares(graph, mixed, min_share=0.9) == []
