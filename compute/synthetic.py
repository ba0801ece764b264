"""A synthetic, ImageNet-shaped atlas: every part of the format, no model, no data, no torch.

It lets the dashboard, the tests and the benchmarks run at full scale (1,000 classes,
InceptionV1's nine ``mixed`` layers, 5,484 channels) without the days of GPU work a real
atlas costs. The numbers are random but structured like Summit's:

* classes fall into latent groups that share preferred channels, so the class embedding
  has clusters and the sidebar similarity is meaningful;
* each class prefers a few channels per layer with Zipf-like counts (0..images per class);
* influence is concentrated among the preferred channels of consecutive layers, so the
  real PageRank selection (:func:`compute.summit.graph.attribution_graphs`) yields graphs
  of roughly the published density (~55 nodes, ~180 edges per class).

Examples:
    >>> write_synthetic_atlas("synthetic-atlas", num_classes=12,
    ...                       layer_channels=(8, 16, 16))             # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from compute.atlas import (
    DIVERSITY_IMAGES,
    INSTANCE_LAYER_ARRAYS,
    PART_EMBEDDING,
    PART_EXAMPLES,
    PART_FEATUREVIS,
    PART_GRAPHS,
    PART_INSTANCES,
    PART_MAPPER,
    PART_SUMMIT,
    PART_TRACE,
    TRACE_PATHS,
    AtlasWriter,
    InstanceArrays,
    example_crop_path,
    featurevis_path,
    manifest_layers,
    mapper_crop_path,
    trace_thumbnail_path,
)
from compute.errors import BuildError
from compute.png import png_bytes
from compute.summit.config import EmbeddingConfig, GraphConfig, SummitConfig
from compute.summit.embedding import class_embeddings, pca_embeddings
from compute.summit.graph import GraphArrays, attribution_graphs
from compute.summit.part import SummitArrays, write_summit_parts
from compute.topology.part import MapperPart, mapper_part

log = logging.getLogger(__name__)

INCEPTION_LAYERS = (
    "mixed3a",
    "mixed3b",
    "mixed4a",
    "mixed4b",
    "mixed4c",
    "mixed4d",
    "mixed4e",
    "mixed5a",
    "mixed5b",
)
INCEPTION_SIZES = (28, 28, 14, 14, 14, 14, 14, 7, 7)
DEFAULT_CHANNELS = (256, 480, 508, 512, 512, 528, 832, 832, 1024)

CONFIDENCE_BINS = 20
CROP_SIZE = 32
#: Side of the synthetic feature visualizations (a real atlas stores them at input size;
#: small pictures keep the synthetic atlas quick to write and light to serve).
FEATUREVIS_SIZE = 64
TRACE_EPOCHS = 6
TRACE_TOP_K = 10
TRACE_BINS = 20

# Generator shape, tuned so the real selection gives ~55 nodes / ~180 edges per class on
# the InceptionV1 shape (summit.md §4): count decay exponent, influenced outputs per class
# and layer, inputs drawn per output, and the pool of preferred inputs they come from.
_ZIPF = 0.22
_INFLUENCED = 80
_INPUTS = 8
_POOL = 80
_BIAS = 1.0
_CORE = 10
_CORE_DENSITY = 0.5

_ADJECTIVES = (  # noqa: SIM905 (a word list reads better as one string)
    "amber azure brisk cobalt coral crimson dapper dusky elder fabled feral frosty gilded "
    "hazel ivory jade jolly lunar mellow misty noble ochre pale plum quiet rosy russet "
    "sable scarlet silver slate smoky spotted striped sunny swift tawny umber velvet woolly"
).split()
_NOUNS = (  # noqa: SIM905
    "badger beacon beetle bison bottle canoe cello comet crane dingo falcon ferret fig "
    "gecko harp heron ibis kettle koala lantern lemur lynx magpie marmot mitten newt "
    "otter pelican quail quokka robin salmon teapot thistle tortoise tuba viper walrus "
    "wombat yak"
).split()


# ---------------------------------------------------------------------------------------
# Names and shapes
# ---------------------------------------------------------------------------------------


def synthetic_class_names(num_classes: int, seed: int = 0) -> list[str]:
    """Distinct, readable class names ("amber badger", ...), shuffled by ``seed``.

    Args:
        num_classes: how many names.
        seed: shuffling seed.

    Returns:
        ``num_classes`` distinct strings; beyond the word pairs a number is appended.

    Examples:
        >>> len(set(synthetic_class_names(1000)))
        1000
    """
    pairs = [f"{a} {n}" for a in _ADJECTIVES for n in _NOUNS]
    order = np.random.default_rng(seed).permutation(len(pairs))
    names = [pairs[i] for i in order[: min(num_classes, len(pairs))]]
    names += [f"class {i}" for i in range(len(names), num_classes)]
    return names


def _layer_names_and_sizes(layer_channels: Sequence[int]) -> list[tuple[str, int]]:
    n = len(layer_channels)
    if n == len(INCEPTION_LAYERS):
        return list(zip(INCEPTION_LAYERS, INCEPTION_SIZES, strict=True))
    # Three halvings from 28 px spread over the layers, like a small CNN.
    return [(f"layer{t}", max(1, 28 >> (t * 3 // max(n, 1)))) for t in range(n)]


# ---------------------------------------------------------------------------------------
# Structured random counts
# ---------------------------------------------------------------------------------------


def _preferences(
    rng: np.random.Generator, num_classes: int, channels: int, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class selection probabilities and channel preference order of one layer.

    Each class ranks the channels (its group's taste plus its own); the ``r``-th channel
    of that ranking is selected in a share ``~ r^-ZIPF`` of the class's images. A slow
    decay, as in Summit's counts, spreads PageRank over enough channels that the 10 %-mass
    selection keeps several nodes per layer.

    Returns:
        (probability ``float[classes, channels]``, order ``int[classes, channels]``: the
        channels from most to least preferred).
    """
    num_groups = int(groups.max()) + 1
    taste = rng.gumbel(size=(num_groups, channels)) * 1.5
    generic = rng.gumbel(size=channels) * 0.5  # some channels fire for every class
    score = taste[groups] + generic[None, :] + rng.gumbel(size=(num_classes, channels))
    order = np.argsort(-score, axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(channels)[None, :], axis=1)
    peak = rng.uniform(0.8, 1.0, size=(num_classes, 1))
    # Classes differ in how focused they are, so graph sizes vary between classes.
    zipf = rng.uniform(_ZIPF - 0.1, _ZIPF + 0.1, size=(num_classes, 1))
    prob = peak * (rank + 1.0) ** -zipf * rng.uniform(0.7, 1.0, size=(num_classes, channels))
    # Many channels are never among a class's selected ones.
    prob *= rank < max(3, int(channels * 0.6))
    return np.clip(prob, 0.0, 1.0), order


