"""Receptive-field crops of each channel's top dataset examples.

A channel's top example is an image plus the (row, col) of the channel's maximum in the
layer's map. The crop shows the part of the input that position can see: its receptive
field, measured once per layer by back-propagating from one map position of a *probe* copy
of the model (all weights positive averages, max-pools turned into average pools, so every
pixel that can influence the position gets a non-zero gradient).

Examples:
    >>> rfs = receptive_fields(model, ["features.1", "features.4"], (3, 32, 32))  # doctest: +SKIP
    >>> crop_box(rfs["features.4"], row=3, col=5, image_size=32)                  # doctest: +SKIP
    (4, 8, 12, 16)
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from compute.atlas import (
    INSTANCE_INPUT_SIZE,
    example_crop_path,
    instance_input_path,
)
from compute.capture import HookSet
from compute.data import Preprocessing
from compute.errors import BuildError
from compute.png import THUMBNAIL_SIZE, png_bytes, thumbnail_png
from compute.receptive_field import ReceptiveField, crop_box

log = logging.getLogger(__name__)


def _probe_model(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` in which every connection passes a positive signal."""
    probe = copy.deepcopy(model).double().eval()
    # Max-pools route gradient to one input only (and ties on a constant probe); average
    # pools with the same geometry see the same window and spread gradient over all of it.
    for parent in list(probe.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.MaxPool2d) and child.dilation in (1, (1, 1)):
                setattr(
                    parent,
                    child_name,
                    nn.AvgPool2d(
                        child.kernel_size,
                        child.stride,
                        child.padding,
                        ceil_mode=child.ceil_mode,
                        count_include_pad=True,
                    ),
                )
            elif isinstance(child, nn.AdaptiveMaxPool2d):
                setattr(parent, child_name, nn.AdaptiveAvgPool2d(child.output_size))
    for module in probe.modules():
        # Hooked outputs must stay as they were seen: no later in-place activation.
        if getattr(module, "inplace", False):
            module.inplace = False
    with torch.no_grad():
        for name, param in probe.named_parameters():
            if param.dim() >= 2:
                # Averaging weights keep activations near 1 however deep the model is.
                param.fill_(1.0 / max(1, param[0].numel()))
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.fill_(1.0)
        for name, buffer in probe.named_buffers():
            if name.endswith("running_mean"):
                buffer.zero_()
            elif name.endswith("running_var"):
                buffer.fill_(1.0)
    return probe


def _extent(mask: np.ndarray) -> tuple[int, int] | None:
    hits = np.flatnonzero(mask)
    if hits.size == 0:
        return None
    return int(hits[0]), int(hits[-1])


def _axis_field(
    first: tuple[int, int] | None,
    second: tuple[int, int] | None,
    position: int,
    step: int,
    probe_size: int,
    map_size: int,
) -> tuple[int, float, float, bool]:
    """(size, stride, offset, moves) along one axis from the extents of two neighbouring
    positions.

    ``moves`` is ``False`` where the field does not move with the position as a map's
    should: the two extents are a stride apart that is zero or far from the map's grid
    stride (``probe_size / map_size``). Window attention (Swin) does this: neighbours in
    one window see the same window, neighbours across a window edge jump a whole window.
    Such a field is then centred on each position's own grid cell, with its measured size.
    """
    fallback_stride = probe_size / max(1, map_size)
    if first is None:
        # No gradient at all (e.g. a non-differentiable path): assume the whole image.
        centre = (position + 0.5) * fallback_stride - 0.5
        return probe_size, fallback_stride, centre - position * fallback_stride, True
    lo, hi = first
    last = probe_size - 1
    stride = fallback_stride
    if second is not None and step:
        if lo > 0 and second[0] > 0:
            stride = float(second[0] - lo) / step
        elif hi < last and second[1] < last:
            stride = float(second[1] - hi) / step
    moves = fallback_stride / _STRIDE_SLACK <= stride <= fallback_stride * _STRIDE_SLACK
    if not moves:
        stride = fallback_stride
    clipped = lo == 0 or hi == last
    size = hi - lo + 1
    if clipped:
        # The field reaches past the probe image: it covers any real image anyway.
        size = max(size, 2 * probe_size)
    if not moves or (lo == 0 and hi == last):  # on the position's own grid cell
        centre = (position + 0.5) * fallback_stride - 0.5
    elif clipped:
        centre = hi - (size - 1) / 2 if lo == 0 else lo + (size - 1) / 2
    else:
        centre = (lo + hi) / 2
    return size, stride, centre - position * stride, moves


#: How far a measured stride may be from the map's grid stride (a factor) and still be
#: taken as the field's: padding and valid convolutions stay well within it.
_STRIDE_SLACK = 1.5


