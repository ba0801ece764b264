"""Class embeddings per layer (UMAP on rows of A, chained) and class similarity.

Summit ran one UMAP per layer on the raw rows of the activation-count matrix A (cosine
metric) and initialised layer ``t`` with layer ``t - 1``'s layout, so points move
coherently when the user switches layer. This module does the same, plus a fast PCA
variant (for tests and synthetic atlases) and the cosine class similarity the sidebar
sorts by (the original's similarity vector was wrong; see ``summit.md`` §10).

``umap`` is imported lazily: its import and first call cost tens of seconds (numba).

Examples:
    >>> layouts = class_embeddings(counts)              # doctest: +SKIP
    >>> sim = class_similarity(counts[0])               # doctest: +SKIP
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np

from compute.summit.config import EmbeddingConfig

log = logging.getLogger(__name__)

#: Fewer classes than this get a PCA layout: UMAP's spectral init needs a few points.
_MIN_UMAP_CLASSES = 5


def class_similarity(counts: np.ndarray) -> np.ndarray:
    """Cosine similarity between the rows of one layer's activation counts.

    Args:
        counts: ``int[classes, channels]`` activation counts A of one layer.

    Returns:
        ``float32[classes, classes]``; a row that is all zero has similarity 0 with every
        class, itself included.

    Examples:
        >>> class_similarity(np.array([[1, 0], [2, 0], [0, 0]])).tolist()
        [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    """
    x = np.asarray(counts, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1)
    unit = np.divide(x, norm[:, None], out=np.zeros_like(x), where=norm[:, None] > 0)
    similarity = np.clip(unit @ unit.T, -1.0, 1.0)
    return similarity.astype(np.float32)


def rescale(xy: np.ndarray) -> np.ndarray:
    """Centre a layout on the origin and scale it so the largest coordinate is 1.

    Args:
        xy: ``float[points, 2]``.

    Returns:
        ``float32[points, 2]`` in ``[-1, 1]`` (all zeros if every point coincides).

    Examples:
        >>> rescale(np.array([[0.0, 0.0], [4.0, 2.0]])).tolist()
        [[-1.0, -0.5], [1.0, 0.5]]
    """
    xy = np.asarray(xy, dtype=np.float64)
    centred = xy - (xy.max(axis=0) + xy.min(axis=0)) / 2.0
    peak = float(np.abs(centred).max()) if centred.size else 0.0
    return (centred / peak if peak > 0 else centred).astype(np.float32)


def _cosine_ready(counts: np.ndarray) -> np.ndarray:
    """Rows of A as float, with all-zero rows made tiny and equal (cosine needs a norm)."""
    x = np.asarray(counts, dtype=np.float64)
    zero = ~np.any(x != 0, axis=1)
    if zero.any():
        x = x.copy()
        x[zero] = 1e-6
    return x


def _pca_layout(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    norm = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norm > 0, norm, 1.0)  # cosine geometry: compare directions
    if unit.shape[0] < 2 or np.ptp(unit, axis=0).max() == 0:
        # One class, or every class's counts point the same way: one point (PCA would
        # divide by the zero variance).
        return np.zeros((unit.shape[0], 2))
    components = min(2, unit.shape[0], unit.shape[1])
    xy = PCA(n_components=components, random_state=seed).fit_transform(unit)
    if components < 2:
        xy = np.hstack([xy, np.zeros((xy.shape[0], 2 - components))])
    return xy


def _align(xy: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """Flip PCA axes so a layout points the same way as the previous layer's."""
    if previous is None:
        return xy
    signs = np.sign(np.sum(xy * previous, axis=0))
    return xy * np.where(signs == 0, 1.0, signs)


def pca_embeddings(activation_counts: Sequence[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """A fast stand-in for :func:`class_embeddings`: PCA of the L2-normalised rows of A.

    Axis signs are aligned with the previous layer so layouts stay comparable.

    Args:
        activation_counts: per layer ``int[classes, C_l]``.
        seed: random state passed to PCA.

    Returns:
        Per layer ``float32[classes, 2]`` in ``[-1, 1]``.

    Examples:
        >>> a = np.array([[3, 0, 1], [0, 2, 2], [1, 1, 0]])
        >>> [xy.shape for xy in pca_embeddings([a, a])]
        [(3, 2), (3, 2)]
    """
    layouts: list[np.ndarray] = []
    previous = None
    for counts in activation_counts:
        xy = rescale(_align(_pca_layout(_cosine_ready(counts), seed), previous))
        layouts.append(xy)
        previous = xy
    return layouts


def class_embeddings(
    activation_counts: Sequence[np.ndarray],
    config: EmbeddingConfig = EmbeddingConfig(),
    *,
    chained: bool = True,
) -> list[np.ndarray]:
    """One UMAP layout of the classes per layer, each initialised with the previous one.

    ``UMAP(n_components=2, metric="cosine", n_neighbors=min(config.n_neighbors,
    classes - 1), min_dist=config.min_dist, random_state=config.seed)`` on the rows of A;
    the first layer uses UMAP's spectral initialisation, layer ``t`` starts from layer
    ``t - 1``'s layout. All-zero rows (cosine undefined) are replaced by a tiny constant
    vector, so they sit together. Fewer than 5 classes get a PCA layout instead.

    Args:
        activation_counts: per layer ``int[classes, C_l]``, input to output.
        config: UMAP settings and seed.
        chained: initialise each layer with the previous layout (``False``: spectral
            initialisation for every layer, useful to measure what chaining buys).

    Returns:
        Per layer ``float32[classes, 2]``, centred and scaled into ``[-1, 1]``.

    Examples:
        >>> layouts = class_embeddings([counts_3a, counts_3b])   # doctest: +SKIP
        >>> layouts[0].shape                                       # doctest: +SKIP
        (1000, 2)
    """
    num_classes = int(np.shape(activation_counts[0])[0]) if activation_counts else 0
    if num_classes < _MIN_UMAP_CLASSES:
        log.info("only %d classes: using a PCA layout instead of UMAP", num_classes)
        return pca_embeddings(activation_counts, seed=config.seed)

    import umap  # lazy: slow import (numba)

    layouts: list[np.ndarray] = []
    previous: np.ndarray | None = None
    for layer, counts in enumerate(activation_counts):
        init: str | np.ndarray = (
            previous.astype(np.float64) if (chained and previous is not None) else "spectral"
        )
        reducer = umap.UMAP(
            n_components=2,
            metric="cosine",
            n_neighbors=min(config.n_neighbors, num_classes - 1),
            min_dist=config.min_dist,
            random_state=config.seed,
            init=init,
        )
        with warnings.catch_warnings():
            # random_state disables parallelism (wanted: determinism); umap says so loudly.
            warnings.simplefilter("ignore", UserWarning)
            xy = reducer.fit_transform(_cosine_ready(counts))
        previous = rescale(xy)
        layouts.append(previous)
        log.debug("embedded layer %d (%d classes)", layer, num_classes)
    return layouts