def _influence(
    rng: np.random.Generator,
    order_upper: np.ndarray,
    order_lower: np.ndarray,
    num_images: np.ndarray,
) -> sp.csr_array:
    """Influence counts ``[classes * C_upper, C_lower]`` concentrated on preferred channels.

    Two kinds of entries: a dense "core circuit" between the ``_CORE`` most preferred
    channels of the two layers (strong counts, each pair present with probability
    ``_CORE_DENSITY``), and a looser background in which the ``_INFLUENCED`` most preferred
    outputs each draw ``_INPUTS`` inputs, mostly among the lower layer's ``_POOL`` most
    preferred channels. Counts are binomial in the class's images.
    """
    num_classes, channels_upper = order_upper.shape
    channels_lower = order_lower.shape[1]
    rows_list, cols_list, counts_list = [], [], []

    # Core circuit: every (top output, top input) pair, thinned.
    core_up, core_low = min(_CORE, channels_upper), min(_CORE, channels_lower)
    cls = np.repeat(np.arange(num_classes), core_up * core_low)
    up_rank = np.tile(np.repeat(np.arange(core_up), core_low), num_classes)
    low_rank = np.tile(np.arange(core_low), num_classes * core_up)
    density = rng.uniform(_CORE_DENSITY - 0.2, _CORE_DENSITY + 0.2, num_classes)
    present = rng.random(len(cls)) < density[cls]
    cls, up_rank, low_rank = cls[present], up_rank[present], low_rank[present]
    strength = rng.beta(3.0, 3.0, len(cls))
    rows_list.append(cls * channels_upper + order_upper[cls, up_rank])
    cols_list.append(order_lower[cls, low_rank])
    counts_list.append(rng.binomial(num_images[cls], strength))

    # Background: preferred outputs draw a few inputs, mostly among preferred inputs.
    outputs = min(_INFLUENCED, channels_upper)
    pool = min(_POOL, channels_lower)
    k = _INPUTS
    cls = np.repeat(np.arange(num_classes), outputs)
    out_rank = np.tile(np.arange(outputs), num_classes)
    m = len(cls)
    in_rank = np.minimum((pool * rng.random((m, k)) ** _BIAS).astype(np.int64), pool - 1)
    from_pool = order_lower[cls[:, None], in_rank]
    random_input = rng.integers(0, channels_lower, size=(m, k))
    use_pool = rng.random((m, k)) < 0.8
    inputs = np.where(use_pool, from_pool, random_input)
    strength = np.where(use_pool, rng.beta(2.0, 3.0, (m, k)), rng.beta(1.0, 15.0, (m, k)))
    rows_list.append(np.repeat(cls * channels_upper + order_upper[cls, out_rank], k))
    cols_list.append(inputs.ravel())
    counts_list.append(rng.binomial(num_images[cls][:, None], strength).ravel())

    matrix = sp.coo_array(
        (
            np.concatenate(counts_list).astype(np.int64),
            (np.concatenate(rows_list), np.concatenate(cols_list)),
        ),
        shape=(num_classes * channels_upper, channels_lower),
    ).tocsr()
    matrix.sum_duplicates()
    # A count never exceeds the class's images (duplicates may have summed past it).
    row_class = np.repeat(
        np.arange(num_classes * channels_upper) // channels_upper, np.diff(matrix.indptr)
    )
    matrix.data = np.minimum(matrix.data, num_images[row_class])
    matrix.eliminate_zeros()
    return matrix


def _class_stats(
    rng: np.random.Generator, num_classes: int, images_per_class: int
) -> dict[str, np.ndarray]:
    # Most ImageNet classes have 1300 training images; a few have as few as 732 (56%).
    short = rng.random(num_classes) < 0.1
    low = max(1, round(0.56 * images_per_class))
    num_images = np.where(
        short, rng.integers(low, images_per_class + 1, num_classes), images_per_class
    ).astype(np.int64)
    accuracy = rng.beta(5.0, 1.8, num_classes)
    num_correct = rng.binomial(num_images, accuracy).astype(np.int64)
    # Per-image top softmax probability: confident classes pile up near 1.
    cls = np.repeat(np.arange(num_classes), num_images)
    confidence = rng.beta(1.0 + 6.0 * accuracy[cls], 1.0 + 2.0 * (1.0 - accuracy[cls]))
    bins = np.minimum((confidence * CONFIDENCE_BINS).astype(np.int64), CONFIDENCE_BINS - 1)
    hist = np.bincount(cls * CONFIDENCE_BINS + bins, minlength=num_classes * CONFIDENCE_BINS)
    return {
        "num_images": num_images,
        "num_correct": num_correct,
        "confidence_hist": hist.reshape(num_classes, CONFIDENCE_BINS).astype(np.int64),
    }


def _confusion(
    rng: np.random.Generator, stats: dict[str, np.ndarray], groups: np.ndarray
) -> np.ndarray:
    """``int64 [classes, classes]``: the correct images on the diagonal, each class's
    mistakes spread over up to 5 classes, mostly of its own latent group (as real models
    confuse similar classes), with decaying shares."""
    num_classes = len(groups)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.fill_diagonal(confusion, stats["num_correct"])
    wrong = stats["num_images"] - stats["num_correct"]
    others = np.arange(num_classes)
    for c in range(num_classes):
        if wrong[c] == 0 or num_classes < 2:
            continue
        same = others[(groups == groups[c]) & (others != c)]
        pool = same if len(same) else others[others != c]
        partners = rng.choice(pool, size=min(5, len(pool)), replace=False)
        shares = 0.5 ** np.arange(len(partners))
        confusion[c, partners] = rng.multinomial(int(wrong[c]), shares / shares.sum())
    return confusion


