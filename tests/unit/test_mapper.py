"""Mapper: parameters, covers, kmapper equivalence, index reuse and serialisation."""

from __future__ import annotations

import numpy as np
import pytest

from compute.topology.mapper import (
    MapperIndex,
    MapperParams,
    compute_lens,
    compute_mapper,
    cover_bounds,
    eps_rule,
    knee_point,
    node_statistics,
)


def activations(n: int = 1200, dim: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ReLU of a small Gaussian mixture with a per-point gain; labels = mixture component."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, dim)) * 2
    label = rng.integers(0, 5, n)
    x = np.maximum(centres[label] + rng.normal(size=(n, dim)), 0) * rng.uniform(0.5, 1.5, (n, 1))
    return x.astype(np.float32), label


def nodes_of(graph) -> list[list[int]]:
    return [graph.members(k).tolist() for k in range(graph.num_nodes)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("intervals", 1),
        ("intervals", 201),
        ("intervals", 10.0),
        ("overlap", 0.01),
        ("overlap", 0.95),
        ("lens", "tsne"),
        ("metric", "manhattan"),
        ("clusterer", "kmeans"),
        ("eps", 0.0),
        ("eps", "median"),
        ("eps_scale", 20.0),
        ("min_samples", 0),
        ("min_cluster_size", 1),
        ("cover", "balanced"),
    ],
)
def test_params_validation(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"MapperParams.{field} must be") as info:
        MapperParams(**{field: value})
    assert "\n" not in str(info.value)


def test_cover_bounds() -> None:
    import kmapper as km

    for n, p in [(10, 0.3), (70, 0.3), (7, 0.55)]:
        cover = km.Cover(n, p)
        centers = cover.fit(np.c_[np.arange(2), [0.0, 1.0]])
        expected = np.array([[c[0] - cover.radius_[0], c[0] + cover.radius_[0]] for c in centers])
        np.testing.assert_array_equal(cover_bounds(n, p, "kmapper"), expected)
    uniform = cover_bounds(10, 0.3)
    length = uniform[:, 1] - uniform[:, 0]
    assert uniform[0, 0] == 0 and uniform[-1, 1] == 1
    np.testing.assert_allclose(length, length[0])
    # Consecutive intervals share `overlap` of their length.
    np.testing.assert_allclose((uniform[:-1, 1] - uniform[1:, 0]) / length[0], 0.3)


@pytest.mark.parametrize(
    ("intervals", "overlap", "metric", "eps_scale"),
    [(10, 0.3, "euclidean", 1.0), (6, 0.5, "euclidean", 1.5), (15, 0.2, "cosine", 1.0)],
)
def test_identical_to_kmapper(
    intervals: int, overlap: float, metric: str, eps_scale: float
) -> None:
    import kmapper as km
    from sklearn.cluster import DBSCAN

    x, _ = activations(800)
    params = MapperParams(
        intervals=intervals, overlap=overlap, metric=metric, eps_scale=eps_scale, cover="kmapper"
    )
    index = MapperIndex.build(x, metric, max_window=1.0, max_radius=1e9, max_neighbors=0)
    graph = index.mapper(params)
    assert graph.exact
    km_mapper = km.KeplerMapper(verbose=0)
    # Same lens as kmapper's (which computes the norm in the data's float32).
    lens = km_mapper.fit_transform(x, projection="l2norm")
    np.testing.assert_allclose(lens[:, 0], index.lens, atol=1e-6)
    expected = km_mapper.map(
        index.lens[:, None],
        x,
        clusterer=DBSCAN(eps=graph.eps, min_samples=3, metric=metric),
        cover=km.Cover(intervals, overlap),
    )
    mine = {k: graph.members(i).tolist() for i, k in enumerate(graph.kmapper_ids())}
    theirs = {k: sorted(v) for k, v in expected["nodes"].items()}
    assert len(mine) >= intervals
    assert mine == theirs
    links = {tuple(sorted((a, b))) for a, bs in expected["links"].items() for b in bs}
    ids = graph.kmapper_ids()
    edges = {
        tuple(sorted((ids[a], ids[b])))
        for a, b in zip(graph.edge_source, graph.edge_target, strict=True)
    }
    assert edges == links


