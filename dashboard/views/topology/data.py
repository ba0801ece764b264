"""The Topology view's data and drawing helpers: live Mapper graphs of an atlas (no Dash).

The atlas's ``mapper`` part holds, per layer, the sampled activation vectors and a
:class:`~compute.topology.MapperIndex`; a parameter change re-runs only
``index.mapper(params)`` (well under a second), memoised per worker and in the shared
``diskcache``. Pure helpers turn a graph into Cytoscape elements: nodes drawn as pie charts
of their class composition (Cytoscape pie styles, at most 16 slices), sized by member count,
laid out deterministically (a few force-directed steps from the lens order), so a shared
link shows the same picture.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from compute.atlas import PART_MAPPER, MapperSampleArrays
from compute.topology import (
    MapperGraph,
    MapperIndex,
    MapperParams,
    NodeStats,
    Shape,
    find_shapes,
    node_statistics,
)
from compute.topology.mapper import EXACT_POINTS, default_graph_params, stored_default_params
from dashboard.data import AtlasData
from dashboard.state import ViewState
from dashboard.theme import ACCENT
from dashboard.views.topology.state import TOPO_EPS, TOPO_INTERVALS, TOPO_OVERLAP

log = logging.getLogger(__name__)

#: Cytoscape.js draws at most 16 pie slices per node.
MAX_SLICES = 16
#: Without the stored index (another metric, or HDBSCAN) the sample is clustered directly,
#: which is only offered up to this many points.
DIRECT_LIMIT = 10_000
#: "Recompute exactly" is refused above this many compared point pairs (the exact index
#: keeps every pair within one interval's lens width: ~16 bytes each, ~1 s per 20M pairs
#: of 512-channel vectors on one core).
EXACT_MAX_PAIRS = 40_000_000
#: Node diameters (px) and edge widths (px).
NODE_MIN_PX, NODE_MAX_PX = 14.0, 54.0
EDGE_MIN_PX, EDGE_MAX_PX = 0.8, 6.0
#: Layout canvas (px).
WIDTH_PX, HEIGHT_PX = 1000.0, 560.0

SELECTED = ACCENT  # the selected class (the same orange as every view)
OTHER = "#e2e8f0"  # the "other classes" slice
#: Class colours of the pies (no orange: that is the selected class).
PALETTE = (
    "#2563eb", "#16a34a", "#9333ea", "#0891b2", "#dc2626", "#ca8a04", "#db2777",
    "#4f46e5", "#65a30d", "#0d9488", "#7c3aed", "#be123c", "#1d4ed8", "#15803d",
    "#a16207", "#6d28d9", "#0e7490", "#b91c1c", "#4338ca", "#047857",
)  # fmt: skip
#: Sequential scale (viridis-like) for mean L2 norm; white → orange for the class share.
_NORM_SCALE = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")


def class_colour(class_index: int, selected: int | None) -> str:
    """Pie colour of a class: orange for the selected class, else a stable palette colour."""
    if class_index == selected:
        return SELECTED
    if class_index < 0:
        return OTHER
    return PALETTE[class_index % len(PALETTE)]


def pie_slices(
    class_counts: np.ndarray, selected: int | None = None, max_slices: int = MAX_SLICES
) -> list[tuple[int, float]]:
    """The pie of one node: ``[(class, percent), ...]``, largest first, ``-1`` = other classes.

    At most ``max_slices`` slices: the top classes, plus the selected class whenever the
    node holds it (even if it is small), plus one "other" slice for the rest.

    Args:
        class_counts: int ``[classes]`` members of each class.
        selected: the selected class.
        max_slices: slice limit (Cytoscape: 16).

    Returns:
        Slices whose percentages add up to 100 (an empty node: no slice).

    Examples:
        >>> pie_slices(np.array([5, 3, 0, 2]), selected=3, max_slices=3)
        [(0, 50.0), (1, 30.0), (3, 20.0)]
        >>> pie_slices(np.array([5, 3, 0, 2]), selected=3, max_slices=2)  # the selected stays
        [(3, 20.0), (-1, 80.0)]
    """
    counts = np.asarray(class_counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return []
    present = np.flatnonzero(counts)
    order = present[np.argsort(-counts[present], kind="stable")]
    if len(order) <= max_slices:
        top = order
    else:
        top = order[: max_slices - 1]  # one slot for "other"
        if selected is not None and counts[selected] > 0 and selected not in top:
            top = np.append(top[:-1], selected)
    slices = [(int(c), 100.0 * int(counts[c]) / total) for c in top]
    rest = total - int(counts[top].sum())
    if rest > 0:
        slices.append((-1, 100.0 * rest / total))
    return slices


def _hex(colours: tuple[str, ...], t: float) -> str:
    """Colour at ``t`` in [0, 1] along a piecewise-linear scale of hex colours."""
    t = min(max(float(t), 0.0), 1.0) * (len(colours) - 1)
    i = min(int(t), len(colours) - 2)
    a = np.array([int(colours[i][k : k + 2], 16) for k in (1, 3, 5)], dtype=np.float64)
    b = np.array([int(colours[i + 1][k : k + 2], 16) for k in (1, 3, 5)], dtype=np.float64)
    rgb = np.round(a + (b - a) * (t - i)).astype(int)
    return "#" + "".join(f"{v:02x}" for v in rgb)


def legend_classes(
    class_counts: np.ndarray, selected: int | None, limit: int = 10
) -> list[tuple[int, str]]:
    """The classes a pie legend names: ``[(class, colour), ...]``, the selected class
    first (if the graph holds it), then the classes with the most members over all nodes
    (ties: lowest index), at most ``limit``; ``(-1, OTHER)`` last when classes are left out.

    Args:
        class_counts: int ``[nodes, classes]`` members of each class per node.
        selected: the selected class.
        limit: classes named.

    Examples:
        >>> legend_classes(np.array([[5, 0, 2], [1, 0, 9]]), selected=0, limit=2)
        [(0, '#f97316'), (2, '#9333ea')]
        >>> legend_classes(np.array([[5, 1, 2]]), selected=None, limit=1)
        [(0, '#2563eb'), (-1, '#e2e8f0')]
    """
    totals = np.asarray(class_counts, dtype=np.int64).sum(axis=0)
    held = [int(c) for c in np.argsort(-totals, kind="stable") if totals[c] > 0]
    named: list[int] = []
    if selected is not None and selected in held:
        named.append(selected)
    named += [c for c in held if c != selected][: max(limit - len(named), 0)]
    legend = [(c, class_colour(c, selected)) for c in named]
    if len(named) < len(held):
        legend.append((-1, OTHER))
    return legend


def norm_colour(value: float, lo: float, hi: float) -> str:
    """Sequential colour of a mean L2 norm in ``[lo, hi]``."""
    return _hex(_NORM_SCALE, 0.5 if hi <= lo else (value - lo) / (hi - lo))


def share_colour(share: float) -> str:
    """White (0) to orange (1): the node's share of the selected class."""
    return _hex(("#ffffff", "#fed7aa", SELECTED), share)


