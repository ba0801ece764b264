"""Class embeddings (chained UMAP, PCA) and class similarity."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from compute.summit.config import EmbeddingConfig
from compute.summit.embedding import (
    class_embeddings,
    class_similarity,
    pca_embeddings,
    rescale,
)


def clustered_counts(
    seed: int, classes: int = 40, channels: tuple[int, ...] = (12, 16, 20)
) -> list[np.ndarray]:
    """Counts whose class clusters persist across layers, with one all-zero class."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 4, classes)
    layers = []
    for c in channels:
        centres = rng.random((4, c)) ** 3
        a = rng.poisson(300 * (centres[groups] + 0.1 * rng.random((classes, c))))
        a[0] = 0
        layers.append(a.astype(np.int64))
    return layers


def test_class_similarity_matches_loop() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, (7, 6)) * (rng.random((7, 6)) < 0.5)
    counts[3] = 0
    sim = class_similarity(counts)
    assert sim.dtype == np.float32 and sim.shape == (7, 7)
    for i in range(7):
        for j in range(7):
            a, b = counts[i].astype(float), counts[j].astype(float)
            norm = np.linalg.norm(a) * np.linalg.norm(b)
            expected = a @ b / norm if norm > 0 else 0.0
            assert sim[i, j] == pytest.approx(expected, abs=1e-6)


def test_rescale_range() -> None:
    xy = rescale(np.array([[10.0, 3.0], [14.0, 5.0], [12.0, 4.0]]))
    assert xy.dtype == np.float32
    assert np.abs(xy).max() == pytest.approx(1.0)
    assert rescale(np.ones((3, 2))).tolist() == [[0.0, 0.0]] * 3


def test_pca_embeddings_shapes_and_determinism() -> None:
    counts = clustered_counts(1)
    first = pca_embeddings(counts, seed=3)
    again = pca_embeddings(counts, seed=3)
    assert [xy.shape for xy in first] == [(40, 2)] * 3
    assert all(xy.dtype == np.float32 and np.abs(xy).max() <= 1.0 for xy in first)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_classes_whose_counts_point_the_same_way_share_one_point_quietly() -> None:
    """Every class selecting the same channels in the same proportions: one point (the
    dashboard says so), without PCA's divide-by-zero warning in the build log."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same, other = pca_embeddings([np.array([[3, 0], [6, 0], [1, 0]]), np.eye(3, dtype=int)])
    assert same.tolist() == [[0.0, 0.0]] * 3
    assert len({tuple(p) for p in other.tolist()}) == 3


def test_tiny_class_counts_fall_back_without_crashing() -> None:
    counts = [np.array([[1, 0], [0, 0], [3, 1]]), np.array([[0, 0, 0], [2, 2, 2], [1, 0, 0]])]
    layouts = class_embeddings(counts)
    assert [xy.shape for xy in layouts] == [(3, 2), (3, 2)]
    assert all(np.isfinite(xy).all() for xy in layouts)


def displacement(layouts: list[np.ndarray]) -> float:
    return float(
        np.mean([np.linalg.norm(b - a, axis=1).mean() for a, b in itertools.pairwise(layouts)])
    )


def test_umap_embeddings_chained_deterministic_and_steadier() -> None:
    # One UMAP test only: the first call pays numba's compile cost (~20 s cold).
    counts = clustered_counts(2, classes=30, channels=(10, 14, 18))
    config = EmbeddingConfig(n_neighbors=8, seed=7)
    chained = class_embeddings(counts, config)
    again = class_embeddings(counts, config)
    independent = class_embeddings(counts, config, chained=False)
    assert [xy.shape for xy in chained] == [(30, 2)] * 3
    for xy in chained:
        assert xy.dtype == np.float32 and np.isfinite(xy).all() and np.abs(xy).max() <= 1.0
    for a, b in zip(chained, again, strict=True):
        np.testing.assert_array_equal(a, b)
    # Chaining the initialisation keeps points where they were between layers.
    assert displacement(chained) < displacement(independent)
