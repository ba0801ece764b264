"""Subset counts: a class's correctly and wrongly classified images, and its confusions.

The streaming pass counts the images a class got wrong once more, keyed by their
*confusion pair* instead of their class: ``pair = c * (C + 1) + d`` for an image counted
under class ``c`` whose other class is ``d`` (its prediction when images are counted by
label, its label when counted by prediction; ``d = C`` for a prediction outside the
classes). From those counts this module derives, exactly (integer sums):

- ``mistaken``: per class, the counts of its wrong images (the sum over ``d``);
- ``correct``: per class, today's counts minus ``mistaken``;
- ``pairs``: the counts of the frequent confusion pairs (at least ``min_images`` images,
  the ``per_class`` most frequent of each class), so "what do the threes mistaken for
  eights use" has its own counts and graph.

A counter key ``(group * rows + r) * cols + j`` (``rows × cols`` per group) is regrouped
by :func:`regroup`; everything here is numpy (torch-free).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from compute.atlas import SUBSETS
from compute.summit.config import GraphConfig
from compute.summit.graph import GraphArrays, attribution_graphs

#: The names of the subsets of a class (defined once, in the atlas contract).
SUBSET_KINDS = SUBSETS


@dataclass(frozen=True)
class SubsetCounts:
    """The subset counts of one pass (numpy / scipy, ready for the atlas writer).

    ``C`` classes, ``P`` stored confusion pairs; per layer ``l`` with ``C_l`` channels.

    Attributes:
        mistaken_images: ``int64 [C]`` wrong images of each class.
        pairs: ``int64 [P, 2]`` the stored confusion pairs ``(c, d)``, sorted.
        pair_images: ``int64 [P]`` images of each pair.
        activation: ``{"mistaken": [C, C_l], "pairs": [P, C_l]}`` activation counts per
            layer (``correct`` is the class counts minus ``mistaken``).
        influence: ``{"correct", "mistaken", "pairs"}``: per layer ``None`` for the first,
            else csr ``[groups * C_l, C_{l-1}]`` as the class counts (an Inception block's
            widest paths are taken per subset, so they are not differences).
    """

    mistaken_images: np.ndarray
    pairs: np.ndarray
    pair_images: np.ndarray
    activation: dict[str, list[np.ndarray]]
    influence: dict[str, list[sp.csr_array | None]]

    def correct_activation(self, class_counts: list[np.ndarray]) -> list[np.ndarray]:
        """Per layer, the counts of each class's correctly classified images."""
        return [a - m for a, m in zip(class_counts, self.activation["mistaken"], strict=True)]


def pair_space(num_classes: int) -> int:
    """The number of pair ids: ``C * (C + 1)`` (the extra column: outside the classes)."""
    return num_classes * (num_classes + 1)


def select_pairs(
    images: np.ndarray, num_classes: int, min_images: int, per_class: int
) -> np.ndarray:
    """The pair ids stored: at least ``min_images`` images, the ``per_class`` most frequent
    of each class (ties: the lower other class), never the "outside the classes" column.

    Args:
        images: ``int64 [C * (C + 1)]`` wrong images per pair id.
        num_classes: ``C``.
        min_images: fewest images of a stored pair.
        per_class: most pairs stored per class.

    Returns:
        ``int64`` sorted pair ids.

    Examples:
        >>> counts = np.zeros(2 * 3, dtype=np.int64)
        >>> counts[[1, 2, 4]] = [5, 9, 1]   # pairs (0, 1), (0, outside), (1, 1)
        >>> select_pairs(counts, 2, 2, 3).tolist()
        [1]
    """
    table = images.reshape(num_classes, num_classes + 1)[:, :num_classes]
    kept: list[int] = []
    for c in range(num_classes):
        # Most images first, then the lower other class (a stable sort of -count).
        order = np.argsort(-table[c], kind="stable")[:per_class]
        kept += [c * (num_classes + 1) + int(d) for d in order if table[c, d] >= min_images]
    return np.array(sorted(kept), dtype=np.int64)


