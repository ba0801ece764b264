"""The per-layer Mapper index (:class:`MapperIndex`), the ε rules (:func:`eps_rule`,
:func:`knee_point`) and the one-shot :func:`compute_mapper`.

The index sorts the points by lens and stores, once, a sparse radius-neighbour graph up
to the largest ε and the widest interval the UI allows (built by the kernels of
:mod:`compute.topology.kernels`); a parameter change filters it per interval and runs
DBSCAN as connected components (:meth:`MapperIndex.mapper`). Torch is imported only by
a build given a ``device``.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from compute.topology.clustering import assemble, hdbscan
from compute.topology.cover import compute_lens, cover_bounds
from compute.topology.graph import MapperGraph
from compute.topology.kernels import BuildClock, augmented, knn_sample, radius_graph
from compute.topology.params import (
    AUTO_EPS_FACTOR,
    DEFAULT_MAX_WINDOW,
    KNEE_EPS_FACTOR,
    UI_MAX_EPS_SCALE,
    EpsRule,
    LensKind,
    MapperParams,
    Metric,
    stored_default_params,
)

logger = logging.getLogger(__name__)

#: Threads for a parameter change (intervals are clustered concurrently), and the index
#: size (stored neighbour entries) from which threads pay off.
MAPPER_THREADS = min(4, os.cpu_count() or 1)
PARALLEL_MIN_ENTRIES = 200_000
#: Build threads (blocks of the index run concurrently, one BLAS thread each), and the
#: candidate pairs from which they pay off.
BUILD_THREADS = min(4, os.cpu_count() or 1)
PARALLEL_MIN_PAIRS = 2_000_000


def knee_point(values: np.ndarray) -> float:
    """Knee of an ascending curve (Kneedle: largest gap below the chord, both axes in [0, 1]).

    Args:
        values: float ``[m]`` (sorted here).

    Returns:
        The value at the knee.

    Examples:
        >>> knee_point(np.r_[np.linspace(0, 1, 90), np.linspace(2, 20, 10)]) <= 2.0
        True
    """
    y = np.sort(np.asarray(values, dtype=np.float64))
    if len(y) < 3 or y[-1] == y[0]:
        return float(np.median(y)) if len(y) else 0.0
    x = np.linspace(0.0, 1.0, len(y))
    yn = (y - y[0]) / (y[-1] - y[0])
    return float(y[int(np.argmax(x - yn))])


@dataclass(frozen=True)
class MapperIndex:
    """What every Mapper graph of one layer shares, computed once.

    Points are sorted by lens (``order``); the radius graph is stored in that sorted
    numbering, so every cover interval is a contiguous range of rows and columns.

    Attributes:
        lens: float64 ``[n]`` lens in ``[0, 1]`` (sample order).
        order: int64 ``[n]`` sample rows sorted by lens (stable).
        indptr: int64 ``[n + 1]`` CSR rows (sorted positions).
        indices: int32 ``[nnz]`` neighbour sorted positions, ascending within a row.
        distances: float32 ``[nnz]`` their distances (``≤ max_radius``).
        knn_distances: float32 ``[q, KNN_K]`` distances from ``q`` sampled points to their
            ``1..KNN_K``-th nearest neighbours among all points (for the ε rules).
        lens_kind: the lens.
        metric: the metric.
        max_radius: largest ε the graph answers exactly.
        max_window: widest interval (lens units) the graph answers exactly.
        max_neighbors: per-point cap on stored neighbours (nearest first); 0 = none.
        truncated: points with more than ``max_neighbors`` candidates within
            ``max_radius`` on one side, so some were dropped from that side's list (they
            may still be stored from the other end; DBSCAN may then be approximate).
        seconds: build time.
        timings: seconds of the build's steps (``"blocks (wall)"`` is the wall time of the
            distance blocks; ``gemm``, ``mask``, ``assemble``, ``select`` are summed over
            the build threads; a build on a ``device`` has ``"blocks (device)"`` instead of
            those). Not stored.
    """

    lens: np.ndarray
    order: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    distances: np.ndarray
    knn_distances: np.ndarray
    lens_kind: LensKind
    metric: Metric
    max_radius: float
    max_window: float
    max_neighbors: int
    truncated: int
    seconds: float = field(default=0.0, compare=False)
    timings: dict[str, float] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_points(self) -> int:
        """Points in the sample."""
        return len(self.lens)

    # ---------------------------------------------------------------- ε rules
    def resolve_eps(self, params: MapperParams) -> float:
        """The DBSCAN ε of ``params`` on this data (see :class:`MapperParams`)."""
        return self.eps_base(params) * float(params.eps_scale)

    def eps_base(self, params: MapperParams) -> float:
        """ε before ``eps_scale``: the number itself, or the rule applied to the k-NN sample."""
        if not isinstance(params.eps, str):
            return float(params.eps)
        return eps_rule(self.knn_distances, params.eps, params.min_samples)

    # ---------------------------------------------------------------- build
    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        metric: Metric = "euclidean",
        max_radius: float | None = None,
        *,
        lens: LensKind = "l2norm",
        max_window: float | None = None,
        max_neighbors: int = 64,
        knn_queries: int = 500,
        min_samples: int = 3,
        seed: int = 0,
        eps_for: MapperParams | None = None,
        device: str | None = None,
    ) -> MapperIndex:
        """Build the index (the only O(n²)-ish step; pairs are pruned by lens band).

        Args:
            vectors: float ``[n, D]`` activation vectors (any float dtype; float32 inside).
            metric: ``"euclidean"`` or ``"cosine"``.
            max_radius: largest ε to answer; default ``UI_MAX_EPS_SCALE`` × the ``"auto"`` ε
                for ``min_samples``.
            lens: ``"l2norm"`` or ``"pca"``.
            max_window: lens band (lens units) within which neighbours are searched: wider
                intervals are answered approximately. Default ``DEFAULT_MAX_WINDOW``, the
                default parameters' interval length; build time grows with it.
            max_neighbors: keep, per point, at most this many nearest neighbours among the
                points after it in lens order within the band and as many among those before
                (ties to the lowest sorted position; bounds memory on dense data; 0 = keep
                all: exact DBSCAN within the band and radius). The union of both directions
                is stored. The build's cost barely depends on it: every pair in the band is
                computed and selected either way.
            knn_queries: points sampled (fixed ``seed``) for the k-NN distances of the ε rules.
            min_samples: DBSCAN ``min_samples`` the default ``max_radius`` is derived for.
            seed: seed of the query sample.
            eps_for: if given (and ``max_radius`` is ``None``), ``max_radius`` is these
                parameters' ε: the smallest index that answers exactly them.
            device: a torch device (``"cuda"``, ``"cpu"``, ...): the distance blocks, their
                masks and the per-row selection run there with torch (full fp32, no TF32;
                same candidates, cap and tie rule), only the kept pairs come back. ``None``
                (default): numpy, no torch import. On exactly representable data both
                give the same index; otherwise a GPU's GEMM rounding can move near-ties.

        Returns:
            The index.

        Examples:
            >>> x = np.random.default_rng(0).random((200, 5))
            >>> MapperIndex.build(x, max_neighbors=0).num_points
            200
        """
        start = time.perf_counter()
        x = _checked_vectors(vectors, metric)
        n = len(x)
        clock = BuildClock()
        t = clock.add("checks", start)
        lens_values, raw_range = compute_lens(x, lens)
        t = clock.add("lens", t)
        order = np.argsort(lens_values, kind="stable")
        keys = lens_values[order]
        p = augmented(x, order, metric)
        t = clock.add("sort", t)
        knn = knn_sample(p, metric, knn_queries, seed, device)
        clock.add("knn sample", t)
        max_radius = _index_radius(knn, max_radius, eps_for, min_samples)
        max_window = float(DEFAULT_MAX_WINDOW if max_window is None else max_window)
        ends, band = _band_ends(keys, max_window, max_radius, metric, raw_range)
        threads = BUILD_THREADS if (ends - np.arange(n)).sum() >= PARALLEL_MIN_PAIRS else 1
        indptr, indices, distances, truncated, steps = radius_graph(
            p, ends, max_radius, metric, max_neighbors, threads, device
        )
        del p  # the augmented copy of the points: free it before the index is assembled
        clock.steps.update(steps)
        seconds = time.perf_counter() - start
        logger.info(
            "Mapper index: %d points, %d edges (%.1f per point), band %.3f, %d truncated, %.2f s",
            n,
            len(indices),
            len(indices) / n,
            band,
            truncated,
            seconds,
        )
        return cls(
            lens=lens_values,
            order=order.astype(np.int64),
            indptr=indptr,
            indices=indices,
            distances=distances,
            knn_distances=knn,
            lens_kind=lens,
            metric=metric,
            max_radius=max_radius,
            max_window=max_window,
            max_neighbors=int(max_neighbors),
            truncated=int(truncated),
            seconds=seconds,
            timings=clock.steps,
        )

    # ---------------------------------------------------------------- serialisation
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays (no pickle needed), for ``np.save`` / memory-mapped loading.

        Examples:
            >>> x = np.random.default_rng(0).random((100, 3))
            >>> index = MapperIndex.build(x)
            >>> MapperIndex.from_arrays(index.to_arrays()) == index
            True
        """
        return {
            "lens": self.lens,
            "order": self.order,
            "indptr": self.indptr,
            "indices": self.indices,
            "distances": self.distances,
            "knn_distances": self.knn_distances,
            "lens_kind": np.array(self.lens_kind),
            "metric": np.array(self.metric),
            "limits": np.array(
                [self.max_radius, self.max_window, self.max_neighbors, self.truncated],
                dtype=np.float64,
            ),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> MapperIndex:
        """Rebuild from :meth:`to_arrays` output (arrays may be memory-mapped; not copied)."""
        limits = np.asarray(arrays["limits"], dtype=np.float64)
        return cls(
            lens=arrays["lens"],
            order=arrays["order"],
            indptr=arrays["indptr"],
            indices=arrays["indices"],
            distances=arrays["distances"],
            knn_distances=arrays["knn_distances"],
            lens_kind=str(arrays["lens_kind"]),  # type: ignore[arg-type]
            metric=str(arrays["metric"]),  # type: ignore[arg-type]
            max_radius=float(limits[0]),
            max_window=float(limits[1]),
            max_neighbors=int(limits[2]),
            truncated=int(limits[3]),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MapperIndex):
            return NotImplemented
        a, b = self.to_arrays(), other.to_arrays()
        return all(np.array_equal(a[k], b[k]) for k in a)

    __hash__ = None  # type: ignore[assignment]

    # ---------------------------------------------------------------- queries
    def approximation(self, params: MapperParams) -> str | None:
        """Why the index's answer for ``params`` is approximate, or ``None`` if exact.

        Exact means equal to sklearn DBSCAN run on each interval (KeplerMapper's result):
        no neighbour list was capped, the interval fits the lens band and ε the radius.
        """
        if params.lens != self.lens_kind or params.metric != self.metric:
            return (
                f"index is for lens={self.lens_kind!r}, metric={self.metric!r}, "
                f"not {params.lens!r}, {params.metric!r}"
            )
        if params.clusterer != "dbscan":
            return None
        reasons = []
        if self.truncated:
            reasons.append(f"{self.truncated} points kept only {self.max_neighbors} neighbours")
        if params.interval_length > self.max_window * (1 + 1e-9):
            reasons.append(
                f"interval length {params.interval_length:.4f} exceeds the index's "
                f"{self.max_window:.4f}"
            )
        eps = self.resolve_eps(params)
        if eps > self.max_radius * (1 + 1e-6):
            reasons.append(f"eps {eps:.4g} exceeds the index's max_radius {self.max_radius:.4g}")
        return "; ".join(reasons) or None

    def exact_pairs(self, params: MapperParams) -> int:
        """Point pairs an exact recomputation for ``params`` compares (and may store).

        The fitting uncapped index holds every pair closer in lens than one interval, so
        this bounds its build time (one distance each) and memory (two entries each).

        Examples:
            >>> x = np.random.default_rng(0).random((100, 3))
            >>> MapperIndex.build(x).exact_pairs(MapperParams(intervals=2, overlap=0.9)) > 0
            True
        """
        keys = np.asarray(self.lens)[np.asarray(self.order)]
        ends = np.searchsorted(keys, keys + params.interval_length, side="right")
        return int((ends - np.arange(len(keys)) - 1).sum())

    def mapper(
        self, params: MapperParams, vectors: np.ndarray | None = None, exact: bool = False
    ) -> MapperGraph:
        """The Mapper graph for ``params`` (no distances computed: about a second or less).

        Beyond the index's limits (see :meth:`approximation`) the graph is approximate:
        DBSCAN sees only the stored neighbours (each point's nearest within the lens band
        and ``max_radius``); ``MapperGraph.exact`` says which.

        Args:
            params: parameters.
            vectors: float ``[n, D]``; needed for HDBSCAN, for another lens or metric than
                the index's, and for ``exact=True`` (then a fitting uncapped index is built).
            exact: build a fitting exact index when this one would be approximate.

        Returns:
            The :class:`MapperGraph`.

        Raises:
            ValueError: ``vectors`` needed but not given.
        """
        start = time.perf_counter()
        problem = self.approximation(params)
        mismatch = params.lens != self.lens_kind or params.metric != self.metric
        if mismatch or (exact and problem is not None):
            if vectors is None:
                raise ValueError(f"MapperIndex needs the vectors for these parameters: {problem}")
            logger.info("Mapper: %s; building a fitting index", problem)
            index = MapperIndex.build(
                vectors,
                params.metric,
                None,
                lens=params.lens,
                max_window=params.interval_length,
                max_neighbors=0,
                eps_for=params,
            )
            return index.mapper(params, vectors)
        if problem is not None:
            logger.info("Mapper: approximate graph: %s", problem)
        bounds = cover_bounds(params.intervals, params.overlap, params.cover)
        keys = self.lens[self.order]
        starts = np.searchsorted(keys, bounds[:, 0], side="left")
        stops = np.searchsorted(keys, bounds[:, 1], side="right")
        eps = self.resolve_eps(params) if params.clusterer == "dbscan" else float("nan")
        x = None
        if params.clusterer == "hdbscan":
            if vectors is None:
                raise ValueError("HDBSCAN needs the vectors: pass vectors=")
            x = np.asarray(vectors, dtype=np.float32)
        node_members: list[np.ndarray] = []
        node_interval: list[int] = []
        node_cluster: list[int] = []
        minimum = params.min_samples if params.clusterer == "dbscan" else params.min_cluster_size

        def cluster(k: int) -> list[tuple[int, int, np.ndarray]]:
            """``(interval, cluster, members)`` of interval ``k``'s clusters."""
            s, e = int(starts[k]), int(stops[k])
            # KeplerMapper skips intervals with fewer points than the clusterer's minimum.
            if e - s < max(minimum, 1):
                return []
            rows = self.order[s:e]
            if params.clusterer == "dbscan":
                labels = self._dbscan(s, e, eps, params.min_samples, rows)
            else:
                labels = hdbscan(x[rows], params)  # type: ignore[index]
            if labels.max(initial=-1) < 0:
                return []
            # Group by label; a stable sort keeps members ascending by sample row.
            by_row = np.argsort(rows, kind="stable")
            rows_sorted, labels_sorted = rows[by_row], labels[by_row]
            clustered = labels_sorted >= 0
            by_label = np.argsort(labels_sorted[clustered], kind="stable")
            grouped = rows_sorted[clustered][by_label]
            found, first = np.unique(labels_sorted[clustered][by_label], return_index=True)
            return [
                (k, c, members)
                for c, members in zip(found.tolist(), np.split(grouped, first[1:]), strict=True)
            ]

        # Intervals are independent; numpy and scipy release the GIL in the heavy steps, so
        # two threads overlap them (results are collected in interval order: deterministic).
        work = range(len(starts))
        if params.clusterer == "dbscan":
            self._upper()  # once, before any thread needs it
        if params.clusterer == "dbscan" and int(self.indptr[-1]) > PARALLEL_MIN_ENTRIES:
            with ThreadPoolExecutor(max_workers=MAPPER_THREADS) as pool:
                found_all = list(pool.map(cluster, work))
        else:
            found_all = [cluster(k) for k in work]
        for found_k in found_all:
            for k, c, members in found_k:
                node_members.append(members)
                node_interval.append(k)
                node_cluster.append(c)
        counts = (stops - starts).astype(np.int64)
        return assemble(
            problem is None,
            self.num_points,
            node_members,
            node_interval,
            node_cluster,
            bounds,
            counts,
            eps,
            params,
            time.perf_counter() - start,
        )

    def _upper(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The graph's entries above the diagonal (each pair once), as a CSR; built once.

        Returns:
            ``(indptr int64 [n+1], indices int32, distances float32)``.
        """
        cached = self.__dict__.get("_upper_cache")
        if cached is not None:
            return cached
        indptr = np.asarray(self.indptr)
        indices = np.asarray(self.indices)
        n = len(indptr) - 1
        row = np.repeat(np.arange(n, dtype=np.int32), np.diff(indptr))
        above = indices > row
        counts = np.bincount(row[above], minlength=n)
        up_indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=up_indptr[1:])
        cached = (
            up_indptr,
            indices[above].astype(np.int32, copy=False),
            np.asarray(self.distances)[above],
        )
        object.__setattr__(self, "_upper_cache", cached)  # a cache on a frozen dataclass
        return cached

    def _dbscan(self, s: int, e: int, eps: float, min_samples: int, rows: np.ndarray) -> np.ndarray:
        """sklearn-identical DBSCAN labels of sorted positions ``s..e`` (``-1`` = noise).

        Clusters are numbered by their smallest core sample row, and a border point joins
        the lowest-numbered cluster among its core neighbours: exactly the outcome of
        sklearn's ``dbscan_inner`` run in sample-row order, as KeplerMapper does.
        """
        m = e - s
        up_indptr, up_cols, up_dist = self._upper()
        a, b = int(up_indptr[s]), int(up_indptr[e])
        # Each pair once (column > row), so half the entries of the symmetric graph.
        # int32 throughout: half the memory traffic, and what scipy's csgraph wants.
        row = np.repeat(np.arange(m, dtype=np.int32), np.diff(up_indptr[s : e + 1]))
        col = up_cols[a:b] - np.int32(s)  # > row >= 0 already
        keep = col < np.int32(m)
        if eps < self.max_radius:  # every stored distance is <= max_radius
            keep &= up_dist[a:b] <= np.float32(eps)
        if not keep.all():
            row, col = row[keep], col[keep]
        per_row = np.bincount(row, minlength=m)
        degree = per_row + np.bincount(col, minlength=m)
        degree += 1  # the point itself counts (sklearn)
        core = degree >= min_samples
        labels = np.full(m, -1, dtype=np.int64)
        if not core.any():
            return labels
        every_core = bool(core.all())  # wide ε: no gathers, no border points
        if every_core:
            cc_col, counts = col, per_row
        else:
            core_col = core[col]
            core_row = core[row]
            cc = core_row & core_col
            cc_col = col[cc]
            counts = np.bincount(row[cc], minlength=m)
        # Entries are in row order: build the CSR directly, no sort; int32 indptr and
        # indices so scipy converts nothing. One direction per edge: weak components.
        indptr = np.zeros(m + 1, dtype=np.int32 if len(cc_col) < 2**31 else np.int64)
        np.cumsum(counts, out=indptr[1:])
        graph = sp.csr_array(
            (np.ones(len(cc_col), dtype=np.int8), cc_col.astype(indptr.dtype, copy=False), indptr),
            shape=(m, m),
            copy=False,
        )
        _, comp = connected_components(graph, directed=True, connection="weak")
        core_idx = np.flatnonzero(core)
        core_comp = comp[core_idx]
        # Number components by their smallest core sample row (sklearn's visiting order).
        by = np.lexsort((rows[core_idx], core_comp))
        used, first_at = np.unique(core_comp[by], return_index=True)
        first_row = rows[core_idx][by][first_at]
        rank = np.empty(m, dtype=np.int64)
        rank[used[np.argsort(first_row, kind="stable")]] = np.arange(len(used))
        labels[core_idx] = rank[core_comp]
        # Border points: non-core with a core neighbour take the smallest neighbouring label.
        if not every_core:
            row_border = core_col & ~core_row
            col_border = core_row & ~core_col
            if row_border.any() or col_border.any():
                b_row = np.concatenate([row[row_border], col[col_border]])
                b_label = np.concatenate([labels[col[row_border]], labels[row[col_border]]])
                by = np.lexsort((b_label, b_row))
                border, at = np.unique(b_row[by], return_index=True)
                labels[border] = b_label[by][at]
        return labels


def default_graph_params(settings: dict[str, Any] | None, index: MapperIndex) -> MapperParams:
    """The parameters of a layer's default Mapper graph: the atlas's stored defaults
    (``parameters.mapper``, every field) on its stored index's lens and metric.

    The one definition both halves use: the graph the dashboard draws with no Mapper
    parameter in its URL, and the graph ``compute featurevis --mapper-only`` renders node
    inversions for (docs/topology.md).
    """
    return replace(stored_default_params(settings), lens=index.lens_kind, metric=index.metric)


def eps_rule(knn: np.ndarray, rule: EpsRule, min_samples: int) -> float:
    """ε of a rule from sampled k-NN distances.

    Args:
        knn: float ``[q, K]`` distances to the 1st..K-th neighbours.
        rule: ``"auto"`` or ``"knee"``.
        min_samples: DBSCAN ``min_samples``; the ``(min_samples-1)``-th neighbour distance
            (clipped to ``[1, K]``) decides whether a point is core.

    Returns:
        A positive ε. Zero distances (duplicate vectors, e.g. all-zero ReLU outputs) are
        ignored so ε stays positive.
    """
    k = int(np.clip(min_samples - 1, 1, knn.shape[1]))
    d = np.asarray(knn[:, k - 1], dtype=np.float64)
    d = d[np.isfinite(d) & (d > 0)]
    if not len(d):
        return 1e-6
    if rule == "auto":
        return AUTO_EPS_FACTOR * float(np.median(d))
    if rule == "knee":
        return KNEE_EPS_FACTOR * knee_point(d)
    raise ValueError(f"eps rule must be 'auto' or 'knee', got {rule!r}")


def _checked_vectors(vectors: np.ndarray, metric: str) -> np.ndarray:
    """The points of :meth:`MapperIndex.build`, checked.

    Args:
        vectors: ``[n, D]`` of any float dtype.
        metric: the metric asked for.

    Returns:
        ``vectors`` as a C-contiguous float32 array.

    Raises:
        ValueError: fewer than 2 points, not 2-D, NaN or infinite values, or an unknown
            metric.
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"vectors must be [n >= 2, D], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or infinite values")
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    return x


def _index_radius(
    knn: np.ndarray, max_radius: float | None, eps_for: MapperParams | None, min_samples: int
) -> float:
    """The largest ε an index answers exactly (:meth:`MapperIndex.build`'s rule).

    Args:
        knn: float ``[q, K]`` sampled k-NN distances.
        max_radius: the radius asked for, if any: it wins.
        eps_for: else these parameters' own ε (the smallest index that answers them).
        min_samples: else ``UI_MAX_EPS_SCALE`` × the ``"auto"`` ε for this ``min_samples``
            (the largest ε the UI's slider reaches).

    Returns:
        The radius.
    """
    if max_radius is not None:
        return float(max_radius)
    if eps_for is not None:
        base = (
            eps_rule(knn, eps_for.eps, eps_for.min_samples)
            if isinstance(eps_for.eps, str)
            else float(eps_for.eps)
        )
        return float(base * float(eps_for.eps_scale))
    return float(UI_MAX_EPS_SCALE * eps_rule(knn, "auto", min_samples))


def _band_ends(
    keys: np.ndarray, max_window: float, max_radius: float, metric: Metric, raw_range: float
) -> tuple[np.ndarray, float]:
    """The lens band within which neighbours are searched, and each point's candidates.

    Args:
        keys: float64 ``[n]`` lens values in sorted order.
        max_window: widest cover interval (lens units) to answer exactly.
        max_radius: largest ε to answer exactly.
        metric: the metric.
        raw_range: range of the unscaled lens (:func:`compute_lens`).

    Returns:
        ``(ends, band)``: int ``[n]``, the candidates of sorted point ``i`` are ``i < j <
        ends[i]``; and the band (lens units).
    """
    band = max_window
    if metric == "euclidean" and raw_range > 0:
        # |lens(a) - lens(b)| <= |a - b| / raw_range: farther-apart lens values can't be
        # within max_radius, whatever the cover.
        band = min(band, max_radius / raw_range)
    # A hair wider than the band, so that rounding in the cover bounds can never leave
    # out a pair of one interval of length max_window (a few extra pairs at most).
    band = band * (1 + 1e-9) + 1e-12
    ends = np.searchsorted(keys, keys + band, side="right")
    np.maximum(ends, np.arange(1, len(keys) + 1), out=ends)
    return ends, band


def compute_mapper(
    vectors: np.ndarray, params: MapperParams = MapperParams(), max_neighbors: int = 0
) -> MapperGraph:
    """One Mapper graph from scratch (builds a minimal index for exactly ``params``).

    Args:
        vectors: float ``[n, D]``.
        params: parameters.
        max_neighbors: neighbour cap of the temporary index (0 = exact DBSCAN).

    Returns:
        The :class:`MapperGraph`.

    Examples:
        >>> x = np.random.default_rng(1).random((400, 6))
        >>> compute_mapper(x, MapperParams(intervals=8, overlap=0.25)).coverage > 0
        True
    """
    x = np.asarray(vectors)
    if params.clusterer == "hdbscan":
        # HDBSCAN works on the vectors; the index only needs the lens.
        index = MapperIndex.build(
            x, params.metric, 0.0, lens=params.lens, max_window=0.0, knn_queries=2
        )
    else:
        index = MapperIndex.build(
            x,
            params.metric,
            None,
            lens=params.lens,
            max_window=params.interval_length,
            max_neighbors=max_neighbors,
            eps_for=params,
        )
    return index.mapper(params, x)
