"""The one writer of the Summit parts: ``summit``, ``examples``, ``embedding``, ``graphs``
and (optional) ``subsets`` and ``instances``.

A build (the streaming pass) and the synthetic atlas (generated counts) both hand their
arrays to :func:`write_summit_parts`, so the files, their dtypes and the checks on them
are defined once (docs/atlas.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compute.atlas import (
    CLASS_PATHS,
    CONFUSION_PATH,
    GRAPH_PATHS,
    INSTANCE_LAYER_ARRAYS,
    INSTANCE_PATHS,
    SUBSET_GRAPH_SETS,
    SUBSET_PATHS,
    AtlasWriter,
    InstanceArrays,
    activation_counts_path,
    csr_parts,
    embedding_path,
    examples_paths,
    influence_paths,
    instance_layer_paths,
    subset_activation_path,
    subset_graph_paths,
)

#: dtype of each array of a layer's ``examples`` table.
EXAMPLE_DTYPES: dict[str, type] = {
    "image_index": np.int64,
    "activation": np.float32,
    "position": np.int32,
}


@dataclass(frozen=True)
class SubsetArrays:
    """What the ``subsets`` part holds (docs/atlas.md).

    Attributes:
        mistaken_images: int ``[classes]`` wrong images of each class.
        pairs: int ``[pairs, 2]`` the stored confusion pairs ``(c, d)``.
        pair_images: int ``[pairs]`` their images.
        activation: ``{"mistaken": per layer [classes, channels], "pairs": per layer
            [pairs, channels]}`` activation counts.
        graphs: per ``SUBSET_GRAPH_SETS`` key (``correct``, ``mistaken``, ``pairs``), the
            graphs' arrays by ``GRAPH_PATHS`` key.
    """

    mistaken_images: np.ndarray
    pairs: np.ndarray
    pair_images: np.ndarray
    activation: Mapping[str, Sequence[np.ndarray]]
    graphs: Mapping[str, Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class SummitArrays:
    """Everything the Summit parts hold, per class and per layer.

    Attributes:
        num_images: int ``[classes]`` images of each class.
        num_correct: int ``[classes]`` of them classified correctly.
        confidence_hist: int ``[classes, bins]`` confidence histogram of each class.
        confusion: int ``[classes, classes]`` true class × predicted class.
        activation_counts: per layer, int ``[classes, channels]`` counts **A**.
        influence: per layer, the influence counts from the previous layer (a
            ``scipy.sparse`` matrix ``[classes × channels, channels]``; ``None`` for the
            first layer).
        examples: per layer, ``{"image_index", "activation", "position"}`` of each
            channel's top examples.
        embeddings: per layer, float ``[classes, 2]`` class embedding.
        graphs: the attribution graphs' arrays by ``GRAPH_PATHS`` key.
        subsets: the ``subsets`` part (``None``: the atlas has none).
        instances: the ``instances`` part (``None``: the atlas has none).
    """

    num_images: np.ndarray
    num_correct: np.ndarray
    confidence_hist: np.ndarray
    confusion: np.ndarray
    activation_counts: Sequence[np.ndarray]
    influence: Sequence[Any | None]
    examples: Sequence[Mapping[str, np.ndarray]]
    embeddings: Sequence[np.ndarray]
    graphs: Mapping[str, np.ndarray]
    subsets: SubsetArrays | None = None
    instances: InstanceArrays | None = None


def write_summit_parts(writer: AtlasWriter, arrays: SummitArrays) -> None:
    """Add the Summit parts' files to an open atlas.

    Args:
        writer: the atlas being written (its manifest lists the four parts).
        arrays: the parts' arrays.

    Raises:
        ValueError: a layer after the first without influence counts, or per-layer lists
            of different lengths.
    """
    layers = len(arrays.activation_counts)
    lengths = {len(arrays.influence), len(arrays.examples), len(arrays.embeddings)}
    if lengths != {layers}:
        raise ValueError(f"per-layer arrays disagree on the number of layers ({layers})")
    classes = {
        "num_images": arrays.num_images,
        "num_correct": arrays.num_correct,
        "confidence_hist": arrays.confidence_hist,
    }
    for key, relpath in CLASS_PATHS.items():
        writer.add_array(relpath, np.asarray(classes[key], np.int64))
    writer.add_array(CONFUSION_PATH, np.asarray(arrays.confusion, np.int64))
    for i in range(layers):
        writer.add_array(
            activation_counts_path(i), np.asarray(arrays.activation_counts[i], np.int64)
        )
        influence = arrays.influence[i]
        if i > 0:
            if influence is None:
                raise ValueError(f"layer {i} has no influence counts from layer {i - 1}")
            for key, array in csr_parts(influence).items():
                writer.add_array(influence_paths(i)[key], array)
        table = arrays.examples[i]
        for key, relpath in examples_paths(i).items():
            writer.add_array(relpath, np.asarray(table[key], EXAMPLE_DTYPES[key]))
        writer.add_array(embedding_path(i), np.asarray(arrays.embeddings[i], np.float32))
    for name, relpath in GRAPH_PATHS.items():
        writer.add_array(relpath, arrays.graphs[name])
    if arrays.subsets is not None:
        _write_subsets(writer, arrays.subsets, layers)
    if arrays.instances is not None:
        _write_instances(writer, arrays.instances, layers)


#: dtype of each instance file.
_INSTANCE_DTYPES: dict[str, type] = {
    "image_index": np.int64,
    "label": np.int64,
    "prediction": np.int64,
    "reason": np.int64,
    "confidence": np.float32,
    "margin": np.float32,
    "channel_indptr": np.int64,
    "channel": np.int32,
    "value": np.float32,
    "position": np.int32,
    "edge_indptr": np.int64,
    "edge": np.int32,
}


def _write_instances(writer: AtlasWriter, instances: InstanceArrays, layers: int) -> None:
    """Add the ``instances`` part's files."""
    for name, relpath in INSTANCE_PATHS.items():
        writer.add_array(relpath, np.asarray(getattr(instances, name), _INSTANCE_DTYPES[name]))
    for name in INSTANCE_LAYER_ARRAYS:
        if len(getattr(instances, name)) != layers:
            raise ValueError(f"instance records {name!r} disagree on the number of layers")
    for i in range(layers):
        for name, relpath in instance_layer_paths(i).items():
            array: np.ndarray = np.asarray(getattr(instances, name)[i], _INSTANCE_DTYPES[name])
            writer.add_array(relpath, array)


def _write_subsets(writer: AtlasWriter, subsets: SubsetArrays, layers: int) -> None:
    """Add the ``subsets`` part's files."""
    columns = {
        "mistaken_images": subsets.mistaken_images,
        "pairs": np.asarray(subsets.pairs).reshape(-1, 2),
        "pair_images": subsets.pair_images,
    }
    for key, relpath in SUBSET_PATHS.items():
        writer.add_array(relpath, np.asarray(columns[key], np.int64))
    for kind in ("mistaken", "pairs"):
        if len(subsets.activation[kind]) != layers:
            raise ValueError(f"subset counts {kind!r} disagree on the number of layers")
        for i in range(layers):
            writer.add_array(
                subset_activation_path(kind, i), np.asarray(subsets.activation[kind][i], np.int64)
            )
    for kind in SUBSET_GRAPH_SETS:
        for name, relpath in subset_graph_paths(kind).items():
            writer.add_array(relpath, subsets.graphs[kind][name])