def test_parameter_changes_reuse_the_index() -> None:
    x, _ = activations(1000)
    index = MapperIndex.build(x, max_window=0.25, max_neighbors=0)
    assert index.max_radius == pytest.approx(2 * index.resolve_eps(MapperParams()))
    for params in [
        MapperParams(intervals=10, overlap=0.6, eps_scale=2.0),
        MapperParams(intervals=40, overlap=0.1, eps_scale=0.5),
        MapperParams(intervals=25, overlap=0.45, eps="knee", cover="kmapper"),
        MapperParams(intervals=30, overlap=0.3, eps=3.0),
    ]:
        changed = index.mapper(params)
        fresh = compute_mapper(x, params)
        assert changed.exact and fresh.exact
        assert changed.eps == pytest.approx(fresh.eps)
        assert nodes_of(changed) == nodes_of(fresh)
        np.testing.assert_array_equal(changed.edge_intersection, fresh.edge_intersection)


def test_threaded_parameter_change_equals_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    """Big indexes cluster intervals in threads: same graph as one thread, node for node."""
    import compute.topology.index as index_module

    x, _ = activations(1500)
    index = MapperIndex.build(x, max_window=0.3, max_neighbors=0)
    params = MapperParams(intervals=8, overlap=0.5, eps_scale=1.5)
    monkeypatch.setattr(index_module, "PARALLEL_MIN_ENTRIES", 10**12)
    serial = index.mapper(params)
    monkeypatch.setattr(index_module, "PARALLEL_MIN_ENTRIES", 0)
    monkeypatch.setattr(index_module, "MAPPER_THREADS", 3)
    threaded = index.mapper(params)
    assert serial.num_nodes > 8
    assert nodes_of(threaded) == nodes_of(serial)
    np.testing.assert_array_equal(threaded.node_interval, serial.node_interval)
    np.testing.assert_array_equal(threaded.node_cluster, serial.node_cluster)
    assert nodes_of(threaded) == nodes_of(compute_mapper(x, params))


def test_edges_statistics_and_coverage() -> None:
    x, label = activations(900)
    graph = compute_mapper(x, MapperParams(intervals=12, overlap=0.4))
    sets = [set(m) for m in nodes_of(graph)]
    expected = []
    for a in range(len(sets)):
        for b in range(a + 1, len(sets)):
            inter = len(sets[a] & sets[b])
            if inter:
                expected.append((a, b, inter, inter / len(sets[a] | sets[b])))
    got = list(
        zip(
            graph.edge_source.tolist(),
            graph.edge_target.tolist(),
            graph.edge_intersection.tolist(),
            graph.edge_jaccard.tolist(),
            strict=True,
        )
    )
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    np.testing.assert_allclose([g[3] for g in got], [e[3] for e in expected], rtol=1e-6)
    assert graph.coverage == pytest.approx(len(set().union(*sets)) / len(x))
    # Nodes of one interval are disjoint (DBSCAN clusters).
    for k in np.unique(graph.node_interval):
        members = np.concatenate(
            [graph.members(i) for i in np.flatnonzero(graph.node_interval == k)]
        )
        assert len(members) == len(np.unique(members))

    norms = np.linalg.norm(x, axis=1)
    stats = node_statistics(graph, label, norms, num_classes=6)
    assert stats.class_counts.shape == (graph.num_nodes, 6)
    for k in range(graph.num_nodes):
        members = graph.members(k)
        np.testing.assert_array_equal(
            stats.class_counts[k], np.bincount(label[members], minlength=6)
        )
        assert stats.count[k] == len(members)
        assert stats.mean_norm[k] == pytest.approx(norms[members].mean(), rel=1e-5)
        assert stats.dominant_share[k] == pytest.approx(stats.class_counts[k].max() / len(members))


def test_serialisation_round_trip_memory_mapped(tmp_path) -> None:
    x, _ = activations(600)
    index = MapperIndex.build(x, metric="cosine", max_neighbors=16)
    for name, array in index.to_arrays().items():
        assert isinstance(array, np.ndarray) and array.dtype != object
        np.save(tmp_path / f"{name}.npy", array, allow_pickle=False)
    loaded = MapperIndex.from_arrays(
        {p.stem: np.load(p, mmap_mode="r", allow_pickle=False) for p in tmp_path.glob("*.npy")}
    )
    assert loaded == index
    assert loaded.metric == "cosine" and loaded.lens_kind == "l2norm"
    params = MapperParams(intervals=20, overlap=0.3, metric="cosine")
    assert nodes_of(loaded.mapper(params)) == nodes_of(index.mapper(params))


def test_capped_index_is_flagged_and_exact_on_request() -> None:
    x, _ = activations(1000)
    capped = MapperIndex.build(x, max_neighbors=4)
    assert capped.truncated > 0
    params = MapperParams(intervals=20, overlap=0.3)
    assert not capped.mapper(params).exact
    exact = capped.mapper(params, vectors=x, exact=True)
    assert exact.exact
    assert nodes_of(exact) == nodes_of(compute_mapper(x, params))
    with pytest.raises(ValueError, match="needs the vectors"):
        capped.mapper(MapperParams(lens="pca"))