def regroup(
    keys: np.ndarray,
    counts: np.ndarray,
    block: int,
    group_of: np.ndarray,
    groups: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Counter entries keyed ``pair * block + rest`` moved to ``group_of[pair] * block +
    rest`` (entries whose group is ``-1`` are dropped; entries landing on one key add up).

    Args:
        keys: ``int64 [n]`` keys of a pair-keyed counter.
        counts: ``int64 [n]`` their counts.
        block: entries per pair (``rows * cols``).
        group_of: ``int64 [pair space]`` the group of each pair id, ``-1``: none.
        groups: the number of groups.

    Returns:
        ``(keys, counts)`` sorted, unique, in ``[0, groups * block)``.
    """
    pair, rest = np.divmod(np.asarray(keys, np.int64), block)
    group = group_of[pair]
    keep = group >= 0
    new = group[keep] * block + rest[keep]
    unique, inverse = np.unique(new, return_inverse=True)
    summed = np.zeros(unique.shape[0], dtype=np.int64)
    np.add.at(summed, inverse, np.asarray(counts, np.int64)[keep])
    assert unique.size == 0 or int(unique[-1]) < groups * block
    return unique, summed


def class_of_pair(num_classes: int) -> np.ndarray:
    """``int64 [C * (C + 1)]``: the class each pair id belongs to."""
    return np.repeat(np.arange(num_classes, dtype=np.int64), num_classes + 1)


def row_of_pair(num_classes: int, kept: np.ndarray) -> np.ndarray:
    """``int64 [C * (C + 1)]``: the row of each kept pair id, ``-1`` for the others."""
    rows = np.full(pair_space(num_classes), -1, dtype=np.int64)
    rows[kept] = np.arange(kept.shape[0], dtype=np.int64)
    return rows


def keys_matrix(
    keys: np.ndarray, counts: np.ndarray, groups: int, rows: int, cols: int
) -> sp.csr_array:
    """Counter entries keyed ``(group * rows + r) * cols + j`` as a ``(groups * rows, cols)``
    int64 CSR array (sorted indices)."""
    r, c = np.divmod(np.asarray(keys, np.int64), cols)
    matrix = sp.coo_array(
        (np.asarray(counts, np.int64), (r, c)), shape=(groups * rows, cols)
    ).tocsr()
    matrix.sort_indices()
    return matrix


def dense_counts(keys: np.ndarray, counts: np.ndarray, groups: int, channels: int) -> np.ndarray:
    """Counter entries keyed ``group * channels + k`` as ``int64 [groups, channels]``."""
    table = np.zeros(groups * channels, dtype=np.int64)
    np.add.at(table, np.asarray(keys, np.int64), np.asarray(counts, np.int64))
    return table.reshape(groups, channels)


def subset_graphs(
    subsets: SubsetCounts,
    class_counts: list[np.ndarray],
    config: GraphConfig,
    *,
    progress: bool = False,
) -> dict[str, GraphArrays]:
    """The attribution graphs of every class's correct and mistaken images and of every
    stored confusion pair: the same PageRank selection and layout as the class graphs,
    on the subset's counts (``compute.atlas.SUBSET_GRAPH_SETS`` keys). A subset without
    images has an empty graph.

    Args:
        subsets: the pass's subset counts.
        class_counts: per layer, the class activation counts ``[C, C_l]``.
        config: the class graphs' parameters.
        progress: show the layout's progress bars.
    """
    activation = {
        "correct": subsets.correct_activation(class_counts),
        "mistaken": subsets.activation["mistaken"],
        "pairs": subsets.activation["pairs"],
    }
    return {
        kind: attribution_graphs(counts, subsets.influence[kind], config, progress=progress)
        for kind, counts in activation.items()
    }