class _StopForward(Exception):
    """Raised by a hook once every chosen layer has been seen: the rest is not needed."""


def _probe_once(
    probe: nn.Module,
    modules: Mapping[str, nn.Module],
    layers: Sequence[str],
    channels: int,
    size: tuple[int, int],
    device: torch.device,
) -> dict[str, tuple[ReceptiveField, bool]]:
    """Fields of ``layers`` from one probe input of ``size``; flag: clipped by the input."""
    outputs: dict[str, torch.Tensor] = {}
    wanted = set(layers)

    def hook(name: str) -> Callable[[torch.Tensor], None]:
        def keep(out: torch.Tensor) -> None:
            outputs[name] = out
            if wanted <= outputs.keys():
                raise _StopForward

        return keep

    x = torch.ones(1, channels, *size, dtype=torch.float64, device=device).requires_grad_()
    with HookSet(probe) as hooks:  # channels-last maps read channels first
        for name in layers:
            hooks.on_output(modules[name], hook(name))
        with contextlib.suppress(_StopForward):  # every layer seen: the rest need not run
            probe(x)
    fields: dict[str, tuple[ReceptiveField, bool]] = {}
    for name in layers:
        out = outputs.get(name)
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            raise BuildError(f"layer {name!r} does not output a [N, C, H, W] map")
        map_h, map_w = int(out.shape[2]), int(out.shape[3])
        row, col = map_h // 2, map_w // 2
        row2, col2 = min(row + 1, map_h - 1), min(col + 1, map_w - 1)
        extents = []
        for r, c in ((row, col), (row2, col2)):
            (grad,) = torch.autograd.grad(out[0, :, r, c].sum(), x, retain_graph=True)
            mask = (grad[0].abs().sum(0) > 0).cpu().numpy()
            extents.append((_extent(mask.any(1)), _extent(mask.any(0))))
        size_h, stride_h, offset_h, moves_h = _axis_field(
            extents[0][0], extents[1][0], row, row2 - row, size[0], map_h
        )
        size_w, stride_w, offset_w, moves_w = _axis_field(
            extents[0][1], extents[1][1], col, col2 - col, size[1], map_w
        )
        if not (moves_h and moves_w):
            log.warning(
                "the receptive field of %s does not move with its position as a map's does "
                "(window attention, as in Swin?): its crops are centred on each position's "
                "grid cell, %dx%d px (approximate)",
                name, size_h, size_w,
            )  # fmt: skip
        first_rows, first_cols = extents[0]
        clipped = any(
            extent is None or extent[0] == 0 or extent[1] == limit - 1
            for extent, limit in ((first_rows, size[0]), (first_cols, size[1]))
        )
        field = ReceptiveField((size_h, size_w), (stride_h, stride_w), (offset_h, offset_w))
        fields[name] = (field, clipped)
    return fields


def receptive_fields(
    model: nn.Module,
    layers: Sequence[str],
    input_size: tuple[int, int, int],
    *,
    probe_scale: int = 3,
) -> dict[str, ReceptiveField]:
    """Measure the receptive field of every chosen layer.

    The probe runs on the model's input size first; a layer whose central field reaches
    the image border is probed again on an input ``probe_scale`` times larger, when the
    model accepts one. Stride and offset come from two neighbouring positions. The probe's
    forward pass stops at the last chosen layer, so late layers cost nothing.

    Args:
        model: the model (not modified; a float64 copy is probed).
        layers: module names whose output is a ``[N, C, H, W]`` map.
        input_size: ``(channels, height, width)`` of the model input.
        probe_scale: how much larger the second probe input is (1: no second probe).

    Returns:
        ``{layer name: ReceptiveField}``.

    Raises:
        BuildError: for an unknown layer or one whose output is not a 4-D map.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3))
        >>> receptive_fields(net, ["1"], (1, 16, 16))["1"].size
        (5, 5)
    """
    probe = _probe_model(model)
    device = next((p.device for p in probe.parameters()), torch.device("cpu"))
    modules = dict(probe.named_modules())
    unknown = [name for name in layers if name not in modules or not name]
    if unknown:
        raise BuildError(f"unknown layer(s) {', '.join(map(repr, unknown))}")
    channels, height, width = input_size
    probed = _probe_once(probe, modules, layers, channels, (height, width), device)
    clipped = [name for name in layers if probed[name][1]]
    if clipped and probe_scale > 1:
        try:
            larger = _probe_once(
                probe, modules, clipped, channels,
                (height * probe_scale, width * probe_scale), device,
            )  # fmt: skip
        except Exception as exc:  # the model may only take its own input size (a flatten)
            log.debug("larger receptive-field probe failed (%s); keeping clipped fields", exc)
        else:
            probed.update(larger)
    fields = {name: probed[name][0] for name in layers}
    for name, field in fields.items():
        log.debug("receptive field of %s: %s", name, field)
    return fields