def _examples(
    rng: np.random.Generator,
    counts: np.ndarray,
    num_images: np.ndarray,
    per_channel: int,
    size: int,
) -> dict[str, np.ndarray]:
    """Top examples of each channel, drawn from the classes that count it most."""
    num_classes, channels = counts.shape
    starts = np.concatenate([[0], np.cumsum(num_images)[:-1]])
    # Noise breaks ties so channels with equal counts do not all pick class 0.
    score = counts.T + rng.random((channels, num_classes))
    n = min(per_channel, num_classes)
    top = np.argsort(-score, axis=1)[:, :n]
    cls = top[:, rng.integers(0, n, size=per_channel)] if n < per_channel else top
    image_index = starts[cls] + rng.integers(0, num_images[cls])
    peak = rng.lognormal(1.0, 0.5, size=(channels, 1))
    activation = np.sort(peak * rng.uniform(0.5, 1.0, (channels, per_channel)), axis=1)[:, ::-1]
    position = rng.integers(0, size, size=(channels, per_channel, 2))
    return {
        "image_index": image_index.astype(np.int64),
        "activation": np.ascontiguousarray(activation, dtype=np.float32),
        "position": position.astype(np.int32),
    }


@lru_cache(maxsize=4)
def _grid(size: int) -> np.ndarray:
    """``float32[2, size, size]``: row and column coordinates in ``[0, 1)``."""
    return np.mgrid[0:size, 0:size].astype(np.float32) / size


def _crop_png(rng: np.random.Generator, depth: float, size: int = CROP_SIZE) -> bytes:
    """A small patterned RGB PNG: stripes low in the network, blobs and mixtures higher.

    Args:
        rng: the generator drawing the pattern and colours.
        depth: ``0`` (first layer: stripes) to ``1`` (last layer: blobs).
        size: side of the square image in pixels.

    Returns:
        The PNG file's bytes.
    """
    yy, xx = _grid(size)
    angle = rng.uniform(0, np.pi)
    freq = rng.uniform(2.0, 7.0)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
    cy, cx = rng.uniform(0.2, 0.8, 2)
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / rng.uniform(0.01, 0.06))
    pattern = (1.0 - depth) * stripes + depth * (0.6 * blob + 0.4 * stripes * blob)
    colours = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    rgb = colours[0] + (colours[1] - colours[0]) * pattern[..., None]
    rgb += rng.normal(0, 8.0, size=rgb.shape)
    return png_bytes(np.clip(rgb, 0, 255).astype(np.uint8))


def _mapper(
    rng: np.random.Generator,
    stats: dict[str, np.ndarray],
    layers: Sequence[tuple[str, int]],
    channels: Sequence[int],
    n: int,
    seed: int,
) -> MapperPart:
    """A made-up ``mapper`` part: per layer, ReLU of a Gaussian mixture.

    Every sampled image has a class (drawn in proportion to the class's images) and, per
    layer, a mixture component: with probability rising with depth (0.3 to 0.9) its class's
    own component, otherwise a random one, so deeper layers' Mapper nodes are purer.
    """
    num_images = np.asarray(stats["num_images"], dtype=np.int64)
    total = int(num_images.sum())
    n = min(n, total)
    image_index = np.sort(rng.choice(total, size=n, replace=False)).astype(np.int64)
    # Images are numbered class by class, so the class of an index is a search.
    label = np.searchsorted(np.cumsum(num_images), image_index, side="right").astype(np.int64)
    num_components = 40
    home = rng.integers(0, num_components, size=len(num_images))
    vectors, positions = [], []
    for t, ((_, size), c) in enumerate(zip(layers, channels, strict=True)):
        depth = t / max(1, len(layers) - 1)
        own = rng.random(n) < 0.3 + 0.6 * depth
        component = np.where(own, home[label], rng.integers(0, num_components, size=n))
        centres = rng.normal(0.0, 1.0, size=(num_components, c)).astype(np.float32)
        gain = rng.uniform(0.5, 1.5, size=(n, 1)).astype(np.float32)
        noise = rng.normal(0.0, 0.6, size=(n, c)).astype(np.float32)
        vectors.append(np.maximum(gain * (centres[component] + noise), 0.0).astype(np.float32))
        positions.append(rng.integers(0, size, size=(n, 2)).astype(np.int32))
    return mapper_part(
        image_index, label, vectors, positions, seed=seed, capacity=n, mode="position",
        crop_points=60, crops_per_node=3,
    )  # fmt: skip


