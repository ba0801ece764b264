"""Mapper graphs of activation vectors (TopoAct), torch-free: numpy, scipy, scikit-learn.

Torch is imported only by an index build given a ``device`` (``MapperIndex.build``), so
the dashboard, which reads indexes, never imports it.

Pipeline: a 1-D lens (L2 norm or first principal component, scaled to ``[0, 1]``) → a cover
of ``intervals`` overlapping intervals → clustering of each interval's points (DBSCAN or
HDBSCAN) → one node per cluster, one edge per pair of nodes sharing members.

The expensive part, the neighbour search, is shared across parameter settings:
:class:`MapperIndex` sorts the points by lens and stores, once, a sparse radius-neighbour
graph up to the largest ε and the widest interval the UI allows. A cover of a sorted 1-D
lens is a set of contiguous row ranges, so a new ``(intervals, overlap, ε)`` only filters
that graph per interval and runs DBSCAN as connected components (milliseconds per interval).

DBSCAN here reproduces ``sklearn.cluster.DBSCAN`` exactly (same core rule ``|N_ε(x)| ≥
min_samples`` counting the point itself, ``≤ ε``, same cluster numbering and border
assignment), so with ``cover="kmapper"`` the nodes equal KeplerMapper's.

Examples:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((500, 8)).astype(np.float32)
    >>> index = MapperIndex.build(x)                         # once per layer
    >>> graph = index.mapper(MapperParams(intervals=10, overlap=0.3))
    >>> graph.num_nodes > 0
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

logger = logging.getLogger(__name__)

LensKind = Literal["l2norm", "pca"]
Metric = Literal["euclidean", "cosine"]
ClustererKind = Literal["dbscan", "hdbscan"]
CoverKind = Literal["uniform", "kmapper"]
EpsRule = Literal["auto", "knee"]

#: ``eps="auto"``: this factor × the median distance to the (min_samples-1)-th neighbour.
AUTO_EPS_FACTOR = 1.2
#: ``eps="knee"``: this factor × the knee of the sorted k-NN distances (TopoBERT used 0.5-0.75).
KNEE_EPS_FACTOR = 0.75
#: Slider limits of the dashboard (issue 4). The default index answers ε up to
#: ``UI_MAX_EPS_SCALE`` × the "auto" ε within its radius.
UI_MIN_INTERVALS, UI_MAX_INTERVALS = 10, 100
UI_MIN_OVERLAP, UI_MAX_OVERLAP = 0.1, 0.6
UI_MIN_EPS_SCALE, UI_MAX_EPS_SCALE = 0.5, 2.0
#: Default lens band of the index: the interval length of the default parameters (70
#: intervals, 30% overlap, either cover formula). Wider intervals are answered from the
#: neighbours inside this band (approximate); a wider band costs build time in proportion.
DEFAULT_MAX_WINDOW = 1.0 / (70 * (1 - 0.3))
#: Threads for a parameter change (intervals are clustered concurrently), and the index
#: size (stored neighbour entries) from which threads pay off.
MAPPER_THREADS = min(4, os.cpu_count() or 1)
PARALLEL_MIN_ENTRIES = 200_000
#: Sorted rows per distance block of the index build. A block computes its rows against
#: every point up to its last row's band end, so smaller blocks waste fewer pairs (the
#: triangle beyond each row's own band); below ~256 the GEMM loses efficiency.
ROW_BLOCK = 256
#: Build threads (blocks of the index run concurrently, one BLAS thread each), and the
#: candidate pairs from which they pay off.
BUILD_THREADS = min(4, os.cpu_count() or 1)
PARALLEL_MIN_PAIRS = 2_000_000
#: float32 elements of one distance block at most (wide bands get fewer rows per block).
BLOCK_BUDGET = 1 << 23
#: float32 elements of earlier blocks kept for the earlier-side selection (beyond this,
#: those pieces are recomputed by GEMM: bounded memory for very wide bands).
RETAIN_BUDGET = 1 << 25
#: Sorted rows per block, and float32 elements per block side at most, of the torch
#: device path (``MapperIndex.build(device=...)``): a GPU wants large GEMMs, and every
#: pair outside a row's candidates is masked, so the graph does not depend on them.
DEVICE_ROW_BLOCK = 4096
DEVICE_BLOCK_BUDGET = 1 << 26
#: Largest k of the k-NN distances kept for ε rules (min_samples up to KNN_K + 1).
KNN_K = 8


@dataclass(frozen=True)
class MapperParams:
    """Parameters of one Mapper graph (validated on construction).

    Attributes:
        intervals: number of cover intervals, 2-200.
        overlap: fraction of an interval shared with its neighbour, 0.05-0.9.
        lens: ``"l2norm"`` (TopoAct) or ``"pca"`` (first principal component); both scaled
            to ``[0, 1]``. Fixed per :class:`MapperIndex`.
        metric: ``"euclidean"`` or ``"cosine"`` (cosine distance ``1 - cos``). Fixed per index.
        clusterer: ``"dbscan"`` or ``"hdbscan"`` (``sklearn.cluster.HDBSCAN``; needs vectors).
        eps: DBSCAN radius: a positive number, ``"auto"`` (``AUTO_EPS_FACTOR`` × median
            distance to the ``(min_samples-1)``-th neighbour, the default: covers most
            points) or ``"knee"`` (``KNEE_EPS_FACTOR`` × knee of the sorted k-NN distances,
            TopoAct's "adaptive" ε).
        eps_scale: multiplier on the rule's ε (the UI's 0.5×-2× slider), 0.05-10.
        min_samples: DBSCAN core threshold counting the point itself, 1-1000 (also HDBSCAN's).
        min_cluster_size: HDBSCAN's minimum cluster size, ≥ 2.
        cover: ``"uniform"`` (intervals tile exactly ``[0, 1]``) or ``"kmapper"``
            (KeplerMapper's ``Cover``: centres ``linspace(R/2n, 1-R/2n)``, radius
            ``1/(2n(1-p))``, so the end intervals reach past the data).

    Examples:
        >>> MapperParams(intervals=70, overlap=0.3).eps
        'auto'
        >>> MapperParams(intervals=1)
        Traceback (most recent call last):
        ...
        ValueError: MapperParams.intervals must be an integer in [2, 200], got 1
    """

    intervals: int = 70
    overlap: float = 0.3
    lens: LensKind = "l2norm"
    metric: Metric = "euclidean"
    clusterer: ClustererKind = "dbscan"
    eps: float | EpsRule = "auto"
    eps_scale: float = 1.0
    min_samples: int = 3
    min_cluster_size: int = 5
    cover: CoverKind = "uniform"

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"MapperParams.{name} must be {rule}, got {getattr(self, name)!r}")

        if not _is_int(self.intervals) or not 2 <= self.intervals <= 200:
            raise bad("intervals", "an integer in [2, 200]")
        if not _is_real(self.overlap) or not 0.05 <= self.overlap <= 0.9:
            raise bad("overlap", "a number in [0.05, 0.9]")
        if self.lens not in ("l2norm", "pca"):
            raise bad("lens", "'l2norm' or 'pca'")
        if self.metric not in ("euclidean", "cosine"):
            raise bad("metric", "'euclidean' or 'cosine'")
        if self.clusterer not in ("dbscan", "hdbscan"):
            raise bad("clusterer", "'dbscan' or 'hdbscan'")
        if isinstance(self.eps, str):
            if self.eps not in ("auto", "knee"):
                raise bad("eps", "a positive number, 'auto' or 'knee'")
        elif not _is_real(self.eps) or not 0 < self.eps < np.inf:
            raise bad("eps", "a positive number, 'auto' or 'knee'")
        if not _is_real(self.eps_scale) or not 0.05 <= self.eps_scale <= 10:
            raise bad("eps_scale", "a number in [0.05, 10]")
        if not _is_int(self.min_samples) or not 1 <= self.min_samples <= 1000:
            raise bad("min_samples", "an integer in [1, 1000]")
        if not _is_int(self.min_cluster_size) or self.min_cluster_size < 2:
            raise bad("min_cluster_size", "an integer >= 2")
        if self.cover not in ("uniform", "kmapper"):
            raise bad("cover", "'uniform' or 'kmapper'")

    @property
    def interval_length(self) -> float:
        """Length of one interval on the ``[0, 1]`` lens."""
        return interval_length(self.intervals, self.overlap, self.cover)


#: Samples up to this size are clustered exactly for any parameters (a fitting uncapped
#: index built on the fly: well under a second), so their graphs never depend on the
#: stored index's neighbour cap or band.
EXACT_POINTS = 5_000
#: Samples at least this large get TopoAct's cover (70 intervals, 30 % overlap, "auto" ε).
LARGE_SAMPLE = 20_000
#: Smaller samples: about this many points per interval (at 50 % overlap an interval holds
#: about 2 n / intervals points), 50 % overlap and 1.5 × the "auto" ε (docs/topology.md §2).
POINTS_PER_INTERVAL = 120


def default_params(num_points: int) -> MapperParams:
    """Default Mapper parameters for a sample of ``num_points`` vectors (a readable graph).

    TopoAct's 70 intervals at 30 % overlap suit its ~300K vectors: each interval holds
    thousands. On a small sample (the demo's 1,437 digits) they leave ~20 points per
    interval, where density clustering finds mostly noise and fragments (a third of the
    points covered, dozens of components). Below :data:`LARGE_SAMPLE` points the default is
    ``n / POINTS_PER_INTERVAL`` intervals (10-70), 50 % overlap and ε × 1.5: within a
    narrow lens slice a point has fewer near neighbours than in the whole sample, on which
    the "auto" ε is measured.

    Args:
        num_points: points in the sample.

    Returns:
        The parameters (DBSCAN, L2-norm lens, Euclidean, uniform cover).

    Examples:
        >>> default_params(100_000).intervals, default_params(1_437).intervals
        (70, 12)
    """
    if num_points >= LARGE_SAMPLE:
        return MapperParams()
    intervals = int(np.clip(round(num_points / POINTS_PER_INTERVAL), 10, 70))
    return MapperParams(intervals=intervals, overlap=0.5, eps_scale=1.5)


def stored_default_params(settings: dict | None) -> MapperParams:
    """The default parameters an atlas records (``parameters.mapper``), validated.

    ``settings["defaults"]`` holds the :class:`MapperParams` fields the build used; missing
    or invalid ones fall back to :func:`default_params` of ``settings["num_points"]``.

    Examples:
        >>> stored_default_params({"num_points": 1437}).intervals
        12
        >>> stored_default_params({"defaults": {"intervals": 30, "overlap": 0.4}}).intervals
        30
    """
    settings = settings or {}
    stored = settings.get("defaults") or {}
    try:
        points = int(settings.get("num_points") or LARGE_SAMPLE)
    except (TypeError, ValueError):
        points = LARGE_SAMPLE
    fallback = default_params(max(points, 1))
    try:
        return MapperParams(
            intervals=int(stored.get("intervals", fallback.intervals)),
            overlap=float(stored.get("overlap", fallback.overlap)),
            lens=str(settings.get("lens", fallback.lens)),  # type: ignore[arg-type]
            metric=str(settings.get("metric", fallback.metric)),  # type: ignore[arg-type]
            eps_scale=float(stored.get("eps_scale", fallback.eps_scale)),
            min_samples=int(stored.get("min_samples", fallback.min_samples)),
        )
    except (TypeError, ValueError):
        return fallback


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def interval_length(intervals: int, overlap: float, cover: CoverKind = "uniform") -> float:
    """Length of one cover interval on a ``[0, 1]`` lens.

    Args:
        intervals: number of intervals ``n``.
        overlap: overlap fraction ``p``.
        cover: ``"uniform"``: ``1 / (n - (n-1) p)``; ``"kmapper"``: ``1 / (n (1-p))``.

    Returns:
        The length (a float).

    Examples:
        >>> round(interval_length(10, 0.5, "kmapper"), 3)
        0.2
    """
    if cover == "kmapper":
        return 1.0 / (intervals * (1.0 - overlap))
    return 1.0 / (intervals - (intervals - 1) * overlap)


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


@dataclass(frozen=True)
class MapperGraph:
    """One Mapper graph. Node ``k``'s members are ``members[indptr[k]:indptr[k+1]]``.

    Attributes:
        num_points: points in the sample (members index ``0..num_points-1``).
        node_indptr: int64 ``[nodes + 1]``.
        node_members: int64 ``[sum of node sizes]``, row indices into the sample, ascending
            within a node.
        node_interval: int32 ``[nodes]`` cover interval of the node.
        node_cluster: int32 ``[nodes]`` cluster number inside the interval (sklearn order).
        edge_source: int32 ``[edges]`` (``source < target``).
        edge_target: int32 ``[edges]``.
        edge_intersection: int64 ``[edges]`` shared members.
        edge_jaccard: float32 ``[edges]`` ``|a∩b| / |a∪b|``.
        interval_bounds: float64 ``[intervals, 2]`` on the ``[0, 1]`` lens.
        interval_counts: int64 ``[intervals]`` points in each interval.
        coverage: share of points in at least one node.
        eps: the resolved DBSCAN ε (``nan`` for HDBSCAN).
        params: the parameters.
        exact: ``True`` if equal to sklearn DBSCAN on every interval (KeplerMapper's nodes);
            ``False`` if the index's neighbour cap or limits made it approximate.
        seconds: wall time of the computation.
    """

    num_points: int
    node_indptr: np.ndarray
    node_members: np.ndarray
    node_interval: np.ndarray
    node_cluster: np.ndarray
    edge_source: np.ndarray
    edge_target: np.ndarray
    edge_intersection: np.ndarray
    edge_jaccard: np.ndarray
    interval_bounds: np.ndarray
    interval_counts: np.ndarray
    coverage: float
    eps: float
    params: MapperParams
    exact: bool = True
    seconds: float = field(default=0.0, compare=False)

    @property
    def num_nodes(self) -> int:
        """Number of nodes."""
        return len(self.node_interval)

    @property
    def num_edges(self) -> int:
        """Number of edges."""
        return len(self.edge_source)

    @property
    def node_sizes(self) -> np.ndarray:
        """int64 ``[nodes]`` member counts."""
        return np.diff(self.node_indptr)

    def members(self, node: int) -> np.ndarray:
        """int64 members of ``node`` (sample rows, ascending)."""
        return self.node_members[self.node_indptr[node] : self.node_indptr[node + 1]]

    def node_key(self, node: int) -> str:
        """A name of ``node`` from its members alone (16 hex digits of a BLAKE2b hash).

        Two graphs that share a node (same members) give it the same key, whatever its
        number; the atlas names per-node images by it (``mapper/inversions``).

        Examples:
            >>> x = np.random.default_rng(0).random((300, 4))
            >>> g = MapperIndex.build(x).mapper(MapperParams(intervals=5))
            >>> len(g.node_key(0))
            16
        """
        members = np.ascontiguousarray(self.members(node), dtype="<i8")
        return hashlib.blake2b(members.tobytes(), digest_size=8).hexdigest()

    def kmapper_ids(self) -> list[str]:
        """Node ids as KeplerMapper names them, ``cube{i}_cluster{j}``.

        KeplerMapper numbers only the non-empty intervals, so ``i`` is the rank of the node's
        interval among intervals holding at least one point.
        """
        rank = np.cumsum(self.interval_counts > 0) - 1
        return [
            f"cube{rank[i]}_cluster{c}"
            for i, c in zip(self.node_interval.tolist(), self.node_cluster.tolist(), strict=True)
        ]

    def adjacency(self) -> sp.csr_array:
        """Symmetric boolean ``csr_array [nodes, nodes]`` of the edges."""
        n = self.num_nodes
        rows = np.concatenate([self.edge_source, self.edge_target])
        cols = np.concatenate([self.edge_target, self.edge_source])
        return sp.csr_array((np.ones(len(rows), dtype=bool), (rows, cols)), shape=(n, n))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The graph as plain arrays (atlas-ready; parameters are not included)."""
        return {
            "node_indptr": self.node_indptr,
            "node_members": self.node_members,
            "node_interval": self.node_interval,
            "node_cluster": self.node_cluster,
            "edge_source": self.edge_source,
            "edge_target": self.edge_target,
            "edge_intersection": self.edge_intersection,
            "edge_jaccard": self.edge_jaccard,
            "interval_bounds": self.interval_bounds,
            "interval_counts": self.interval_counts,
        }


@dataclass(frozen=True)
class NodeStats:
    """Per-node summaries for the views.

    Attributes:
        count: int64 ``[nodes]`` members.
        class_counts: int64 ``[nodes, classes]`` members of each class.
        mean_norm: float32 ``[nodes]`` mean L2 norm of the members' vectors.
        dominant_class: int64 ``[nodes]`` most frequent class (lowest index on ties).
        dominant_share: float32 ``[nodes]`` its share of the node.
    """

    count: np.ndarray
    class_counts: np.ndarray
    mean_norm: np.ndarray
    dominant_class: np.ndarray
    dominant_share: np.ndarray


def node_statistics(
    graph: MapperGraph, labels: np.ndarray, norms: np.ndarray, num_classes: int | None = None
) -> NodeStats:
    """Class composition, member count and mean L2 norm of every node (vectorised).

    Args:
        graph: a Mapper graph.
        labels: int ``[num_points]`` class of each sample row.
        norms: float ``[num_points]`` L2 norm of each vector (``np.linalg.norm(v, axis=1)``).
        num_classes: width of ``class_counts`` (default ``labels.max() + 1``).

    Returns:
        :class:`NodeStats`.

    Examples:
        >>> x = np.random.default_rng(0).random((300, 4))
        >>> g = MapperIndex.build(x).mapper(MapperParams(intervals=5))
        >>> s = node_statistics(g, np.zeros(300, int), np.linalg.norm(x, axis=1))
        >>> bool((s.dominant_share == 1).all())
        True
    """
    labels = np.asarray(labels, dtype=np.int64)
    classes = int(
        num_classes if num_classes is not None else (labels.max() + 1 if len(labels) else 0)
    )
    n_nodes = graph.num_nodes
    count = graph.node_sizes.astype(np.int64)
    node_of = np.repeat(np.arange(n_nodes), count)
    member_labels = labels[graph.node_members]
    class_counts = np.zeros((n_nodes, classes), dtype=np.int64)
    np.add.at(class_counts, (node_of, member_labels), 1)
    sums = np.bincount(
        node_of, weights=np.asarray(norms, np.float64)[graph.node_members], minlength=n_nodes
    )
    mean_norm = (sums / np.maximum(count, 1)).astype(np.float32)
    if classes:
        dominant = class_counts.argmax(axis=1)
        share = class_counts[np.arange(n_nodes), dominant] / np.maximum(count, 1)
    else:
        dominant = np.zeros(n_nodes, dtype=np.int64)
        share = np.zeros(n_nodes)
    return NodeStats(
        count, class_counts, mean_norm, dominant.astype(np.int64), share.astype(np.float32)
    )


# --------------------------------------------------------------------------- the index


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
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"vectors must be [n >= 2, D], got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("vectors contain NaN or infinite values")
        if metric not in ("euclidean", "cosine"):
            raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
        n = len(x)
        clock = _BuildClock()
        t = clock.add("checks", start)
        lens_values, raw_range = compute_lens(x, lens)
        t = clock.add("lens", t)
        order = np.argsort(lens_values, kind="stable")
        keys = lens_values[order]
        p = _augmented(x, order, metric)
        t = clock.add("sort", t)
        knn = _knn_sample(p, metric, knn_queries, seed, device)
        t = clock.add("knn sample", t)
        if max_radius is None and eps_for is not None:
            base = (
                eps_rule(knn, eps_for.eps, eps_for.min_samples)
                if isinstance(eps_for.eps, str)
                else float(eps_for.eps)
            )
            max_radius = base * float(eps_for.eps_scale)
        elif max_radius is None:
            max_radius = UI_MAX_EPS_SCALE * eps_rule(knn, "auto", min_samples)
        if max_window is None:
            max_window = DEFAULT_MAX_WINDOW
        band = float(max_window)
        if metric == "euclidean" and raw_range > 0:
            # |lens(a) - lens(b)| <= |a - b| / raw_range: farther-apart lens values can't be
            # within max_radius, whatever the cover.
            band = min(band, float(max_radius) / raw_range)
        # A hair wider than the band, so that rounding in the cover bounds can never leave
        # out a pair of one interval of length max_window (a few extra pairs at most).
        band = band * (1 + 1e-9) + 1e-12
        ends = np.searchsorted(keys, keys + band, side="right")
        np.maximum(ends, np.arange(1, n + 1), out=ends)
        threads = BUILD_THREADS if (ends - np.arange(n)).sum() >= PARALLEL_MIN_PAIRS else 1
        indptr, indices, distances, truncated, steps = _radius_graph(
            p, ends, float(max_radius), metric, max_neighbors, threads, device
        )
        del p
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
            max_radius=float(max_radius),
            max_window=float(max_window),
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
                labels = _hdbscan(x[rows], params)  # type: ignore[index]
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
        return _assemble(
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


def _augmented(x: np.ndarray, order: np.ndarray, metric: Metric) -> np.ndarray:
    """float32 ``[n, D + 2]`` lens-sorted points with two extra columns for one-GEMM distances.

    Row ``j`` is ``[x_j, |x_j|², 1]`` (Euclidean) or ``[x̂_j, 1, 0]`` (cosine, unit rows), so
    that ``_query_rows(P[i]) · P[j]`` is ``|x_i - x_j|²`` or ``1 - cos``: the GEMM itself
    produces the (squared) distance, with no elementwise passes over the block.
    """
    n, dim = x.shape
    p = np.empty((n, dim + 2), dtype=np.float32)
    chunk = max(1, (1 << 22) // max(dim, 1))  # bounded temporaries (no second n x D copy)
    for a in range(0, n, chunk):
        rows = x[order[a : a + chunk]]
        if metric == "cosine":
            norm = np.linalg.norm(rows, axis=1, keepdims=True)
            rows = rows / np.where(norm > 0, norm, 1.0)
        p[a : a + chunk, :dim] = rows
        if metric == "cosine":
            p[a : a + chunk, dim] = 1.0
            p[a : a + chunk, dim + 1] = 0.0
        else:
            p[a : a + chunk, dim] = np.einsum("ij,ij->i", rows, rows)
            p[a : a + chunk, dim + 1] = 1.0
    return p


def _query_rows(p: np.ndarray, metric: Metric) -> np.ndarray:
    """The GEMM's left operand for augmented rows ``p`` (see :func:`_augmented`)."""
    dim = p.shape[1] - 2
    q = np.empty_like(p)
    if metric == "cosine":
        np.multiply(p[:, :dim], -1.0, out=q[:, :dim])
        q[:, dim] = 1.0
        q[:, dim + 1] = 0.0
    else:
        np.multiply(p[:, :dim], -2.0, out=q[:, :dim])
        q[:, dim] = 1.0
        q[:, dim + 1] = p[:, dim]
    return q


def _to_distance(values: np.ndarray, metric: Metric) -> np.ndarray:
    """Distances (float32) from GEMM values: ``sqrt`` of squared Euclidean, cosine as is."""
    values = np.maximum(values, np.float32(0.0))  # rounding can make them slightly negative
    return np.sqrt(values, out=values) if metric == "euclidean" else values


def _value_threshold(radius: float, metric: Metric) -> np.float32:
    """Largest GEMM value whose distance (:func:`_to_distance`) is ``<= float32(radius)``.

    Selection and the radius test run on the GEMM values (squared Euclidean distances); this
    bound makes them agree exactly with a test on the stored float32 distances.
    """
    r32 = np.float32(radius)
    if metric == "cosine":
        return r32
    big = np.finfo(np.float32).max
    t = np.float32(min(float(r32) ** 2, float(big)))
    up, down = np.float32(np.inf), np.float32(-np.inf)
    while t > 0 and np.sqrt(t) > r32:
        t = np.nextafter(t, down)
    while t < big and np.sqrt(np.nextafter(t, up)) <= r32:
        t = np.nextafter(t, up)
    return np.float32(t)


def _knn_sample(
    p: np.ndarray, metric: Metric, queries: int, seed: int, device: str | None = None
) -> np.ndarray:
    """float32 ``[q, KNN_K]`` exact k-NN distances of ``q`` random points among all points.

    Args:
        p: ``[n, D + 2]`` augmented sorted points (:func:`_augmented`).
        metric: ``"euclidean"`` or ``"cosine"``.
        queries: points sampled.
        seed: seed of the sample.
        device: torch device for the GEMMs and the selection (``None``: numpy).

    Returns:
        Distances sorted per row; ``inf`` beyond ``n - 1`` neighbours.
    """
    n = len(p)
    q = min(n, queries)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, size=q, replace=False))
    k = min(KNN_K, n - 1)
    out = np.full((q, KNN_K), np.inf, dtype=np.float32)
    # The GEMM proposes candidates (a margin beyond k absorbs its rounding); their distances
    # are then computed directly in float64. The GEMM's |x|² + |y|² - 2x·y cancels
    # catastrophically for near neighbours: duplicate vectors came out as 0 on one CPU and
    # ~1e-3 on another, and since zero distances are left out of the ε rule, "auto" ε
    # moved by 10% between machines (another default graph than the atlas's inversions).
    c = min(n - 1, 2 * k + 8)
    if device is not None:
        candidates = _knn_candidates_torch(p, metric, pick, c, device)
        out[:, :k] = _direct_distances(p, metric, pick, candidates)[:, :k]
        return out
    chunk = max(1, (1 << 24) // n)
    for a in range(0, q, chunk):
        idx = pick[a : a + chunk]
        d = _query_rows(p[idx], metric) @ p.T
        d[np.arange(len(idx)), idx] = np.inf  # not its own neighbour
        candidates = np.argpartition(d, c - 1, axis=1)[:, :c] if c < n else np.argsort(d, axis=1)
        out[a : a + len(idx), :k] = _direct_distances(p, metric, idx, candidates[:, :c])[:, :k]
    return out


def _direct_distances(
    p: np.ndarray, metric: Metric, rows: np.ndarray, candidates: np.ndarray
) -> np.ndarray:
    """float32 ``[len(rows), c]`` distances from each row to its candidates, sorted per row,
    computed as differences in float64 (no cancellation: equal vectors are exactly 0).

    Args:
        p: ``[n, D + 2]`` augmented sorted points (:func:`_augmented`).
        metric: ``"euclidean"`` (L2) or ``"cosine"`` (``1 - cos``, as ``|x̂ - ŷ|² / 2``).
        rows: positions of the query points.
        candidates: int ``[len(rows), c]`` positions of their candidate neighbours.
    """
    dim = p.shape[1] - 2
    x = p[:, :dim].astype(np.float64)
    diff = x[candidates] - x[rows][:, None, :]
    squared = np.einsum("qcd,qcd->qc", diff, diff)
    d = np.sqrt(squared) if metric == "euclidean" else 0.5 * squared
    return np.sort(d, axis=1).astype(np.float32)


def _select(
    values: np.ndarray, cap: int, threshold: np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the ``cap`` smallest entries ``<= threshold`` (all of them if ``cap == 0``).

    Ties at the cap go to the lowest column. Invalid pairs must be ``+inf``.

    Args:
        values: float32 ``[b, w]`` C-contiguous GEMM values of one block side.
        cap: entries kept per row (0 = no cap).
        threshold: from :func:`_value_threshold`.

    Returns:
        ``(rows, cols, values, over)``: the kept entries sorted by row then column, and a
        boolean ``[b]``: more than ``cap`` entries were within the threshold (some dropped).
    """
    b, w = values.shape
    if cap <= 0 or w <= cap:
        flat = np.flatnonzero(values <= threshold)  # faster than a 2-D nonzero
        r, c = np.divmod(flat, w)
        return r, c, values.reshape(-1)[flat], np.zeros(b, dtype=bool)
    # One introselect of the values (kth = cap; ~2x cheaper than argpartition) gives the
    # cap-th smallest (the largest of the first cap) and the (cap+1)-th (at `cap`): it says
    # whether entries were dropped and whether a tie straddles the cap. The kept entries
    # are then found by one comparison and flatnonzero, already sorted by row and column.
    part = np.partition(values, cap, axis=1)
    kth = part[:, :cap].max(axis=1)
    following = part[:, cap]
    over = following <= threshold
    limit = np.minimum(kth, threshold)
    flat = np.flatnonzero(values <= limit[:, None])
    rows, cols = np.divmod(flat, w)
    kept = values.reshape(-1)[flat]
    # Ties at the cap (kth == following, both within the threshold): more than cap entries
    # equal or below kth; keep the lowest columns among those equal to kth (rare).
    tied = np.flatnonzero((kth == following) & over)
    if len(tied):
        keep = np.ones(len(flat), dtype=bool)
        starts = np.searchsorted(rows, tied, side="left")
        stops = np.searchsorted(rows, tied, side="right")
        for r, a, z in zip(tied.tolist(), starts.tolist(), stops.tolist(), strict=True):
            equal = np.flatnonzero(kept[a:z] == kth[r])
            extra = (z - a) - cap  # entries beyond the cap, all equal to kth
            keep[a + equal[len(equal) - extra :]] = False
        rows, cols, kept = rows[keep], cols[keep], kept[keep]
    return rows, cols, kept, over


@dataclass
class _BuildClock:
    """Seconds spent in each step of the index build (the benchmark prints them)."""

    steps: dict[str, float] = field(default_factory=dict)

    def add(self, step: str, since: float) -> float:
        """Add the time since ``since`` to ``step``; returns now."""
        now = time.perf_counter()
        self.steps[step] = self.steps.get(step, 0.0) + now - since
        return now

    def merge(self, steps: dict[str, float]) -> None:
        """Add another clock's seconds by step (a build thread's)."""
        for step, seconds in steps.items():
            self.steps[step] = self.steps.get(step, 0.0) + seconds


def _block_later(
    p: np.ndarray, ends: np.ndarray, s: int, e: int, metric: Metric, cap: int, threshold: np.float32
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, dict]:
    """Distances of rows ``s..e`` to the points after them, and their later-side selection.

    Returns:
        ``(query rows, values [e-s, ends[e-1]-s] with invalid pairs +inf, (rows, cols,
        values) kept, over [e-s], seconds by step)``.
    """
    clock = _BuildClock()
    t = time.perf_counter()
    b, c1 = e - s, int(ends[e - 1])
    q = _query_rows(p[s:e], metric)
    d = q @ p[s:c1].T
    t = clock.add("gemm", t)
    # Valid columns are i < j < ends[i]; the rest of the rectangle is +inf.
    d[:, :b][np.tri(b, dtype=bool)] = np.inf
    e0 = int(ends[s])
    if c1 > e0:
        d[:, e0 - s :][np.arange(e0, c1)[None, :] >= ends[s:e, None]] = np.inf
    t = clock.add("mask", t)
    r, c, v, over = _select(d, cap, threshold)
    clock.add("select", t)
    # int32 positions: the kept lists are the build's largest arrays after the data.
    return q, d, ((r + s).astype(np.int32), (c + s).astype(np.int32), v), over, clock.steps


def _block_earlier(
    p: np.ndarray,
    ends: np.ndarray,
    s: int,
    e: int,
    q: np.ndarray,
    window: list[tuple[int, int, np.ndarray | None]],
    cap: int,
    threshold: np.float32,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, dict]:
    """Earlier-side selection of rows ``s..e`` (points ``i < j`` with ``j < ends[i]``).

    Args:
        window: ``(s_m, e_m, values_m)`` of the blocks holding those points, this block
            last; ``values_m`` ``None`` if not retained (then recomputed by GEMM).

    Returns:
        ``((rows, cols, values) kept, over [e-s], seconds by step)``.
    """
    clock = _BuildClock()
    t = time.perf_counter()
    b = e - s
    lo = int(np.searchsorted(ends, s, side="right"))
    early = np.empty((b, e - lo), dtype=np.float32)
    for sm, em, dm in window:
        r0 = max(lo, sm)
        cols = slice(r0 - lo, em - lo)
        if dm is None:  # not retained: recompute this piece, already in row form
            t = clock.add("assemble", t)
            piece = q @ p[r0:em].T
            t = clock.add("gemm", t)
            piece[ends[r0:em][None, :] <= np.arange(s, e)[:, None]] = np.inf
            early[:, cols] = piece
            continue
        stop = min(e, sm + dm.shape[1])  # this block's values reach column `stop`
        if stop > s:
            early[: stop - s, cols] = dm[r0 - sm :, s - sm : stop - sm].T
        early[max(stop - s, 0) :, cols] = np.inf
    t = clock.add("assemble", t)
    r, c, v, over = _select(early, cap, threshold)
    clock.add("select", t)
    return ((r + s).astype(np.int32), (c + lo).astype(np.int32), v), over, clock.steps


class _Inline:
    """A serial stand-in for ``ThreadPoolExecutor`` (one build thread)."""

    def submit(self, fn: Callable[..., object], *args: object) -> Future:
        """Run ``fn(*args)`` now; a finished future."""
        done: Future = Future()
        done.set_result(fn(*args))
        return done


def _blocks(
    ends: np.ndarray, row_block: int = ROW_BLOCK, budget: int = BLOCK_BUDGET
) -> list[tuple[int, int]]:
    """Row blocks ``(s, e)``: ``row_block`` rows, fewer where the band is very wide.

    Both a block's later side (columns up to ``ends[e-1]``) and its earlier side (columns
    from the first point whose band reaches ``s``) stay within ``budget`` elements.
    """
    n = len(ends)
    out = []
    s = 0
    while s < n:
        block = row_block
        lo = int(np.searchsorted(ends, s, side="right"))
        while True:
            e = min(n, s + block)
            width = max(int(ends[e - 1]) - s, e - lo)
            if block <= 16 or (e - s) * width <= budget:
                break
            block //= 2
        out.append((s, e))
        s = e
    return out


def _radius_graph(
    p: np.ndarray,
    ends: np.ndarray,
    radius: float,
    metric: Metric,
    cap: int,
    threads: int = 1,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, dict[str, float]]:
    """Symmetric radius graph of lens-sorted points; candidate pairs ``i < j < ends[i]``.

    Row blocks of ``ROW_BLOCK`` sorted points are compared, by one float32 GEMM each, with
    the points after them up to the last row's band end, so every pair is computed once
    and the cost is about the number of pairs in the band. Pairs outside ``i < j <
    ends[i]`` are set to ``+inf``, so the result does not depend on the block size.

    Each point keeps its ``cap`` nearest within ``radius`` among its later candidates (its
    row of the block) and among its earlier ones (its column in the blocks before). The
    earlier side of a block's points is assembled from those blocks (kept while they can
    still be needed, within ``RETAIN_BUDGET``; recomputed by GEMM otherwise), transposed
    into rows, so both sides are one row-wise selection each: no running merges. Ties go
    to the lowest position. The stored graph is the union of both directions, symmetric.

    With ``threads > 1`` blocks run in a thread pool with one BLAS thread each (numpy
    releases the GIL in GEMM and selection); results are collected in block order, so the
    graph is the same as with one thread.

    Args:
        p: ``[n, D + 2]`` augmented sorted points (:func:`_augmented`).
        ends: int64 ``[n]`` exclusive band end of each point (non-decreasing, ``> i``).
        radius: largest stored distance.
        metric: ``"euclidean"`` or ``"cosine"``.
        cap: per side neighbour cap (0 = none).
        threads: build threads (numpy path only).
        device: torch device: the blocks run there (:func:`_device_blocks`); ``None``: numpy.

    Returns:
        ``(indptr int64 [n+1], indices int32 [nnz], distances float32 [nnz], truncated,
        seconds by step)``; ``truncated`` = points with more than ``cap`` candidates within
        ``radius`` on a side (the other side's list may still hold the dropped pairs).
    """
    n = len(p)
    threshold = _value_threshold(radius, metric)
    if device is not None:
        start = time.perf_counter()
        later, earlier_kept, over = _device_blocks(p, ends, metric, cap, threshold, device)
        clock = _BuildClock()
        t = clock.add("blocks (device)", start)
        indptr, indices, dist = _symmetric(later, earlier_kept, n, metric)
        clock.add("symmetrise", t)
        return indptr, indices, dist, int(over.sum()), clock.steps
    blocks = _blocks(ends)
    clock = _BuildClock()
    later: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    earlier: list[Future] = []
    over = np.zeros(n, dtype=bool)
    window: list[tuple[int, int, np.ndarray | None]] = []
    retained = 0
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        # One BLAS thread per GEMM whatever the number of build threads: OpenBLAS rounds
        # some block shapes differently with two threads, and near-ties at the cap would
        # then make the graph depend on the thread count.
        stack.enter_context(_one_blas_thread())
        pool: ThreadPoolExecutor | _Inline = _Inline()
        if threads > 1 and len(blocks) > 1:
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=threads))
        in_flight: dict[int, Future] = {}
        for k, (s, e) in enumerate(blocks):
            for ahead in range(k, min(len(blocks), k + threads + 1)):
                if ahead not in in_flight:
                    in_flight[ahead] = pool.submit(
                        _block_later, p, ends, *blocks[ahead], metric, cap, threshold
                    )
            q, d, kept, o, steps = in_flight.pop(k).result()
            later.append(kept)
            over[s:e] |= o
            clock.merge(steps)
            lo = int(np.searchsorted(ends, s, side="right"))
            still = [w for w in window if w[1] > lo]
            retained -= sum(w[2].size for w in window if w[1] <= lo and w[2] is not None)
            window = still
            earlier.append(
                pool.submit(_block_earlier, p, ends, s, e, q, [*window, (s, e, d)], cap, threshold)
            )
            keep = retained + d.size <= RETAIN_BUDGET
            window.append((s, e, d if keep else None))
            retained += d.size if keep else 0
        earlier_kept = []
        for (s, e), future in zip(blocks, earlier, strict=True):
            kept, o, steps = future.result()
            earlier_kept.append(kept)
            over[s:e] |= o
            clock.merge(steps)
    t = clock.add("blocks (wall)", start)
    indptr, indices, dist = _symmetric(later, earlier_kept, n, metric)
    clock.add("symmetrise", t)
    return indptr, indices, dist, int(over.sum()), clock.steps


@contextlib.contextmanager
def _full_fp32(torch: Any) -> Iterator[None]:
    """fp32 matmuls without TF32 (10-bit mantissa) inside; the setting is restored after.

    Args:
        torch: the torch module (imported lazily by the caller).
    """
    matmul = torch.backends.cuda.matmul
    previous = matmul.allow_tf32
    matmul.allow_tf32 = False
    try:
        yield
    finally:
        matmul.allow_tf32 = previous


def _query_rows_torch(pt: Any, metric: Metric) -> Any:
    """:func:`_query_rows` computed on the device (one upload instead of two).

    The scalings by -2 and -1 are exact, so the rows equal the numpy path's bit for bit.

    Args:
        pt: float32 ``[n, D + 2]`` augmented points on the device.
        metric: ``"euclidean"`` or ``"cosine"``.

    Returns:
        The GEMM's left operand, same shape and device.
    """
    dim = pt.shape[1] - 2
    qt = pt.clone()
    qt[:, :dim] *= -1.0 if metric == "cosine" else -2.0
    qt[:, dim] = 1.0
    qt[:, dim + 1] = 0.0 if metric == "cosine" else pt[:, dim]
    return qt


def _knn_candidates_torch(
    p: np.ndarray, metric: Metric, pick: np.ndarray, k: int, device: str
) -> np.ndarray:
    """int64 ``[len(pick), k]`` positions of the ``k`` smallest GEMM values of ``pick``'s rows,
    on ``device`` (the caller computes their distances exactly).

    The query point itself is excluded.

    Args:
        p: ``[n, D + 2]`` augmented sorted points.
        metric: ``"euclidean"`` or ``"cosine"``.
        pick: sampled positions (ascending).
        k: neighbours per query (``<= n - 1``).
        device: torch device.

    Returns:
        int64 ``[len(pick), k]``.
    """
    import torch

    dev = torch.device(device)
    n = len(p)
    out = np.empty((len(pick), k), dtype=np.int64)
    chunk = max(1, (1 << 26) // n)
    with _full_fp32(torch), torch.no_grad():
        pt = torch.from_numpy(p).to(dev)
        for a in range(0, len(pick), chunk):
            idx = pick[a : a + chunk]
            q = torch.from_numpy(_query_rows(p[idx], metric)).to(dev)
            d = q @ pt.T
            d[torch.arange(len(idx), device=dev), torch.from_numpy(idx).to(dev)] = torch.inf
            out[a : a + len(idx)] = torch.topk(d, k, dim=1, largest=False).indices.cpu().numpy()
    return out


def _select_torch(
    torch: Any, values: Any, cap: int, threshold: np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_select` on a torch tensor: same entries, same tie rule (lowest column).

    A cap selection runs ``topk`` on an int64 key ``(order-preserving int32 of the float32
    value) << 32 | column``: keys are distinct, so the kept set is unique and ties at the
    cap go to the lowest column, as on the numpy path.

    Args:
        torch: the torch module.
        values: float32 ``[b, w]`` tensor, invalid pairs ``+inf``.
        cap: entries kept per row (0 = no cap).
        threshold: from :func:`_value_threshold`.

    Returns:
        ``(rows, cols, values, over)`` as numpy arrays, kept entries sorted by row then column.
    """
    b, w = values.shape
    dev = values.device
    within = values <= float(threshold)
    if cap <= 0 or w <= cap:
        rows, cols = within.nonzero(as_tuple=True)  # row-major: sorted by row, then column
        kept = values[rows, cols]
        over = np.zeros(b, dtype=bool)
    else:
        over = (within.sum(dim=1) > cap).cpu().numpy()
        # +0.0 for -0.0 (equal values must give equal keys); then the float32 bits, with
        # the magnitude bits of negatives flipped, order as the values do.
        bits = (values + 0.0).view(torch.int32)
        key = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(torch.int64) << 32
        key |= torch.arange(w, device=dev, dtype=torch.int64)
        pos = torch.topk(key, cap, dim=1, largest=False, sorted=False).indices
        del key, bits
        picked = values.gather(1, pos)
        # Kept columns ascending within each row; dropped ones (beyond the threshold) last.
        pos = torch.where(picked <= float(threshold), pos, w)
        pos = torch.sort(pos, dim=1).values
        rows, slot = (pos < w).nonzero(as_tuple=True)
        cols = pos[rows, slot]
        kept = values[rows, cols]
    return (
        rows.to(torch.int32).cpu().numpy(),
        cols.to(torch.int32).cpu().numpy(),
        kept.cpu().numpy(),
        over,
    )


def _device_blocks(
    p: np.ndarray, ends: np.ndarray, metric: Metric, cap: int, threshold: np.float32, device: str
) -> tuple[list, list, np.ndarray]:
    """Both sides' selections of every row block, computed with torch on ``device``.

    Per block of rows ``s..e``: the later side is ``Q[s:e] @ P[s:c1].T`` (columns ``j``,
    valid for ``i < j < ends[i]``), the earlier side ``P[s:e] @ Q[lo:e].T`` (columns ``i``,
    valid for ``i < j < ends[i]``): the same products ``q_i · p_j`` as the later side, so a
    pair's value is the same in both lists up to the GEMM's summation order. Each pair is
    computed twice (no retained blocks to transpose), which a GPU affords. Only the kept
    ``(row, column, value)`` triples leave the device.

    Args:
        p: ``[n, D + 2]`` augmented sorted points.
        ends: int64 ``[n]`` exclusive band ends.
        metric: ``"euclidean"`` or ``"cosine"``.
        cap: per side neighbour cap (0 = none).
        threshold: from :func:`_value_threshold`.
        device: torch device.

    Returns:
        ``(later, earlier, over)``: per block ``(rows, cols, values)`` (global int32
        positions, sorted by row then column) of each side, and bool ``[n]`` capped points.
    """
    import torch

    dev = torch.device(device)
    n = len(p)
    over = np.zeros(n, dtype=bool)
    later: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    earlier: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with _full_fp32(torch), torch.no_grad():
        pt = torch.from_numpy(p).to(dev)
        qt = _query_rows_torch(pt, metric)
        ends_t = torch.from_numpy(np.ascontiguousarray(ends, dtype=np.int64)).to(dev)
        for s, e in _blocks(ends, DEVICE_ROW_BLOCK, DEVICE_BLOCK_BUDGET):
            c1 = int(ends[e - 1])
            lo = int(np.searchsorted(ends, s, side="right"))
            rows = torch.arange(s, e, device=dev)[:, None]
            # Later side: row i, column j in s..c1; valid i < j < ends[i].
            d = qt[s:e] @ pt[s:c1].T
            cols = torch.arange(s, c1, device=dev)[None, :]
            d.masked_fill_((cols <= rows) | (cols >= ends_t[s:e, None]), torch.inf)
            r, c, v, o = _select_torch(torch, d, cap, threshold)
            later.append((r + s, c + s, v))
            over[s:e] |= o
            # Earlier side: row j, column i in lo..e; valid i < j < ends[i].
            d = pt[s:e] @ qt[lo:e].T
            cols = torch.arange(lo, e, device=dev)[None, :]
            d.masked_fill_((cols >= rows) | (ends_t[lo:e][None, :] <= rows), torch.inf)
            r, c, v, o = _select_torch(torch, d, cap, threshold)
            earlier.append((r + s, c + lo, v))
            over[s:e] |= o
            del d
    return later, earlier, over


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """One BLAS thread while the build's own threads run (no oversubscription)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn's dependency; without it BLAS keeps its threads
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _symmetric(
    later: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    earlier: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    n: int,
    metric: Metric,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union of the directed neighbour lists, symmetrised, as a CSR sorted within rows.

    Both lists arrive sorted by row then column with no duplicates (canonical CSR), so
    scipy's transposes and element-wise maximum / sum are linear merges, no sort. The CSR
    data are 1-based positions into the concatenated values (exact through the merges,
    zero distances included); a pair in both lists has the same value in each.
    """
    rows_l, cols_l, vals_l = (np.concatenate(a) for a in zip(*later, strict=True))
    rows_e, cols_e, vals_e = (np.concatenate(a) for a in zip(*earlier, strict=True))
    values = np.concatenate([vals_l, vals_e])

    # int32 positions and indices where they fit: scipy keeps them through the merges, and
    # the transposes (the step's largest cost) move half the bytes of int64.
    small = 2 * len(values) < np.iinfo(np.int32).max and n < np.iinfo(np.int32).max
    index = np.int32 if small else np.int64

    def canonical(rows: np.ndarray, cols: np.ndarray, first: int) -> sp.csr_array:
        indptr = np.zeros(n + 1, dtype=index)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        data = np.arange(first, first + len(rows), dtype=index)
        out = sp.csr_array((data, cols.astype(index), indptr), shape=(n, n), copy=False)
        out.has_canonical_format = True
        return out

    upper = canonical(rows_l, cols_l, 1).maximum(
        canonical(rows_e, cols_e, 1 + len(rows_l)).T.tocsr()
    )
    both = (upper + upper.T.tocsr()).tocsr()
    dist = _to_distance(values[both.data - 1], metric)
    return both.indptr.astype(np.int64), both.indices.astype(np.int32), dist


def _hdbscan(x: np.ndarray, params: MapperParams) -> np.ndarray:
    """HDBSCAN labels of one interval's vectors (``-1`` = noise)."""
    from sklearn.cluster import HDBSCAN

    if params.metric == "cosine":
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        # Euclidean on unit vectors orders pairs as cosine distance does.
        x = x / np.where(norm > 0, norm, 1.0)
    if len(x) < params.min_cluster_size:
        return np.full(len(x), -1, dtype=np.int64)
    model = HDBSCAN(
        min_cluster_size=params.min_cluster_size, min_samples=params.min_samples, copy=True
    )
    return model.fit_predict(x).astype(np.int64)


def _assemble(
    exact: bool,
    num_points: int,
    members: list[np.ndarray],
    interval: list[int],
    cluster: list[int],
    bounds: np.ndarray,
    counts: np.ndarray,
    eps: float,
    params: MapperParams,
    seconds: float,
) -> MapperGraph:
    """Nodes → CSR arrays, edges by one sparse product of the membership matrix."""
    sizes = np.array([len(m) for m in members], dtype=np.int64)
    indptr = np.zeros(len(members) + 1, dtype=np.int64)
    np.cumsum(sizes, out=indptr[1:])
    flat = np.concatenate(members).astype(np.int64) if members else np.empty(0, np.int64)
    n_nodes = len(members)
    node_of = np.repeat(np.arange(n_nodes), sizes)
    incidence = sp.csr_array(
        (np.ones(len(flat), dtype=np.int64), (node_of, flat)), shape=(n_nodes, num_points)
    )
    shared = sp.triu(incidence @ incidence.T, k=1).tocoo()
    order = np.lexsort((shared.col, shared.row))
    src = shared.row[order].astype(np.int32)
    dst = shared.col[order].astype(np.int32)
    inter = shared.data[order].astype(np.int64)
    jac = (inter / (sizes[src] + sizes[dst] - inter)).astype(np.float32)
    covered = np.zeros(num_points, dtype=bool)
    covered[flat] = True
    coverage = float(covered.mean()) if num_points else 0.0
    return MapperGraph(
        num_points=num_points,
        node_indptr=indptr,
        node_members=flat,
        node_interval=np.array(interval, dtype=np.int32),
        node_cluster=np.array(cluster, dtype=np.int32),
        edge_source=src,
        edge_target=dst,
        edge_intersection=inter,
        edge_jaccard=jac,
        interval_bounds=bounds,
        interval_counts=counts,
        coverage=coverage,
        eps=float(eps),
        params=params,
        exact=exact,
        seconds=seconds,
    )


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