def _to_uint8(image: torch.Tensor, preprocessing: Preprocessing | None) -> np.ndarray:
    """``[C, H, W]`` model input → ``uint8 [H, W]`` or ``[H, W, 3]`` for display."""
    image = image.detach().float().cpu()
    if preprocessing is not None:
        image = preprocessing.unnormalize(image)
    else:
        # Unknown normalisation: stretch to [0, 1] so the crop is at least visible.
        lo, hi = float(image.min()), float(image.max())
        image = (image - lo) / (hi - lo) if hi > lo else torch.zeros_like(image)
    array = (image.numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    if array.shape[0] == 1:
        return array[0]
    return np.ascontiguousarray(array[:3].transpose(1, 2, 0))


def _model_input_pixels(
    dataset: Any,
    order: Sequence[int],
    *,
    preprocessing: Preprocessing | None,
    num_workers: int,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(dataset index, uint8 pixels)`` of each image of ``order``, fetched once each
    (``dataset[index][0]``, a normalised ``[C, H, W]`` tensor) by a DataLoader.

    Raises:
        BuildError: if a dataset item is not a ``[C, H, W]`` tensor.
    """
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(
        Subset(dataset, order), batch_size=None, num_workers=num_workers, shuffle=False
    )
    for image_index, item in zip(order, loader, strict=True):
        image = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(image, torch.Tensor) or image.dim() != 3:
            raise BuildError(
                f"dataset item {image_index} is not a [C, H, W] tensor; crops need the model input"
            )
        yield image_index, _to_uint8(image, preprocessing)


def save_example_crops(
    dataset: Any,
    fields: Sequence[ReceptiveField],
    example_index: Sequence[np.ndarray],
    example_position: Sequence[np.ndarray],
    *,
    crops_per_channel: int = 3,
    preprocessing: Preprocessing | None = None,
    thumbnail: int = THUMBNAIL_SIZE,
    num_workers: int = 0,
    progress: bool = True,
    sink: Callable[[str, bytes], None] | None = None,
) -> dict[str, bytes]:
    """Receptive-field crops of the top examples of every channel of every layer.

    Each image is fetched once (``dataset[index][0]``, a normalised ``[C, H, W]`` tensor)
    however many channels use it: the work is grouped by image index.

    Args:
        dataset: indexable dataset returning ``(image, label[, index])``.
        fields: receptive field of each layer, in atlas layer order.
        example_index: per layer, ``int64[C, n]`` dataset indices (``-1`` empty).
        example_position: per layer, ``int[C, n, 2]`` (row, col) in the layer's map.
        crops_per_channel: ranks ``0..crops_per_channel-1`` are cropped.
        preprocessing: to undo the normalisation (``None``: min-max stretch).
        thumbnail: longer side of each saved crop.
        num_workers: DataLoader workers fetching images.
        progress: show a tqdm bar.
        sink: if given, each crop is handed to ``sink(relpath, png)`` as soon as it is made
            (e.g. ``AtlasWriter.add_bytes``) instead of being kept in memory.

    Returns:
        ``{atlas relative path: PNG bytes}`` (paths from :func:`example_crop_path`);
        empty when ``sink`` is given.

    Examples:
        >>> crops = save_example_crops(ds, [rf0, rf1], index, position)  # doctest: +SKIP
        >>> sorted(crops)[0]                                              # doctest: +SKIP
        'images/00/0-0.png'
    """

    jobs: dict[int, list[tuple[int, int, int, int, int]]] = {}
    for layer_i, (indices, positions) in enumerate(
        zip(example_index, example_position, strict=True)
    ):
        indices = np.asarray(indices)
        positions = np.asarray(positions)
        ranks = min(crops_per_channel, indices.shape[1])
        for channel in range(indices.shape[0]):
            for rank in range(ranks):
                image_index = int(indices[channel, rank])
                if image_index < 0:
                    continue
                row, col = (int(v) for v in positions[channel, rank])
                jobs.setdefault(image_index, []).append((layer_i, channel, rank, row, col))
    if not jobs or crops_per_channel <= 0:
        return {}
    order = sorted(jobs)
    crops: dict[str, bytes] = {}
    bar = tqdm(
        total=sum(len(v) for v in jobs.values()), desc="crops", unit="crop", disable=not progress
    )
    for image_index, pixels in _model_input_pixels(
        dataset, order, preprocessing=preprocessing, num_workers=num_workers
    ):
        height, width = pixels.shape[:2]
        for layer_i, channel, rank, row, col in jobs[image_index]:
            top, left, bottom, right = crop_box(fields[layer_i], row, col, (height, width))
            relpath = example_crop_path(layer_i, channel, rank)
            png = thumbnail_png(pixels[top:bottom, left:right], thumbnail)
            if sink is None:
                crops[relpath] = png
            else:
                sink(relpath, png)
        bar.update(len(jobs[image_index]))
    bar.close()
    return crops


def receptive_fields_manifest(
    fields: Mapping[str, ReceptiveField],
) -> dict[str, dict[str, Any]]:
    """JSON-friendly ``{layer: {"size", "stride", "offset"[, "tokens"]}}`` (manifests)."""
    return {name: field.to_manifest() for name, field in fields.items()}


def save_position_crops(
    dataset: Any,
    fields: Sequence[ReceptiveField],
    jobs: Mapping[int, Sequence[tuple[int, int, int, str]]],
    *,
    preprocessing: Preprocessing | None = None,
    thumbnail: int = THUMBNAIL_SIZE,
    num_workers: int = 0,
    progress: bool = True,
    sink: Callable[[str, bytes], None],
) -> int:
    """Receptive-field crops at given map positions (e.g. the Mapper sample's positions).

    Each image is fetched once however many crops it gives.

    Args:
        dataset: indexable dataset returning ``(image, label[, index])``.
        fields: receptive field of each layer, in atlas layer order.
        jobs: ``{image index: [(layer index, row, col, atlas relpath), ...]}``; a negative
            row (mean-mode samples have no position) crops the whole image.
        preprocessing: to undo the normalisation (``None``: min-max stretch).
        thumbnail: longer side of each saved crop.
        num_workers: DataLoader workers fetching images.
        progress: show a tqdm bar.
        sink: receives ``(relpath, png)`` for each crop as soon as it is made.

    Returns:
        The number of crops made.
    """

    order = sorted(jobs)
    if not order:
        return 0
    made = 0
    bar = tqdm(
        total=sum(len(jobs[i]) for i in order), desc="sample crops", unit="crop",
        disable=not progress,
    )  # fmt: skip
    for image_index, pixels in _model_input_pixels(
        dataset, order, preprocessing=preprocessing, num_workers=num_workers
    ):
        height, width = pixels.shape[:2]
        for layer_i, row, col, relpath in jobs[image_index]:
            if row < 0 or col < 0:
                top, left, bottom, right = 0, 0, height, width
            else:
                top, left, bottom, right = crop_box(fields[layer_i], row, col, (height, width))
            sink(relpath, thumbnail_png(pixels[top:bottom, left:right], thumbnail))
            made += 1
        bar.update(len(jobs[image_index]))
    bar.close()
    return made


def input_image_bytes(pixels: np.ndarray, size: int = INSTANCE_INPUT_SIZE) -> tuple[bytes, str]:
    """A whole model input as a stored image: its longer side at most ``size`` (box filter),
    PNG for grey pixels, JPEG (quality 90) for colour ones.

    Returns:
        ``(bytes, suffix)``; the same pixels give the same bytes.

    Examples:
        >>> data, suffix = input_image_bytes(np.zeros((300, 200, 3), dtype=np.uint8))
        >>> suffix, Image.open(io.BytesIO(data)).size
        ('.jpg', (85, 128))
    """
    image = Image.fromarray(np.ascontiguousarray(pixels))
    longest = max(image.size)
    if longest > size:
        scale = size / longest
        new = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(new, Image.Resampling.BOX)
    if image.mode == "L":
        return png_bytes(image, optimize=True), ".png"
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), ".jpg"


def save_input_images(
    dataset: Any,
    image_indices: Sequence[int],
    *,
    preprocessing: Preprocessing | None = None,
    num_workers: int = 0,
    progress: bool = True,
    sink: Callable[[str, bytes], None],
) -> int:
    """The model input of each listed image, stored whole (the instance records' images:
    the dashboard cuts an input's own crops from them).

    Args:
        dataset: indexable dataset returning ``(image, label[, index])``.
        image_indices: the dataset indices (each fetched once).
        preprocessing: to undo the normalisation (``None``: min-max stretch).
        num_workers: DataLoader workers fetching images.
        progress: show a tqdm bar.
        sink: receives ``(relpath, bytes)`` per image (:func:`instance_input_path`).

    Returns:
        The number of images stored.
    """
    order = sorted({int(i) for i in image_indices})
    bar = tqdm(total=len(order), desc="input images", unit="img", disable=not progress)
    for image_index, pixels in _model_input_pixels(
        dataset, order, preprocessing=preprocessing, num_workers=num_workers
    ):
        data, suffix = input_image_bytes(pixels)
        sink(instance_input_path(image_index, suffix), data)
        bar.update(1)
    bar.close()
    return len(order)
