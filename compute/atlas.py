"""Read and write an atlas: the one contract between ``compute`` and ``dashboard``.

An atlas is a directory holding ``manifest.json`` plus ``.npy`` arrays and small images
(format described in ``docs/atlas.md``). This module is torch-free and Dash-free, so
both halves of the product import it.

Writing is atomic: :class:`AtlasWriter` fills a temporary sibling directory and renames it
into place, so an interrupted build never leaves a half atlas. :func:`update_atlas` adds
files to an existing atlas first and then replaces the manifest atomically.

Examples:
    >>> from compute.atlas import Atlas
    >>> atlas = Atlas.open("path/to/atlas")            # doctest: +SKIP
    >>> atlas.activation_counts(atlas.layer_names[0])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

FORMAT_NAME = "network-atlas"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")

#: Parts an atlas may hold; a view whose part is missing says how to compute it.
PART_SUMMIT = "summit"  # activation counts, influence counts, class statistics
PART_EXAMPLES = "examples"  # top dataset examples per channel, with crops
PART_EMBEDDING = "embedding"  # class embedding per layer
PART_GRAPHS = "graphs"  # attribution graphs for every class
PART_FEATUREVIS = "featurevis"  # feature visualization and diversity images per channel
PART_TRACE = "trace"  # training-trace explanations of a split's images (docs/trace.md)
PART_MAPPER = "mapper"  # TopoAct: sampled activation vectors and a Mapper index per layer
PART_SUBSETS = "subsets"  # each class's correct / mistaken images and confusion pairs
PART_INSTANCES = "instances"  # instance records: some inputs' own channels and edges
PART_TEXT = "text"  # a text atlas's named inputs: texts, tokens, token spans

#: What a build's inputs were (the manifest's ``modality``; an atlas without it: images).
MODALITIES = ("image", "text")

#: The ``text`` part's files (``compute.text_part`` writes them).
TEXT_PATHS = {
    "input_index": "text/input_index.npy",
    "token_indptr": "text/token_indptr.npy",
    "token_span": "text/token_span.npy",
    "tokens": "text/tokens.json",
    "texts": "text/texts.json",
    "vocabulary": "text/vocabulary.json",
}


def text_layer_paths(layer_index: int) -> dict[str, str]:
    """The ``text`` part's files of one layer: its units' top tokens over the dataset."""
    return {
        name: f"text/{layer_dir(layer_index)}/{name}.npy"
        for name in ("top_token_id", "top_token_count")
    }


_REQUIRED_KEYS = ("format", "version", "classes", "layers", "parameters", "files", "parts")

#: What a reader reports for a build fact an atlas does not record (atlases written before
#: the fact was recorded; docs/atlas.md).
UNKNOWN = "unknown"

#: How each chosen layer connects to the previous one (compute/connect.py), and what its
#: influence counts then are: exact per pair through one convolution; exact per branch of
#: an Inception block with the widest path through its bottlenecks; or gradient × activation
#: attribution (residual additions and anything else).
INFLUENCE_METHODS: dict[str, str] = {
    "conv": "exact",
    "inception": "exact-widest-path",
    "gradient": "gradient-x-activation",
}

#: Numeric precisions of a build's forward pass: ``fp32`` is exact (the default); ``bf16``
#: and ``fp16`` (``--precision``, autocast) give approximate counts.
PRECISIONS = ("fp32", "bf16", "fp16")
EXACT_PRECISION = "fp32"


class AtlasError(ValueError):
    """An atlas is missing, malformed, truncated or altered. The message names the file."""


@dataclass(frozen=True)
class LayerInfo:
    """One chosen layer of the model, in input-to-output order.

    Attributes:
        name: the model's own module name, e.g. ``"features.3"``.
        channels: number of output channels.
        height: height of the layer's activation map (for the model's input size).
        width: width of the layer's activation map.
        influence_from: name of the previous chosen layer whose channels influence this
            one (``None`` for the first layer).
        connection: how ``influence_from`` connects to this layer: ``"conv"``,
            ``"inception"`` or ``"gradient"`` (:data:`INFLUENCE_METHODS`); ``"unknown"`` in
            an atlas that does not record it; ``None`` for the first layer.
        influence_method: what the influence counts are: ``"exact"``,
            ``"exact-widest-path"`` or ``"gradient-x-activation"``; ``"unknown"`` or
            ``None`` as for ``connection``.
        tokens: a token layer ``[N, T, D]`` (a text model's or a ViT's): ``channels`` are
            its hidden units, ``height`` is 1 and ``width`` the longest input in tokens; a
            position ``(0, t)`` is token ``t``.
    """

    name: str
    channels: int
    height: int
    width: int
    influence_from: str | None = None
    connection: str | None = None
    influence_method: str | None = None
    tokens: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise AtlasError("layer with an empty name in manifest.json")
        if self.channels <= 0 or self.height <= 0 or self.width <= 0:
            raise AtlasError(f"layer {self.name!r} has a non-positive size in manifest.json")


def manifest_layers(
    names: Sequence[str],
    shapes: Sequence[Sequence[int]],
    connections: Sequence[str | None] | None = None,
    tokens: Sequence[bool] | None = None,
) -> list[dict[str, Any]]:
    """The manifest's ``layers`` entries of a chain of layers, as :class:`LayerInfo` reads them.

    Args:
        names: layer names, input to output.
        shapes: ``(channels, height, width)`` of each layer.
        connections: the connection kind of each layer from the one before it (``None`` for
            the first; keys of :data:`INFLUENCE_METHODS`); when given, each later layer
            records ``connection`` and ``influence_method``. ``None``: not recorded (read
            back as ``"unknown"``).
        tokens: which layers are token layers (recorded as ``"tokens": true``; ``None``:
            none).

    Returns:
        One dict per layer: ``name``, ``channels``, ``height``, ``width``,
        ``influence_from`` (the layer before it, ``None`` for the first), and with
        ``connections`` also ``connection`` and ``influence_method``.

    Raises:
        ValueError: ``connections`` of another length, or an unknown kind.
    """
    if connections is not None:
        if len(connections) != len(names):
            raise ValueError(f"{len(connections)} connection kinds for {len(names)} layers")
        unknown = [kind for kind in connections[1:] if kind not in INFLUENCE_METHODS]
        if unknown:
            raise ValueError(f"unknown connection kind(s) {unknown}")
    entries: list[dict[str, Any]] = []
    for i, (name, shape) in enumerate(zip(names, shapes, strict=True)):
        entry: dict[str, Any] = {
            "name": name,
            "channels": int(shape[0]),
            "height": int(shape[1]),
            "width": int(shape[2]),
            "influence_from": names[i - 1] if i > 0 else None,
        }
        if connections is not None:
            kind = connections[i] if i > 0 else None
            entry["connection"] = kind
            entry["influence_method"] = INFLUENCE_METHODS[kind] if kind is not None else None
        if tokens is not None and tokens[i]:
            entry["tokens"] = True
        entries.append(entry)
    return entries


def _layer_info(layer: Mapping[str, Any]) -> LayerInfo:
    """A manifest ``layers`` entry as a :class:`LayerInfo`; a later layer of an atlas that
    does not record its connection gets ``"unknown"``."""
    influence_from = layer.get("influence_from")
    connection = method = None
    if influence_from is not None:
        connection = str(layer.get("connection") or UNKNOWN)
        method = str(layer.get("influence_method") or INFLUENCE_METHODS.get(connection, UNKNOWN))
    return LayerInfo(
        name=str(layer["name"]),
        channels=int(layer["channels"]),
        height=int(layer["height"]),
        width=int(layer["width"]),
        influence_from=influence_from,
        connection=connection,
        influence_method=method,
        tokens=bool(layer.get("tokens", False)),
    )


@dataclass(frozen=True)
class BuildSettings:
    """How an atlas was built: the settings that change its numbers or its speed.

    Stored as the manifest's optional ``build`` object (docs/atlas.md). An atlas written
    before a setting was recorded reads it as ``"unknown"``.

    Attributes:
        device: device type of the pass: ``"cpu"``, ``"cuda"``, ``"mps"``.
        device_name: e.g. ``"NVIDIA H100 80GB HBM3"`` (``"cpu"`` on the CPU).
        world_size: processes that shared the pass (``torchrun``; 1 for one process).
        decode: ``"pil"``, ``"jpeg-device"`` (torchvision.io; pixels within 1/255 of PIL's)
            or ``"loader"`` (a Python build whose loader decoded the images itself).
        channels_last: whether model and batches were channels-last (same results).
        precision: ``"fp32"`` (exact, the default), ``"bf16"`` or ``"fp16"`` (autocast:
            approximate counts).
        torch: the torch version that built it.
    """

    device: str = UNKNOWN
    device_name: str = UNKNOWN
    world_size: int | str = UNKNOWN
    decode: str = UNKNOWN
    channels_last: bool | str = UNKNOWN
    precision: str = UNKNOWN
    torch: str = UNKNOWN

    @property
    def approximate(self) -> bool | None:
        """``True`` for a mixed-precision build, ``False`` for fp32, ``None`` if unknown."""
        if self.precision == UNKNOWN:
            return None
        return self.precision != EXACT_PRECISION

    @classmethod
    def from_manifest(cls, entry: Any) -> BuildSettings:
        """Read the manifest's ``build`` object; missing keys (or no object) are unknown.

        Raises:
            AtlasError: ``build`` is present but not a JSON object.
        """
        if entry is None:
            return cls()
        if not isinstance(entry, Mapping):
            raise AtlasError("manifest.json 'build' must be an object")
        known = {name: entry[name] for name in cls.__dataclass_fields__ if name in entry}
        return cls(**{name: UNKNOWN if value is None else value for name, value in known.items()})

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``build`` object, with ``approximate`` spelled out for readers
        that do not use this module."""
        entry = {name: getattr(self, name) for name in self.__dataclass_fields__}
        entry["approximate"] = self.approximate
        return entry

    def describe(self) -> str:
        """One line for people, e.g. ``device cuda (NVIDIA H100), 1 process, ...``."""

        def flag(value: bool | str) -> str:
            return value if isinstance(value, str) else ("yes" if value else "no")

        device = self.device
        if self.device_name not in (UNKNOWN, self.device):
            device += f" ({self.device_name})"
        approximate = {True: " (approximate)", False: " (exact)", None: ""}[self.approximate]
        return (
            f"device {device}, processes {self.world_size}, decode {self.decode}, "
            f"channels-last {flag(self.channels_last)}, precision {self.precision}"
            f"{approximate}, torch {self.torch}"
        )


@dataclass(frozen=True)
class ExampleTable:
    """Top dataset examples of every channel of one layer.

    Attributes:
        image_index: ``int64[channels, n]``, dataset index of each example, ``-1`` if empty.
        activation: ``float32[channels, n]``, the channel's spatial max on that image.
        position: ``int32[channels, n, 2]``, (row, col) of that max in the layer's map.
    """

    image_index: np.ndarray
    activation: np.ndarray
    position: np.ndarray


@dataclass(frozen=True)
class AttributionGraph:
    """One class's attribution graph, with layout positions computed offline.

    Attributes:
        layer: ``int16[n]`` layer index of each node (0 = first chosen layer).
        channel: ``int32[n]`` channel of each node.
        pagerank: ``float32[n]`` personalised PageRank of each node.
        x: ``float32[n]`` horizontal position of the node inside its layer row.
        source: ``int64[m]`` node (row of the arrays above) in the lower layer of each edge.
        target: ``int64[m]`` node in the upper layer of each edge.
        weight: ``int64[m]`` influence count of each edge.
    """

    layer: np.ndarray
    channel: np.ndarray
    pagerank: np.ndarray
    x: np.ndarray
    source: np.ndarray
    target: np.ndarray
    weight: np.ndarray

    @property
    def num_nodes(self) -> int:
        return int(self.layer.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.source.shape[0])


# ---------------------------------------------------------------------------------------
# Paths inside an atlas (the single place that knows the layout)
# ---------------------------------------------------------------------------------------


def layer_dir(layer_index: int) -> str:
    return f"layers/{layer_index:02d}"


def activation_counts_path(layer_index: int) -> str:
    return f"{layer_dir(layer_index)}/activation_counts.npy"


def influence_paths(layer_index: int) -> dict[str, str]:
    base = layer_dir(layer_index)
    return {part: f"{base}/influence_{part}.npy" for part in ("indptr", "indices", "data")}


def examples_paths(layer_index: int) -> dict[str, str]:
    base = layer_dir(layer_index)
    return {
        "image_index": f"{base}/examples_image_index.npy",
        "activation": f"{base}/examples_activation.npy",
        "position": f"{base}/examples_position.npy",
    }


def example_crop_path(layer_index: int, channel: int, rank: int, ext: str = "png") -> str:
    return f"images/{layer_index:02d}/{channel}-{rank}.{ext}"


#: Diversity images per channel in the ``featurevis`` part (``div-0`` .. ``div-3``).
DIVERSITY_IMAGES = 4


def featurevis_path(layer_index: int, channel: int, kind: str = "vis") -> str:
    """Path of a channel's feature visualization (``kind="vis"``) or ``"div-0"``..``"div-3"``."""
    return f"featurevis/{layer_index:02d}/{channel}-{kind}.png"


def embedding_path(layer_index: int) -> str:
    return f"{layer_dir(layer_index)}/embedding.npy"


CLASS_PATHS = {
    "num_images": "classes/num_images.npy",
    "num_correct": "classes/num_correct.npy",
    "confidence_hist": "classes/confidence_hist.npy",
}

#: Optional (atlases built before it was recorded lack it): ``int64 [classes, classes]``
#: images of true class ``c`` (row) predicted as class ``p`` (column).
CONFUSION_PATH = "classes/confusion.npy"

GRAPH_PATHS = {
    name: f"graphs/{name}.npy"
    for name in (
        "node_offsets",
        "node_layer",
        "node_channel",
        "node_pagerank",
        "node_x",
        "edge_offsets",
        "edge_source",
        "edge_target",
        "edge_weight",
    )
}

#: Subsets part: wrong images per class, the stored confusion pairs ``(c, d)`` and their images.
SUBSET_PATHS = {
    "mistaken_images": "subsets/mistaken_images.npy",
    "pairs": "subsets/pairs.npy",
    "pair_images": "subsets/pair_images.npy",
}
#: The subsets of a class: its correctly and its wrongly classified images (and, within
#: the latter, a confusion pair: ``Atlas.graph(c, "mistaken", other=d)``).
SUBSETS: tuple[str, ...] = ("correct", "mistaken")
#: The graph sets of the subsets part: one graph per class for each subset, one per pair.
SUBSET_GRAPH_SETS: tuple[str, ...] = (*SUBSETS, "pairs")


def subset_activation_path(kind: str, layer_index: int) -> str:
    """Activation counts of the wrong images (``mistaken``: per class; ``pairs``: per pair)."""
    return f"subsets/{kind}/{layer_dir(layer_index)}/activation_counts.npy"


def subset_graph_paths(kind: str) -> dict[str, str]:
    """The graph files of one subset graph set (``SUBSET_GRAPH_SETS``), as ``GRAPH_PATHS``."""
    return {name: f"subsets/{kind}/{path}" for name, path in GRAPH_PATHS.items()}


#: Instances part: the recorded inputs (``InstanceArrays`` names -> files).
INSTANCE_PATHS = {
    name: f"instances/{name}.npy"
    for name in ("image_index", "label", "prediction", "reason", "confidence", "margin")
}
#: Formats of a recorded input's image (``instance_input_path``): PNG for grey inputs,
#: JPEG for colour ones (a tenth of the bytes of a PNG photo at the same size).
INSTANCE_INPUT_SUFFIXES = (".png", ".jpg")
#: Longer side of a recorded input's stored image, in pixels (smaller inputs keep theirs).
INSTANCE_INPUT_SIZE = 128
#: Per-layer instance files: ``InstanceArrays`` list names.
INSTANCE_LAYER_ARRAYS = ("channel_indptr", "channel", "value", "position", "edge_indptr", "edge")


def instance_input_path(image_index: int, suffix: str) -> str:
    """The image of recorded input ``image_index`` (the model's input, un-normalised);
    ``suffix`` one of :data:`INSTANCE_INPUT_SUFFIXES`."""
    if suffix not in INSTANCE_INPUT_SUFFIXES:
        raise ValueError(f"instance input images are {INSTANCE_INPUT_SUFFIXES}, not {suffix!r}")
    return f"instances/inputs/{int(image_index)}{suffix}"


def instance_layer_paths(layer_index: int) -> dict[str, str]:
    """The instance records' files of one layer."""
    return {
        name: f"instances/{layer_dir(layer_index)}/{name}.npy" for name in INSTANCE_LAYER_ARRAYS
    }


@dataclass(frozen=True)
class InstanceArrays:
    """Instance records: some inputs' own selected channels and influence edges (the
    ``instances`` part; ``compute.summit.instances`` records them). ``n`` inputs sorted by
    index; per layer, ragged rows in CSR form.

    Attributes:
        image_index: ``int64 [n]`` input indices, ascending.
        label: ``int64 [n]`` true classes.
        prediction: ``int64 [n]`` predicted classes (``-1``: outside the classes).
        reason: ``int64 [n]`` why recorded: bits 1 (the hash sample), 2 (a mistake kept by
            the same hash), 4 (a user's list).
        confidence: ``float32 [n]`` the model's softmax probability of its top output.
        margin: ``float32 [n]`` that probability minus the runner-up's (small: uncertain).
        channel_indptr: per layer ``int64 [n + 1]`` rows of the next three arrays.
        channel: per layer ``int32 [m]`` the input's selected channels, ascending.
        value: per layer ``float32 [m]`` their spatial maxima.
        position: per layer ``int32 [m, 2]`` ``(row, col)`` of the maximum.
        edge_indptr: per layer ``int64 [n + 1]`` (layer 0: all zero).
        edge: per layer ``int32 [e, 2]`` ``(target channel, source channel)``, sorted: the
            input's own top-k influences among its selected channels of this layer and the
            previous one.
    """

    image_index: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    reason: np.ndarray
    confidence: np.ndarray
    margin: np.ndarray
    channel_indptr: list[np.ndarray]
    channel: list[np.ndarray]
    value: list[np.ndarray]
    position: list[np.ndarray]
    edge_indptr: list[np.ndarray]
    edge: list[np.ndarray]

    @property
    def num_instances(self) -> int:
        return int(self.image_index.shape[0])

    def channels(self, row: int, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(channels, values, positions)`` of record ``row`` in ``layer``."""
        a, b = (int(v) for v in self.channel_indptr[layer][row : row + 2])
        return self.channel[layer][a:b], self.value[layer][a:b], self.position[layer][a:b]

    def edges(self, row: int, layer: int) -> np.ndarray:
        """``int32 [e, 2]`` ``(target, source)`` edges of record ``row`` into ``layer``."""
        a, b = (int(v) for v in self.edge_indptr[layer][row : row + 2])
        return self.edge[layer][a:b]


@dataclass(frozen=True)
class TextInputs:
    """The ``text`` part: the inputs a text atlas names, as the model saw them.

    Attributes:
        input_index: ``int64 [n]`` dataset indices, ascending.
        token_indptr: ``int64 [n + 1]`` input ``r``'s tokens are ``token_indptr[r]:[r+1]``.
        token_span: ``int32 [m, 2]`` each token's ``(start, end)`` characters in its text
            (``(0, 0)``: a special token).
        tokens: the ``m`` token strings (the tokenizer's).
        texts: the ``n`` texts.
    """

    input_index: np.ndarray
    token_indptr: np.ndarray
    token_span: np.ndarray
    tokens: tuple[str, ...]
    texts: tuple[str, ...]


class TextInput(NamedTuple):
    """One input of a text atlas: its text, tokens and their character spans."""

    text: str
    tokens: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]

    def word(self, token: int) -> str:
        """Token ``token`` as the text writes it (a special token: its name)."""
        start, end = self.spans[token]
        return self.text[start:end] if end > start else self.tokens[token]

    @property
    def seen(self) -> str:
        """The text up to the last token the model kept (a truncated input is cut)."""
        return self.text[: max((b for a, b in self.spans if b > a), default=0)]


#: Mapper part: the sampled images, the same for every layer (stored once).
MAPPER_SAMPLE_PATHS = {
    "image_index": "mapper/image_index.npy",
    "label": "mapper/label.npy",
}
#: Per-layer Mapper files: key (``MapperIndex.to_arrays`` name where it is one) -> file stem.
_MAPPER_LAYER_FILES = {
    "vectors": "mapper_vectors",
    "position": "mapper_position",
    "lens": "mapper_lens",
    "order": "mapper_order",
    "indptr": "mapper_indptr",
    "indices": "mapper_indices",
    "distances": "mapper_distances",
    "knn_distances": "mapper_knn",
    "limits": "mapper_limits",
}


def mapper_paths(layer_index: int) -> dict[str, str]:
    """Per-layer files of the ``mapper`` part: sample vectors, positions and the index."""
    base = layer_dir(layer_index)
    return {key: f"{base}/{stem}.npy" for key, stem in _MAPPER_LAYER_FILES.items()}


def mapper_crop_path(layer_index: int, row: int) -> str:
    """Crop around the sampled position of sample row ``row`` (only a subset is stored)."""
    return f"mapper/crops/{layer_index:02d}/{row}.png"


def mapper_inversion_path(layer_index: int, node_key: str) -> str:
    """Activation-inversion image of a Mapper node's mean vector (optional).

    ``node_key`` is :meth:`compute.topology.mapper.MapperGraph.node_key`, a hash of the
    node's members, so an image belongs to a node whatever graph it appears in.
    """
    return f"mapper/inversions/{layer_index:02d}/{node_key}.png"


@dataclass(frozen=True)
class MapperSampleArrays:
    """The Mapper sample of one layer (memory-mapped, rows sorted by image index).

    Attributes:
        image_index: int64 ``[n]`` dataset index of each sampled image.
        label: int64 ``[n]`` its true class.
        vectors: float32 ``[n, channels]`` the sampled activation vector.
        position: int32 ``[n, 2]`` sampled ``(row, col)``; ``(-1, -1)`` in mean mode.
    """

    image_index: np.ndarray
    label: np.ndarray
    vectors: np.ndarray
    position: np.ndarray

    @property
    def num_points(self) -> int:
        return int(self.image_index.shape[0])


#: Files of the "trace" part: name -> relative path (shapes in docs/atlas.md).
TRACE_PATHS = {
    name: f"trace/{name}.npy"
    for name in (
        "image_index",
        "image_label",
        "prediction",
        "train_label",
        "norms",
        "class_share",
        "epoch_share",
        "epoch_cosine",
        "ridge_hist",
        "ridge_edges",
        "proponent_index",
        "proponent_score",
        "opponent_index",
        "opponent_score",
    )
}


#: A text atlas's trace part: the texts of its explained inputs and of the training
#: examples it names, ``{"test": {row: text}, "train": {index: text}}`` (keys as strings).
TRACE_TEXTS = "trace/texts.json"

#: The kinds of input the trace part shows: explained inputs (by row) and training examples.
TRACE_KINDS = ("test", "train")


def trace_thumbnail_path(kind: str, number: int) -> str:
    """Thumbnail of an explained image (``kind="test"``, its row) or a training example
    (``kind="train"``, its dataset index) in the trace part."""
    return f"trace/images/{kind}/{number}.png"


_SAFE_RELPATH = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


def is_safe_relpath(relpath: str) -> bool:
    """True for a plain relative path with no ``..``, absolute root or odd characters."""
    return bool(_SAFE_RELPATH.match(relpath)) and ".." not in relpath.split("/")


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


def _check_subset(subset: str, other: int | None) -> None:
    if subset != "all" and subset not in SUBSETS:
        raise AtlasError(f"unknown subset {subset!r}; use 'all', {', '.join(map(repr, SUBSETS))}")
    if other is not None and subset != "mistaken":
        raise AtlasError("a confusion pair (other class) is a subset of 'mistaken' images")


class Atlas:
    """A read-only, checked view of an atlas directory.

    Arrays are memory-mapped and loaded with ``allow_pickle=False``; every array read is
    checked against the shape the manifest implies.

    Args:
        path: the atlas directory.
        manifest: the parsed manifest (use :meth:`open`, which checks it).
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.classes: tuple[str, ...] = tuple(str(c) for c in manifest["classes"])
        self.layers: tuple[LayerInfo, ...] = tuple(
            _layer_info(layer) for layer in manifest["layers"]
        )
        #: How it was built (device, processes, decoding, precision); "unknown" where an
        #: older atlas does not say.
        self.build: BuildSettings = BuildSettings.from_manifest(manifest.get("build"))
        self.parameters: dict[str, Any] = dict(manifest["parameters"])
        self.parts: frozenset[str] = frozenset(manifest["parts"])
        self.files: dict[str, dict[str, Any]] = dict(manifest["files"])
        self._layer_index = {layer.name: i for i, layer in enumerate(self.layers)}

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, verify_hashes: bool = False) -> Atlas:
        """Open an atlas, checking the manifest and the presence and size of every file.

        Args:
            path: the atlas directory.
            verify_hashes: also check every file's sha256 (slow on big atlases).

        Returns:
            The opened :class:`Atlas`.

        Raises:
            AtlasError: naming the first missing, truncated, altered or malformed file.
        """
        root = Path(path)
        if not root.is_dir():
            raise AtlasError(f"atlas directory not found: {root}")
        manifest = read_manifest(root)
        atlas = cls(root, manifest)
        atlas._check_structure()
        for relpath, entry in atlas.files.items():
            if not is_safe_relpath(relpath):
                raise AtlasError(f"manifest.json lists an unsafe path: {relpath!r}")
            try:
                size = (root / relpath).stat().st_size
            except FileNotFoundError:
                raise AtlasError(f"missing file {relpath} in atlas {root}") from None
            if size != int(entry["size"]):
                raise AtlasError(
                    f"file {relpath} in atlas {root} has {size} bytes, manifest says "
                    f"{entry['size']} (truncated or altered)"
                )
        if verify_hashes:
            atlas.verify()
        return atlas

    def verify(self) -> None:
        """Check the sha256 of every file listed in the manifest.

        Raises:
            AtlasError: naming the first file whose content differs from the manifest.
        """
        for relpath, entry in self.files.items():
            if sha256_file(self.path / relpath) != entry["sha256"]:
                raise AtlasError(
                    f"file {relpath} in atlas {self.path} was altered (sha256 differs)"
                )

    def _check_structure(self) -> None:
        if not self.classes:
            raise AtlasError("manifest.json lists no classes")
        if not self.layers:
            raise AtlasError("manifest.json lists no layers")
        if len(self._layer_index) != len(self.layers):
            raise AtlasError("manifest.json lists a layer name twice")
        expected: list[str] = []
        if PART_SUMMIT in self.parts:
            expected += list(CLASS_PATHS.values())
            for i, layer in enumerate(self.layers):
                expected.append(activation_counts_path(i))
                if layer.influence_from is not None:
                    if layer.influence_from not in self._layer_index:
                        raise AtlasError(
                            f"layer {layer.name!r} takes influence from unknown layer "
                            f"{layer.influence_from!r} in manifest.json"
                        )
                    expected += list(influence_paths(i).values())
        if PART_EXAMPLES in self.parts:
            for i in range(len(self.layers)):
                expected += list(examples_paths(i).values())
        if PART_EMBEDDING in self.parts:
            expected += [embedding_path(i) for i in range(len(self.layers))]
        if PART_GRAPHS in self.parts:
            expected += list(GRAPH_PATHS.values())
        expected += self._drill_down_and_extra_files()
        if self.modality not in MODALITIES:
            raise AtlasError(f"manifest.json has an unknown modality {self.modality!r}")
        for relpath in expected:
            if relpath not in self.files:
                raise AtlasError(f"manifest.json does not list required file {relpath}")

    def _drill_down_and_extra_files(self) -> list[str]:
        """The files the optional parts must list (instances, subsets, trace, mapper,
        text)."""
        expected: list[str] = []
        if PART_INSTANCES in self.parts:
            expected += list(INSTANCE_PATHS.values())
            for i in range(len(self.layers)):
                expected += list(instance_layer_paths(i).values())
        if PART_SUBSETS in self.parts:
            expected += list(SUBSET_PATHS.values())
            for kind in SUBSET_GRAPH_SETS:
                expected += list(subset_graph_paths(kind).values())
            for i in range(len(self.layers)):
                expected += [subset_activation_path(k, i) for k in ("mistaken", "pairs")]
        if PART_TRACE in self.parts:
            if not isinstance(self.manifest.get("trace"), dict):
                raise AtlasError("manifest.json has a 'trace' part but no 'trace' description")
            expected += list(TRACE_PATHS.values())
        if PART_MAPPER in self.parts:
            expected += list(MAPPER_SAMPLE_PATHS.values())
            for i in range(len(self.layers)):
                expected += list(mapper_paths(i).values())
        if PART_TEXT in self.parts:
            expected += list(TEXT_PATHS.values())
            for i in range(len(self.layers)):
                expected += list(text_layer_paths(i).values())
        return expected

    # -- basic facts -------------------------------------------------------------------

    @property
    def version(self) -> int:
        return int(self.manifest["version"])

    @property
    def modality(self) -> str:
        """``"image"`` or ``"text"``: what the model's inputs were."""
        return str(self.manifest.get("modality", "image"))

    @property
    def title(self) -> str:
        return str(self.manifest.get("title") or self.manifest.get("model", {}).get("name", ""))

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def has(self, part: str) -> bool:
        """Whether the atlas holds ``part`` (one of the ``PART_*`` constants)."""
        return part in self.parts

    def layer_index(self, layer: str | int) -> int:
        """Index of a layer given by name or index.

        Raises:
            AtlasError: for an unknown layer, listing the available ones.
        """
        if isinstance(layer, (int, np.integer)):
            if 0 <= int(layer) < len(self.layers):
                return int(layer)
        elif layer in self._layer_index:
            return self._layer_index[layer]
        raise AtlasError(f"unknown layer {layer!r}; available: {', '.join(self.layer_names)}")

    def featurevis_channels(self) -> list[int]:
        """Per layer, how many channels have a feature visualization (``featurevis`` part).

        ``featurevis --layers`` may render some layers only: the part is then partial, and
        the views and ``verify`` say which layers have it (one definition: the listed files).

        Examples:
            >>> atlas.featurevis_channels()                      # doctest: +SKIP
            [16, 0, 0, 64]
        """
        counts = [0] * len(self.layers)
        for relpath in self.files:
            if relpath.startswith("featurevis/") and relpath.endswith("-vis.png"):
                folder = relpath.split("/")[1]
                if folder.isdigit() and int(folder) < len(counts):
                    counts[int(folder)] += 1
        return counts

    def _require(self, part: str) -> None:
        if part not in self.parts:
            raise AtlasError(f"atlas {self.path} has no {part!r} part")

    # -- arrays -----------------------------------------------------------------------

    def read_bytes(self, relpath: str) -> bytes:
        """The bytes of one listed file (an image, say).

        Raises:
            AtlasError: if the file is not listed in the manifest or cannot be read.
        """
        if relpath not in self.files:
            raise AtlasError(f"file {relpath} is not listed in the manifest of {self.path}")
        try:
            return (self.path / relpath).read_bytes()
        except OSError as exc:
            raise AtlasError(f"file {relpath} of {self.path} cannot be read: {exc}") from None

    def load_array(self, relpath: str, *, mmap: bool = True) -> np.ndarray:
        """Load one listed ``.npy`` file (memory-mapped, no pickle).

        Raises:
            AtlasError: if the file is not listed in the manifest or is not a valid array.
        """
        if relpath not in self.files:
            raise AtlasError(f"file {relpath} is not listed in the manifest of {self.path}")
        try:
            array: np.ndarray = np.load(
                self.path / relpath, mmap_mode="r" if mmap else None, allow_pickle=False
            )
            return array
        except (ValueError, OSError, EOFError) as exc:
            raise AtlasError(
                f"file {relpath} in atlas {self.path} is not a valid array: {exc}"
            ) from None

    def _checked(self, relpath: str, shape: tuple[int, ...], kind: str) -> np.ndarray:
        array = self.load_array(relpath)
        if tuple(array.shape) != shape or array.dtype.kind != kind:
            raise AtlasError(
                f"file {relpath} in atlas {self.path} has shape {tuple(array.shape)} "
                f"dtype {array.dtype}, expected shape {shape} of kind {kind!r}"
            )
        return array

    def activation_counts(self, layer: str | int) -> np.ndarray:
        """``int64[classes, channels]``: how many images of each class count each channel."""
        self._require(PART_SUMMIT)
        i = self.layer_index(layer)
        return self._checked(
            activation_counts_path(i), (self.num_classes, self.layers[i].channels), "i"
        )

    def influence_counts(self, layer: str | int, class_index: int | None = None) -> sp.csr_array:
        """Influence counts of ``layer`` from the previous chosen layer.

        Args:
            layer: layer name or index; it must have ``influence_from``.
            class_index: if given, return that class's ``[out, in]`` matrix.

        Returns:
            ``csr_array`` of shape ``(classes * out, in)`` (row ``c * out + i``), or
            ``(out, in)`` for one class. Entry ``[i, j]``: how many images of the class had
            input channel ``j`` among the top-k influences on output channel ``i``.
        """
        self._require(PART_SUMMIT)
        i = self.layer_index(layer)
        info = self.layers[i]
        if info.influence_from is None:
            raise AtlasError(f"layer {info.name!r} has no previous layer, so no influence counts")
        matrix = self._influence_matrix(i)
        if class_index is None:
            return matrix
        if not 0 <= class_index < self.num_classes:
            raise AtlasError(f"class index {class_index} out of range 0..{self.num_classes - 1}")
        return matrix[class_index * info.channels : (class_index + 1) * info.channels]

    def _influence_matrix(self, layer_index: int) -> sp.csr_array:
        cached = self._influence_cache.get(layer_index)
        if cached is not None:
            return cached
        info = self.layers[layer_index]
        n_in = self.layers[self.layer_index(info.influence_from)].channels  # type: ignore[arg-type]
        paths = influence_paths(layer_index)
        indptr = self.load_array(paths["indptr"], mmap=False)
        indices = self.load_array(paths["indices"], mmap=False)
        data = self.load_array(paths["data"], mmap=False)
        rows = self.num_classes * info.channels
        if indptr.shape != (rows + 1,) or indices.shape != data.shape:
            raise AtlasError(f"influence arrays of layer {info.name!r} have inconsistent shapes")
        try:
            matrix = sp.csr_array((data, indices, indptr), shape=(rows, n_in))
            matrix.check_format(full_check=True)
        except ValueError as exc:
            message = f"influence arrays of layer {info.name!r} are malformed: {exc}"
            raise AtlasError(message) from None
        self._influence_cache[layer_index] = matrix
        return matrix

    @cached_property
    def _influence_cache(self) -> dict[int, sp.csr_array]:
        return {}

    def class_stats(self) -> dict[str, np.ndarray]:
        """Per-class ``num_images``, ``num_correct`` (top-1) and ``confidence_hist``."""
        self._require(PART_SUMMIT)
        n = self.num_classes
        bins = int(self.parameters.get("confidence_bins", 20))
        return {
            "num_images": self._checked(CLASS_PATHS["num_images"], (n,), "i"),
            "num_correct": self._checked(CLASS_PATHS["num_correct"], (n,), "i"),
            "confidence_hist": self._checked(CLASS_PATHS["confidence_hist"], (n, bins), "i"),
        }

    def confusion(self) -> np.ndarray | None:
        """``int64 [classes, classes]``: images of true class ``c`` (row) predicted as ``p``
        (column), or ``None`` for an atlas built before it was recorded. A prediction outside
        the atlas's classes is not counted (``num_images[c]`` minus the row's sum)."""
        self._require(PART_SUMMIT)
        if CONFUSION_PATH not in self.files:
            return None
        n = self.num_classes
        return self._checked(CONFUSION_PATH, (n, n), "i")

    def accuracy(self) -> np.ndarray:
        """``float64[classes]`` top-1 accuracy of each class (NaN for a class with no image)."""
        stats = self.class_stats()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(stats["num_correct"], dtype=np.float64) / np.asarray(
                stats["num_images"], dtype=np.float64
            )

    def examples(self, layer: str | int) -> ExampleTable:
        """Top dataset examples of every channel of ``layer``."""
        self._require(PART_EXAMPLES)
        i = self.layer_index(layer)
        paths = examples_paths(i)
        image_index = self.load_array(paths["image_index"])
        channels = self.layers[i].channels
        if image_index.ndim != 2 or image_index.shape[0] != channels:
            raise AtlasError(f"file {paths['image_index']} has shape {image_index.shape}")
        n = image_index.shape[1]
        return ExampleTable(
            image_index=image_index,
            activation=self._checked(paths["activation"], (channels, n), "f"),
            position=self._checked(paths["position"], (channels, n, 2), "i"),
        )

    def example_crop(self, layer: str | int, channel: int, rank: int = 0) -> str | None:
        """Relative path of a channel's ``rank``-th example crop, or ``None`` if absent."""
        if PART_EXAMPLES not in self.parts:
            return None
        i = self.layer_index(layer)
        for ext in ("png", "webp", "jpg"):
            relpath = example_crop_path(i, channel, rank, ext)
            if relpath in self.files:
                return relpath
        return None

    def embedding(self, layer: str | int) -> np.ndarray:
        """``float32[classes, 2]`` class embedding of ``layer``."""
        self._require(PART_EMBEDDING)
        i = self.layer_index(layer)
        return self._checked(embedding_path(i), (self.num_classes, 2), "f")

    def mapper_sample(self, layer: str | int) -> MapperSampleArrays:
        """The Mapper sample of ``layer``: image index, label, vectors, positions (checked)."""
        self._require(PART_MAPPER)
        i = self.layer_index(layer)
        image_index = self.load_array(MAPPER_SAMPLE_PATHS["image_index"])
        if image_index.ndim != 1 or image_index.dtype.kind != "i":
            raise AtlasError(
                f"file {MAPPER_SAMPLE_PATHS['image_index']} has shape {image_index.shape}"
            )
        n = int(image_index.shape[0])
        paths = mapper_paths(i)
        return MapperSampleArrays(
            image_index=image_index,
            label=self._checked(MAPPER_SAMPLE_PATHS["label"], (n,), "i"),
            vectors=self._checked(paths["vectors"], (n, self.layers[i].channels), "f"),
            position=self._checked(paths["position"], (n, 2), "i"),
        )

    def mapper_index_arrays(self, layer: str | int) -> dict[str, np.ndarray]:
        """The Mapper index of ``layer``, ready for ``MapperIndex.from_arrays`` (memory-mapped).

        ``lens_kind`` and ``metric`` come from ``parameters.mapper`` as 0-d unicode arrays.
        """
        self._require(PART_MAPPER)
        i = self.layer_index(layer)
        n = int(self.load_array(MAPPER_SAMPLE_PATHS["image_index"]).shape[0])
        paths = mapper_paths(i)
        indices = self.load_array(paths["indices"])
        nnz = int(indices.shape[0]) if indices.ndim == 1 else -1
        queries = int(self.load_array(paths["knn_distances"]).shape[0])
        settings = self.parameters.get("mapper") or {}
        arrays = {
            "lens": self._checked(paths["lens"], (n,), "f"),
            "order": self._checked(paths["order"], (n,), "i"),
            "indptr": self._checked(paths["indptr"], (n + 1,), "i"),
            "indices": self._checked(paths["indices"], (nnz,), "i"),
            "distances": self._checked(paths["distances"], (nnz,), "f"),
            "knn_distances": self._checked(paths["knn_distances"], (queries, 8), "f"),
            "limits": self._checked(paths["limits"], (4,), "f"),
            "lens_kind": np.array(str(settings.get("lens", "l2norm"))),
            "metric": np.array(str(settings.get("metric", "euclidean"))),
        }
        if n and int(arrays["indptr"][-1]) != nnz:
            raise AtlasError(f"file {paths['indptr']} does not end at the {nnz} neighbours stored")
        return arrays

    def mapper_inversion(self, layer: str | int, node_key: str) -> str | None:
        """Relative path of the inversion image of the node with ``node_key``, or ``None``."""
        if PART_MAPPER not in self.parts:
            return None
        relpath = mapper_inversion_path(self.layer_index(layer), node_key)
        return relpath if relpath in self.files else None

    def mapper_crop(self, layer: str | int, row: int) -> str | None:
        """Relative path of the crop of sample row ``row`` of ``layer``, or ``None``."""
        if PART_MAPPER not in self.parts:
            return None
        relpath = mapper_crop_path(self.layer_index(layer), int(row))
        return relpath if relpath in self.files else None

    @cached_property
    def _graph_arrays(self) -> dict[str, np.ndarray]:
        self._require(PART_GRAPHS)
        return self._graph_set(GRAPH_PATHS, self.num_classes)

    @cached_property
    def _subset_graph_arrays(self) -> dict[str, dict[str, np.ndarray]]:
        self._require(PART_SUBSETS)
        groups = {kind: self.num_classes for kind in SUBSETS}
        groups["pairs"] = int(self.subset_pairs()[0].shape[0])
        return {
            kind: self._graph_set(subset_graph_paths(kind), groups[kind])
            for kind in SUBSET_GRAPH_SETS
        }

    def _graph_set(self, paths: dict[str, str], groups: int) -> dict[str, np.ndarray]:
        """The arrays of one set of graphs (``groups`` graphs), shape-checked."""
        arrays = {name: self.load_array(path) for name, path in paths.items()}
        for key in ("node_offsets", "edge_offsets"):
            if arrays[key].shape != (groups + 1,):
                raise AtlasError(f"file {paths[key]} has shape {arrays[key].shape}")
        n_nodes = int(arrays["node_offsets"][-1])
        n_edges = int(arrays["edge_offsets"][-1])
        for key in ("node_layer", "node_channel", "node_pagerank", "node_x"):
            if arrays[key].shape != (n_nodes,):
                raise AtlasError(f"file {paths[key]} does not hold {n_nodes} nodes")
        for key in ("edge_source", "edge_target", "edge_weight"):
            if arrays[key].shape != (n_edges,):
                raise AtlasError(f"file {paths[key]} does not hold {n_edges} edges")
        return arrays

    @cached_property
    def _subset_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        self._require(PART_SUBSETS)
        pairs = self.load_array(SUBSET_PATHS["pairs"])
        if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.dtype.kind != "i":
            raise AtlasError(f"file {SUBSET_PATHS['pairs']} has shape {pairs.shape}")
        if pairs.size and (pairs.min() < 0 or pairs.max() >= self.num_classes):
            raise AtlasError(f"file {SUBSET_PATHS['pairs']} names a class out of range")
        images = self._checked(SUBSET_PATHS["pair_images"], (pairs.shape[0],), "i")
        return pairs, images

    def subset_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The stored confusion pairs: ``int64 [P, 2]`` ``(c, d)`` (sorted) and their images
        ``int64 [P]``: images counted under class ``c`` whose other class is ``d`` (their
        prediction when counted by label), at least ``parameters.subsets.confusion_min``.
        Read and checked once (every pair lookup uses them)."""
        return self._subset_pairs

    def mistaken_images(self) -> np.ndarray:
        """``int64 [classes]``: wrongly classified images counted under each class."""
        self._require(PART_SUBSETS)
        return self._checked(SUBSET_PATHS["mistaken_images"], (self.num_classes,), "i")

    @cached_property
    def _instances(self) -> InstanceArrays:
        self._require(PART_INSTANCES)
        index = self.load_array(INSTANCE_PATHS["image_index"])
        if index.ndim != 1 or index.dtype.kind != "i":
            raise AtlasError(f"file {INSTANCE_PATHS['image_index']} has shape {index.shape}")
        n = int(index.shape[0])
        columns = {
            name: self._checked(INSTANCE_PATHS[name], (n,), "i")
            for name in ("label", "prediction", "reason")
        }
        columns.update(
            {
                name: self._checked(INSTANCE_PATHS[name], (n,), "f")
                for name in ("confidence", "margin")
            }
        )
        layers: dict[str, list[np.ndarray]] = {name: [] for name in INSTANCE_LAYER_ARRAYS}
        for i in range(len(self.layers)):
            paths = instance_layer_paths(i)
            channel_indptr = self._checked(paths["channel_indptr"], (n + 1,), "i")
            m = int(channel_indptr[-1]) if n else 0
            edge_indptr = self._checked(paths["edge_indptr"], (n + 1,), "i")
            e = int(edge_indptr[-1]) if n else 0
            layers["channel_indptr"].append(channel_indptr)
            layers["channel"].append(self._checked(paths["channel"], (m,), "i"))
            layers["value"].append(self._checked(paths["value"], (m,), "f"))
            layers["position"].append(self._checked(paths["position"], (m, 2), "i"))
            layers["edge_indptr"].append(edge_indptr)
            layers["edge"].append(self._checked(paths["edge"], (e, 2), "i"))
        return InstanceArrays(
            image_index=index,
            label=columns["label"],
            prediction=columns["prediction"],
            reason=columns["reason"],
            confidence=columns["confidence"],
            margin=columns["margin"],
            channel_indptr=layers["channel_indptr"],
            channel=layers["channel"],
            value=layers["value"],
            position=layers["position"],
            edge_indptr=layers["edge_indptr"],
            edge=layers["edge"],
        )

    def instances(self) -> InstanceArrays:
        """The instance records (the ``instances`` part), shape-checked."""
        return self._instances

    def instance_row(self, image_index: int) -> int | None:
        """The record row of input ``image_index``, ``None`` if it has no record."""
        index = self._instances.image_index
        row = int(np.searchsorted(index, image_index))
        return row if row < index.shape[0] and int(index[row]) == image_index else None

    @cached_property
    def _text(self) -> TextInputs:
        self._require(PART_TEXT)
        index = self.load_array(TEXT_PATHS["input_index"])
        if index.ndim != 1 or index.dtype.kind != "i":
            raise AtlasError(f"file {TEXT_PATHS['input_index']} has shape {index.shape}")
        n = int(index.shape[0])
        indptr = self._checked(TEXT_PATHS["token_indptr"], (n + 1,), "i")
        m = int(indptr[-1]) if n else 0
        span = self._checked(TEXT_PATHS["token_span"], (m, 2), "i")
        try:
            tokens = json.loads(self.read_bytes(TEXT_PATHS["tokens"]))
            texts = json.loads(self.read_bytes(TEXT_PATHS["texts"]))
        except (ValueError, UnicodeDecodeError) as exc:
            raise AtlasError(f"the text part of {self.path} is not valid JSON: {exc}") from None
        if not (
            isinstance(tokens, list)
            and len(tokens) == m
            and isinstance(texts, list)
            and len(texts) == n
            and all(isinstance(t, str) for t in tokens + texts)
        ):
            raise AtlasError(f"the text part of {self.path} does not match its arrays")
        return TextInputs(index, indptr, span, tuple(tokens), tuple(texts))

    def text_input(self, index: int) -> TextInput | None:
        """Input ``index``'s text, tokens and token spans (the ``text`` part), ``None`` if
        the part does not keep it."""
        records = self._text
        row = int(np.searchsorted(records.input_index, index))
        if row >= records.input_index.shape[0] or int(records.input_index[row]) != index:
            return None
        a, b = (int(v) for v in records.token_indptr[row : row + 2])
        spans = tuple((int(x), int(y)) for x, y in records.token_span[a:b])
        return TextInput(records.texts[row], records.tokens[a:b], spans)

    @cached_property
    def _vocabulary(self) -> dict[int, str]:
        try:
            found = json.loads(self.read_bytes(TEXT_PATHS["vocabulary"]))
            return {int(k): str(v) for k, v in found.items()}
        except (ValueError, AttributeError, UnicodeDecodeError) as exc:
            raise AtlasError(f"{TEXT_PATHS['vocabulary']} of {self.path}: {exc}") from None

    def top_tokens(self, layer: str | int, unit: int) -> list[tuple[str, int]]:
        """A text atlas unit's tokens most often at its maximum over the dataset (among the
        inputs that select it), with their counts, most frequent first."""
        self._require(PART_TEXT)
        index = self.layer_index(layer)
        paths = text_layer_paths(index)
        channels = self.layers[index].channels
        ids = self.load_array(paths["top_token_id"])
        counts = self.load_array(paths["top_token_count"])
        if ids.shape[0] != channels or ids.shape != counts.shape:
            raise AtlasError(f"file {paths['top_token_id']} has shape {ids.shape}")
        vocabulary = self._vocabulary
        return [
            (vocabulary.get(int(i), f"[{int(i)}]"), int(n))
            for i, n in zip(ids[unit], counts[unit], strict=True)
            if i >= 0
        ]

    def instance_input(self, image_index: int) -> str | None:
        """Relpath of recorded input ``image_index``'s image, ``None`` if not stored."""
        for suffix in INSTANCE_INPUT_SUFFIXES:
            relpath = instance_input_path(image_index, suffix)
            if relpath in self.files:
                return relpath
        return None

    def pair_row(self, class_index: int, other: int) -> int | None:
        """The row of the confusion pair ``(class_index, other)``, ``None`` if not stored."""
        pairs, _ = self.subset_pairs()
        found = np.flatnonzero((pairs[:, 0] == class_index) & (pairs[:, 1] == other))
        return int(found[0]) if found.size else None

    def subset_counts(self, layer: str | int, subset: str = "all") -> np.ndarray:
        """``int64 [classes, channels]`` activation counts of a subset of each class's
        images: ``"all"`` (:meth:`activation_counts`), ``"correct"`` or ``"mistaken"``."""
        _check_subset(subset, None)
        counts = self.activation_counts(layer)
        if subset == "all":
            return counts
        self._require(PART_SUBSETS)
        i = self.layer_index(layer)
        shape = (self.num_classes, self.layers[i].channels)
        mistaken = self._checked(subset_activation_path("mistaken", i), shape, "i")
        return mistaken if subset == "mistaken" else counts - mistaken

    def pair_counts(self, layer: str | int) -> np.ndarray:
        """``int64 [pairs, channels]`` activation counts of each stored confusion pair's
        images (rows as :meth:`subset_pairs`)."""
        self._require(PART_SUBSETS)
        i = self.layer_index(layer)
        rows = int(self.subset_pairs()[0].shape[0])
        return self._checked(
            subset_activation_path("pairs", i), (rows, self.layers[i].channels), "i"
        )

    def graph(
        self, class_index: int, subset: str = "all", other: int | None = None
    ) -> AttributionGraph:
        """The attribution graph of one class (node rows local to this class).

        Args:
            class_index: the class.
            subset: ``"all"`` its images, ``"correct"`` or ``"mistaken"`` (the
                ``subsets`` part; the same PageRank selection on that subset's counts).
            other: with ``"mistaken"``: the graph of the images mistaken for class
                ``other`` (a stored confusion pair, :meth:`subset_pairs`).

        Raises:
            AtlasError: a class out of range, an unknown subset, or a pair not stored.
        """
        if not 0 <= class_index < self.num_classes:
            raise AtlasError(f"class index {class_index} out of range 0..{self.num_classes - 1}")
        _check_subset(subset, other)
        row = class_index
        if subset == "all":
            arrays = self._graph_arrays
        elif other is None:
            arrays = self._subset_graph_arrays[subset]
        else:
            found = self.pair_row(class_index, other)
            if found is None:
                raise AtlasError(
                    f"no graph of class {class_index} mistaken for class {other}: too few "
                    "images (see Atlas.subset_pairs)"
                )
            arrays, row = self._subset_graph_arrays["pairs"], found
        n0, n1 = int(arrays["node_offsets"][row]), int(arrays["node_offsets"][row + 1])
        e0, e1 = int(arrays["edge_offsets"][row]), int(arrays["edge_offsets"][row + 1])
        return AttributionGraph(
            layer=np.asarray(arrays["node_layer"][n0:n1]),
            channel=np.asarray(arrays["node_channel"][n0:n1]),
            pagerank=np.asarray(arrays["node_pagerank"][n0:n1]),
            x=np.asarray(arrays["node_x"][n0:n1]),
            source=np.asarray(arrays["edge_source"][e0:e1]) - n0,
            target=np.asarray(arrays["edge_target"][e0:e1]) - n0,
            weight=np.asarray(arrays["edge_weight"][e0:e1]),
        )

    def graph_data(
        self, class_index: int, subset: str = "all", other: int | None = None
    ) -> dict[str, Any]:
        """One class's attribution graph as node-link data (``networkx.node_link_data``'s
        layout, JSON-able): what ``python -m compute export`` writes.

        A node is one channel (id ``"{layer index}-{channel}"``, as in the dashboard) with
        ``layer`` (name), ``layer_index``, ``channel``, the activation ``count`` (of the
        subset's images) and its ``pagerank``; an edge goes from the lower to the upper
        layer with the influence count as ``weight``. ``graph`` names the atlas, the class
        and the subset (``subset``, ``other``: as :meth:`graph`).
        """
        self._require(PART_GRAPHS)
        graph = self.graph(class_index, subset, other)
        names = self.layer_names
        if other is None:
            counts = [self.subset_counts(i, subset)[class_index] for i in range(len(names))]
        else:
            row = self.pair_row(class_index, other)
            assert row is not None  # graph() refused a pair that is not stored
            counts = [self.pair_counts(i)[row] for i in range(len(names))]
        ids = [
            f"{int(layer)}-{int(channel)}"
            for layer, channel in zip(graph.layer, graph.channel, strict=True)
        ]
        nodes = [
            {
                "id": node,
                "layer": names[int(layer)],
                "layer_index": int(layer),
                "channel": int(channel),
                "count": int(counts[int(layer)][int(channel)]),
                "pagerank": float(pagerank),
            }
            for node, layer, channel, pagerank in zip(
                ids, graph.layer, graph.channel, graph.pagerank, strict=True
            )
        ]
        edges = [
            {"source": ids[int(s)], "target": ids[int(t)], "weight": int(w)}
            for s, t, w in zip(graph.source, graph.target, graph.weight, strict=True)
        ]
        return {
            "directed": True,
            "multigraph": False,
            "graph": {
                "atlas": self.path.name,
                "class_index": int(class_index),
                "class": self.classes[class_index],
                "subset": subset,
                **(
                    {"other_index": int(other), "other": self.classes[other]}
                    if other is not None
                    else {}
                ),
            },
            "nodes": nodes,
            "edges": edges,
        }

    def to_networkx(self, class_index: int, subset: str = "all", other: int | None = None) -> Any:
        """One class's attribution graph as a ``networkx.DiGraph`` (attributes and the
        ``subset`` and ``other`` arguments as in :meth:`graph_data`).

        Raises:
            AtlasError: networkx cannot be imported (a dependency of the package, imported
                only here: reading an atlas does not need it).

        Examples:
            >>> g = Atlas.open("demo-atlas").to_networkx(3)                # doctest: +SKIP
            >>> sorted(g.nodes["2-24"])                                     # doctest: +SKIP
            ['channel', 'count', 'layer', 'layer_index', 'pagerank']
        """
        try:
            import networkx as nx  # imported when needed: most atlas reads never use it
        except ImportError:
            raise AtlasError("Atlas.to_networkx needs networkx (pip install networkx)") from None
        data = self.graph_data(class_index, subset, other)
        graph = nx.DiGraph(**data["graph"])
        for node in data["nodes"]:
            graph.add_node(node["id"], **{k: v for k, v in node.items() if k != "id"})
        for edge in data["edges"]:
            graph.add_edge(edge["source"], edge["target"], weight=edge["weight"])
        return graph

    def trace(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The training-trace part: ``(manifest["trace"], {name: array})``, shape-checked.

        Shapes use n explained images, T traced layers, C classes, E epochs, k proponents,
        B histogram bins and N training examples (see docs/atlas.md).
        """
        self._require(PART_TRACE)
        meta = dict(self.manifest["trace"])
        arrays = {name: self.load_array(path) for name, path in TRACE_PATHS.items()}
        try:
            n, t = int(meta["num_images"]), len(meta["layers"])
            e, k, b = int(meta["num_epochs"]), int(meta["top_k"]), int(meta["bins"])
            n_train = int(meta["num_train"])
        except (KeyError, TypeError, ValueError):
            raise AtlasError("the 'trace' description in manifest.json is malformed") from None
        c = self.num_classes
        expected = {
            "image_index": (n,),
            "image_label": (n,),
            "prediction": (n,),
            "train_label": (n_train,),
            "norms": (n, t, 3),
            "class_share": (n, t, c + 1),
            "epoch_share": (n, t, e, c + 1),
            "epoch_cosine": (n, t, e),
            "ridge_hist": (n, t, c, b),
            "ridge_edges": (b + 1,),
            "proponent_index": (n, t, k),
            "proponent_score": (n, t, k),
            "opponent_index": (n, t, k),
            "opponent_score": (n, t, k),
        }
        for name, shape in expected.items():
            if tuple(arrays[name].shape) != shape:
                raise AtlasError(
                    f"file {TRACE_PATHS[name]} in atlas {self.path} has shape "
                    f"{tuple(arrays[name].shape)}, expected {shape}"
                )
        return meta, arrays

    @cached_property
    def _trace_texts(self) -> dict[str, dict[int, str]]:
        if TRACE_TEXTS not in self.files:
            return {}
        try:
            found = json.loads(self.read_bytes(TRACE_TEXTS))
            texts = {
                kind: {int(k): v for k, v in found.get(kind, {}).items()} for kind in TRACE_KINDS
            }
        except (ValueError, AttributeError, UnicodeDecodeError) as exc:
            raise AtlasError(f"{TRACE_TEXTS} of {self.path} is malformed: {exc}") from None
        if not all(isinstance(v, str) for rows in texts.values() for v in rows.values()):
            raise AtlasError(f"{TRACE_TEXTS} of {self.path} holds a text that is not a string")
        return texts

    def trace_text(self, kind: str, number: int) -> str | None:
        """A text atlas's explained input (``kind="test"``, its row) or training example
        (``kind="train"``, its dataset index) as text, ``None`` if the trace part has none."""
        return self._trace_texts.get(kind, {}).get(int(number))

    def trace_thumbnail(self, kind: str, number: int) -> str | None:
        """Relative path of a trace thumbnail (see :func:`trace_thumbnail_path`), or ``None``."""
        relpath = trace_thumbnail_path(kind, int(number))
        return relpath if relpath in self.files else None

    def __repr__(self) -> str:
        return (
            f"Atlas({str(self.path)!r}, classes={self.num_classes}, "
            f"layers={list(self.layer_names)}, parts={sorted(self.parts)})"
        )


def read_manifest(root: Path) -> dict[str, Any]:
    """Parse and check ``manifest.json`` of the atlas at ``root``."""
    path = root / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AtlasError(f"missing file {MANIFEST} in atlas {root}") from None
    except UnicodeDecodeError:
        raise AtlasError(f"file {MANIFEST} in atlas {root} is not UTF-8 text") from None
    except OSError as exc:
        raise AtlasError(f"cannot read {MANIFEST} in atlas {root}: {exc.strerror}") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AtlasError(f"file {MANIFEST} in atlas {root} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise AtlasError(f"file {MANIFEST} in atlas {root} is not a JSON object")
    for key in _REQUIRED_KEYS:
        if key not in manifest:
            raise AtlasError(f"file {MANIFEST} in atlas {root} lacks the key {key!r}")
    if manifest["format"] != FORMAT_NAME:
        raise AtlasError(f"{root} is not a {FORMAT_NAME} atlas (format {manifest['format']!r})")
    if manifest["version"] not in SUPPORTED_VERSIONS:
        raise AtlasError(
            f"atlas {root} has format version {manifest['version']!r}; this release reads "
            f"{sorted(SUPPORTED_VERSIONS)}: rebuild it with `python -m compute build`"
        )
    for key in ("classes", "layers", "parts"):
        if not isinstance(manifest[key], list):
            raise AtlasError(f"key {key!r} of {MANIFEST} in atlas {root} is not a list")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise AtlasError(f"key 'files' of {MANIFEST} in atlas {root} is not an object")
    for relpath, entry in files.items():
        if not is_safe_relpath(relpath):
            raise AtlasError(f"manifest.json lists an unsafe path: {str(relpath)[:80]!r}")
        well_formed = (
            isinstance(entry, dict)
            and type(entry.get("size")) is int
            and entry["size"] >= 0
            and isinstance(entry.get("sha256"), str)
            and _SHA256_RE.fullmatch(entry["sha256"]) is not None
        )
        if not well_formed:
            raise AtlasError(
                f"file {MANIFEST} in atlas {root}: entry {str(relpath)[:80]!r} of 'files' "
                "needs an integer 'size' and a hex 'sha256'"
            )
    for layer in manifest["layers"]:
        if not isinstance(layer, dict) or not {"name", "channels", "height", "width"} <= set(layer):
            raise AtlasError(f"a layer entry of {MANIFEST} in atlas {root} is malformed")
    return manifest


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _flush_to_disk() -> None:
    """Make every file written so far durable before a rename publishes it.

    One ``sync`` for the whole atlas instead of an ``fsync`` per file: an atlas can hold tens
    of thousands of small images, and per-file fsyncs dominated the write time.
    """
    if hasattr(os, "sync"):
        os.sync()


def array_bytes(array: np.ndarray) -> bytes:
    """The ``.npy`` encoding of ``array`` (no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


class _FileSink:
    """Writes files under a directory and records their size and sha256."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, dict[str, Any]] = {}

    def add_bytes(self, relpath: str, data: bytes) -> None:
        if not is_safe_relpath(relpath) or relpath == MANIFEST:
            raise AtlasError(f"refusing to write unsafe atlas path {relpath!r}")
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.files[relpath] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def add_array(self, relpath: str, array: np.ndarray) -> None:
        if array.dtype.hasobject:
            raise AtlasError(f"refusing to write object array to {relpath}")
        self.add_bytes(relpath, array_bytes(array))


def _manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=False) + "\n").encode("utf-8")


def check_output(out: str | os.PathLike[str], *, overwrite: bool) -> None:
    """The one check of where a new atlas will be written; run it before any long work.

    Nothing is replaced that this product did not write: with ``overwrite`` an existing
    output must be an atlas (a directory whose ``manifest.json`` reads as one).

    Raises:
        AtlasError: one line, when ``out`` exists and may not be replaced.

    Examples:
        >>> check_output("/nonexistent/new-atlas", overwrite=False)  # nothing there: fine
    """
    path = Path(out)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir() or path.is_symlink() or not (path / MANIFEST).is_file():
        raise AtlasError(
            f"output {path} exists and is not an atlas (no {MANIFEST}): choose another --out "
            "(only an atlas is ever replaced)"
        )
    if not overwrite:
        raise AtlasError(f"output {path} already exists (pass --overwrite to replace it)")
    try:
        read_manifest(path)
    except AtlasError as exc:
        raise AtlasError(
            f"output {path} is not a readable atlas ({exc}): refusing to replace it; "
            "choose another --out"
        ) from None


def _temporary_siblings(out: Path) -> list[Path]:
    """This product's temporary folders for ``out``: ``.NAME.tmp-*`` (a write in progress)
    and ``.NAME.old-*`` (an atlas being replaced)."""
    if not out.parent.is_dir():
        return []
    prefixes = (f".{out.name}.tmp-", f".{out.name}.old-")
    return sorted(p for p in out.parent.iterdir() if p.name.startswith(prefixes) and p.is_dir())


@contextlib.contextmanager
def output_lock(out: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``out`` for one writer from the checks to the commit.

    A second build to the same output is refused in one line instead of both "succeeding"
    and one silently replacing the other. The lock is an advisory ``flock`` on the hidden
    file ``.NAME.lock`` beside ``out``: the system drops it when its process dies (even by
    ``kill -9``), so a crashed build never blocks the next. Holding it, no other writer of
    ``out`` runs, so temporary folders left by a killed one are removed here.

    Raises:
        AtlasError: another running process holds the lock.
    """
    target = Path(out).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    handle = open(lock_path, "a+b")  # noqa: SIM115 (held open for the whole block)
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AtlasError(
                f"another build is writing {target} right now (it holds {lock_path}); "
                "wait for it or choose another --out"
            ) from None
        for stale in _temporary_siblings(target):
            log.info("removing %s, left by an interrupted build", stale)
            shutil.rmtree(stale, ignore_errors=True)
        yield
    finally:
        handle.close()  # releases the lock


class AtlasWriter(_FileSink):
    """Builds a new atlas in a temporary directory; :meth:`commit` renames it into place.

    Use it as a context manager: on an exception the temporary directory is removed and
    any existing atlas at ``out`` is left untouched.

    Args:
        out: where the atlas will live.
        manifest: every manifest key except ``format``, ``version``, ``files``, ``created``.
        overwrite: replace an existing atlas at ``out``.

    Examples:
        >>> with AtlasWriter(out, manifest) as writer:        # doctest: +SKIP
        ...     writer.add_array(activation_counts_path(0), counts)
        ...     writer.commit()
    """

    def __init__(
        self, out: str | os.PathLike[str], manifest: Mapping[str, Any], *, overwrite: bool = False
    ) -> None:
        self.out = Path(out)
        check_output(self.out, overwrite=overwrite)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
        super().__init__(tmp)
        self.manifest: dict[str, Any] = dict(manifest)
        self._committed = False

    def __enter__(self) -> AtlasWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._committed:
            shutil.rmtree(self.root, ignore_errors=True)

    def commit(self) -> Path:
        """Write the manifest and move the atlas into place atomically.

        Returns:
            The atlas path.
        """
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            **self.manifest,
            "files": dict(sorted(self.files.items())),
        }
        _flush_to_disk()
        _fsync_write(self.root / MANIFEST, _manifest_bytes(manifest))
        # Check what we wrote with the same reader users get, before it replaces anything.
        Atlas.open(self.root)
        # mkdtemp made the folder private (0700); the atlas gets what the user's umask
        # gives any new folder, so a server running as another user can read it.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.root, 0o777 & ~umask)
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
            os.replace(self.out, old)
        os.replace(self.root, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._committed = True
        return self.out


@contextlib.contextmanager
def update_atlas(
    path: str | os.PathLike[str],
    *,
    add_parts: tuple[str, ...] = (),
    replace: tuple[str, ...] = (),
) -> Iterator[_FileSink]:
    """Add files to an existing atlas, then replace its manifest atomically.

    New files are written first; the manifest (with the new files and parts, and any
    changes made to ``sink.manifest_updates``) replaces the old one only if the block
    finishes, so readers see either the old atlas or the new one.

    Args:
        path: the atlas.
        add_parts: parts the new files add (or replace).
        replace: folders (``"trace/"``) whose previous files the update replaces
            wholesale: none of them survives into the new manifest unless written again
            (a rewritten part never keeps a stale file of its previous version), and
            after the swap they are removed from disk.

    Examples:
        >>> with update_atlas(path, add_parts=("embedding",)) as sink:   # doctest: +SKIP
        ...     sink.add_array(embedding_path(0), xy)
    """
    if any(
        not prefix.endswith("/") or not is_safe_relpath(prefix.rstrip("/")) for prefix in replace
    ):
        raise ValueError(f"replace takes folders of the atlas ending in '/', not {replace}")
    root = Path(path)
    manifest = read_manifest(root)
    sink = _FileSink(root)
    sink.manifest_updates = {}  # type: ignore[attr-defined]
    yield sink
    manifest.update(sink.manifest_updates)  # type: ignore[attr-defined]
    replaced = {f for f in manifest["files"] if f.startswith(replace)} if replace else set()
    kept = {f: entry for f, entry in manifest["files"].items() if f not in replaced}
    manifest["files"] = dict(sorted({**kept, **sink.files}.items()))
    manifest["parts"] = sorted(set(manifest["parts"]) | set(add_parts))
    tmp = root / f".{MANIFEST}.tmp-{os.getpid()}"
    _flush_to_disk()
    _fsync_write(tmp, _manifest_bytes(manifest))
    os.replace(tmp, root / MANIFEST)
    for relpath in sorted(replaced - set(sink.files)):  # files of the replaced version
        (root / relpath).unlink(missing_ok=True)
    Atlas.open(root)


def csr_parts(matrix: sp.csr_array | sp.csr_matrix) -> dict[str, np.ndarray]:
    """The arrays an atlas stores for a CSR influence matrix (canonical, int64 counts)."""
    csr = sp.csr_array(matrix)
    csr.sum_duplicates()
    csr.sort_indices()
    return {
        "indptr": csr.indptr.astype(np.int64),
        "indices": csr.indices.astype(np.int32),
        "data": csr.data.astype(np.int64),
    }


def mapper_files(
    layer_index: int,
    vectors: np.ndarray,
    position: np.ndarray,
    index_arrays: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """``{relative path: array}`` of one layer of the ``mapper`` part, in the stored dtypes.

    Args:
        layer_index: the layer's position in ``layers``.
        vectors: ``[n, channels]`` sampled vectors.
        position: ``[n, 2]`` sampled ``(row, col)``.
        index_arrays: ``MapperIndex.to_arrays()`` of the layer (``lens_kind`` and ``metric``
            belong in ``parameters.mapper``, not in files).
    """
    paths = mapper_paths(layer_index)
    dtypes = {
        "lens": np.float64,
        "order": np.int64,
        "indptr": np.int64,
        "indices": np.int32,
        "distances": np.float32,
        "knn_distances": np.float32,
        "limits": np.float64,
    }
    files = {
        paths["vectors"]: np.asarray(vectors, dtype=np.float32),
        paths["position"]: np.asarray(position, dtype=np.int32),
    }
    for key, dtype in dtypes.items():
        files[paths[key]] = np.asarray(index_arrays[key], dtype=dtype)
    return files
