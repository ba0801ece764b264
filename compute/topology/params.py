"""Mapper parameters: :class:`MapperParams`, the defaults by sample size, their constants.

Also the type aliases of the parameter values (``LensKind``, ``Metric``, ``CoverKind``,
...), the dashboard's slider limits and :func:`interval_length` (the cover interval of
``(intervals, overlap, cover)``, which :attr:`MapperParams.interval_length` reports).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

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


def stored_default_params(settings: dict[str, Any] | None) -> MapperParams:
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
