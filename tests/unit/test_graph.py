"""Attribution graphs: PageRank against networkx, selection, relaxation, layout, arrays."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

from compute.atlas import GRAPH_PATHS
from compute.errors import BuildError
from compute.summit.config import GraphConfig
from compute.summit.graph import (
    _layer_pair,
    _stacked_adjacency,
    attribution_graphs,
    barycentre_order,
    class_pagerank,
    count_crossings,
    personalization,
    personalized_pagerank,
    select_by_mass,
    select_nodes,
    symmetric_pagerank,
)

TIGHT = GraphConfig(tolerance=1e-13, max_iterations=2000)


def random_summit(
    seed: int, classes: int = 5, channels: tuple[int, ...] = (5, 7, 6), density: float = 0.3
) -> tuple[list[np.ndarray], list[sp.csr_array | None]]:
    """Small random A and I, with one all-zero class and some isolated channels."""
    rng = np.random.default_rng(seed)
    counts = [
        (rng.integers(0, 50, (classes, c)) * (rng.random((classes, c)) < 0.6)).astype(np.int64)
        for c in channels
    ]
    for layer in counts:
        layer[1] = 0  # class 1 has no activation at all: uniform prior
    influence: list[sp.csr_array | None] = [None]
    for t in range(1, len(channels)):
        dense = rng.integers(1, 40, (classes * channels[t], channels[t - 1]))
        dense *= rng.random(dense.shape) < density
        influence.append(sp.csr_array(dense.astype(np.int64)))
    return counts, influence


def networkx_pagerank(
    counts: list[np.ndarray], influence: list[sp.csr_array | None], c: int
) -> np.ndarray:
    """The original's per-class networkx computation (all nodes present)."""
    channels = [a.shape[1] for a in counts]
    graph = nx.Graph()
    nodes = [(t, j) for t, n in enumerate(channels) for j in range(n)]
    graph.add_nodes_from(nodes)
    for t in range(1, len(channels)):
        block = influence[t].toarray()[c * channels[t] : (c + 1) * channels[t]]
        for i, j in zip(*np.nonzero(block), strict=True):
            graph.add_edge((t, int(i)), (t - 1, int(j)), weight=float(block[i, j]))
    prior = {}
    for t, a in enumerate(counts):
        peak = a[c].max()
        for j in range(channels[t]):
            prior[(t, j)] = a[c, j] / peak if peak > 0 else 0.0
    personal = prior if sum(prior.values()) > 0 else None
    ranks = nx.pagerank(
        graph, alpha=0.85, personalization=personal, weight="weight", tol=1e-15, max_iter=10000
    )
    return np.array([ranks[node] for node in nodes])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pagerank_matches_networkx(seed: int) -> None:
    counts, influence = random_summit(seed)
    mine = np.concatenate(class_pagerank(counts, influence, TIGHT), axis=1)
    for c in range(counts[0].shape[0]):
        np.testing.assert_allclose(mine[c], networkx_pagerank(counts, influence, c), atol=1e-10)


def test_power_iteration_and_cg_agree() -> None:
    counts, influence = random_summit(3, classes=4, channels=(6, 9, 4, 8), density=0.2)
    channels = [a.shape[1] for a in counts]
    offsets = np.concatenate([[0], np.cumsum(channels)])
    pairs = [None] + [_layer_pair(influence[t], channels[t]) for t in range(1, len(channels))]
    adjacency = _stacked_adjacency(pairs, offsets, 4)
    prior = personalization(counts)
    power = personalized_pagerank(adjacency, prior, tolerance=1e-14, max_iterations=5000)
    cg = symmetric_pagerank(adjacency, prior, tolerance=1e-14)
    np.testing.assert_allclose(power, cg, atol=1e-11)
    np.testing.assert_allclose(cg.sum(axis=1), 1.0)


def test_personalization_per_layer_max_and_uniform_fallback() -> None:
    prior = personalization([np.array([[2, 4], [0, 0]]), np.array([[0, 0, 9], [0, 0, 0]])])
    np.testing.assert_allclose(prior[0], np.array([0.5, 1.0, 0.0, 0.0, 1.0]) / 2.5)
    np.testing.assert_allclose(prior[1], np.full(5, 0.2))


def test_select_by_mass_hand_cases() -> None:
    pr = np.array(
        [
            [0.1, 0.5, 0.4, 0.0],  # 0.5 < 0.6 -> need the 0.4 too
            [0.25, 0.25, 0.25, 0.25],  # ties: lowest channels first
            [0.0, 0.0, 0.0, 0.0],  # nothing positive: keep nothing
            [0.0, 0.0, 0.9, 0.1],  # one node already reaches the mass
        ]
    )
    kept = select_by_mass(pr, np.array([0.6, 0.5, 0.6, 0.6]))
    assert kept.tolist() == [
        [False, True, True, False],
        [True, True, False, False],
        [False, False, False, False],
        [False, False, True, False],
    ]
    # Mass 1 keeps every positive node, never a zero one.
    assert select_by_mass(pr[:1], 1.0).tolist() == [[True, True, True, False]]
    # A tiny mass still keeps one node.
    assert select_by_mass(pr[:1], 1e-9).sum() == 1


