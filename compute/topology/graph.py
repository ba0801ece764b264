"""One Mapper graph (:class:`MapperGraph`: nodes as CSR members, edges) and per-node
summaries (:class:`NodeStats`, :func:`node_statistics`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from compute.topology.params import MapperParams


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
            >>> from compute.topology.index import MapperIndex
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
        >>> from compute.topology.index import MapperIndex
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
