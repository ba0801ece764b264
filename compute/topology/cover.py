"""The cover and the lens of a Mapper graph: interval bounds on ``[0, 1]`` and the 1-D lens.

:func:`cover_bounds` gives the closed intervals of a cover (``uniform`` or KeplerMapper's),
:func:`compute_lens` the min-max scaled lens (L2 norm or first principal component).
"""

from __future__ import annotations

import numpy as np

from compute.topology.params import CoverKind, LensKind, interval_length


def cover_bounds(intervals: int, overlap: float, cover: CoverKind = "uniform") -> np.ndarray:
    """Closed interval bounds of the cover of ``[0, 1]``.

    ``"kmapper"`` repeats ``kmapper.Cover.fit`` / ``transform_single`` arithmetic operation
    by operation (float64), so membership tests agree bit for bit.

    Args:
        intervals: number of intervals ``n``.
        overlap: overlap fraction ``p``.
        cover: ``"uniform"`` or ``"kmapper"``.

    Returns:
        float64 ``[n, 2]``: ``(low, high)``; a point with lens ``t`` is in interval ``k``
        iff ``low_k <= t <= high_k``.

    Examples:
        >>> cover_bounds(2, 0.5).round(3).tolist()
        [[0.0, 0.667], [0.333, 1.0]]
    """
    if cover == "kmapper":
        n_cubes = np.array([intervals])
        perc = np.array([overlap])
        bounds = (np.array([0.0]), np.array([1.0]))
        ranges = bounds[1] - bounds[0]
        inner_range = ((n_cubes - 1) / n_cubes) * ranges
        inset = (ranges - inner_range) / 2
        radius = ranges / (2 * n_cubes * (1 - perc))
        centers = np.linspace(bounds[0][0] + inset[0], bounds[1][0] - inset[0], num=intervals)
        return np.stack([centers - radius[0], centers + radius[0]], axis=1)
    length = interval_length(intervals, overlap, "uniform")
    stride = length * (1.0 - overlap)
    low = np.arange(intervals) * stride
    high = low + length
    high[-1] = 1.0  # no rounding gap at the top
    return np.stack([low, high], axis=1)


def compute_lens(vectors: np.ndarray, kind: LensKind = "l2norm") -> tuple[np.ndarray, float]:
    """The 1-D lens, min-max scaled to ``[0, 1]`` as KeplerMapper's default ``MinMaxScaler``.

    Args:
        vectors: float ``[n, D]``.
        kind: ``"l2norm"``: Euclidean norm of each vector; ``"pca"``: projection on the first
            principal component (sign fixed so the largest loading is positive).

    Returns:
        ``(lens, raw_range)``: float64 ``[n]`` in ``[0, 1]``, and the range of the unscaled
        lens (both raw lenses are 1-Lipschitz in Euclidean distance, which the index uses
        to prune pairs).

    Examples:
        >>> compute_lens(np.array([[3.0, 4.0], [0.0, 1.0]]))[0].tolist()
        [1.0, 0.0]
    """
    x = np.asarray(vectors)
    if kind == "l2norm":
        # float64 norms, computed in row chunks: the same values as one call (each row is
        # reduced alone) without an n x D float64 copy of the data.
        raw = np.empty(len(x), dtype=np.float64)
        chunk = max(1, (1 << 20) // max(x.shape[1], 1))
        for a in range(0, len(x), chunk):
            raw[a : a + chunk] = np.linalg.norm(
                x[a : a + chunk].astype(np.float64, copy=False), axis=1
            )
    elif kind == "pca":
        mean = x.mean(axis=0, dtype=np.float64)
        # Covariance via X^T X (D x D): one pass, no SVD of the n x D matrix.
        xc = x.astype(np.float64) - mean
        cov = xc.T @ xc
        _, vecs = np.linalg.eigh(cov)
        axis = vecs[:, -1]
        axis = axis * np.sign(axis[np.argmax(np.abs(axis))])
        raw = xc @ axis
    else:
        raise ValueError(f"lens must be 'l2norm' or 'pca', got {kind!r}")
    lo, hi = float(raw.min()), float(raw.max())
    span = hi - lo
    # Exactly sklearn's MinMaxScaler arithmetic (scale_, min_), so lens values agree bitwise.
    scale = 1.0 / span if span > 0 else 1.0
    lens = raw * scale + (0.0 - lo * scale)
    return lens, span
