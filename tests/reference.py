"""Plain, slow, per-image reference of the Summit pass (for tests only).

Everything is spelled out with Python loops over images, channels and channel pairs, on
tensors recorded by ordinary hooks over one forward pass; the fast vectorised
``compute.summit.aggregate.SummitPass`` must reproduce it exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compute.capture import TensorRecorder
from compute.connect import find_connections
from compute.summit.aggregate import SummitAggregates
from compute.summit.config import SummitConfig


def channel_max(z: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Maximum of a 2-D map and its first position in row-major order."""
    best, where = -math.inf, (0, 0)
    for r in range(z.shape[0]):
        for c in range(z.shape[1]):
            if z[r, c] > best:
                best, where = float(z[r, c]), (r, c)
    return best, where


def select_mass(a: list[float], tau: float) -> set[int]:
    """Smallest prefix (by value desc, index asc) whose cumulative share reaches tau."""
    order = sorted(range(len(a)), key=lambda j: (-a[j], j))
    total = 0.0
    for j in order:
        total += a[j]
    if total <= 0:
        return set()
    chosen: set[int] = set()
    running = 0.0
    for j in order:
        running += a[j]
        chosen.add(j)
        if running / total >= tau:
            break
    return chosen


def select_topk(a: list[float], k: int) -> set[int]:
    """The k largest positive entries, ties to the lowest index."""
    order = sorted(range(len(a)), key=lambda j: (-a[j], j))
    return {j for j in order[:k] if a[j] > 0}


def pair_influence(x: Tensor, weight: Tensor, conv: nn.Conv2d) -> list[list[float]]:
    """``inf[i][j]`` for one image: max over positions of the single-channel convolution."""
    c_out, c_in = weight.shape[:2]
    table = [[0.0] * c_in for _ in range(c_out)]
    for i in range(c_out):
        for j in range(c_in):
            term = F.conv2d(
                x[j][None, None],
                weight[i, j][None, None],
                None,
                conv.stride,
                conv.padding,
                conv.dilation,
            )
            table[i][j] = float(term.max())
    return table