def test_relaxation_raises_mass_until_layers_connect() -> None:
    # Layer 1's top node links only to layer 0's weakest node.
    pagerank = [np.array([[0.5, 0.3, 0.2]]), np.array([[0.6, 0.4]])]
    influence = sp.csr_array(np.array([[0, 0, 7], [0, 0, 0]]))
    pairs = [None, _layer_pair(influence, 2)]
    plain = select_nodes(pagerank, pairs, GraphConfig(mass=0.1, relax_step=1.0))
    config = GraphConfig(mass=0.1, relax_step=0.1)
    kept = select_nodes(pagerank, pairs, config)
    # One big relaxation step jumps straight to mass 1.
    assert plain[0].tolist() == [[True, True, True]]
    # Layer 0 needs share > 0.8 (all three nodes); layer 1 grows alongside it.
    assert kept[0].tolist() == [[True, True, True]]
    assert kept[1].tolist() == [[True, True]]
    # No relaxation when the top nodes already connect.
    connected = [None, _layer_pair(sp.csr_array(np.array([[5, 0, 0], [0, 0, 0]])), 2)]
    kept = select_nodes(pagerank, connected, config)
    assert kept[0].tolist() == [[True, False, False]]
    assert kept[1].tolist() == [[True, False]]


def test_relaxation_terminates_when_a_layer_cannot_connect() -> None:
    pagerank = [np.array([[0.7, 0.3]]), np.array([[0.5, 0.5]])]
    empty = [None, _layer_pair(sp.csr_array((2, 2), dtype=np.int64), 2)]
    kept = select_nodes(pagerank, empty, GraphConfig(mass=0.1, relax_step=0.2))
    assert kept[0].tolist() == [[True, True]]  # grew to mass 1 and gave up
    assert kept[1].tolist() == [[True, True]]


def test_count_crossings() -> None:
    x = np.arange(3)
    assert count_crossings(x, x, np.array([0, 1, 2]), np.array([0, 1, 2])) == 0
    assert count_crossings(x, x, np.array([0, 1, 2]), np.array([2, 1, 0])) == 3
    # Edges sharing an endpoint never cross.
    assert count_crossings(x, x, np.array([0, 0]), np.array([1, 2])) == 0


def total_crossings(slots: list[np.ndarray], edges: list) -> int:
    return sum(count_crossings(slots[t - 1], slots[t], *edges[t]) for t in range(1, len(slots)))


@pytest.mark.parametrize("seed", range(20))
def test_barycentre_never_worse_than_input_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = [int(n) for n in rng.integers(1, 9, size=rng.integers(2, 6))]
    edges: list = [None]
    for t in range(1, len(sizes)):
        m = int(rng.integers(0, sizes[t] * sizes[t - 1] + 1))
        edges.append((rng.integers(0, sizes[t - 1], m), rng.integers(0, sizes[t], m)))
    slots = barycentre_order(sizes, edges)
    for n, s in zip(sizes, slots, strict=True):
        assert sorted(s.tolist()) == list(range(n))  # a permutation of the slots
    identity = [np.arange(n) for n in sizes]
    assert total_crossings(slots, edges) <= total_crossings(identity, edges)
    assert [s.tolist() for s in barycentre_order(sizes, edges)] == [s.tolist() for s in slots]


def test_barycentre_untangles_a_crossed_ladder() -> None:
    edges = [None, (np.array([0, 1, 2, 3]), np.array([3, 2, 1, 0]))]
    slots = barycentre_order([4, 4], edges)
    assert total_crossings(slots, edges) == 0


