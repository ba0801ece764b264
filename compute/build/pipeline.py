"""``build_atlas``: validate → one streaming pass → derive → write."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compute.build.checks import check_output_path, check_precision, hold_output, resolve_device
from compute.build.options import BuildOptions
from compute.build.outputs import (
    CropPlan,
    atlas_manifest,
    crop_dataset,
    derive,
    layer_shapes,
    receptive_fields_or_whole_image,
    state_dict_bytes,
    write_atlas,
)
from compute.build.stream import open_stream, peak_rss_mb, run_pass
from compute.distributed import current_rank
from compute.errors import BuildError

log = logging.getLogger(__name__)


class _Stages:
    """Logs how long each stage took, for the final summary."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._start = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = now - self._start
        log.info("%s: %.1f s", name, self.times[name])
        self._start = now

    def summary(self) -> str:
        return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.times.items())


def build_atlas(
    model: nn.Module, loader: Any, options: BuildOptions | None = None, **fields: Any
) -> Path:
    """Build a complete atlas (Summit counts, examples, embedding, graphs, and the TopoAct
    sample's Mapper part) of an image classifier.

    Everything cheap is checked before the pass: the options, the output path, the
    device and precision, the classes against the model's outputs and the layers (they
    must exist and output ``[N, C, H, W]`` maps) on the first batch, and the loader's order
    when it yields no indices. Then one streaming pass aggregates every layer at once.
    Under ``torchrun`` each process aggregates a contiguous shard of the loader's dataset,
    the aggregates are merged exactly on rank 0, and rank 0 alone writes the atlas.

    Args:
        model: the classifier; it returns logits ``[N, outputs]``. Put in eval mode.
        loader: yields ``(images, labels)`` or ``(images, labels, indices)`` with
            ``labels`` in ``0..len(classes)-1`` and ``indices`` the dataset index of each
            image (without indices the loader must not shuffle: a running count is used).
        options: what to build (:class:`BuildOptions`); or give its fields as keywords.
        **fields: :class:`BuildOptions` fields (``layers``, ``classes``, ``out``, ...),
            applied over ``options`` when both are given.

    Returns:
        The path of the written atlas (on ranks other than 0, where it will be written).

    Raises:
        BuildError: one line naming what is wrong, raised before the pass where possible.

    Examples:
        >>> from torch.utils.data import DataLoader
        >>> path = build_atlas(model, DataLoader(dataset, batch_size=64),  # doctest: +SKIP
        ...                    layers=["features.1", "features.4"],
        ...                    classes=dataset.classes, out="atlas",
        ...                    config=SummitConfig(selection="topk", top_k=5))
        >>> Atlas.open(path).layer_names                                   # doctest: +SKIP
        ('features.1', 'features.4')
    """
    if options is not None and not isinstance(options, BuildOptions):
        raise TypeError(f"options must be a BuildOptions, not {type(options).__name__}")
    # An unknown or missing field is a TypeError, as for any Python call.
    if options is None:
        options = BuildOptions(**fields)
    elif fields:
        options = BuildOptions(**{**vars(options), **fields})
    stages = _Stages()
    check_output_path(options.path, options.overwrite)
    device = resolve_device(options.device)
    check_precision(options.precision, device)
    model = model.to(device).eval()
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    rank = current_rank()
    # One writer per output, from the checks to the commit (rank 0 writes the atlas).
    with hold_output(options.path) if rank.is_main else contextlib.nullcontext():
        stream = open_stream(model, loader, options, rank)
        # Crops need image inputs (a text model's examples are stored as text).
        wants_crops = (
            rank.is_main
            and stream.input_size is not None
            and bool(options.crops_per_channel or (options.mapper and options.mapper_crops))
        )
        source = crop_dataset(loader) if wants_crops else None
        fields_of = (
            receptive_fields_or_whole_image(
                model, options.layers, stream.input_size, stream.described
            )
            if source is not None and stream.input_size is not None
            else None
        )
        stages.done("validate")

        result = run_pass(model, stream, options, device, rank)
        if result is None:  # another process's share, sent to rank 0
            return options.path
        stages.done("summit pass")
        peak = peak_rss_mb()
        if peak is not None:
            log.info("peak host memory after the pass: %.0f MB", peak)
        num_images = int(np.sum(result.aggregates.num_images))
        if num_images == 0:
            raise BuildError("the loader yielded no images")
        shapes = layer_shapes(result)
        _warn_on_shape_change(stream.described, shapes)

        derived = derive(result, options, device)
        stages.done("derived parts")

        manifest = atlas_manifest(model, stream, result, derived, options, device, rank, fields_of)
        crops = CropPlan(
            source,
            fields_of,
            int(getattr(stream.loader, "num_workers", 0) or 0),
            text=stream.dataset if stream.input_size is None else None,
        )
        weights = state_dict_bytes(model, options.save_weights)
        path, num_crops = write_atlas(
            manifest, result, derived, options, weights, crops, stages.done
        )
    if stream.store is not None:
        stream.store.remove_directory()
    stages.done("commit")
    correct = int(np.sum(result.aggregates.num_correct))
    inputs, units = ("texts", "units") if stream.input_size is None else ("images", "channels")
    log.info(
        "atlas %s: %d %s (%.0f/s), %d classes, %d layers (%d %s), top-1 %.1f%%, %d crops; %s",
        path,
        num_images,
        inputs,
        num_images / max(result.seconds, 1e-9),
        len(options.classes),
        len(options.layers),
        sum(s[0] for s in shapes),
        units,
        100.0 * correct / num_images,
        num_crops,
        stages.summary(),
    )
    return path


def _warn_on_shape_change(described: Any, shapes: list[tuple[int, ...]]) -> None:
    for row, shape in zip(described, shapes, strict=True):
        if row.channels != shape[0]:
            log.warning(
                "layer %s: described %s channels, pass saw %s", row.name, row.channels, shape
            )
