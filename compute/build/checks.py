"""Everything that can refuse a build, each as a one-line :class:`BuildError`.

The cheap checks a build runs before its long pass: the device and precision, the output
path (and the lock held on it until the atlas is written), the layers, the classes
against the model's outputs, the loader's batches and order, and the labels of each batch.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import RandomSampler, SequentialSampler

from compute.atlas import PRECISIONS, AtlasError, check_output, output_lock
from compute.connect import find_connections
from compute.errors import BuildError
from compute.models import LayerDescription, ModelInput, describe_layers

log = logging.getLogger(__name__)

#: How many layer names an "unknown layer" message lists before pointing at ``layers``.
_MAX_LISTED = 25


def resolve_device(device: str | torch.device) -> torch.device:
    """Check that ``device`` exists here.

    Raises:
        BuildError: for ``cuda`` without a CUDA device, or an unknown device string.

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise BuildError(f"unknown device {device!r}: use cpu or cuda") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BuildError("--device cuda was asked for, but no CUDA device is available here")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise BuildError(
            f"--device {device} was asked for, but only {torch.cuda.device_count()} CUDA "
            "device(s) exist here"
        )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise BuildError("--device mps was asked for, but MPS is not available here")
    return resolved


def check_layers(
    model: nn.Module, layers: Sequence[str], input_size: ModelInput | tuple[int, int, int]
) -> list[LayerDescription]:
    """Check that every chosen layer exists and outputs a ``[N, C, H, W]`` map or a token
    sequence ``[N, T, D]`` whose padding can be masked (``T`` the input's length).

    Args:
        model: the model.
        layers: chosen module names, input to output.
        input_size: ``(channels, height, width)`` of one input image, or a
            :class:`compute.models.ModelInput` (a text model's probe).

    Returns:
        The description of each chosen layer, in the given order.

    Raises:
        BuildError: naming unknown or non-spatial layers and listing the available ones,
            or a layer that does not depend on the previous one.

    Examples:
        >>> from compute.models import get_model
        >>> [d.channels for d in check_layers(get_model("simple_cnn"), ["features.1"],
        ...                                   (3, 32, 32))]
        [16]
    """
    if not layers:
        raise BuildError(
            "no layers chosen: pass --layers L1,L2,... (see `python -m compute layers`)"
        )
    duplicates = sorted({name for name in layers if list(layers).count(name) > 1})
    if duplicates:
        raise BuildError(f"layer(s) chosen twice: {', '.join(duplicates)}")
    rows = {row.name: row for row in describe_layers(model, input_size)}
    length = getattr(input_size, "tokens", None)  # a text probe's length (None: images)

    def usable(row: LayerDescription) -> bool:
        if row.spatial and getattr(input_size, "maps", True):
            return True
        return row.tokens is not None and (length is None or row.tokens == length)

    spatial = [name for name, row in rows.items() if usable(row)]
    unknown = [name for name in layers if name not in rows]
    flat = [name for name in layers if name in rows and not usable(rows[name])]
    if unknown or flat:
        listed = ", ".join(spatial[:_MAX_LISTED])
        more = f" and {len(spatial) - _MAX_LISTED} more" if len(spatial) > _MAX_LISTED else ""
        what = (
            f"unknown layer(s) {', '.join(map(repr, unknown))}"
            if unknown
            else f"layer(s) {', '.join(map(repr, flat))} do not output a [N, C, H, W] map "
            "or a [N, T, D] token sequence of the input's length"
        )
        raise BuildError(
            f"{what}; available: {listed}{more} (list them with `python -m compute layers`)"
        )
    reused = [name for name in layers if rows[name].calls > 1]
    if reused:  # before the order: a reused module has no one place in it
        name = reused[0]
        raise BuildError(
            f"layer {name!r} is called {rows[name].calls} times in the forward pass (a "
            "module reused, as a ResNet block's relu): choose a layer that runs once"
        )
    # Rows come in the order their forward calls begin; a container's output comes after
    # all of its children's, so it is ranked by its last descendant.
    names = list(rows)
    order = {
        name: max(
            i for i, other in enumerate(names) if other == name or other.startswith(name + ".")
        )
        for name in layers
    }
    ranked = sorted(layers, key=lambda name: order[name])
    if list(layers) != ranked:
        # A layer cannot depend on one that runs after it: refuse now, not after the data
        # checks with "not differentiable with respect to".
        first = next(a for a, b in zip(layers, ranked, strict=True) if a != b)
        raise BuildError(
            f"layers must be listed from input to output, in the order the model runs them: "
            f"{first!r} runs later; try --layers {','.join(ranked)}"
        )
    # How consecutive layers connect decides how influence is computed (one convolution,
    # an Inception block, or gradient x activation): check it now (an fx trace, nothing
    # runs) rather than after the data checks.
    find_connections(model, list(layers))
    chosen = [rows[name] for name in layers]
    return chosen