def _trace_predictions(
    rng: np.random.Generator,
    train_label: np.ndarray,
    accuracy: np.ndarray,
    n: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The explained images and the model's (made-up) predictions of them.

    Args:
        rng: generator (draws the sample, then the errors).
        train_label: ``int64[N]`` class of every training image.
        accuracy: ``float[classes]`` top-1 accuracy of each class.
        n: explained images (at most ``N``).

    Returns:
        ``(image_index, label, prediction, wrong)``: ``int64[n]`` sorted training rows, their
        classes and predicted classes, and ``bool[n]`` which predictions are wrong.
    """
    num_classes = len(accuracy)
    image_index = np.sort(rng.choice(len(train_label), size=n, replace=False)).astype(np.int64)
    label = train_label[image_index]
    wrong = rng.random(n) > accuracy[label]
    # A wrong prediction is any other class.
    other = (label + rng.integers(1, num_classes, size=n)) % num_classes
    prediction = np.where(wrong, other, label).astype(np.int64)
    return image_index, label, prediction, wrong


def _trace_shares(
    rng: np.random.Generator,
    label: np.ndarray,
    prediction: np.ndarray,
    wrong: np.ndarray,
    num_classes: int,
    num_layers: int,
    epochs: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Final and per-epoch class shares of the refinement, and the epochs' cosines.

    Args:
        rng: generator.
        label, prediction, wrong: from :func:`_trace_predictions` (``[n]``).
        num_classes: ``C``.
        num_layers: traced layers ``T``.
        epochs: ``E``.

    Returns:
        ``(class_share [n, T, C + 1], epoch_share [n, T, E, C + 1], epoch_cosine [n, T, E])``
        (float64): each class-share row sums to 1 with the regularisation column; the
        cumulative epoch shares reach the final shares, and the cosine 1, at the last epoch.
    """
    n, t, e, c = len(label), num_layers, epochs, num_classes
    # Class shares: a little signed noise on every class, a lead for the label (and the
    # prediction), a small regularisation share; normalised so each row sums to 1.
    share = rng.normal(0.0, 0.3 / np.sqrt(c), size=(n, t, c + 1))
    rows = np.arange(n)
    depth = np.linspace(0.4, 1.0, t)[None, :]
    share[rows, :, label] += rng.uniform(0.3, 1.0, size=(n, 1)) * depth
    share[rows, :, prediction] += np.where(wrong, rng.uniform(0.4, 1.2, n), 0.0)[:, None] * depth
    share[:, :, -1] = rng.uniform(-0.05, 0.1, size=(n, t))
    share /= share.sum(axis=2, keepdims=True)
    # Cumulative epoch shares: a growing fraction of the final shares, plus fading noise.
    grown = np.sort(rng.uniform(0.2, 1.0, size=(n, t, e)), axis=2)
    grown[:, :, -1] = 1.0
    fade = (1.0 - np.arange(1, e + 1) / e)[None, None, :, None]
    epoch_share = share[:, :, None, :] * grown[..., None]
    epoch_share += rng.normal(0.0, 0.05 / np.sqrt(c), size=epoch_share.shape) * fade
    epoch_cosine = 1.0 - np.sort(rng.uniform(0.0, 0.3, size=(n, t, e)), axis=2)[:, :, ::-1]
    epoch_cosine = epoch_cosine * (1.0 - fade[..., 0] * 0.5)
    epoch_cosine[:, :, -1] = 1.0
    return share, epoch_share, epoch_cosine


def _trace_norms(rng: np.random.Generator, n: int, num_layers: int) -> np.ndarray:
    """``float64[n, T, 3]``: ``||r||``, ``||W_0 a||`` and ``||W_T a||`` per image and layer,
    with the triangle inequality ``||W_T a|| <= ||W_0 a|| + ||r||``."""
    refinement = rng.lognormal(3.0, 0.5, size=(n, num_layers))
    initial = rng.lognormal(3.0, 0.6, size=(n, num_layers))
    final = np.abs(initial - refinement) + rng.random((n, num_layers)) * 2.0 * np.minimum(
        initial, refinement
    )
    return np.stack([refinement, initial, final], axis=2)


def _trace_ridges(
    rng: np.random.Generator, share: np.ndarray, bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge histograms: mass near cosine +1 for the leading classes, around 0 elsewhere.

    Args:
        rng: generator.
        share: ``[n, T, C + 1]`` class shares (:func:`_trace_shares`).
        bins: ``B``.

    Returns:
        ``(ridge_hist float64[n, T, C, B], ridge_edges float64[B + 1])`` over ``[-1, 1]``.
    """
    n, t, c = share.shape[0], share.shape[1], share.shape[2] - 1
    edges = np.linspace(-1.0, 1.0, bins + 1)
    centre = np.clip(share[:, :, :c] * 3.0, -0.9, 0.9)
    centres = 0.5 * (edges[:-1] + edges[1:])
    ridge = np.exp(-((centres[None, None, None, :] - centre[..., None]) ** 2) / 0.08)
    ridge *= rng.uniform(0.5, 1.5, size=(n, t, c, 1)) * (np.abs(share[:, :, :c, None]) + 0.01)
    return ridge, edges


def _trace_citations(
    rng: np.random.Generator,
    label: np.ndarray,
    num_images: np.ndarray,
    refinement: np.ndarray,
    top_k: int,
) -> dict[str, np.ndarray]:
    """Proponents (mostly training images of the explained image's class, descending
    positive scores) and opponents (other classes, ascending negative scores).

    Args:
        rng: generator.
        label: ``int64[n]`` classes of the explained images.
        num_images: ``int64[classes]`` training images of each class (numbered class by
            class).
        refinement: ``[n, T]`` refinement norms; the scores scale with them.
        top_k: ``k``.

    Returns:
        ``proponent_index``, ``proponent_score``, ``opponent_index``, ``opponent_score``
        (``[n, T, k]``; indices int64, scores float32).
    """
    (n, t), c, k = refinement.shape, len(num_images), top_k
    total = int(num_images.sum())
    starts = np.concatenate([[0], np.cumsum(num_images)[:-1]]).astype(np.int64)
    own = rng.random((n, t, k)) < 0.8
    pick = starts[label][:, None, None] + (
        rng.random((n, t, k)) * num_images[label][:, None, None]
    ).astype(np.int64)
    proponent_index = np.where(own, pick, rng.integers(0, total, size=(n, t, k)))
    opponent_class = (label[:, None, None] + rng.integers(1, c, size=(n, t, k))) % c
    opponent_index = starts[opponent_class] + (
        rng.random((n, t, k)) * num_images[opponent_class]
    ).astype(np.int64)
    scale = refinement[..., None] * 0.05
    proponent_score = np.sort(rng.exponential(1.0, (n, t, k)), axis=2)[..., ::-1] * scale
    opponent_score = -np.sort(rng.exponential(0.6, (n, t, k)), axis=2)[..., ::-1] * scale
    return {
        "proponent_index": proponent_index.astype(np.int64),
        "proponent_score": np.ascontiguousarray(proponent_score, dtype=np.float32),
        "opponent_index": opponent_index.astype(np.int64),
        "opponent_score": np.ascontiguousarray(opponent_score, dtype=np.float32),
    }


def _trace_meta(
    n: int, num_train: int, layer_names: Sequence[str], epochs: int, top_k: int, bins: int
) -> dict[str, Any]:
    """The ``manifest["trace"]`` description of a synthetic trace part (the last traced
    layer is explained exactly per example, the others by projection)."""
    last = len(layer_names) - 1
    return {
        "split": "synthetic",
        "num_images": n,
        "num_train": num_train,
        "num_epochs": epochs,
        "top_k": top_k,
        "bins": bins,
        "layers": [
            {
                "name": name,
                "per_example": "exact" if i == last else "projected",
                "ridge_unit": "example" if i == last else "epoch-class",
            }
            for i, name in enumerate(layer_names)
        ],
        "optimizer": "synthetic (no training happened)",
        "epochs": epochs,
    }


def _trace(
    rng: np.random.Generator,
    num_images: np.ndarray,
    accuracy: np.ndarray,
    layer_names: Sequence[str],
    n: int,
    *,
    epochs: int = TRACE_EPOCHS,
    top_k: int = TRACE_TOP_K,
    bins: int = TRACE_BINS,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A made-up ``trace`` part with the shapes and invariants of :mod:`compute.trace.explain`.

    The training set is the synthetic dataset itself (images numbered class by class); the
    ``n`` explained images are drawn from it. Per image and traced layer, the refinement's
    class shares favour the true class (and, for misclassified images, the predicted one)
    and sum to 1 with the regularisation column; the cumulative epoch shares grow to the
    final shares at the last epoch, where the epoch cosine reaches 1; proponents come
    mostly from the image's class with descending positive scores, opponents from other
    classes with ascending negative scores.

    Args:
        rng: generator.
        num_images: ``int64[classes]`` images of each class (the training set).
        accuracy: ``float[classes]`` top-1 accuracy of each class (prediction errors).
        layer_names: traced layer names (``T``).
        n: explained images.
        epochs, top_k, bins: ``E``, ``k`` and ``B`` of the part.

    Returns:
        ``(manifest["trace"] description, {name: array})`` keyed like ``TRACE_PATHS``.
    """
    num_classes, num_layers = len(num_images), len(layer_names)
    train_label = np.repeat(np.arange(num_classes, dtype=np.int64), num_images)
    n = min(n, len(train_label))
    # The helpers draw from ``rng`` in turn: their order is part of what a seed gives.
    image_index, label, prediction, wrong = _trace_predictions(rng, train_label, accuracy, n)
    share, epoch_share, epoch_cosine = _trace_shares(
        rng, label, prediction, wrong, num_classes, num_layers, epochs
    )
    norms = _trace_norms(rng, n, num_layers)
    ridge, edges = _trace_ridges(rng, share, bins)
    citations = _trace_citations(rng, label, num_images, norms[:, :, 0], top_k)
    arrays = {
        "image_index": image_index,
        "image_label": label,
        "prediction": prediction,
        "train_label": train_label,
        "norms": norms.astype(np.float32),
        "class_share": share.astype(np.float32),
        "epoch_share": epoch_share.astype(np.float32),
        "epoch_cosine": epoch_cosine.astype(np.float32),
        "ridge_hist": ridge.astype(np.float32),
        "ridge_edges": edges.astype(np.float32),
        **citations,
    }
    return _trace_meta(n, len(train_label), layer_names, epochs, top_k, bins), arrays


def _write_trace(
    writer: AtlasWriter, arrays: dict[str, np.ndarray], rng: np.random.Generator
) -> None:
    """Add the trace arrays and thumbnails (explained images, every cited training image)."""
    for name, array in arrays.items():
        writer.add_array(TRACE_PATHS[name], array)
    for row in range(arrays["image_index"].shape[0]):
        writer.add_bytes(trace_thumbnail_path("test", row), _crop_png(rng, 1.0))
    cited = np.union1d(arrays["proponent_index"].ravel(), arrays["opponent_index"].ravel())
    for index in cited.tolist():
        writer.add_bytes(trace_thumbnail_path("train", int(index)), _crop_png(rng, 1.0))


def synthetic_counts(
    num_classes: int = 1000,
    layer_channels: Sequence[int] = DEFAULT_CHANNELS,
    *,
    images_per_class: int = 1300,
    rng: np.random.Generator | int = 0,
) -> tuple[list[np.ndarray], list[sp.csr_array | None], dict[str, np.ndarray]]:
    """The Summit part of a synthetic atlas: A, I and class statistics, in memory.

    Args:
        num_classes: number of classes.
        layer_channels: channels per layer, input to output.
        images_per_class: images of a typical class.
        rng: a generator or a seed.

    Returns:
        ``(activation_counts, influence, stats)``: per layer ``int64[classes, C_l]``; per
        layer ``None`` (layer 0) or csr ``int64[classes * C_l, C_{l-1}]``; and
        ``num_images``, ``num_correct`` (``int64[classes]``), ``confidence_hist``
        (``int64[classes, 20]``) and ``confusion`` (``int64[classes, classes]``).

    Examples:
        >>> a, i, s = synthetic_counts(4, (3, 5))
        >>> a[1].shape, i[1].shape, s["confidence_hist"].shape
        ((4, 5), (20, 3), (4, 20))
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    stats = _class_stats(rng, num_classes, images_per_class)
    num_images = stats["num_images"]
    # Latent class groups (~25 classes each) share channel tastes: clusters in the views.
    groups = rng.integers(0, max(2, num_classes // 25), size=num_classes)
    stats["confusion"] = _confusion(rng, stats, groups)
    counts: list[np.ndarray] = []
    influence: list[sp.csr_array | None] = []
    order_prev: np.ndarray | None = None
    for t, c in enumerate(layer_channels):
        prob, order = _preferences(rng, num_classes, int(c), groups)
        counts.append(rng.binomial(num_images[:, None], prob).astype(np.int64))
        if t == 0:
            influence.append(None)
        else:
            assert order_prev is not None
            influence.append(_influence(rng, order, order_prev, num_images))
        order_prev = order
    return counts, influence, stats


# ---------------------------------------------------------------------------------------
# The atlas
# ---------------------------------------------------------------------------------------


def _check_arguments(
    num_classes: int,
    layer_channels: Sequence[int],
    images_per_class: int,
    examples_per_channel: int,
    crops_per_channel: int,
    embedding: str,
    mapper_points: int,
    trace_images: int,
) -> None:
    """:func:`write_synthetic_atlas`'s arguments, refused in one line each."""
    if num_classes < 2:
        raise BuildError("a synthetic atlas needs at least 2 classes")
    if not layer_channels or min(layer_channels) < 1:
        raise BuildError("layer_channels must list at least one positive channel count")
    if images_per_class < 1 or examples_per_channel < 1:
        raise BuildError("images_per_class and examples_per_channel must be >= 1")
    if not 0 <= crops_per_channel <= examples_per_channel:
        raise BuildError("crops_per_channel must be in 0..examples_per_channel")
    if embedding not in ("umap", "pca"):
        raise BuildError(f"embedding must be 'umap' or 'pca', not {embedding!r}")
    if mapper_points < 0 or mapper_points == 1:
        raise BuildError("mapper_points must be 0 (no mapper part) or >= 2")
    if trace_images < 0:
        raise BuildError("trace_images must be >= 0 (0: no trace part)")


def _manifest(
    seed: int,
    classes: list[str],
    layers: list[tuple[str, int]],
    channels: list[int],
    stats: dict[str, np.ndarray],
    parameters: dict[str, Any],
    has_mapper: bool,
    featurevis: bool,
    trace: tuple[dict[str, Any], Any] | None,
) -> dict[str, Any]:
    """The synthetic atlas's manifest (docs/atlas.md)."""
    total_images = int(stats["num_images"].sum())
    manifest: dict[str, Any] = {
        "title": "Synthetic ImageNet-shaped atlas",
        "model": {
            "name": "synthetic (InceptionV1-shaped, no weights)",
            "spec": "synthetic",
            "num_parameters": 0,
            "input_size": [3, 224, 224],
        },
        "dataset": {
            "name": "synthetic (ImageNet-shaped)",
            "split": "synthetic",
            "num_images": total_images,
            "description": (
                "Structured random counts generated by compute.synthetic (seed "
                f"{seed}); no real images or model were used. For demos, tests and "
                "benchmarks only."
            ),
        },
        "preprocessing": {
            "image_size": 224,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "grayscale": False,
        },
        "classes": classes,
        "layers": manifest_layers(
            [name for name, _ in layers],
            [(c, size, size) for (_, size), c in zip(layers, channels, strict=True)],
        ),
        "parameters": parameters,
        "metrics": {"accuracy": {"train": float(stats["num_correct"].sum() / total_images)}},
        "parts": [PART_SUMMIT, PART_EXAMPLES, PART_EMBEDDING, PART_GRAPHS]
        + ([PART_MAPPER] if has_mapper else [])
        + ([PART_FEATUREVIS] if featurevis else [])
        + ([PART_TRACE] if trace is not None else []),
    }
    if trace is not None:
        manifest["trace"] = trace[0]
    return manifest


def _write_pictures(
    writer: AtlasWriter,
    seed: int,
    channels: list[int],
    mapper: MapperPart | None,
    featurevis: bool,
) -> None:
    """The generated pictures: Mapper sample crops and feature visualizations (each from
    its own seeded stream, so parts do not shift each other's pictures)."""
    if mapper is not None:
        crop_rng = np.random.default_rng([seed, 5])
        for relpath, array in mapper.files.items():
            writer.add_array(relpath, array)
        for t, rows in enumerate(mapper.crop_rows):
            depth = t / max(1, len(channels) - 1)
            for row in rows.tolist():
                writer.add_bytes(mapper_crop_path(t, row), _crop_png(crop_rng, depth))
    if featurevis:
        vis_rng = np.random.default_rng([seed, 7])
        for t in range(len(channels)):
            depth = t / max(1, len(channels) - 1)
            for channel in range(channels[t]):
                for kind in ("vis", *(f"div-{k}" for k in range(DIVERSITY_IMAGES))):
                    writer.add_bytes(
                        featurevis_path(t, channel, kind),
                        _crop_png(vis_rng, depth, FEATUREVIS_SIZE),
                    )


def _embeddings(
    counts: list[np.ndarray], method: str, seed: int
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The class embeddings (UMAP as a build does, or PCA) and their manifest entry."""
    if method == "umap":
        config = EmbeddingConfig()
        return list(class_embeddings(counts, config)), config.to_manifest()
    layouts = list(pca_embeddings(counts, seed=seed))
    return layouts, {"embedding": {"method": "pca", "metric": "cosine", "seed": seed}}


def _examples_and_crops(
    rng: np.random.Generator,
    counts: list[np.ndarray],
    num_images: np.ndarray,
    layers: list[tuple[str, int]],
    examples_per_channel: int,
    crops_per_channel: int,
) -> tuple[list[dict[str, np.ndarray]], list[tuple[str, bytes]]]:
    """Each layer's top-example table and the example crops.

    Drawn in the order the generator always drew them (per layer: the examples, then the
    crops), so a seed gives the same atlas.
    """
    tables: list[dict[str, np.ndarray]] = []
    crops: list[tuple[str, bytes]] = []
    for t, (name, size) in enumerate(layers):
        tables.append(_examples(rng, counts[t], num_images, examples_per_channel, size))
        depth = t / max(1, len(layers) - 1)
        for channel in range(counts[t].shape[1]):
            for rank in range(crops_per_channel):
                crops.append((example_crop_path(t, channel, rank), _crop_png(rng, depth)))
        log.debug("generated layer %s", name)
    return tables, crops


def _graphs_and_embeddings(
    counts: list[np.ndarray],
    influence: list[sp.csr_array | None],
    method: str,
    seed: int,
    *,
    progress: bool,
    started: float,
) -> tuple[GraphArrays, list[np.ndarray], dict[str, Any]]:
    """The attribution graphs and class embeddings, computed as a real build does.

    Args:
        counts: per layer ``int64[classes, C_l]`` activation counts.
        influence: per layer ``None`` (layer 0) or csr influence counts.
        method: ``"umap"`` or ``"pca"`` (:func:`_embeddings`).
        seed: the embedding's seed.
        progress: show the graph layout's progress bar.
        started: ``time.perf_counter()`` at the start of the build (for the log).

    Returns:
        ``(graphs, layouts, parameters)``: the parameters are the graph configuration's
        manifest entries, then the embedding's.
    """
    graph_config = GraphConfig()
    graphs = attribution_graphs(counts, influence, graph_config, progress=progress)
    log.info("synthetic graphs ready (%.1f s)", time.perf_counter() - started)
    layouts, embedding_parameters = _embeddings(counts, method, seed)
    log.info("synthetic embedding ready (%.1f s)", time.perf_counter() - started)
    return graphs, layouts, {**graph_config.to_manifest(), **embedding_parameters}


def _optional_parts(
    seed: int,
    stats: dict[str, np.ndarray],
    layers: list[tuple[str, int]],
    channels: list[int],
    *,
    mapper_points: int,
    trace_images: int,
    started: float,
) -> tuple[MapperPart | None, tuple[dict[str, Any], dict[str, np.ndarray]] | None]:
    """The ``mapper`` part (``None`` for 0 points) and the ``trace`` part (``None`` for 0
    images), each drawn from its own seeded stream so neither shifts the other parts.

    Returns:
        ``(mapper, trace)``; ``trace`` is ``(manifest["trace"], arrays)`` (:func:`_trace`).
    """
    mapper = None
    if mapper_points:
        mapper = _mapper(
            np.random.default_rng([seed, 4]), stats, layers, channels, mapper_points, seed
        )
        log.info("synthetic mapper part ready (%.1f s)", time.perf_counter() - started)
    trace = None
    if trace_images:
        num_images = stats["num_images"]
        accuracy = stats["num_correct"] / np.maximum(num_images, 1)
        # Traced layers: the atlas's last layer and the logits, as a real trace records.
        trace = _trace(
            np.random.default_rng([seed, 6]),
            num_images,
            accuracy,
            [layers[-1][0], "logits"],
            trace_images,
        )
    return mapper, trace


def _parameters(
    seed: int,
    examples_per_channel: int,
    images_per_class: int,
    build_parameters: dict[str, Any],
    layers: list[tuple[str, int]],
    mapper: MapperPart | None,
    featurevis: bool,
) -> dict[str, Any]:
    """The manifest's ``parameters``: the Summit build's (as a real build records them),
    the generator's, then those of the optional ``mapper`` and ``featurevis`` parts.

    Args:
        seed: the generator's seed.
        examples_per_channel: top examples stored per channel.
        images_per_class: images of a typical class.
        build_parameters: the graph and embedding entries (:func:`_graphs_and_embeddings`).
        layers: ``(name, size)`` of every layer.
        mapper: the ``mapper`` part, if any.
        featurevis: whether the ``featurevis`` part is written.

    Returns:
        The parameters, keys in the order the manifest lists them.
    """
    parameters: dict[str, Any] = {
        **SummitConfig(examples_per_channel=examples_per_channel, subsets=False).to_manifest(),
        "seed": seed,
        **build_parameters,
        "synthetic": True,
        "images_per_class": images_per_class,
    }
    if mapper is not None:
        parameters["mapper"] = mapper.parameters
    if featurevis:
        parameters["featurevis"] = {
            "objective": "synthetic (generated patterns, no model)",
            "diversity_images": DIVERSITY_IMAGES,
            "size": FEATUREVIS_SIZE,
            "seed": seed,
            "layers": [name for name, _ in layers],
        }
    return parameters


def _summit_arrays(
    rng: np.random.Generator,
    counts: list[np.ndarray],
    influence: list[sp.csr_array | None],
    stats: dict[str, np.ndarray],
    graphs: GraphArrays,
    layouts: list[np.ndarray],
    layers: list[tuple[str, int]],
    examples_per_channel: int,
    crops_per_channel: int,
) -> tuple[SummitArrays, list[tuple[str, bytes]]]:
    """The Summit part's arrays, with the top examples and their crops drawn from ``rng``
    (after the counts: the generator's order, so a seed gives the same atlas).

    Returns:
        ``(arrays, crops)``: crops as ``(atlas path, PNG bytes)``.
    """
    tables, crops = _examples_and_crops(
        rng, counts, stats["num_images"], layers, examples_per_channel, crops_per_channel
    )
    summit = SummitArrays(
        num_images=stats["num_images"],
        num_correct=stats["num_correct"],
        confidence_hist=stats["confidence_hist"],
        confusion=stats["confusion"],
        activation_counts=counts,
        influence=influence,
        examples=tables,
        embeddings=layouts,
        graphs=graphs.arrays(),
    )
    return summit, crops


def synthetic_instances(
    rng: np.random.Generator,
    counts: list[np.ndarray],
    stats: dict[str, np.ndarray],
    layers: list[tuple[str, int]],
    num_instances: int,
    per_layer: int = 12,
    top_k: int = 2,
) -> InstanceArrays:
    """Instance records drawn to agree with the counts: an input of a class selects
    ``per_layer`` channels of each layer, drawn with the weights of the class's counts (a
    real selection keeps a handful per image), is misclassified with the class's error
    rate, and joins each selected channel to ``top_k`` of the previous layer's.

    Args:
        rng: the part's own random stream.
        counts: per layer, the class activation counts.
        stats: ``num_images`` and ``num_correct`` per class.
        layers: ``(name, map size)`` per layer.
        num_instances: records drawn.
        per_layer: channels each input selects per layer (at most the layer's).
        top_k: sources per target channel.
    """
    images = stats["num_images"].astype(np.float64)
    classes = images.shape[0]
    total = int(images.sum())
    n = min(num_instances, total)
    index = np.sort(rng.choice(total, size=n, replace=False)).astype(np.int64)
    label = rng.choice(classes, size=n, p=images / images.sum()).astype(np.int64)
    error = 1.0 - stats["num_correct"] / np.maximum(images, 1)
    wrong = rng.random(n) < error[label]
    other = (label + rng.integers(1, classes, size=n)) % classes
    prediction = np.where(wrong, other, label).astype(np.int64)
    arrays: dict[str, list[np.ndarray]] = {name: [] for name in INSTANCE_LAYER_ARRAYS}
    below: np.ndarray | None = None
    for layer, (_, size) in enumerate(layers):
        k = min(per_layer, counts[layer].shape[1])
        # Weighted sampling without replacement: the k largest of weight * Exp keys.
        keys = (counts[layer][label] + 1e-9) / rng.exponential(size=counts[layer][label].shape)
        picked = np.sort(np.argpartition(-keys, k - 1, axis=1)[:, :k], axis=1).astype(np.int32)
        arrays["channel_indptr"].append(np.arange(n + 1, dtype=np.int64) * k)
        arrays["channel"].append(picked.reshape(-1))
        arrays["value"].append(rng.gamma(2.0, 1.0, size=n * k).astype(np.float32))
        arrays["position"].append(rng.integers(0, size, size=(n * k, 2)).astype(np.int32))
        if below is None:
            arrays["edge_indptr"].append(np.zeros(n + 1, dtype=np.int64))
            arrays["edge"].append(np.zeros((0, 2), dtype=np.int32))
        else:
            sources = np.take_along_axis(
                below, rng.integers(0, below.shape[1], size=(n, k * top_k)), axis=1
            )
            edges = [
                np.unique(np.stack([np.repeat(picked[r], top_k), sources[r]], 1), axis=0)
                for r in range(n)
            ]
            sizes = np.array([e.shape[0] for e in edges], dtype=np.int64)
            arrays["edge_indptr"].append(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
            arrays["edge"].append(np.concatenate(edges).astype(np.int32).reshape(-1, 2))
        below = picked
    # Drawn after the layers, so the channels and edges above keep their random stream.
    confidence = rng.uniform(0.3, 1.0, size=n)
    margin = confidence * rng.uniform(0.02, 1.0, size=n)
    return InstanceArrays(
        image_index=index,
        label=label,
        prediction=prediction,
        reason=np.ones(n, dtype=np.int64),
        confidence=confidence.astype(np.float32),
        margin=margin.astype(np.float32),
        channel_indptr=arrays["channel_indptr"],
        channel=arrays["channel"],
        value=arrays["value"],
        position=arrays["position"],
        edge_indptr=arrays["edge_indptr"],
        edge=arrays["edge"],
    )


def _write_atlas(
    out: str | Path,
    manifest: dict[str, Any],
    summit: SummitArrays,
    crops: list[tuple[str, bytes]],
    *,
    seed: int,
    channels: list[int],
    mapper: MapperPart | None,
    featurevis: bool,
    trace_arrays: dict[str, np.ndarray] | None,
    overwrite: bool,
    started: float,
) -> Path:
    """Write every file of the atlas and commit it.

    Files are added in a fixed order (Summit arrays, example crops, Mapper crops, feature
    visualizations, trace), the generated pictures of each kind from their own seeded
    stream, so a seed always gives the same bytes.

    Returns:
        The atlas path.
    """
    with AtlasWriter(out, manifest, overwrite=overwrite) as writer:
        write_summit_parts(writer, summit)
        for relpath, png in crops:
            writer.add_bytes(relpath, png)
        _write_pictures(writer, seed, channels, mapper, featurevis)
        if featurevis:
            log.info(
                "synthetic feature visualizations written (%.1f s)", time.perf_counter() - started
            )
        if trace_arrays is not None:
            _write_trace(writer, trace_arrays, np.random.default_rng([seed, 8]))
        path = writer.commit()
    log.info(
        "synthetic atlas %s: %d classes, %d layers, %d files (%.1f s)",
        path,
        len(manifest["classes"]),
        len(channels),
        len(writer.files),
        time.perf_counter() - started,
    )
    return path


def write_synthetic_atlas(
    out: str | Path,
    *,
    num_classes: int = 1000,
    layer_channels: Sequence[int] = DEFAULT_CHANNELS,
    images_per_class: int = 1300,
    examples_per_channel: int = 10,
    crops_per_channel: int = 1,
    embedding: Literal["umap", "pca"] = "pca",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
    mapper_points: int = 2_000,
    featurevis: bool = True,
    trace_images: int = 200,
    instances: int = 2_000,
) -> Path:
    """Write a complete synthetic atlas (every part of the format) shaped like ImageNet's.

    Args:
        out: atlas directory to create.
        num_classes: number of classes (ImageNet: 1000).
        layer_channels: channels per layer, input to output (default: InceptionV1's nine
            ``mixed`` layers, named ``mixed3a``..``mixed5b``; other lengths are named
            ``layer0``..).
        images_per_class: images of a typical class (10% of classes get fewer, as in
            ImageNet); every count lies in ``0..images_per_class``.
        examples_per_channel: top dataset examples stored per channel.
        crops_per_channel: PNG crops written per channel (ranks ``0..crops-1``).
        embedding: ``"umap"`` (the real :func:`class_embeddings`, slow) or ``"pca"``.
        seed: everything is a deterministic function of the arguments and this seed.
        overwrite: replace an existing atlas at ``out``.
        progress: show tqdm progress bars.
        mapper_points: points of the ``mapper`` part's sample (ReLU of a Gaussian mixture
            per layer, purer in class with depth); 0: no mapper part.
        featurevis: write the ``featurevis`` part: a generated picture and
            ``DIVERSITY_IMAGES`` diversity pictures per channel (``FEATUREVIS_SIZE`` px).
        trace_images: explained images of the ``trace`` part (traced layers: the last atlas
            layer and ``logits``; thumbnails of them and of every proponent and opponent);
            0: no trace part.
        instances: instance records drawn to agree with the counts
            (:func:`synthetic_instances`); 0: no instances part.

    Returns:
        The atlas path.

    Raises:
        BuildError: for a bad argument.

    Examples:
        >>> path = write_synthetic_atlas(tmp / "a", num_classes=12,
        ...                              layer_channels=(8, 16, 16))      # doctest: +SKIP
        >>> Atlas.open(path).graph(0).num_nodes > 0                      # doctest: +SKIP
        True
    """
    _check_arguments(
        num_classes, layer_channels, images_per_class, examples_per_channel,
        crops_per_channel, embedding, mapper_points, trace_images,
    )  # fmt: skip
    started = time.perf_counter()
    # One stream for the counts and then the examples (the Summit part); the other parts
    # draw from streams of their own (seeded ``[seed, k]``).
    rng = np.random.default_rng(seed)
    channels = [int(c) for c in layer_channels]
    layers = _layer_names_and_sizes(channels)
    classes = synthetic_class_names(num_classes, seed)
    counts, influence, stats = synthetic_counts(
        num_classes, channels, images_per_class=images_per_class, rng=rng
    )
    log.info("synthetic counts ready (%.1f s)", time.perf_counter() - started)
    graphs, layouts, build_parameters = _graphs_and_embeddings(
        counts, influence, embedding, seed, progress=progress, started=started
    )
    mapper, trace = _optional_parts(
        seed, stats, layers, channels, mapper_points=mapper_points,
        trace_images=trace_images, started=started,
    )  # fmt: skip
    parameters = _parameters(
        seed, examples_per_channel, images_per_class, build_parameters, layers, mapper, featurevis
    )
    manifest = _manifest(
        seed, classes, layers, channels, stats, parameters, mapper is not None, featurevis, trace
    )
    summit, crops = _summit_arrays(
        rng, counts, influence, stats, graphs, layouts, layers,
        examples_per_channel, crops_per_channel,
    )  # fmt: skip
    if instances:
        records = synthetic_instances(
            np.random.default_rng([seed, 9]), counts, stats, layers, instances
        )
        summit = replace(summit, instances=records)
        manifest["parts"].append(PART_INSTANCES)
        manifest["parameters"]["instances"] = {"sample": instances, "mistakes": 0, "seed": seed}
    return _write_atlas(
        out, manifest, summit, crops, seed=seed, channels=channels, mapper=mapper,
        featurevis=featurevis, trace_arrays=None if trace is None else trace[1],
        overwrite=overwrite, started=started,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    channels = tuple(args.channels) if args.channels else DEFAULT_CHANNELS
    path = write_synthetic_atlas(
        args.out,
        num_classes=args.classes,
        layer_channels=channels,
        embedding=args.embedding,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=True,
        featurevis=not args.no_featurevis,
        trace_images=args.trace_images,
    )
    print(f"wrote {path}")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``python -m compute synthetic`` to the CLI.

    Args:
        subparsers: the ``add_subparsers`` object of the ``compute`` parser.
    """
    parser = subparsers.add_parser(
        "synthetic",
        help="write a synthetic ImageNet-shaped atlas (no model or data needed)",
        description=(
            "Write a complete synthetic atlas shaped like Summit's InceptionV1/ImageNet "
            "one (structured random counts; for demos, tests and benchmarks)."
        ),
    )
    parser.add_argument("--out", required=True, help="atlas directory to create")
    parser.add_argument("--classes", type=int, default=1000, help="number of classes")
    parser.add_argument(
        "--channels",
        type=int,
        nargs="+",
        default=None,
        help="channels per layer (default: InceptionV1 mixed3a..mixed5b)",
    )
    parser.add_argument(
        "--embedding",
        choices=("pca", "umap"),
        default="pca",
        help="class embedding: fast PCA (default) or the real chained UMAP (slow)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--no-featurevis",
        action="store_true",
        help="leave out the featurevis part (5 generated pictures per channel)",
    )
    parser.add_argument(
        "--trace-images",
        type=int,
        default=200,
        help="explained images of the trace part (0: no trace part)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing atlas")
    parser.set_defaults(run=_run)