def reference_aggregates(
    model: nn.Module,
    layers: Sequence[str],
    num_classes: int,
    config: SummitConfig,
    images: Tensor,
    labels: Sequence[int],
    indices: Sequence[int],
    class_map: Sequence[int] | None = None,
) -> SummitAggregates:
    """Summit aggregates of a whole dataset, computed image by image."""
    model.eval()
    connections = find_connections(model, layers)
    convs = {c.conv: c for c in connections if c is not None}
    named = dict(model.named_modules())
    with TensorRecorder(model, outputs=layers, inputs=list(convs)) as rec, torch.no_grad():
        logits = model(images)
    outputs = {name: rec.outputs[name][0] for name in layers}
    inputs = {name: rec.inputs[name][0] for name in convs}

    bins = config.confidence_bins
    num_images = np.zeros(num_classes, np.int64)
    num_correct = np.zeros(num_classes, np.int64)
    hist = np.zeros((num_classes, bins), np.int64)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    classes: list[int] = []
    for b, label in enumerate(labels):
        row = [float(v) for v in logits[b]]
        best = max(row)
        top = row.index(best)  # first maximum
        if class_map is None:
            predicted = top
        else:
            predicted = list(class_map).index(top) if top in class_map else -1
        exps = [math.exp(v - best) for v in row]
        confidence = max(exps) / sum(exps)
        num_images[label] += 1
        num_correct[label] += int(predicted == label)
        hist[label, min(math.floor(confidence * bins), bins - 1)] += 1
        if predicted >= 0:
            confusion[label, predicted] += 1
        classes.append(label if config.aggregate_by == "label" else predicted)

    shapes, counts, ex_index, ex_value, ex_pos = [], [], [], [], []
    influence: list[sp.csr_array | None] = []
    for layer_index, name in enumerate(layers):
        z = outputs[name].numpy()
        _, channels, height, width = z.shape
        shapes.append((channels, height, width))
        a_matrix = np.zeros((num_classes, channels), np.int64)
        found: list[list[tuple[float, int, tuple[int, int]]]] = [[] for _ in range(channels)]
        for b in range(z.shape[0]):
            stats = [channel_max(z[b, j]) for j in range(channels)]
            values = [s[0] for s in stats]
            if config.selection == "mass":
                chosen = select_mass(values, config.tau)
            else:
                chosen = select_topk(values, config.top_k)
            if classes[b] >= 0:
                for j in chosen:
                    a_matrix[classes[b], j] += 1
            for j in range(channels):
                found[j].append((values[j], int(indices[b]), stats[j][1]))
        counts.append(a_matrix)
        n = config.examples_per_channel
        index = np.full((channels, n), -1, np.int64)
        value = np.zeros((channels, n), np.float32)
        position = np.zeros((channels, n, 2), np.int32)
        for j in range(channels):
            ranked = sorted(found[j], key=lambda t: (-t[0], t[1]))[:n]
            for rank, (v, idx, pos) in enumerate(ranked):
                index[j, rank], value[j, rank], position[j, rank] = idx, v, pos
        ex_index.append(index)
        ex_value.append(value)
        ex_pos.append(position)

        connection = connections[layer_index]
        if connection is None:
            influence.append(None)
            continue
        conv = named[connection.conv]
        assert isinstance(conv, nn.Conv2d)
        x = inputs[connection.conv]
        c_out, c_in = conv.out_channels, conv.in_channels
        dense = np.zeros((num_classes * c_out, c_in), np.int64)
        for b in range(x.shape[0]):
            if classes[b] < 0:
                continue
            table = pair_influence(x[b], conv.weight.detach(), conv)
            for i in range(c_out):
                for j in select_topk(table[i], config.influence_top_k):
                    dense[classes[b] * c_out + i, j] += 1
        influence.append(sp.csr_array(dense))

    return SummitAggregates(
        layers=list(layers),
        layer_shapes=shapes,
        activation_counts=counts,
        influence_counts=influence,
        num_images=num_images,
        num_correct=num_correct,
        confidence_hist=hist,
        confusion=confusion,
        example_index=ex_index,
        example_value=ex_value,
        example_position=ex_pos,
    )


# -- any architecture: finite-difference gradient attribution, Inception widest path --------


def forward_with_hooks(
    model: nn.Module, hooks: Sequence[tuple[str, Callable[..., object]]], inputs: object
) -> None:
    """One forward of ``inputs`` without gradients, with forward hooks ``(module name,
    hook)`` registered for it only."""
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(hook) for name, hook in hooks]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()


def layer_outputs(model: nn.Module, names: Sequence[str], inputs: object) -> dict[str, Tensor]:
    """Each named module's raw output (a tuple's first element) on one forward of
    ``inputs``, as the module returned it (``[N, H, W, C]`` for Swin's stages)."""
    seen: dict[str, Tensor] = {}

    def keep(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: object, out: object) -> None:
            tensor = out[0] if isinstance(out, tuple) else out
            assert isinstance(tensor, Tensor)
            seen[name] = tensor.detach().clone()

        return hook

    forward_with_hooks(model, [(name, keep(name)) for name in names], inputs)
    return seen


def output_with_scaled_channel(
    model: nn.Module,
    image: object,
    source: str,
    target: str,
    j: int,
    scale: float,
    channel_axis: int = 1,
) -> Tensor:
    """The target layer's output for one input when the source's channel ``j`` is scaled.

    ``image`` is one image ``[C, H, W]`` or a batch of one input (an image tensor or a
    text batch mapping); ``channel_axis`` is the source output's unit axis (``-1`` for a
    token layer ``[N, T, D]`` or a channels-last map ``[N, H, W, C]``).
    """
    captured: list[Tensor] = []

    def scale_source(_m: nn.Module, _i: object, output: Tensor) -> Tensor:
        output = output.clone()
        index = [slice(None)] * output.dim()
        index[channel_axis] = slice(j, j + 1)
        output[tuple(index)] = output[tuple(index)] * scale
        return output

    def keep_target(_m: nn.Module, _i: object, output: Tensor) -> None:
        captured.append(output.detach().clone())

    inputs = image[None] if isinstance(image, Tensor) and image.dim() == 3 else image
    forward_with_hooks(model, [(source, scale_source), (target, keep_target)], inputs)
    return captured[0][0]