def graph_consistency(counts, influence, graphs, config) -> None:
    channels = [a.shape[1] for a in counts]
    arrays = graphs.arrays()
    assert set(arrays) == set(GRAPH_PATHS)
    assert arrays["node_layer"].dtype == np.int16 and arrays["node_channel"].dtype == np.int32
    assert arrays["node_pagerank"].dtype == np.float32 and arrays["node_x"].dtype == np.float32
    for key in ("node_offsets", "edge_offsets", "edge_source", "edge_target", "edge_weight"):
        assert arrays[key].dtype == np.int64
    pagerank = class_pagerank(counts, influence, config)
    for c in range(counts[0].shape[0]):
        n0, n1 = graphs.node_offsets[c], graphs.node_offsets[c + 1]
        e0, e1 = graphs.edge_offsets[c], graphs.edge_offsets[c + 1]
        layer, channel = graphs.node_layer[n0:n1], graphs.node_channel[n0:n1]
        assert np.all(np.diff(layer) >= 0)
        for t in range(len(channels)):
            x = graphs.node_x[n0:n1][layer == t]
            np.testing.assert_allclose(x, np.arange(len(x)) - (len(x) - 1) / 2)
            np.testing.assert_allclose(
                graphs.node_pagerank[n0:n1][layer == t],
                pagerank[t][c, channel[layer == t]],
                rtol=1e-6,
            )
        src, dst = graphs.edge_source[e0:e1], graphs.edge_target[e0:e1]
        assert np.all((src >= n0) & (src < n1) & (dst >= n0) & (dst < n1))
        assert np.all(graphs.node_layer[dst] == graphs.node_layer[src] + 1)
        for s, d, w in zip(src, dst, graphs.edge_weight[e0:e1], strict=True):
            t = int(graphs.node_layer[d])
            row = c * channels[t] + int(graphs.node_channel[d])
            assert influence[t][row, int(graphs.node_channel[s])] == w > 0
        # Every kept edge between kept nodes is present.
        kept = {(int(a), int(b)) for a, b in zip(layer, channel, strict=True)}
        expected = 0
        for t in range(1, len(channels)):
            block = influence[t].toarray()[c * channels[t] : (c + 1) * channels[t]]
            for i, j in zip(*np.nonzero(block), strict=True):
                expected += (t, int(i)) in kept and (t - 1, int(j)) in kept
        assert expected == e1 - e0
        # Every kept layer above the first connects to the layer below.
        for t in range(1, len(channels)):
            if np.any(layer == t) and influence[t][c * channels[t] : (c + 1) * channels[t]].nnz:
                assert np.any(graphs.node_layer[dst] == t), (c, t)


@pytest.mark.parametrize("seed", [0, 4])
def test_attribution_graphs_consistent(seed: int) -> None:
    counts, influence = random_summit(seed, classes=6, channels=(6, 8, 7, 5), density=0.25)
    config = GraphConfig(mass=0.3)
    graphs = attribution_graphs(counts, influence, config, progress=False)
    assert graphs.num_classes == 6
    assert np.all(np.diff(graphs.node_offsets) > 0)
    graph_consistency(counts, influence, graphs, config)


def test_attribution_graphs_doc_example() -> None:
    a = [np.array([[3, 1]]), np.array([[0, 2]])]
    i = [None, sp.csr_array(np.array([[0, 0], [5, 1]]))]
    g = attribution_graphs(a, i, GraphConfig(mass=0.5), progress=False)
    assert g.node_layer.tolist() == [0, 1]
    assert g.node_channel.tolist() == [0, 1]
    assert (g.edge_source.tolist(), g.edge_target.tolist()) == ([0], [1])
    assert g.edge_weight.tolist() == [5]


def test_shape_errors() -> None:
    counts, influence = random_summit(0)
    with pytest.raises(BuildError, match="influence of layer 2"):
        attribution_graphs(counts, [*influence[:2], None], progress=False)
    with pytest.raises(BuildError, match="activation counts of layer 1"):
        attribution_graphs([counts[0], counts[1][:2], counts[2]], influence, progress=False)


def test_a_class_without_images_has_an_empty_graph_and_leaves_the_others_alone() -> None:
    """No activation and no influence count (a class, or a class's mistaken images, with no
    image): an empty graph, not the uniform prior's every channel."""
    counts, influence = random_summit(2, classes=4, channels=(6, 8, 7))
    empty_counts = [a.copy() for a in counts]
    empty_influence: list[sp.csr_array | None] = [None]
    for layer, a in enumerate(empty_counts):
        a[2] = 0
        if layer:
            dense = influence[layer].toarray()  # type: ignore[union-attr]
            dense.reshape(4, a.shape[1], -1)[2] = 0
            empty_influence.append(sp.csr_array(dense))
    config = GraphConfig(mass=0.3)
    before = attribution_graphs(counts, influence, config, progress=False)
    after = attribution_graphs(empty_counts, empty_influence, config, progress=False)
    assert np.diff(after.node_offsets)[2] == 0 and np.diff(after.edge_offsets)[2] == 0
    assert np.diff(before.node_offsets)[2] > 0
    for c in (0, 1, 3):  # PageRank is per class: the others are unchanged
        n0, n1 = before.node_offsets[c : c + 2]
        m0, m1 = after.node_offsets[c : c + 2]
        np.testing.assert_array_equal(before.node_channel[n0:n1], after.node_channel[m0:m1])
        np.testing.assert_array_equal(before.node_x[n0:n1], after.node_x[m0:m1])
