"""Atlas loading and cached derived arrays for the views (no Dash imports).

Everything heavy stays on the server: the atlas is opened once per worker and manifest
(:func:`open_atlas`, kept by :class:`dashboard.atlases.AtlasRegistry`; tools and tests use
:func:`load`, an ``lru_cache``), derived arrays are computed once and kept in memory, and
the one quadratic result (the class-by-class cosine similarity of each layer) is also kept
in a ``diskcache`` directory shared by the workers of one machine.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import diskcache
import diskcache.core
import numpy as np
import scipy.sparse as sp

from compute.atlas import (
    DIVERSITY_IMAGES,
    MANIFEST,
    PART_EMBEDDING,
    PART_EXAMPLES,
    PART_FEATUREVIS,
    PART_GRAPHS,
    PART_INSTANCES,
    PART_MAPPER,
    PART_SUBSETS,
    PART_SUMMIT,
    PART_TEXT,
    UNKNOWN,
    Atlas,
    AtlasError,
    featurevis_path,
    is_safe_relpath,
)
from compute.receptive_field import ReceptiveField

log = logging.getLogger(__name__)


# What the file route serves: the pictures the views show. Weights, arrays and the manifest
# are compute-only and never leave the server.
SERVED_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})

#: Pixels between two node slots of a layer row, and between two layer rows.
SLOT_PX = 84.0
ROW_PX = 120.0
#: Vertical stagger inside a row: cytoscape.js <3.30.3 can stop rendering long runs of
#: nodes at exactly equal y, so alternate nodes are nudged by a few pixels.
STAGGER_PX = 5.0
#: Most nodes of an unfolded layer row. A wider row folds into interleaved lines of at
#: most :data:`LINE_NODES` (its k-th node by slot on line ``k mod r``), drawn ``r`` times
#: narrower, so a graph with a 40-unit layer still fits its box at a zoom where the labels
#: can be read; the order along the row, which the layout chose to shorten edges, is kept.
ROW_NODES = 12
LINE_NODES = 8
#: Pixels between the lines of a folded row.
LINE_PX = 70.0
NODE_MIN_PX = 26.0
NODE_MAX_PX = 64.0
EDGE_MIN_PX = 0.6
EDGE_MAX_PX = 7.0

#: How to compute each part, for the "missing part" notes (``ATLAS`` is replaced by the
#: atlas's name). ``build`` writes the Summit parts together; each command here exists
#: (tests/callbacks/test_data_figures.py parses every one with the real CLI).
_REBUILD = "python -m compute build --model ... --data ... --layers ... --out ATLAS --overwrite"
HOW_TO_COMPUTE = {
    PART_SUMMIT: _REBUILD,
    PART_EXAMPLES: _REBUILD,
    PART_EMBEDDING: _REBUILD,
    PART_GRAPHS: _REBUILD,
    PART_FEATUREVIS: "python -m compute featurevis --atlas ATLAS",
    PART_MAPPER: _REBUILD,
    PART_SUBSETS: _REBUILD,
    PART_INSTANCES: _REBUILD,
}

#: How a layer pair's influence counts were made, for people, by the manifest's
#: ``connection`` kind (docs/atlas.md); ``UNKNOWN`` for atlases that do not record it.
CONNECTION_LABELS: dict[str, str] = {
    "conv": "exact, through one convolution",
    "inception": "exact per branch, Inception widest path",
    "gradient": "gradient × activation (approximate attribution through a residual or other block)",
    UNKNOWN: "unknown (the atlas does not record it)",
}


@dataclass(frozen=True)
class LayerPair:
    """One recorded influence: ``source``'s channels feed ``target``'s.

    Attributes:
        source: index of the earlier layer (``influence_from``).
        target: index of the later layer (its influence counts are stored with it).
        connection: ``"conv"``, ``"inception"``, ``"gradient"`` or ``"unknown"``.
    """

    source: int
    target: int
    connection: str

    @property
    def label(self) -> str:
        """How the pair's counts were made, in words (:data:`CONNECTION_LABELS`)."""
        return connection_label(self.connection)


def connection_label(kind: str | None) -> str:
    """:data:`CONNECTION_LABELS` of ``kind``; a kind this dashboard does not know (a newer
    atlas) is shown by its name rather than hidden."""
    kind = kind or UNKNOWN
    return CONNECTION_LABELS.get(kind, f"{kind} (recorded by a newer build)")


#: ``diskcache`` value modes a cache row may have: bytes only (never pickle or text).
_SAFE_MODES = frozenset({diskcache.core.MODE_RAW, diskcache.core.MODE_BINARY})