def test_pca_lens_and_hdbscan() -> None:
    x, _ = activations(700)
    lens, span = compute_lens(x, "pca")
    assert lens.min() == 0 and lens.max() == 1 and span > 0
    graph = compute_mapper(x, MapperParams(intervals=8, lens="pca", clusterer="hdbscan"))
    assert graph.num_nodes > 0 and np.isnan(graph.eps)
    for k in np.unique(graph.node_interval):
        members = np.concatenate(
            [graph.members(i) for i in np.flatnonzero(graph.node_interval == k)]
        )
        assert len(members) == len(np.unique(members))


def test_eps_rules() -> None:
    knn = np.tile(np.linspace(1, 2, 8, dtype=np.float32), (100, 1))
    knn[:60] = 0  # duplicates (e.g. all-zero ReLU vectors) do not drive eps to 0
    assert eps_rule(knn, "auto", 3) == pytest.approx(1.2 * knn[-1, 1])
    curve = np.r_[np.linspace(0, 1, 95), np.linspace(3, 30, 5)]
    assert 0.9 <= knee_point(curve) <= 3
    assert knee_point(np.ones(5)) == 1.0


def test_mapper_and_shapes_are_torch_free() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, compute.topology, compute.topology.mapper, compute.topology.shapes; "
        "bad = {'torch', 'networkx', 'kmapper'} & set(sys.modules); assert not bad, bad"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_default_params_by_sample_size() -> None:
    """TopoAct's cover for big samples; coarser, wider and looser for small ones."""
    from compute.topology.mapper import LARGE_SAMPLE, default_params, stored_default_params

    big = default_params(LARGE_SAMPLE)
    assert (big.intervals, big.overlap, big.eps_scale) == (70, 0.3, 1.0)
    demo = default_params(1_437)
    assert (demo.intervals, demo.overlap, demo.eps_scale) == (12, 0.5, 1.5)
    assert default_params(10).intervals == 10 and default_params(LARGE_SAMPLE - 1).intervals == 70
    # A small sample's default graph covers more points in fewer, bigger nodes.
    x, _ = activations(1200)
    fragmented = compute_mapper(x, MapperParams())
    readable = compute_mapper(x, default_params(len(x)))
    assert readable.coverage > fragmented.coverage and readable.coverage > 0.8
    assert readable.num_nodes < fragmented.num_nodes
    # What an atlas records wins; junk falls back to the rule.
    stored = {"num_points": 1_437, "defaults": {"intervals": 30, "overlap": 0.4}}
    assert (stored_default_params(stored).intervals, stored_default_params(stored).overlap) == (
        30,
        0.4,
    )
    assert stored_default_params({"num_points": 1_437, "defaults": {"intervals": 1}}) == demo
    assert stored_default_params(None) == big


def test_refresh_default_params_updates_only_the_manifest(tmp_path) -> None:
    from compute.atlas import Atlas
    from compute.topology.mapper import default_params, stored_default_params
    from compute.topology.part import refresh_default_params
    from tests.topology_atlas import write_topology_atlas

    path = write_topology_atlas(tmp_path / "atlas")
    before = Atlas.open(path)
    files = {k: v for k, v in before.files.items() if k != "manifest.json"}
    params = refresh_default_params(path)
    after = Atlas.open(path, verify_hashes=True)
    assert params == default_params(600)
    assert after.parameters["mapper"]["defaults"]["intervals"] == params.intervals
    assert stored_default_params(after.parameters["mapper"]) == params
    assert {k: v for k, v in after.files.items() if k != "manifest.json"} == files


def test_shipped_demo_has_readable_defaults_and_node_inversions() -> None:
    """The demo's default graph is readable, and every node of it has an inversion image."""
    from pathlib import Path

    from compute.atlas import Atlas
    from compute.topology.mapper import default_params, stored_default_params
    from compute.topology.part import default_graph

    demo = Atlas.open(Path(__file__).resolve().parents[2] / "dashboard" / "demos" / "digits")
    settings = demo.parameters["mapper"]
    assert stored_default_params(settings) == default_params(settings["num_points"])
    for layer in range(len(demo.layers)):
        graph = default_graph(demo, layer)
        assert 20 <= graph.num_nodes <= 120 and graph.coverage >= 0.85
        assert all(demo.mapper_inversion(layer, graph.node_key(k)) for k in range(graph.num_nodes))


