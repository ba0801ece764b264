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

The pipeline lives in one module per concept; this module re-exports their public API
(``from compute.topology.mapper import X`` keeps working):

- :mod:`compute.topology.params`: :class:`MapperParams`, the defaults by sample size,
  constants and type aliases;
- :mod:`compute.topology.cover`: :func:`cover_bounds` and :func:`compute_lens`;
- :mod:`compute.topology.graph`: :class:`MapperGraph`, :class:`NodeStats`,
  :func:`node_statistics`;
- :mod:`compute.topology.clustering`: HDBSCAN of one interval and the graph assembly;
- :mod:`compute.topology.kernels`: the numpy/torch k-NN and radius-graph kernels of the
  index build;
- :mod:`compute.topology.index`: :class:`MapperIndex`, the ε rules and
  :func:`compute_mapper`.

Examples:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((500, 8)).astype(np.float32)
    >>> index = MapperIndex.build(x)                         # once per layer
    >>> graph = index.mapper(MapperParams(intervals=10, overlap=0.3))
    >>> graph.num_nodes > 0
    True
"""

from __future__ import annotations

from compute.topology.clustering import assemble, hdbscan
from compute.topology.cover import compute_lens, cover_bounds
from compute.topology.graph import MapperGraph, NodeStats, node_statistics
from compute.topology.index import (
    BUILD_THREADS,
    MAPPER_THREADS,
    PARALLEL_MIN_ENTRIES,
    PARALLEL_MIN_PAIRS,
    MapperIndex,
    compute_mapper,
    default_graph_params,
    eps_rule,
    knee_point,
)
from compute.topology.kernels import (
    BLOCK_BUDGET,
    DEVICE_BLOCK_BUDGET,
    DEVICE_ROW_BLOCK,
    KNN_K,
    RETAIN_BUDGET,
    ROW_BLOCK,
)
from compute.topology.params import (
    AUTO_EPS_FACTOR,
    DEFAULT_MAX_WINDOW,
    EXACT_POINTS,
    KNEE_EPS_FACTOR,
    LARGE_SAMPLE,
    POINTS_PER_INTERVAL,
    UI_MAX_EPS_SCALE,
    UI_MAX_INTERVALS,
    UI_MAX_OVERLAP,
    UI_MIN_EPS_SCALE,
    UI_MIN_INTERVALS,
    UI_MIN_OVERLAP,
    ClustererKind,
    CoverKind,
    EpsRule,
    LensKind,
    MapperParams,
    Metric,
    default_params,
    interval_length,
    stored_default_params,
)

__all__ = [
    "AUTO_EPS_FACTOR",
    "BLOCK_BUDGET",
    "BUILD_THREADS",
    "DEFAULT_MAX_WINDOW",
    "DEVICE_BLOCK_BUDGET",
    "DEVICE_ROW_BLOCK",
    "EXACT_POINTS",
    "KNEE_EPS_FACTOR",
    "KNN_K",
    "LARGE_SAMPLE",
    "MAPPER_THREADS",
    "PARALLEL_MIN_ENTRIES",
    "PARALLEL_MIN_PAIRS",
    "POINTS_PER_INTERVAL",
    "RETAIN_BUDGET",
    "ROW_BLOCK",
    "UI_MAX_EPS_SCALE",
    "UI_MAX_INTERVALS",
    "UI_MAX_OVERLAP",
    "UI_MIN_EPS_SCALE",
    "UI_MIN_INTERVALS",
    "UI_MIN_OVERLAP",
    "ClustererKind",
    "CoverKind",
    "EpsRule",
    "LensKind",
    "MapperGraph",
    "MapperIndex",
    "MapperParams",
    "Metric",
    "NodeStats",
    "assemble",
    "compute_lens",
    "compute_mapper",
    "cover_bounds",
    "default_graph_params",
    "default_params",
    "eps_rule",
    "hdbscan",
    "interval_length",
    "knee_point",
    "node_statistics",
    "stored_default_params",
]