#: ``torch.autocast`` dtype of each ``--precision`` (fp32: no autocast, exact).
_AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_output_path(out: Path, overwrite: bool) -> None:
    """:func:`compute.atlas.check_output` as a build's one-line error."""
    try:
        check_output(out, overwrite=overwrite)
    except AtlasError as exc:
        raise BuildError(str(exc)) from None


@contextlib.contextmanager
def hold_output(out: Path) -> Iterator[None]:
    """:func:`compute.atlas.output_lock`, refusing as a build's one-line error."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(output_lock(out))
        except AtlasError as exc:
            raise BuildError(str(exc)) from None
        yield


def check_precision(precision: str, device: torch.device) -> None:
    """Check that the pass can run at ``precision`` on ``device``.

    Args:
        precision: ``fp32`` (exact), ``bf16`` or ``fp16`` (approximate, autocast).
        device: the build's device.

    Raises:
        BuildError: an unknown precision, fp16 off CUDA (CPU autocast in fp16 is slow and
            not what a user wants), or bf16 on a GPU without bf16 support.

    Examples:
        >>> check_precision("bf16", torch.device("cpu"))
        >>> check_precision("fp16", torch.device("cpu"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        compute.errors.BuildError: --precision fp16 needs --device cuda ...
    """
    if precision not in PRECISIONS:
        raise BuildError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise BuildError(
            "--precision fp16 needs --device cuda (on the CPU use bf16 or the exact default fp32)"
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BuildError("--precision bf16: this GPU does not support bfloat16; use fp16")


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for an approximate precision; nothing for exact fp32.

    Args:
        precision: ``fp32``, ``bf16`` or ``fp16`` (checked with :func:`check_precision`).
        device: where the pass runs.

    Returns:
        A context manager to run the pass's update under.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


def check_classes(
    classes: Sequence[str], num_outputs: int, class_map: Sequence[int] | None
) -> None:
    """Check that the classes map onto the model's outputs.

    Raises:
        BuildError: when the counts or the mapping do not fit.
    """
    if not classes:
        raise BuildError("no classes given")
    if len(set(classes)) != len(classes):
        raise BuildError("class names must be unique")
    if class_map is None:
        if len(classes) != num_outputs:
            raise BuildError(
                f"{len(classes)} classes but the model has {num_outputs} outputs; pass a "
                "class map (--class-index) saying which output each class is"
            )
        return
    if len(class_map) != len(classes):
        raise BuildError(f"class map has {len(class_map)} entries for {len(classes)} classes")
    bad = [i for i in class_map if not 0 <= int(i) < num_outputs]
    if bad:
        raise BuildError(f"class map holds output indices {bad[:5]} outside 0..{num_outputs - 1}")
    if len(set(int(i) for i in class_map)) != len(class_map):
        raise BuildError("class map sends two classes to the same output")


def unpack_batch(batch: Any, counter: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """(inputs, labels, indices) from a loader batch; indices default to a running count.

    ``inputs`` is an image batch ``[N, C, H, W]`` or a text batch: a mapping of ``[N, T]``
    tensors with ``input_ids`` (:class:`compute.text_data.TextCollate`'s).
    """
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise BuildError("the loader must yield (images, labels) or (images, labels, indices)")
    images, labels = batch[0], torch.as_tensor(batch[1])
    if isinstance(images, Mapping):
        ids = images.get("input_ids")
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise BuildError("a text batch must map 'input_ids' to an [N, T] tensor")
        count = int(ids.shape[0])
    elif isinstance(images, torch.Tensor) and images.dim() == 4:
        count = int(images.shape[0])
    else:
        raise BuildError("the loader must yield image batches of shape [N, C, H, W]")
    if len(batch) == 3:
        indices = torch.as_tensor(batch[2], dtype=torch.int64)
    else:
        indices = torch.arange(counter, counter + count, dtype=torch.int64)
    return images, labels.to(torch.int64), indices


def check_loader_order(loader: Any) -> None:
    """Without indices, the running count is only a dataset index if nothing shuffles."""
    sampler = getattr(loader, "sampler", None)
    if sampler is not None and not isinstance(sampler, SequentialSampler):
        kind = "shuffles" if isinstance(sampler, RandomSampler) else "uses a custom sampler"
        raise BuildError(
            f"the loader {kind} but yields no dataset indices: use shuffle=False or a dataset "
            "returning (image, label, index), e.g. compute.data.ImageFolderWithIndex"
        )


def check_labels(labels: torch.Tensor, num_classes: int) -> None:
    """Check that a batch's labels index the classes.

    Raises:
        BuildError: naming the first label outside ``0..num_classes-1``.
    """
    if not labels.numel():
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise BuildError(
            f"the loader yields label {bad}, but labels index the "
            f"{num_classes} classes (0..{num_classes - 1})"
        )