def reference_radius_graph(
    x: np.ndarray, index: MapperIndex, window: float, cap: int
) -> dict[tuple[int, int], float]:
    """The index's graph by the definition, plainly: float64 distances, one point at a time.

    Each point keeps its ``cap`` nearest (all if 0) within ``max_radius`` among the points
    after it in lens order whose lens is at most ``window`` above its own, and likewise
    among those before it; ties go to the lowest sorted position; the union is stored.
    Returns ``{(i, j): distance}`` for ``i < j`` in sorted positions.
    """
    xs = x[index.order].astype(np.float64)
    keys = index.lens[index.order]
    if index.metric == "cosine":
        norm = np.linalg.norm(xs, axis=1, keepdims=True)
        xs = xs / np.where(norm > 0, norm, 1.0)
    n = len(xs)
    edges: dict[tuple[int, int], float] = {}
    for i in range(n):
        later = [j for j in range(i + 1, n) if keys[j] - keys[i] <= window]
        earlier = [j for j in range(i) if keys[i] - keys[j] <= window]
        for side in (later, earlier):
            if index.metric == "euclidean":
                dist = [float(np.linalg.norm(xs[i] - xs[j])) for j in side]
            else:
                dist = [max(1.0 - float(xs[i] @ xs[j]), 0.0) for j in side]
            near = sorted((d, j) for d, j in zip(dist, side, strict=True) if d <= index.max_radius)
            for d, j in near[:cap] if cap else near:
                edges[(min(i, j), max(i, j))] = d
    return edges


def index_edges(index: MapperIndex) -> dict[tuple[int, int], float]:
    """``{(i, j): distance}`` of the index's graph, ``i < j``; checks that it is symmetric."""
    n = index.num_points
    rows = np.repeat(np.arange(n), np.diff(index.indptr))
    got = {}
    triples = zip(rows.tolist(), index.indices.tolist(), index.distances.tolist(), strict=True)
    for i, j, d in triples:
        assert i != j
        got.setdefault((min(i, j), max(i, j)), []).append(d)
    assert all(len(d) == 2 and d[0] == d[1] for d in got.values())  # symmetric
    for i in range(n):  # ascending within each row
        assert np.all(np.diff(index.indices[index.indptr[i] : index.indptr[i + 1]]) > 0)
    return {k: v[0] for k, v in got.items()}