def finite_difference_attribution(
    model: nn.Module,
    image: Tensor,
    source: str,
    target: str,
    i: int,
    position: tuple[int, int],
    num_source_channels: int,
    h: float = 1e-5,
) -> list[float]:
    """``g_ij`` for every ``j`` by central differences: the derivative of ``Y_i[p*]`` along
    scaling the source's channel ``j`` by ``1 + ε`` (float64 models, smooth activations)."""
    row, col = position
    values = []
    for j in range(num_source_channels):
        up = output_with_scaled_channel(model, image, source, target, j, 1 + h)
        down = output_with_scaled_channel(model, image, source, target, j, 1 - h)
        values.append(float(up[i, row, col] - down[i, row, col]) / (2 * h))
    return values


def gradient_reference_counts(
    model: nn.Module,
    source: str,
    target: str,
    num_classes: int,
    config: SummitConfig,
    images: Tensor,
    classes: Sequence[int],
    max_channels: int,
) -> tuple[np.ndarray, list[list[tuple[int, list[float]]]]]:
    """Influence counts of a gradient connection, image by image, by finite differences.

    Returns:
        ``(dense [classes * C_t, C_s] counts, per image [(target channel, g_i·)]``).
    """
    model.eval()
    with TensorRecorder(model, outputs=[source, target]) as rec, torch.no_grad():
        model(images)
    z_source, z_target = rec.outputs[source][0], rec.outputs[target][0]
    c_s, c_t = z_source.shape[1], z_target.shape[1]
    dense = np.zeros((num_classes * c_t, c_s), np.int64)
    rows: list[list[tuple[int, list[float]]]] = []
    for b in range(images.shape[0]):
        stats = [channel_max(z_target[b, i].numpy()) for i in range(c_t)]
        values = [s[0] for s in stats]
        if config.selection == "mass":
            chosen = select_mass(values, config.tau)
        else:
            chosen = select_topk(values, config.top_k)
        seeded = sorted(chosen, key=lambda i: (-values[i], i))[:max_channels]
        found = []
        for i in seeded:
            g = finite_difference_attribution(model, images[b], source, target, i, stats[i][1], c_s)
            found.append((i, g))
            for j in select_topk(g, config.influence_top_k):
                dense[classes[b] * c_t + i, j] += 1
        rows.append(found)
    return dense, rows


def widest_path_reference(top: np.ndarray, bottom: np.ndarray, limit: int | None) -> np.ndarray:
    """One class: ``w[i][j] = max_b min(top[i][b], bottom[b][j])``, then per row only the
    ``limit`` largest (ties: lowest ``j``; ``None``: all)."""
    rows, width = top.shape
    cols = bottom.shape[1]
    out = np.zeros((rows, cols), np.int64)
    for i in range(rows):
        for j in range(cols):
            best = 0
            for b in range(width):
                best = max(best, min(int(top[i, b]), int(bottom[b, j])))
            out[i, j] = best
        if limit is not None:
            order = sorted(range(cols), key=lambda j: (-out[i, j], j))
            for j in order[limit:]:
                out[i, j] = 0
    return out


def conv_topk_counts(
    x: Tensor, conv: nn.Conv2d, classes: Sequence[int], num_classes: int, k: int
) -> np.ndarray:
    """``[classes * C_out, C_in]`` counts of the top-k exact influences through one conv."""
    c_out, c_in = conv.out_channels, conv.in_channels
    dense = np.zeros((num_classes * c_out, c_in), np.int64)
    for b in range(x.shape[0]):
        table = pair_influence(x[b], conv.weight.detach(), conv)
        for i in range(c_out):
            for j in select_topk(table[i], k):
                dense[classes[b] * c_out + i, j] += 1
    return dense
