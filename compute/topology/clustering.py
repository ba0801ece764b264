"""Clustering of one interval with HDBSCAN (:func:`hdbscan`), and the assembly of the
clusters of every interval into a :class:`~compute.topology.graph.MapperGraph`
(:func:`assemble`: nodes as CSR members, edges by one sparse product).

DBSCAN runs on the index's stored neighbour graph (``MapperIndex._dbscan``, in
:mod:`compute.topology.index`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from compute.topology.graph import MapperGraph
from compute.topology.params import MapperParams


def hdbscan(x: np.ndarray, params: MapperParams) -> np.ndarray:
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


def assemble(
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