@pytest.mark.parametrize("cap", [0, 1, 5])
def test_index_graph_equals_brute_force_with_ties_and_duplicates(
    cap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small-integer vectors: float32 distances are exact, so ties and duplicate points
    (distance 0) are real ties; the selection must keep the lowest positions."""
    import compute.topology.index as index_module
    import compute.topology.kernels as kernels_module

    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, (260, 4)).astype(np.float32)
    x[200:230] = x[:30]  # exact duplicates
    window = 0.2
    expected = None
    # Block size (also shrunk by the element budget), retained blocks (or recomputed
    # pieces) and threads change nothing.
    for row_block, retain, threads, budget in [
        (256, 1 << 25, 1, 1 << 23),
        (16, 1 << 25, 3, 1 << 23),
        (32, 0, 2, 1 << 23),
        (256, 1 << 25, 2, 2_000),
    ]:
        monkeypatch.setattr(kernels_module, "ROW_BLOCK", row_block)
        monkeypatch.setattr(kernels_module, "BLOCK_BUDGET", budget)
        monkeypatch.setattr(kernels_module, "RETAIN_BUDGET", retain)
        monkeypatch.setattr(index_module, "BUILD_THREADS", threads)
        monkeypatch.setattr(index_module, "PARALLEL_MIN_PAIRS", 0)
        index = MapperIndex.build(x, max_radius=2.5, max_window=window, max_neighbors=cap)
        got = index_edges(index)
        if expected is None:
            expected = reference_radius_graph(x, index, window, cap)
            assert len(expected) > 200
        assert got.keys() == expected.keys()
        np.testing.assert_allclose(
            [got[k] for k in expected], list(expected.values()), rtol=1e-6, atol=1e-6
        )
        assert (index.truncated > 0) == (cap > 0)


@pytest.mark.parametrize("cap", [0, 6])
def test_cosine_index_graph_equals_brute_force(cap: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import compute.topology.kernels as kernels_module

    monkeypatch.setattr(kernels_module, "ROW_BLOCK", 32)
    x, _ = activations(300, dim=6, seed=4)
    x[250:260] = x[:10]  # duplicates: cosine distance 0 up to rounding
    index = MapperIndex.build(x, "cosine", max_radius=0.2, max_window=0.15, max_neighbors=cap)
    got = index_edges(index)
    expected = reference_radius_graph(x, index, 0.15, cap)
    assert len(expected) > 300
    assert got.keys() == expected.keys()
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), atol=1e-5)


def exact_data(metric: str, seed: int = 5) -> np.ndarray:
    """Integer-valued rows whose GEMM values are exact in float32, with many ties.

    Euclidean: entries 0..3 plus duplicated rows. Cosine: four non-zero entries ``±c``
    per row (``c`` in 1, 2, 4), so unit rows hold ``±0.5`` and dot products are exact.
    """
    rng = np.random.default_rng(seed)
    if metric == "euclidean":
        x = rng.integers(0, 4, (500, 6)).astype(np.float32)
        x[400:460] = x[:60]  # exact duplicates: zero distances
        return x
    x = np.zeros((400, 8), dtype=np.float32)
    for row in x:
        row[rng.choice(8, 4, replace=False)] = rng.choice([-1, 1], 4) * rng.choice([1, 2, 4])
    return x


def assert_same_index(a: MapperIndex, b: MapperIndex) -> None:
    arrays_a, arrays_b = a.to_arrays(), b.to_arrays()
    assert arrays_a.keys() == arrays_b.keys()
    for key, value in arrays_a.items():
        np.testing.assert_array_equal(value, arrays_b[key], err_msg=key)
    assert a.truncated == b.truncated


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("cap", [0, 1, 3, 64])
def test_torch_device_path_equals_numpy(
    metric: str, cap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    import compute.topology.kernels as kernels_module

    x = exact_data(metric)
    radius, window = (3.0, 0.3) if metric == "euclidean" else (1.0, 0.5)
    expected = MapperIndex.build(x, metric, radius, max_window=window, max_neighbors=cap)
    assert len(expected.indices) > 1000
    assert (expected.truncated > 0) == (cap > 0)  # the caps bite: ties at the cap matter
    # Default device blocks (one block here), small ones, and ones shrunk by the budget:
    # the same index each time.
    for row_block, budget in [(4096, 1 << 26), (16, 1 << 26), (64, 500)]:
        monkeypatch.setattr(kernels_module, "DEVICE_ROW_BLOCK", row_block)
        monkeypatch.setattr(kernels_module, "DEVICE_BLOCK_BUDGET", budget)
        got = MapperIndex.build(
            x, metric, radius, max_window=window, max_neighbors=cap, device="cpu"
        )
        assert_same_index(expected, got)


def cuda_available() -> bool:
    """A CUDA device is usable here (False without torch)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(
    not cuda_available(),
    reason="needs a CUDA device (the device='cpu' test covers the torch path's logic)",
)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_cuda_device_path_equals_numpy(metric: str) -> None:
    import torch

    x = exact_data(metric)
    radius, window = (3.0, 0.3) if metric == "euclidean" else (1.0, 0.5)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    for cap in (0, 3):
        expected = MapperIndex.build(x, metric, radius, max_window=window, max_neighbors=cap)
        got = MapperIndex.build(
            x, metric, radius, max_window=window, max_neighbors=cap, device="cuda"
        )
        assert_same_index(expected, got)
    assert torch.backends.cuda.matmul.allow_tf32 == tf32  # restored after the build


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_sample_distances_are_exact_with_duplicates(metric: str) -> None:
    """The ε rule's k-NN distances equal a plain float64 computation: duplicate vectors are
    exactly 0 (the GEMM's cancellation gave 0 on one CPU and ~1e-3 on another, and moved
    "auto" ε by 10% between machines)."""
    from compute.topology.mapper import KNN_K

    rng = np.random.default_rng(3)
    base = rng.random((60, 12)).astype(np.float32) * 40 + 5  # large norms: strong cancellation
    x = np.concatenate([base, base[:25], base[:10]])  # duplicates
    index = MapperIndex.build(x, metric, None, max_neighbors=0, knn_queries=len(x))
    reference = x.astype(np.float64)[index.order]
    if metric == "cosine":
        reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    diff = reference[:, None, :] - reference[None, :, :]
    d = np.sqrt((diff**2).sum(-1)) if metric == "euclidean" else 0.5 * (diff**2).sum(-1)
    np.fill_diagonal(d, np.inf)
    expected = np.sort(d, axis=1)[:, :KNN_K].astype(np.float32)
    np.testing.assert_allclose(index.knn_distances, expected, rtol=1e-6, atol=0)
    assert (index.knn_distances[:, 0] == 0).sum() == 60  # every row that has a copy