class ArrayDisk(diskcache.Disk):
    """A ``diskcache`` disk that stores and returns bytes only and never calls pickle.

    Whoever can write the cache directory must not run code as the server: the default
    disk unpickles values (and non-string keys) it reads, and diskcache's ``JSONDisk``
    still unpickles a row that the default disk wrote. Here keys must be strings, values
    bytes, and a row in any other mode is refused on read (the caller recomputes).
    """

    def put(self, key: Any) -> tuple[Any, bool]:
        if not isinstance(key, str):
            raise TypeError(f"cache keys are strings, not {type(key).__name__}")
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:  # a pickled key: planted, never ours
            raise ValueError("refusing a cache key stored with pickle")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        if read or not isinstance(value, bytes):
            raise TypeError(f"cache values are bytes, not {type(value).__name__}")
        return super().store(value, read, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode not in _SAFE_MODES or read:
            raise ValueError(f"refusing a cache row of mode {mode} (only bytes are read)")
        return super().fetch(mode, filename, value, read)


def encode_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    """``.npz`` bytes of named arrays (numeric or unicode; object arrays are refused)."""
    buffer = io.BytesIO()
    for name, array in arrays.items():
        if np.asarray(array).dtype.hasobject:
            raise TypeError(f"array {name!r} holds Python objects: not cacheable")
    np.savez(buffer, **{name: np.asarray(a) for name, a in arrays.items()})
    return buffer.getvalue()


def decode_arrays(data: bytes) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_arrays` (``allow_pickle=False``)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _private_directory(directory: Path) -> Path:
    """``directory`` if this user owns it and no one else may write it (created ``0700``
    if missing); otherwise a fresh private temporary directory, with a warning."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except OSError as exc:
        raise OSError(f"cannot create {directory}: {exc}") from None
    foreign = hasattr(os, "getuid") and info.st_uid != os.getuid()
    if foreign or info.st_mode & 0o022:
        private = Path(tempfile.mkdtemp(prefix="network-atlas-cache-"))
        log.warning(
            "cache directory %s is %s: not used (others could plant entries); using %s",
            directory,
            "owned by another user" if foreign else "writable by others",
            private,
        )
        return private
    return directory


class DerivedCache:
    """A ``diskcache`` directory for derived arrays, or nothing if it cannot be used.

    Values are named numpy arrays stored as ``.npz`` bytes through :class:`ArrayDisk`:
    nothing read from the directory is ever unpickled, and a directory that another user
    owns or others may write is not used. The cache object is created lazily, so
    gunicorn's ``--preload`` forks before any SQLite connection exists. If the directory
    is unusable the dashboard runs without it and warns once.

    Args:
        directory: the cache directory (``None``: no cache).
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._cache: Any = None
        self._failed = directory is None
        self._lock = threading.Lock()

    def _open(self) -> Any:
        if self._cache is not None or self._failed:
            return self._cache
        with self._lock:
            if self._cache is None and not self._failed:
                try:
                    assert self.directory is not None
                    directory = _private_directory(self.directory)
                    self._cache = diskcache.Cache(str(directory), size_limit=2**30, disk=ArrayDisk)
                except Exception as exc:  # any failure: run uncached rather than not at all
                    self._failed = True
                    log.warning(
                        "cache directory %s unusable (%s); running without cache",
                        self.directory,
                        exc,
                    )
        return self._cache

    def peek(self, key: str) -> dict[str, np.ndarray] | None:
        """The cached arrays of ``key``, or ``None`` (a miss, or a row that is refused)."""
        cache = self._open()
        if cache is None:
            return None
        try:
            data = cache.get(key, default=None)
            return decode_arrays(data) if isinstance(data, bytes) else None
        except Exception as exc:  # a corrupt or planted row must not break a view
            log.warning("cache read of %s refused: %s", key[:120], exc)
            return None

    def get_or_compute(
        self, key: str, compute: Callable[[], Mapping[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """The cached arrays of ``key``, computing and storing them on a miss."""
        found = self.peek(key)
        if found is not None:
            return found
        arrays = {name: np.asarray(a) for name, a in compute().items()}
        cache = self._open()
        if cache is not None:
            try:
                cache.set(key, encode_arrays(arrays))
            except Exception as exc:
                log.warning("cache write of %s failed: %s", key[:120], exc)
        return arrays


@dataclass(frozen=True)
class ClassGraph:
    """One class's attribution graph, ready to draw.

    Node arrays have one entry per node, edge arrays one per edge; ``source``/``target``
    index the node arrays.

    Attributes:
        ids: node ids ``"layer-channel"``.
        layer: layer index of each node.
        channel: channel of each node.
        count: activation count ``A[c, channel]`` of each node's layer (float32).
        slot: horizontal slot inside the layer row (``graphs/node_x``).
        x: preset x position in px.
        y: preset y position in px (top layer on top).
        size: node diameter in px (∝ count).
        image: relative atlas path of the node's top example crop, or ``None``.
        labels: each node's label when it is more than its channel number (a text
            atlas's unit and its top token), else empty.
        vis: relative atlas path of each node's feature visualization, or ``None``
            (empty when the atlas has no featurevis part).
        source: lower-layer node of each edge.
        target: upper-layer node of each edge.
        weight: influence count of each edge (float32).
        width: edge width in px (∝ weight).
    """

    ids: np.ndarray
    layer: np.ndarray
    channel: np.ndarray
    count: np.ndarray
    slot: np.ndarray
    x: np.ndarray
    y: np.ndarray
    size: np.ndarray
    image: tuple[str | None, ...]
    source: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    width: np.ndarray
    vis: tuple[str | None, ...] = ()
    labels: tuple[str, ...] = ()

    @property
    def num_nodes(self) -> int:
        return int(self.ids.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.source.shape[0])

    def neighbours(self, node: str) -> list[str]:
        """Ids of the nodes joined to ``node`` by an edge (both directions)."""
        where = np.flatnonzero(self.ids == node)
        if where.size == 0:
            return []
        i = int(where[0])
        others = np.concatenate([self.target[self.source == i], self.source[self.target == i]])
        return [str(n) for n in self.ids[np.unique(others)]]


def row_positions(layer: np.ndarray, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Preset ``(x, y)`` of graph nodes: one row per layer, the top layer on top, along the
    row by ``slot``. A row of more than :data:`ROW_NODES` nodes folds into ``r`` lines of
    at most :data:`LINE_NODES`, :data:`LINE_PX` apart (the rows below move down to make
    room, and further still so that each line is nearer its own row's centre than any
    other's): its ``k``-th node by slot goes on line ``k mod r`` at ``slot / r``, so
    neighbours on one line stay a slot apart. Alternate nodes of a line are nudged up or
    down a few pixels (cytoscape.js <3.30.3 can stop rendering long runs of nodes at
    exactly equal y).

    Examples:
        >>> x, y = row_positions(np.array([0, 0, 1]), np.array([-0.5, 0.5, 0.0]))
        >>> x.tolist(), y.tolist()
        ([-42.0, 42.0, 0.0], [117.5, 122.5, -2.5])
    """
    order = np.lexsort((slot, layer))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    top_layer = int(layer.max()) if layer.size else 0
    sizes = np.bincount(layer, minlength=top_layer + 1) if layer.size else np.zeros(1, np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    lines = np.where(sizes > ROW_NODES, -(-sizes // LINE_NODES), 1)  # ceil
    # Each row's top: the rows above it and their extra lines. Folded rows stand further
    # apart (half of each one's extra height more), so every line is nearer its own row's
    # label, at the row's centre, than any other row's: by at least ROW_PX.
    top = np.zeros(top_layer + 1)
    for li in range(top_layer - 1, -1, -1):
        extra = (lines[li + 1] - 1) * LINE_PX
        spread = (lines[li + 1] - 1 + lines[li] - 1) * LINE_PX / 2
        top[li] = top[li + 1] + extra + ROW_PX + spread
    k = rank - starts[layer]  # rank along the row
    r = lines[layer]
    stagger = np.where((k // r) % 2 == 0, -STAGGER_PX / 2, STAGGER_PX / 2)
    x = (slot * SLOT_PX / r).astype(np.float32)
    y = (top[layer] + (k % r) * LINE_PX + stagger).astype(np.float32)
    return x, y


def _scale(values: np.ndarray, top: float, lo: float, hi: float) -> np.ndarray:
    """Map ``values`` in ``[0, top]`` linearly onto ``[lo, hi]`` (float32)."""
    if top <= 0:
        return np.full(values.shape, lo, dtype=np.float32)
    return (lo + (hi - lo) * np.clip(values / top, 0.0, 1.0)).astype(np.float32)


def incoming_counts(matrix: sp.csr_array, out_channels: int, channel: int) -> np.ndarray:
    """Influence counts on output ``channel`` from every input channel, summed over classes.

    Args:
        matrix: a layer's ``(classes * out, in)`` influence counts (row ``c * out + i``).
        out_channels: ``out``, the layer's channels.
        channel: the output channel ``i``.

    Returns:
        ``int64[in]``: entry ``j`` counts the images (of every class) in which input
        channel ``j`` was among the top influences on ``channel``. Reads only the
        ``classes`` rows of ``channel``.
    """
    classes = matrix.shape[0] // out_channels
    rows = np.arange(classes, dtype=np.int64) * out_channels + channel
    return np.asarray(matrix[rows].sum(axis=0), dtype=np.int64).ravel()


def outgoing_counts(matrix: sp.csr_array, out_channels: int, channel: int) -> np.ndarray:
    """Influence counts from input ``channel`` on every output channel, summed over classes.

    Args:
        matrix: a layer's ``(classes * out, in)`` influence counts (row ``c * out + i``).
        out_channels: ``out``, the layer's channels.
        channel: the input channel ``j`` (of the previous layer).

    Returns:
        ``int64[out]``: entry ``i`` counts the images (of every class) in which ``channel``
        was among the top influences on output channel ``i``. One vectorised pass over the
        stored entries; no transposed copy is kept.
    """
    where = np.flatnonzero(np.asarray(matrix.indices) == channel)
    rows = np.searchsorted(np.asarray(matrix.indptr), where, side="right") - 1
    weights = np.asarray(matrix.data)[where].astype(np.float64)
    summed = np.bincount(rows % out_channels, weights=weights, minlength=out_channels)
    return np.rint(summed).astype(np.int64)


def top_entries(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest positive entries of a 1-D array: (indices, values), largest first.

    Ties keep the lower index first; zeros are never listed.
    """
    values = np.asarray(values).ravel()
    positive = np.flatnonzero(values > 0)
    order = positive[np.argsort(-values[positive], kind="stable")][: max(k, 0)]
    return order, values[order]


def sparkline_svg(hist: np.ndarray) -> str:
    """A tiny SVG of a confidence histogram, drawn as one step area (a few hundred bytes)."""
    hist = np.asarray(hist, dtype=np.float64)
    bins = max(int(hist.shape[0]), 1)
    top = float(hist.max()) if hist.size else 0.0
    height = 16.0
    steps = []
    for i, value in enumerate(hist.tolist()):
        h = 0.0 if top <= 0 else height * value / top
        steps.append(f"V{height - h:.1f}H{2 * (i + 1)}")
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {2 * bins} 16' "
        f"preserveAspectRatio='none'><path d='M0 16{''.join(steps)}V16Z' "
        "fill='#60a5fa' stroke='#2563eb' stroke-width='0.3'/></svg>"
    )


class AtlasData:
    """An opened atlas plus the derived arrays the views need, computed lazily.

    Safe to share between the threads of one worker: derived values are computed
    idempotently (a race at worst computes one twice).

    Args:
        atlas: the opened atlas.
        cache: a cross-worker cache for expensive derived results.
    """

    def __init__(self, atlas: Atlas, cache: DerivedCache | None = None) -> None:
        self.atlas = atlas
        self.cache = cache or DerivedCache(None)
        self.names: tuple[str, ...] = atlas.classes
        self.num_classes = atlas.num_classes
        self.num_layers = len(atlas.layers)
        self.channels: tuple[int, ...] = tuple(layer.channels for layer in atlas.layers)
        self.layer_names: tuple[str, ...] = atlas.layer_names
        #: A text atlas: examples and members are snippets of text, not crops.
        self.text = atlas.modality == "text"
        #: What the inputs are called in the views ("texts" or "images").
        self.inputs = "texts" if self.text else "images"
        manifest_bytes = (atlas.path / MANIFEST).read_bytes()
        #: Identifies this atlas content in the shared cache (path + manifest digest).
        self.digest = hashlib.sha256(manifest_bytes).hexdigest()[:16]
        self.key = f"{atlas.path.resolve()}:{self.digest}"
        self._graphs: dict[tuple[int, str, int | None], ClassGraph] = {}
        self._similarity: dict[int, np.ndarray] = {}
        self._counts: dict[int, np.ndarray] = {}

    # -- facts ----------------------------------------------------------------------------

    def has(self, part: str) -> bool:
        return self.atlas.has(part)

    @property
    def default_layer(self) -> int:
        """The layer shown when the URL names none: about two thirds up the network (as
        Summit opened on mixed4d), where classes separate but are not yet one-hot."""
        return max(0, min(self.num_layers - 1, (2 * self.num_layers) // 3))

    def header(self) -> dict[str, Any]:
        """Title, model, dataset and totals for the page header."""
        manifest = self.atlas.manifest
        model = manifest.get("model") or {}
        dataset = manifest.get("dataset") or {}
        metrics = (manifest.get("metrics") or {}).get("accuracy") or {}
        num_images = dataset.get("num_images")
        if num_images is None and self.has(PART_SUMMIT):
            num_images = int(np.asarray(self.num_images).sum())
        return {
            "title": self.atlas.title or "Network Atlas",
            "model": str(model.get("name", "unknown model")),
            "dataset": str(dataset.get("name", "unknown dataset")),
            "split": dataset.get("split"),
            "num_classes": self.num_classes,
            "num_images": num_images,
            "train_accuracy": metrics.get("train"),
            "test_accuracy": metrics.get("test"),
            "data_accuracy": self.data_accuracy,
            "approximate": self.approximate_precision,
            "random_weights": model.get("random_weights") is True,
        }

    @property
    def data_accuracy(self) -> float | None:
        """Top-1 accuracy over the atlas's own inputs (its class statistics: correct over
        inputs, every class together); ``None`` without them."""
        if not self.has(PART_SUMMIT):
            return None
        stats = self.atlas.class_stats()
        total = int(np.asarray(stats["num_images"]).sum())
        return int(np.asarray(stats["num_correct"]).sum()) / total if total else None

    @property
    def approximate_precision(self) -> str | None:
        """The precision of a mixed-precision (approximate) build, e.g. ``"bf16"``;
        ``None`` for an exact build or one that does not record it (older atlases)."""
        build = self.atlas.build
        if build.approximate is not True:
            return None
        return str(build.precision)

    def layer_pairs(self) -> list[LayerPair]:
        """Every recorded influence between chosen layers, input to output, with how its
        counts were made (``"unknown"`` for atlases that do not record it)."""
        pairs = []
        for target, info in enumerate(self.atlas.layers):
            source = self.previous_layer(target)
            if source is not None:
                pairs.append(LayerPair(source, target, str(info.connection or UNKNOWN)))
        return pairs

    def missing_note(self, part: str) -> str:
        """A friendly sentence saying that ``part`` is missing and how to compute it."""
        # The atlas's name only: a deployment never shows its server paths.
        command = HOW_TO_COMPUTE[part].replace("ATLAS", self.atlas.path.name)
        return f"This atlas has no '{part}' part. Compute it with `{command}` and reload."

    # -- class statistics -----------------------------------------------------------------

    @cached_property
    def num_images(self) -> np.ndarray:
        if not self.has(PART_SUMMIT):
            return np.zeros(self.num_classes, dtype=np.int64)
        return np.asarray(self.atlas.class_stats()["num_images"])

    @cached_property
    def accuracy(self) -> np.ndarray:
        """``float64[classes]`` top-1 accuracy (NaN: unknown)."""
        if not self.has(PART_SUMMIT):
            return np.full(self.num_classes, np.nan)
        return np.asarray(self.atlas.accuracy(), dtype=np.float64)

    @cached_property
    def confusion(self) -> np.ndarray | None:
        """``int64[classes, classes]`` true × predicted class counts (``None``: an atlas built
        before they were recorded, or without the summit part)."""
        if not self.has(PART_SUMMIT):
            return None
        return self.atlas.confusion()

    def subset_images(self, cls: int, subset: str, other: int | None) -> int | None:
        """Images of ``cls`` in a subset (``None``: unknown, or no ``subsets`` part)."""
        if not self.has(PART_SUBSETS) or not 0 <= cls < self.num_classes:
            return None
        mistaken = int(self.atlas.mistaken_images()[cls])
        if other is not None:
            row = self.atlas.pair_row(cls, other)
            return None if row is None else int(self.atlas.subset_pairs()[1][row])
        # The images counted under the class: by label, or by prediction (a column of the
        # confusion counts: predictions outside the classes are not counted).
        by_label = self.atlas.parameters.get("aggregate_by", "label") == "label"
        if by_label:
            counted = int(self.num_images[cls])
        elif self.confusion is not None:
            counted = int(self.confusion[:, cls].sum())
        else:
            return None
        return {"mistaken": mistaken, "correct": counted - mistaken}.get(subset, counted)

    def mistaken_for(self, cls: int, k: int = 3) -> list[tuple[int, float]]:
        """The ``k`` classes the model most often predicts for images of ``cls``, with the
        share of ``cls``'s images predicted as each (largest first, ties: lower class)."""
        if self.confusion is None or not 0 <= cls < self.num_classes:
            return []
        row = np.array(self.confusion[cls], dtype=np.int64)
        row[cls] = 0
        total = max(int(self.num_images[cls]), 1)
        classes, counts = top_entries(row, k)
        return [(int(c), float(n) / total) for c, n in zip(classes, counts, strict=True)]

    @cached_property
    def confidence_hist(self) -> np.ndarray:
        if not self.has(PART_SUMMIT):
            return np.zeros((self.num_classes, 0), dtype=np.int64)
        return np.asarray(self.atlas.class_stats()["confidence_hist"])

    @property
    def has_sparklines(self) -> bool:
        """Whether the atlas has confidence histograms to draw."""
        return self.confidence_hist.shape[1] > 0

    def sparkline(self, class_index: int) -> str | None:
        """The class's confidence-histogram SVG (served by URL, cached by the browser)."""
        if not self.has_sparklines or not 0 <= class_index < self.num_classes:
            return None
        return sparkline_svg(self.confidence_hist[class_index])

    # -- per-layer arrays -------------------------------------------------------------------

    def counts(self, layer: int) -> np.ndarray:
        """``float32[classes, channels]`` activation counts A of ``layer`` (in memory)."""
        cached = self._counts.get(layer)
        if cached is None:
            cached = np.asarray(self.atlas.activation_counts(layer), dtype=np.float32)
            self._counts[layer] = cached
        return cached

    def similarity_matrix(self, layer: int) -> np.ndarray:
        """``float32[classes, classes]`` cosine similarity between rows of A of ``layer``.

        Summit compared classes with a vector of channel *indices* by mistake; this is the
        cosine between the classes' activation-count rows.
        """
        cached = self._similarity.get(layer)
        if cached is None:

            def compute() -> np.ndarray:
                a = self.counts(layer)
                norms = np.linalg.norm(a, axis=1, keepdims=True)
                unit = np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)
                return (unit @ unit.T).astype(np.float32)

            cached = self.cache.get_or_compute(
                f"{self.key}:similarity:{layer}:v2", lambda: {"similarity": compute()}
            )["similarity"]
            self._similarity[layer] = cached
        return cached

    def similarity(self, layer: int, class_index: int) -> np.ndarray:
        """``float32[classes]``: cosine similarity of every class to ``class_index``."""
        return self.similarity_matrix(layer)[class_index]

    def sidebar_order(self, sort: str, layer: int, class_index: int) -> np.ndarray:
        """Class indices in sidebar order; the selected class is pinned first.

        ``similarity`` sorts by cosine to the selected class (descending); ``acc-asc`` /
        ``acc-desc`` by accuracy (unknown accuracy last). Ties keep class order.
        """
        if sort == "similarity" and self.has(PART_SUMMIT):
            key = -self.similarity(layer, class_index)
        elif sort in ("acc-asc", "acc-desc"):
            acc = self.accuracy
            key = acc if sort == "acc-asc" else -acc
            key = np.where(np.isnan(key), np.inf, key)
        else:
            key = np.arange(self.num_classes, dtype=np.float64)
        order = np.argsort(key, kind="stable")
        return np.concatenate([[class_index], order[order != class_index]])

    @cached_property
    def _lower_names(self) -> tuple[str, ...]:
        return tuple(name.casefold() for name in self.names)

    def match_classes(self, text: str, limit: int = 50) -> list[int]:
        """Classes whose name contains ``text`` (case-insensitive), prefix matches first."""
        needle = text.strip().casefold()
        if not needle:
            return []
        prefix, inner = [], []
        for c, name in enumerate(self._lower_names):
            position = name.find(needle)
            if position == 0 or (position > 0 and name[position - 1] == " "):
                prefix.append(c)
            elif position > 0:
                inner.append(c)
            if len(prefix) >= limit:
                break
        return (prefix + inner)[:limit]

    def class_options(
        self,
        search: str | None,
        pinned: list[int],
        suggestions: np.ndarray,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Dropdown options: ``pinned`` classes (the current value, so its label shows), then
        the classes matching ``search`` or, without search text, ``suggestions``.

        Sending ~50 options instead of every class keeps the Dash dropdown light with a
        thousand classes.
        """
        matches = self.match_classes(search or "", limit) if search else suggestions[:limit]
        seen: set[int] = set()
        options = []
        for c in [*pinned, *np.asarray(matches).tolist()]:
            if c not in seen and 0 <= c < self.num_classes:
                seen.add(c)
                options.append({"label": self.names[c], "value": int(c)})
        return options

    def embedding(self, layer: int) -> np.ndarray:
        """``float32[classes, 2]`` class embedding of ``layer``."""
        return np.asarray(self.atlas.embedding(layer), dtype=np.float32)

    # -- neurons ----------------------------------------------------------------------------

    def receptive_field(self, layer: int) -> ReceptiveField | None:
        """The receptive field the build measured for ``layer`` (``None``: not recorded)."""
        fields = self.atlas.parameters.get("receptive_fields") or {}
        names = self.layer_names
        entry = fields.get(names[layer]) if 0 <= layer < len(names) else None
        if not isinstance(entry, dict):
            return None
        try:
            return ReceptiveField.from_manifest(entry)
        except (KeyError, IndexError, TypeError, ValueError):
            return None

    def whole_image_token(self, layer: int, token: int) -> bool:
        """Whether position ``(0, token)`` of an image atlas's token layer is a class token
        (a ViT's ``[CLS]``), whose crop is the whole image rather than a patch."""
        field = self.receptive_field(layer)
        return bool(field and field.token_columns and token < field.token_prefix)

    def crop(self, layer: int, channel: int, rank: int = 0) -> str | None:
        """Relative path of a channel's ``rank``-th example crop, or ``None``."""
        return self.atlas.example_crop(layer, channel, rank)

    def examples(self, layer: int, channel: int) -> list[dict[str, Any]]:
        """The channel's dataset examples, best first: crop path, activation, image index
        and ``token``, the column of the maximum (a text atlas's token)."""
        if not self.has(PART_EXAMPLES):
            return []
        table = self.atlas.examples(layer)
        image_index = np.asarray(table.image_index[channel])
        activation = np.asarray(table.activation[channel])
        position = np.asarray(table.position[channel])
        out = []
        for rank, (index, value) in enumerate(zip(image_index, activation, strict=True)):
            if index < 0:
                break
            out.append(
                {
                    "rank": rank,
                    "image_index": int(index),
                    "activation": float(value),
                    "crop": None if self.text else self.crop(layer, channel, rank),
                    "token": int(position[rank][1]),
                }
            )
        return out

    def top_token(self, layer: int, channel: int) -> str | None:
        """A text atlas's unit's most frequent token at its maximum among its top examples,
        as the text writes it (ties: the better example's), ``None`` without examples."""
        found: dict[str, int] = {}
        for example in self.examples(layer, channel):
            text = self.atlas.text_input(example["image_index"])
            if text is not None and 0 <= example["token"] < len(text.tokens):
                # The word as written ("and", not the tokenizer's "[UNK]" or "##s").
                token = text.word(example["token"])
                found[token] = found.get(token, 0) + 1
        return max(found, key=lambda t: found[t]) if found else None  # first of the most

    def unit_label(self, layer: int, channel: int) -> str:
        """A node's label: its channel number, and a text atlas unit's top token over the
        dataset (the token most often at its maximum; the top examples' when the atlas
        does not count them or the most frequent tokens tie)."""
        if not self.text:
            return str(channel)
        counted = self.atlas.top_tokens(layer, channel) if self.has(PART_TEXT) else []
        clear = len(counted) == 1 or (len(counted) > 1 and counted[0][1] > counted[1][1])
        # A tie at the top (20 tokens once each, say) says nothing of the unit: the top
        # examples' token then labels it, ties going to the best example's.
        token = counted[0][0] if clear else self.top_token(layer, channel)
        return f"{channel} {token}" if token else str(channel)

    def featurevis(self, layer: int, channel: int, kind: str = "vis") -> str | None:
        """Relative path of a channel's feature visualization (``kind`` ``"vis"`` or
        ``"div-0"``..``"div-3"``), or ``None`` if the atlas does not hold it."""
        if not self.has(PART_FEATUREVIS):
            return None
        path = featurevis_path(layer, channel, kind)
        return path if path in self.atlas.files else None

    def diversity(self, layer: int, channel: int) -> list[str]:
        """Relative paths of the channel's diversity images (empty without featurevis)."""
        paths = (self.featurevis(layer, channel, f"div-{k}") for k in range(DIVERSITY_IMAGES))
        return [p for p in paths if p is not None]

    def thumbnail(self, layer: int, channel: int) -> str | None:
        """The channel's picture for small tiles: its visualization, else its top crop."""
        return self.featurevis(layer, channel) or self.crop(layer, channel, 0)

    def previous_layer(self, layer: int) -> int | None:
        """Index of the layer whose channels influence ``layer`` (``influence_from``)."""
        source = self.atlas.layers[layer].influence_from
        return None if source is None else self.atlas.layer_index(source)

    def next_layers(self, layer: int) -> list[int]:
        """Indices of the layers that ``layer``'s channels influence."""
        name = self.layer_names[layer]
        return [i for i, info in enumerate(self.atlas.layers) if info.influence_from == name]

    def incoming(self, layer: int, channel: int, k: int = 10) -> list[tuple[int, int, int]]:
        """The channels of the previous layer that most often influence ``channel``.

        Returns:
            ``(layer, channel, count)`` triples, strongest first (empty for the first layer
            or without the summit part).
        """
        source = self.previous_layer(layer)
        if source is None or not self.has(PART_SUMMIT):
            return []
        row = incoming_counts(self.atlas.influence_counts(layer), self.channels[layer], channel)
        top, counts = top_entries(row, k)
        return [(source, int(j), int(n)) for j, n in zip(top, counts, strict=True)]

    def outgoing(self, layer: int, channel: int, k: int = 10) -> list[tuple[int, int, int]]:
        """The channels of the next layer(s) that ``channel`` most often influences.

        Returns:
            ``(layer, channel, count)`` triples, strongest first (empty for the last layer).
        """
        if not self.has(PART_SUMMIT):
            return []
        found: list[tuple[int, int, int]] = []
        for target in self.next_layers(layer):
            matrix = self.atlas.influence_counts(target)
            top, counts = top_entries(outgoing_counts(matrix, self.channels[target], channel), k)
            found.extend((target, int(i), int(n)) for i, n in zip(top, counts, strict=True))
        found.sort(key=lambda t: (-t[2], t[0], t[1]))
        return found[:k]

    def top_classes(self, layer: int, channel: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` classes whose images use the channel most: (indices, counts)."""
        column = self.counts(layer)[:, channel]
        k = min(k, column.shape[0])
        top = np.argpartition(-column, k - 1)[:k]
        top = top[np.argsort(-column[top], kind="stable")]
        return top, column[top]

    # -- attribution graphs ---------------------------------------------------------------

    def graph(self, class_index: int, subset: str = "all", other: int | None = None) -> ClassGraph:
        """The drawable attribution graph of one class (cached per worker): of all its
        images, or of a subset (``Atlas.graph``'s ``subset`` and ``other``; node sizes are
        the subset's counts).

        Raises:
            AtlasError: a subset without the ``subsets`` part, or a pair not stored.
        """
        key = (class_index, subset, other)
        cached = self._graphs.get(key)
        if cached is not None:
            return cached
        raw = self.atlas.graph(class_index, subset, other)
        layer = raw.layer.astype(np.int64)
        channel = raw.channel.astype(np.int64)
        count = np.zeros(layer.shape[0], dtype=np.float32)
        if self.has(PART_SUMMIT):
            row = class_index if other is None else self.atlas.pair_row(class_index, other)
            for li in np.unique(layer):
                mask = layer == li
                if subset == "all":
                    counts = self.counts(int(li))
                elif other is None:
                    counts = self.atlas.subset_counts(int(li), subset)
                else:
                    counts = self.atlas.pair_counts(int(li))
                count[mask] = counts[row, channel[mask]]
        graph = self.drawable(
            layer, channel, count, raw.x, raw.source, raw.target, raw.weight.astype(np.float32)
        )
        self._graphs[key] = graph
        return graph

    def drawable(
        self,
        layer: np.ndarray,
        channel: np.ndarray,
        count: np.ndarray,
        slot: np.ndarray,
        source: np.ndarray,
        target: np.ndarray,
        weight: np.ndarray,
    ) -> ClassGraph:
        """A graph ready to draw from its nodes (layer, channel, size-giving count, slot in
        the layer's row) and edges (node rows, width-giving weight): preset positions, node
        and edge sizes, each node's crop and feature visualization."""
        layer = np.asarray(layer, dtype=np.int64)
        channel = np.asarray(channel, dtype=np.int64)
        count = np.asarray(count, dtype=np.float32)
        slot = np.asarray(slot).astype(np.float32)
        weight = np.asarray(weight, dtype=np.float32)
        x, y = row_positions(layer, slot)
        ids = np.array([f"{li}-{ch}" for li, ch in zip(layer, channel, strict=True)], dtype=object)
        images = tuple(
            self.crop(int(li), int(ch), 0) for li, ch in zip(layer, channel, strict=True)
        )
        vis = (
            tuple(self.featurevis(int(li), int(ch)) for li, ch in zip(layer, channel, strict=True))
            if self.has(PART_FEATUREVIS)
            else ()
        )
        labels = (
            tuple(self.unit_label(int(li), int(ch)) for li, ch in zip(layer, channel, strict=True))
            if self.text
            else ()
        )
        return ClassGraph(
            vis=vis,
            labels=labels,
            ids=ids,
            layer=layer,
            channel=channel,
            count=count,
            slot=slot,
            x=x,
            y=y,
            size=_scale(count, float(count.max()) if count.size else 0.0, NODE_MIN_PX, NODE_MAX_PX),
            image=images,
            source=np.asarray(source, dtype=np.int64),
            target=np.asarray(target, dtype=np.int64),
            weight=weight,
            width=_scale(
                weight, float(weight.max()) if weight.size else 0.0, EDGE_MIN_PX, EDGE_MAX_PX
            ),
        )

    # -- files ----------------------------------------------------------------------------

    def file_path(self, relpath: str) -> Path | None:
        """The absolute path of a picture listed in the manifest, or ``None``.

        Only listed pictures are served (the views show nothing else): anything else in
        the directory, compute-only files such as ``model/weights.pt`` and arrays, and any
        path that is not a plain relative path are unreachable.
        """
        if not is_safe_relpath(relpath) or relpath not in self.atlas.files:
            return None
        if Path(relpath).suffix.lower() not in SERVED_SUFFIXES:
            return None
        return self.atlas.path.absolute() / relpath


#: An input is "uncertain" when its prediction's lead over the runner-up is among the lowest
#: this fraction of the inputs a view lists (the Training and Instance pickers' filter).
UNCERTAIN_QUANTILE = 0.1


def uncertain_by_lead(lead: np.ndarray, quantile: float = UNCERTAIN_QUANTILE) -> np.ndarray:
    """``bool [n]``: the inputs whose ``lead`` (the predicted class's lead over the
    runner-up: a softmax margin, or a trace's class-share lead) is in the lowest
    ``quantile`` of all ``n`` (ties included).

    Examples:
        >>> uncertain_by_lead(np.array([0.9, 0.05, 0.5, 0.02]), 0.25).tolist()
        [False, False, False, True]
    """
    lead = np.asarray(lead, dtype=np.float64)
    if lead.size == 0:
        return np.zeros(0, dtype=bool)
    return lead <= np.quantile(lead, quantile)


def file_url(prefix: str, relpath: str | None) -> str | None:
    """URL of an atlas file under the file route ``prefix`` (e.g. ``/atlas-file/``)."""
    return None if relpath is None else prefix + quote(relpath)


@cache
def shared_cache(cache_dir: str | None) -> DerivedCache:
    """One :class:`DerivedCache` per directory and worker, shared by all its atlases (keys
    carry each atlas's path and digest), so an unusable directory warns once, not once per
    atlas."""
    return DerivedCache(Path(cache_dir) if cache_dir else None)


def open_atlas(atlas_dir: str, cache_dir: str | None = None) -> AtlasData:
    """Open an atlas (checked: raises :class:`AtlasError` naming the file).

    A deployment keeps what it opened per atlas and manifest
    (:class:`dashboard.atlases.AtlasRegistry`), so a rebuilt atlas is opened afresh.

    Args:
        atlas_dir: the atlas directory.
        cache_dir: the derived-result cache directory (``None``: no cache).
    """
    atlas = Atlas.open(atlas_dir)
    data = AtlasData(atlas, shared_cache(cache_dir))
    # Touch the class statistics now so a corrupt summit file fails at start, not in a view.
    if data.has(PART_SUMMIT):
        _ = data.accuracy, data.confidence_hist
    log.info("opened %r", atlas)
    return data


@lru_cache(maxsize=64)
def load(atlas_dir: str, cache_dir: str | None = None) -> AtlasData:
    """:func:`open_atlas`, once per process and path (tools, tests and benchmarks).

    Kept open for the process's life (the bound only guards test sessions that open
    hundreds of temporary ones).
    """
    return open_atlas(atlas_dir, cache_dir)


__all__ = [
    "CONNECTION_LABELS",
    "AtlasData",
    "AtlasError",
    "ClassGraph",
    "DerivedCache",
    "LayerPair",
    "connection_label",
    "file_url",
    "incoming_counts",
    "load",
    "open_atlas",
    "outgoing_counts",
    "top_entries",
]