def layout_nodes(graph: MapperGraph, lens: np.ndarray, iterations: int = 80) -> np.ndarray:
    """Deterministic 2-D positions (px) of the nodes: lens left to right, forces for the rest.

    Starts from x = the node's mean lens and y = its cluster number within its interval,
    then runs Fruchterman-Reingold steps (vectorised, fixed count) with a weak pull of x
    back to the lens, so the L2 norm still reads left to right.

    Args:
        graph: the Mapper graph.
        lens: float ``[points]`` lens value of every sample row.
        iterations: force steps (fewer for big graphs).

    Returns:
        float64 ``[nodes, 2]`` in ``[0, WIDTH_PX] × [0, HEIGHT_PX]``.
    """
    n = graph.num_nodes
    if n == 0:
        return np.zeros((0, 2))
    sizes = np.maximum(graph.node_sizes, 1)
    node_of = np.repeat(np.arange(n), graph.node_sizes)
    x0 = np.bincount(node_of, weights=np.asarray(lens)[graph.node_members], minlength=n) / sizes
    cluster = graph.node_cluster.astype(np.float64)
    per_interval = np.bincount(graph.node_interval, minlength=int(graph.node_interval.max()) + 1)
    y0 = (cluster - (per_interval[graph.node_interval] - 1) / 2.0) * 0.08
    x, y = x0.astype(np.float32), y0.astype(np.float32)
    target = x.copy()
    if n > 1:
        k = np.float32(1.0 / np.sqrt(n))
        src = graph.edge_source.astype(np.int64)
        dst = graph.edge_target.astype(np.int64)
        # Each step costs a few n x n float32 passes: bound the total work (~40M pairs).
        steps = min(iterations, int(4e7 // (n * n)))
        temperature = 0.1
        for _ in range(steps):
            dx = x[:, None] - x[None, :]
            dy = y[:, None] - y[None, :]
            inv = dx * dx
            inv += dy * dy
            inv += np.float32(1e-9)
            np.divide(k * k, inv, out=inv)
            np.fill_diagonal(inv, 0.0)
            fx = np.einsum("ij,ij->i", dx, inv)
            fy = np.einsum("ij,ij->i", dy, inv)
            if len(src):
                ex, ey = x[src] - x[dst], y[src] - y[dst]
                length = np.sqrt(ex * ex + ey * ey) / k
                np.add.at(fx, src, -ex * length)
                np.add.at(fy, src, -ey * length)
                np.add.at(fx, dst, ex * length)
                np.add.at(fy, dst, ey * length)
            fx += 0.3 * (target - x) / k
            # Gravity on y keeps small components from drifting to the edges.
            fy -= 0.15 * (y - y.mean()) / k
            norm = np.sqrt(fx * fx + fy * fy) + np.float32(1e-9)
            step = np.minimum(norm, temperature) / norm
            x = x + fx * step
            y = y + fy * step
            temperature *= 0.95
    pos = np.stack([x, y], axis=1).astype(np.float64)
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    unit = (pos - lo) / span
    return np.stack([unit[:, 0] * WIDTH_PX, unit[:, 1] * HEIGHT_PX], axis=1)


@dataclass(frozen=True)
class MapperResult:
    """One computed Mapper graph of one layer, with what the view draws.

    Attributes:
        layer: atlas layer index.
        params: the parameters.
        graph: the Mapper graph.
        stats: per-node class counts, member counts, mean L2 norms.
        shapes: flares then loops, each ranked largest first.
        positions: float64 ``[nodes, 2]`` layout (px).
        approximation: why the graph is approximate, or ``None`` if exact.
    """

    layer: int
    params: MapperParams
    graph: MapperGraph
    stats: NodeStats
    shapes: tuple[Shape, ...]
    positions: np.ndarray
    approximation: str | None


class MapperData:
    """Memoised Mapper graphs of one atlas (per worker; graphs also in the disk cache).

    Args:
        data: the opened atlas.
        memo: graphs kept in memory.
    """

    def __init__(self, data: AtlasData, memo: int = 16) -> None:
        self.data = data
        self._samples: dict[int, MapperSampleArrays] = {}
        self._indexes: dict[int, MapperIndex] = {}
        self._norms: dict[int, np.ndarray] = {}
        self._memo: OrderedDict[tuple[int, MapperParams, bool], MapperResult] = OrderedDict()
        self._size = memo
        self._exact_done: set[tuple[int, MapperParams]] = set()
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self.data.has(PART_MAPPER)

    def sample(self, layer: int) -> MapperSampleArrays:
        """The layer's sample (memory-mapped)."""
        if layer not in self._samples:
            self._samples[layer] = self.data.atlas.mapper_sample(layer)
        return self._samples[layer]

    def index(self, layer: int) -> MapperIndex:
        """The layer's stored index (memory-mapped arrays, nothing copied)."""
        if layer not in self._indexes:
            self._indexes[layer] = MapperIndex.from_arrays(
                self.data.atlas.mapper_index_arrays(layer)
            )
        return self._indexes[layer]

    def norms(self, layer: int) -> np.ndarray:
        """float64 ``[points]`` L2 norm of every sampled vector."""
        if layer not in self._norms:
            x = np.asarray(self.sample(layer).vectors, dtype=np.float64)
            self._norms[layer] = np.sqrt(np.einsum("ij,ij->i", x, x))
        return self._norms[layer]

    def crop(self, layer: int, row: int) -> str | None:
        """Relative path of a sample row's crop, or ``None``."""
        return self.data.atlas.mapper_crop(layer, row)

    def defaults(self) -> MapperParams:
        """The atlas's default parameters (``parameters.mapper.defaults``).

        Atlases without them get :func:`~compute.topology.mapper.default_params` of their
        sample size.
        """
        return stored_default_params(self.data.atlas.parameters.get("mapper"))

    def settings(self, state: ViewState) -> tuple[int, int, int]:
        """``(intervals, overlap %, ε % of auto)`` of ``state``; ``None`` fields: the defaults.

        The state's numbers are clamped to the view's ranges (``TOPO_*``).
        """
        defaults = self.defaults()

        def pick(value: Any, default: float, bounds: tuple[int, int]) -> int:
            number = round(default) if value is None else int(value)
            return int(min(max(number, bounds[0]), bounds[1]))

        return (
            pick(getattr(state, "topo_intervals", None), defaults.intervals, TOPO_INTERVALS),
            pick(getattr(state, "topo_overlap", None), 100 * defaults.overlap, TOPO_OVERLAP),
            pick(getattr(state, "topo_eps", None), 100 * defaults.eps_scale, TOPO_EPS),
        )

    def params(self, state: ViewState, layer: int) -> tuple[MapperParams, list[str]]:
        """The Mapper parameters of ``state`` for ``layer``, and why any choice was refused.

        Another metric than the index's, or HDBSCAN, needs the sample clustered directly:
        refused (with a message) above :data:`DIRECT_LIMIT` points.
        """
        index = self.index(layer)
        notes: list[str] = []
        metric = state.topo_metric or index.metric
        clusterer = state.topo_cluster
        direct = metric != index.metric or clusterer != "dbscan"
        if direct and index.num_points > DIRECT_LIMIT:
            notes.append(
                f"{clusterer.upper()} with the {metric} metric would cluster all "
                f"{index.num_points:,} sampled points directly (limit {DIRECT_LIMIT:,}); "
                f"showing DBSCAN with the stored {index.metric} index instead."
            )
            metric, clusterer = index.metric, "dbscan"
        # The atlas's default graph is the base (every field, ``min_samples`` included, and
        # the numbers unrounded): with no parameter in the state this is the graph the
        # featurevis inversions were rendered for (``compute.featurevis.mapper_nodes``).
        intervals, overlap, eps = self.settings(state)
        changes: dict[str, Any] = {"metric": metric, "clusterer": clusterer}
        if state.topo_intervals is not None:
            changes["intervals"] = intervals
        if state.topo_overlap is not None:
            changes["overlap"] = overlap / 100.0
        if state.topo_eps is not None:
            changes["eps_scale"] = eps / 100.0
        base = default_graph_params(self.data.atlas.parameters.get("mapper"), index)
        return replace(base, **changes), notes

    def is_exact(self, layer: int, params: MapperParams) -> bool:
        """Whether the graph of ``params`` is exact without asking (small sample or index)."""
        index = self.index(layer)
        return index.num_points <= EXACT_POINTS or index.approximation(params) is None

    def exact_refusal(self, layer: int, params: MapperParams) -> str | None:
        """Why "Recompute exactly" is refused for ``params`` (too big), or ``None``."""
        pairs = self.index(layer).exact_pairs(params)
        if pairs <= EXACT_MAX_PAIRS:
            return None
        return (
            f"Recomputing exactly would compare {pairs:,} pairs of images (limit "
            f"{EXACT_MAX_PAIRS:,}): too large to do here. More intervals or less overlap "
            "make it smaller; an atlas built with an uncapped index (max_neighbors=0) is "
            "exact everywhere within its band."
        )

    def exact_known(self, layer: int, params: MapperParams) -> bool:
        """Whether an exact graph of ``params`` was computed ("recompute exactly") before."""
        with self._lock:
            if (layer, params, True) in self._memo or (layer, params) in self._exact_done:
                return True
        found = self.data.cache.peek(self._cache_key(layer, params, True))
        if found is not None:
            with self._lock:
                self._exact_done.add((layer, params))
        return found is not None

    def _cache_key(self, layer: int, params: MapperParams, exact: bool) -> str:
        return f"{self.data.key}:mapper:{layer}:{params!r}:{'exact' if exact else 'index'}:v5"

    def result(self, layer: int, params: MapperParams, exact: bool = False) -> MapperResult:
        """The Mapper graph of ``layer`` for ``params`` (memoised).

        Samples up to ``EXACT_POINTS`` are always clustered exactly. Larger ones use the
        stored index (approximate beyond its limits) unless ``exact`` is asked for or an
        exact graph of these parameters was computed before (then that one is shown, so
        node numbers in a link stay valid after "recompute exactly").
        """
        dbscan_on_index = params.clusterer == "dbscan"
        if dbscan_on_index and not exact:
            exact = self.is_exact(layer, params) or self.exact_known(layer, params)
        exact = exact and dbscan_on_index
        key = (layer, params, exact)
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        index = self.index(layer)
        sample = self.sample(layer)

        def compute() -> tuple[MapperGraph, np.ndarray]:
            needs_vectors = exact or params.metric != index.metric or params.clusterer != "dbscan"
            vectors = np.asarray(sample.vectors) if needs_vectors else None
            graph = index.mapper(params, vectors=vectors, exact=exact)
            return graph, layout_nodes(graph, index.lens)  # the lens does not depend on metric

        arrays = self.data.cache.get_or_compute(
            self._cache_key(layer, params, exact),
            lambda: graph_arrays(*compute()),
        )
        graph, positions = graph_from_arrays(arrays, params)
        labels = np.asarray(sample.label)
        stats = node_statistics(graph, labels, self.norms(layer), self.data.num_classes)
        approximation = None
        if params.metric == index.metric and dbscan_on_index and not graph.exact:
            approximation = index.approximation(params)
        result = MapperResult(
            layer=layer,
            params=params,
            graph=graph,
            stats=stats,
            shapes=tuple(find_shapes(graph, labels)),
            positions=positions,
            approximation=approximation,
        )
        with self._lock:
            if exact:
                self._exact_done.add((layer, params))
            self._memo[key] = result
            while len(self._memo) > self._size:
                self._memo.popitem(last=False)
        return result


#: The array fields of a :class:`MapperGraph` (the cache stores arrays only, no pickle).
_GRAPH_ARRAYS = (
    "node_indptr", "node_members", "node_interval", "node_cluster", "edge_source",
    "edge_target", "edge_intersection", "edge_jaccard", "interval_bounds", "interval_counts",
)  # fmt: skip


def graph_arrays(graph: MapperGraph, positions: np.ndarray) -> dict[str, np.ndarray]:
    """A computed graph and its layout as named arrays, for the derived-result cache."""
    arrays = {name: np.asarray(getattr(graph, name)) for name in _GRAPH_ARRAYS}
    arrays["scalars"] = np.array(
        [graph.num_points, graph.coverage, graph.eps, float(graph.exact), graph.seconds],
        dtype=np.float64,
    )
    arrays["positions"] = np.asarray(positions, dtype=np.float64)
    return arrays


def graph_from_arrays(
    arrays: dict[str, np.ndarray], params: MapperParams
) -> tuple[MapperGraph, np.ndarray]:
    """Inverse of :func:`graph_arrays` (the parameters are the cache key's)."""
    num_points, coverage, eps, exact, seconds = arrays["scalars"].tolist()
    graph = MapperGraph(
        num_points=int(num_points),
        **{name: arrays[name] for name in _GRAPH_ARRAYS},
        coverage=float(coverage),
        eps=float(eps),
        params=params,
        exact=bool(exact),
        seconds=float(seconds),
    )
    return graph, arrays["positions"]


def node_label(graph: MapperGraph, node: int) -> str:
    """A short readable node name: ``interval/cluster``."""
    return f"{int(graph.node_interval[node])}/{int(graph.node_cluster[node])}"


def topology_elements(
    result: MapperResult,
    *,
    selected: int | None,
    colour: str = "pie",
    jaccard_min: float = 0.0,
    picked: int | None = None,
    shape: Shape | None = None,
    names: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Cytoscape elements of a Mapper graph.

    Args:
        result: the computed graph.
        selected: the selected class (its slice is orange; nodes holding it get a ring).
        colour: ``pie`` (class pies), ``norm`` (mean L2) or ``share`` (of the selected class).
        jaccard_min: edges with a smaller Jaccard index are left out.
        picked: the opened node.
        shape: the selected flare or loop (its nodes ringed, the rest faded).
        names: class names, for the hover title.

    Returns:
        Node then edge elements (preset positions); element ``k`` is node ``k``.
    """
    graph = result.graph
    n = graph.num_nodes
    if n == 0:
        return []
    elements = topology_node_elements(
        result,
        range(n),
        selected=selected,
        colour=colour,
        picked=picked,
        shape=shape,
        names=names,
    )
    in_shape = set(shape.nodes) if shape is not None else set()
    jaccard = graph.edge_jaccard.astype(np.float64)
    top = float(jaccard.max()) if len(jaccard) else 1.0
    for e in np.flatnonzero(jaccard >= jaccard_min - 1e-12).tolist():
        a, b = int(graph.edge_source[e]), int(graph.edge_target[e])
        width = EDGE_MIN_PX + (EDGE_MAX_PX - EDGE_MIN_PX) * float(jaccard[e]) / max(top, 1e-9)
        edge_classes = (
            "faded" if shape is not None and not (a in in_shape and b in in_shape) else ""
        )
        elements.append(
            {
                "data": {
                    # named by its endpoints: a positional id reused after a parameter
                    # change would leave cytoscape drawing a stale edge (figures.edge_id)
                    "id": f"e:m{a}>m{b}",
                    "source": f"m{a}",
                    "target": f"m{b}",
                    "w": round(width, 2),
                    "jaccard": round(float(jaccard[e]), 4),
                },
                "classes": edge_classes,
            }
        )
    return elements


def topology_node_elements(
    result: MapperResult,
    nodes: Iterable[int],
    *,
    selected: int | None,
    colour: str = "pie",
    picked: int | None = None,
    shape: Shape | None = None,
    names: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """The node elements of :func:`topology_elements` for ``nodes`` only (same arguments).

    Args:
        result: the computed graph (with at least one node).
        nodes: node indices, in the order wanted.
        selected: see :func:`topology_elements`.
        colour: see :func:`topology_elements`.
        picked: see :func:`topology_elements`.
        shape: see :func:`topology_elements`.
        names: see :func:`topology_elements`.

    Returns:
        One element per node of ``nodes``.
    """
    stats = result.stats
    n = result.graph.num_nodes
    count = stats.count.astype(np.float64)
    # Many nodes share the same canvas: the largest node shrinks as their number grows.
    top_px = min(NODE_MAX_PX, max(NODE_MIN_PX + 8, NODE_MAX_PX * np.sqrt(80 / n)))
    size = NODE_MIN_PX + (top_px - NODE_MIN_PX) * np.sqrt(count / max(count.max(), 1.0))
    norms = stats.mean_norm.astype(np.float64)
    lo, hi = float(norms.min()), float(norms.max())
    has_selected = selected is not None and 0 <= selected < stats.class_counts.shape[1]
    in_shape = set(shape.nodes) if shape is not None else set()
    elements: list[dict[str, Any]] = []
    for k in nodes:
        share = (
            float(stats.class_counts[k, selected]) / max(float(count[k]), 1.0)
            if has_selected
            else 0.0
        )
        data: dict[str, Any] = {
            "id": f"m{k}",
            "node": k,
            "name": node_label(result.graph, k),
            "size": round(float(size[k]), 1),
            "count": int(count[k]),
            "norm": round(float(norms[k]), 4),
        }
        dominant = int(stats.dominant_class[k])
        if names and 0 <= dominant < len(names):
            data["title"] = f"{names[dominant]} {100 * float(stats.dominant_share[k]):.0f}%"
        # The selected class's share, for the hover line. Always present (0 included):
        # a class switch patches this element, and a key left out would keep its old value.
        data["share"] = round(share, 4)
        # The pie's slices whatever the colouring (only ``node.pie`` draws them): a colouring
        # switch patches these elements, and slice keys left out would keep old values.
        slices = pie_slices(stats.class_counts[k], selected)
        for i in range(MAX_SLICES):
            c, pct = slices[i] if i < len(slices) else (-1, 0.0)
            data[f"c{i + 1}"] = class_colour(c, selected)
            data[f"p{i + 1}"] = round(pct, 3)
        classes = []
        if colour == "pie":
            classes.append("pie")
            data["colour"] = "#ffffff"
        elif colour == "share":
            data["colour"] = share_colour(share)
        else:
            data["colour"] = norm_colour(float(norms[k]), lo, hi)
        if share > 0:
            classes.append("has-class")
        if k == picked:
            classes.append("picked")
        if shape is not None:
            classes.append("in-shape" if k in in_shape else "faded")
        elements.append(
            {
                "data": data,
                "position": {
                    "x": round(float(result.positions[k, 0]), 1),
                    "y": round(float(result.positions[k, 1]), 1),
                },
                "classes": " ".join(classes),
            }
        )
    return elements


def topology_stylesheet() -> list[dict[str, Any]]:
    """Stylesheet of the Mapper graph: pie or colour nodes, Jaccard-width edges, highlights."""
    pie: dict[str, Any] = {"pie-size": "100%", "background-color": "#ffffff"}
    for i in range(1, MAX_SLICES + 1):
        pie[f"pie-{i}-background-color"] = f"data(c{i})"
        pie[f"pie-{i}-background-size"] = f"data(p{i})"
    return [
        {
            "selector": "node",
            "style": {
                "width": "data(size)",
                "height": "data(size)",
                "background-color": "data(colour)",
                "border-width": 1,
                "border-color": "#64748b",
            },
        },
        {"selector": "node.pie", "style": pie},
        {
            "selector": "edge",
            "style": {
                "width": "data(w)",
                "line-color": "#94a3b8",
                "opacity": 0.7,
                "curve-style": "haystack",
            },
        },
        {"selector": "node.has-class", "style": {"border-color": SELECTED, "border-width": 3}},
        {"selector": ".faded", "style": {"opacity": 0.18}},
        {"selector": "node.in-shape", "style": {"border-color": "#7c3aed", "border-width": 4}},
        {"selector": "node.picked", "style": {"border-color": "#111827", "border-width": 5}},
    ]


def class_table(
    result: MapperResult, node: int, names: tuple[str, ...], limit: int = 12
) -> list[tuple[int, str, int, float]]:
    """The node's classes, most members first: ``(class, name, count, percent)``."""
    counts = result.stats.class_counts[node]
    total = max(int(counts.sum()), 1)
    present = np.flatnonzero(counts)
    order = present[np.argsort(-counts[present], kind="stable")][:limit]
    return [(int(c), names[int(c)], int(counts[c]), 100.0 * int(counts[c]) / total) for c in order]


def shape_summary(shape: Shape, rank: int, names: tuple[str, ...], inputs: str = "images") -> str:
    """One line describing a flare or loop for the shape list (``rank`` within its kind;
    ``inputs``: what the members are called, e.g. texts)."""
    name = names[shape.dominant_class] if 0 <= shape.dominant_class < len(names) else "?"
    return (
        f"{shape.kind} {rank + 1}: {len(shape.nodes)} nodes, {shape.size:,} {inputs}, "
        f"{100 * shape.dominant_share:.0f}% {name}"
    )


def node_classes(result: MapperResult, node: int, limit: int = 50) -> list[int]:
    """Classes present in ``node``, most members first (for the embedding highlight)."""
    return [
        c for c, *_ in class_table(result, node, ("",) * result.stats.class_counts.shape[1], limit)
    ]


@lru_cache(maxsize=8)
def mapper_data(data: AtlasData) -> MapperData:
    """The memoised Mapper graphs of an atlas (one per worker)."""
    return MapperData(data)


def index_metric(data: AtlasData) -> str:
    """The metric the atlas's Mapper index was built with (the view's default)."""
    settings = data.atlas.parameters.get("mapper") or {}
    return str(settings.get("metric", "euclidean"))
