"""The one writer of the Summit parts: ``summit``, ``examples``, ``embedding``, ``graphs``.

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
    AtlasWriter,
    activation_counts_path,
    csr_parts,
    embedding_path,
    examples_paths,
    influence_paths,
)

#: dtype of each array of a layer's ``examples`` table.
EXAMPLE_DTYPES: dict[str, type] = {
    "image_index": np.int64,
    "activation": np.float32,
    "position": np.int32,
}


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
