"""Build an atlas: the Python API :func:`build_atlas` and the ``build`` / ``layers`` commands.

A build validates everything that can be checked cheaply first (layers, classes against
the model's outputs, the output path, and on the CLI the data folders and every image
header), then makes **one streaming pass** over the data (Summit's activation and
influence aggregation, plus each channel's top examples), then derives the attribution
graphs, the class embedding and the receptive-field crops, and writes the atlas atomically.

Examples:
    Python::

        from torch.utils.data import DataLoader
        from compute.build import build_atlas
        from compute.data import ImageFolderWithIndex, Preprocessing

        pre = Preprocessing.from_arg("imagenet", image_size=224)
        data = ImageFolderWithIndex("val", transform=pre.transform())
        build_atlas(model, DataLoader(data, batch_size=64),
                    layers=["features.13", "features.16", "features.18"],
                    classes=data.classes, out="vgg11-atlas", preprocessing=pre)

    Shell::

        python -m compute layers --model torchvision:vgg11
        python -m compute build --model torchvision:vgg11 --weights vgg11.pth \\
            --data val --layers features.13,features.16,features.18 --out vgg11-atlas
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from compute.atlas import (
    CLASS_PATHS,
    CONFUSION_PATH,
    GRAPH_PATHS,
    MAPPER_SAMPLE_PATHS,
    PART_EMBEDDING,
    PART_EXAMPLES,
    PART_GRAPHS,
    PART_MAPPER,
    PART_SUMMIT,
    PRECISIONS,
    AtlasError,
    AtlasWriter,
    BuildSettings,
    activation_counts_path,
    check_output,
    csr_parts,
    embedding_path,
    examples_paths,
    influence_paths,
    manifest_layers,
    mapper_crop_path,
    mapper_paths,
    output_lock,
)
from compute.capture import HookSet, resolve_modules
from compute.checkpoint import (
    CheckpointStore,
    Fingerprint,
    data_fingerprint,
    default_checkpoint_dir,
    model_fingerprint,
)
from compute.data import DECODE_MODES, Preprocessing
from compute.distributed import Rank, combine_states, current_rank, reload_range, shard_loader
from compute.errors import BuildError
from compute.models import LayerDescription, count_outputs, describe_layers, num_parameters
from compute.summit.config import EmbeddingConfig, GraphConfig, SummitConfig

log = logging.getLogger(__name__)

#: How many layer names an "unknown layer" message lists before pointing at ``layers``.
_MAX_LISTED = 25

#: Where a build stores the model's state dict inside the atlas (docs/atlas.md).
WEIGHTS_PATH = "model/weights.pt"
#: ``save_weights=None`` stores state dicts up to this size.
_AUTO_WEIGHTS_LIMIT = 64 * 1024 * 1024


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------


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
    model: nn.Module, layers: Sequence[str], input_size: tuple[int, int, int]
) -> list[LayerDescription]:
    """Check that every chosen layer exists and outputs a ``[N, C, H, W]`` map.

    Args:
        model: the model.
        layers: chosen module names, input to output.
        input_size: ``(channels, height, width)`` of one input.

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
    spatial = [name for name, row in rows.items() if row.spatial]
    unknown = [name for name in layers if name not in rows]
    flat = [name for name in layers if name in rows and not rows[name].spatial]
    if unknown or flat:
        listed = ", ".join(spatial[:_MAX_LISTED])
        more = f" and {len(spatial) - _MAX_LISTED} more" if len(spatial) > _MAX_LISTED else ""
        what = (
            f"unknown layer(s) {', '.join(map(repr, unknown))}"
            if unknown
            else f"layer(s) {', '.join(map(repr, flat))} do not output a [N, C, H, W] map"
        )
        raise BuildError(
            f"{what}; available: {listed}{more} (list them with `python -m compute layers`)"
        )
    # How consecutive layers connect decides how influence is computed (one convolution,
    # an Inception block, or gradient x activation): check it now (an fx trace, nothing
    # runs) rather than after the data checks.
    from compute.connect import find_connections

    find_connections(model, list(layers))
    # A container's output comes after all of its children's: rank it by its last one.
    names = list(rows)
    order = {
        name: max(
            i for i, other in enumerate(names) if other == name or other.startswith(name + ".")
        )
        for name in layers
    }
    chosen = [rows[name] for name in layers]
    if [order[name] for name in layers] != sorted(order[name] for name in layers):
        log.warning("layers are not in the model's module order; keeping the given order")
    return chosen


#: ``torch.autocast`` dtype of each ``--precision`` (fp32: no autocast, exact).
_AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _check_output(out: Path, overwrite: bool) -> None:
    """:func:`compute.atlas.check_output` as a build's one-line error."""
    try:
        check_output(out, overwrite=overwrite)
    except AtlasError as exc:
        raise BuildError(str(exc)) from None


@contextlib.contextmanager
def _hold_output(out: Path) -> Iterator[None]:
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


def _unpack(batch: Any, counter: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, labels, indices) from a loader batch; indices default to a running count."""
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise BuildError("the loader must yield (images, labels) or (images, labels, indices)")
    images, labels = batch[0], torch.as_tensor(batch[1])
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise BuildError("the loader must yield image batches of shape [N, C, H, W]")
    if len(batch) == 3:
        indices = torch.as_tensor(batch[2], dtype=torch.int64)
    else:
        indices = torch.arange(counter, counter + images.shape[0], dtype=torch.int64)
    return images, labels.to(torch.int64), indices


def _check_loader_order(loader: Any) -> None:
    """Without indices, the running count is only a dataset index if nothing shuffles."""
    from torch.utils.data import RandomSampler, SequentialSampler

    sampler = getattr(loader, "sampler", None)
    if sampler is not None and not isinstance(sampler, SequentialSampler):
        kind = "shuffles" if isinstance(sampler, RandomSampler) else "uses a custom sampler"
        raise BuildError(
            f"the loader {kind} but yields no dataset indices: use shuffle=False or a dataset "
            "returning (image, label, index), e.g. compute.data.ImageFolderWithIndex"
        )


# ---------------------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------------------


def _state_dict_bytes(model: nn.Module, save: bool | None) -> bytes | None:
    """The model's state dict as ``torch.save`` bytes, if it is to be stored."""
    if save is False:
        return None
    # contiguous: a channels-last model stores the same bytes as a plain one
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    size = sum(value.numel() * value.element_size() for value in state.values())
    if save is None and size > _AUTO_WEIGHTS_LIMIT:
        log.info("not storing the %.0f MB state dict in the atlas", size / 1e6)
        return None
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _receptive_fields_or_whole_image(
    model: nn.Module, layers: Sequence[str], input_size: tuple[int, int, int]
) -> dict[str, Any]:
    """Receptive fields of the layers; whole-image crops if the probe cannot run."""
    from compute.crops import ReceptiveField, receptive_fields

    try:
        return receptive_fields(model, layers, input_size)
    except BuildError:
        raise
    except Exception as exc:  # e.g. a model that cannot be deep-copied or run in float64
        log.warning(
            "cannot measure receptive fields (%s: %s); example crops show whole images",
            type(exc).__name__,
            exc,
        )
        whole = ReceptiveField((10 * input_size[1], 10 * input_size[2]), (1.0, 1.0), (0.0, 0.0))
        return dict.fromkeys(layers, whole)


def _crop_dataset(loader: Any) -> Any | None:
    """The loader's dataset if crops can be cut from it, else ``None`` (with a warning).

    Crops need ``dataset[index]`` to return the model input, a ``[C, H, W]`` tensor, first;
    a dataset of encoded files offers that as its ``decoded`` view
    (:class:`compute.data.EncodedImageFolder`).
    """
    dataset = getattr(loader, "dataset", None)
    dataset = getattr(dataset, "decoded", dataset)
    try:
        item = dataset[0]  # type: ignore[index]
    except Exception as exc:  # not indexable (an iterable dataset, a plain list of batches)
        log.warning("no example crops: the loader's dataset cannot be indexed (%s)", exc)
        return None
    image = item[0] if isinstance(item, (tuple, list)) else item
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        log.warning("no example crops: dataset items do not start with a [C, H, W] tensor")
        return None
    return dataset


def _read_batches(
    loader: Any, decoder: Callable[[Any], Any] | None = None
) -> Generator[Any, None, None]:
    """Iterate ``loader`` (each batch through ``decoder`` if given), turning an image that
    fails to decode into a one-line error."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (OSError, SyntaxError) as exc:  # PIL decode errors name the file
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            # A DataLoader worker re-raises with its traceback; the cause is the last line.
            detail = lines[-1] if lines else type(exc).__name__
            raise BuildError(f"reading the data failed: {detail}") from None
        yield decoder(batch) if decoder is not None else batch


def _peak_rss_mb() -> float | None:
    """This process's peak resident memory so far in MB (``None`` where unknown)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)


def _sampler_state(sampler: Any) -> dict[str, torch.Tensor] | None:
    return sampler.state_dict() if sampler is not None else None


def _merge_ranks(
    summit: Any, sampler: Any, new_pass: Any, rank: Rank, device: torch.device
) -> tuple[Any, Any] | None:
    """On rank 0, the aggregates and Mapper sampler of every rank merged; else ``None``.

    ``new_pass()`` makes a fresh ``SummitPass`` with the build's settings.
    """
    combined = combine_states(summit.state_dict(), _sampler_state(sampler), rank, device)
    if combined is None:
        return None
    summit_states, sampler_states = combined
    with new_pass() as merged:
        for state in summit_states:
            merged.merge_state_dict(state)
        aggregates = merged.result()
    merged_sampler = None
    if sampler is not None:
        from compute.topology.sample import ActivationSampler

        merged_sampler = ActivationSampler(
            sampler.layer_names, sampler.layer_shapes, sampler.capacity, sampler.seed, sampler.mode
        )
        for state in sampler_states:
            merged_sampler.merge_state_dict(state)
    log.info("merged the aggregates of %d processes", rank.world_size)
    return aggregates, merged_sampler


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


def _mapper_part(
    sampler: Any,
    layers: Sequence[str],
    seed: int,
    capacity: int,
    mode: str,
    crops: int,
    device: str | None = None,
) -> Any:
    """The ``mapper`` part from the pass's sample (``None`` without a sampler or points).

    ``device``: a CUDA device builds the Mapper indexes there; ``None``: numpy on the CPU.
    """
    if sampler is None:
        return None
    from compute.topology.part import mapper_part

    samples = sampler.result()
    first = samples[layers[0]]
    if len(first.image_index) < 2:
        log.warning("no mapper part: only %d image(s) sampled", len(first.image_index))
        return None
    return mapper_part(
        first.image_index,
        first.label,
        [samples[name].vectors for name in layers],
        [samples[name].position for name in layers],
        seed=seed,
        capacity=capacity,
        mode=mode,
        crop_points=crops,
        crops_per_node=12 if crops else 0,
        device=device,
    )


def _save_mapper_crops(
    part: Any,
    dataset: Any,
    fields: dict[str, Any],
    layers: Sequence[str],
    preprocessing: Preprocessing | None,
    loader: Any,
    progress: bool,
    writer: AtlasWriter,
) -> int:
    """Crops around the sampled positions of the part's chosen rows; returns how many."""
    from compute.crops import save_position_crops

    image_index = part.files[MAPPER_SAMPLE_PATHS["image_index"]]
    jobs: dict[int, list[tuple[int, int, int, str]]] = {}
    for i, rows in enumerate(part.crop_rows):
        position = part.files[mapper_paths(i)["position"]]
        for row in rows.tolist():
            r, c = (int(v) for v in position[row])
            jobs.setdefault(int(image_index[row]), []).append((i, r, c, mapper_crop_path(i, row)))
    return save_position_crops(
        dataset,
        [fields[name] for name in layers],
        jobs,
        preprocessing=preprocessing,
        num_workers=int(getattr(loader, "num_workers", 0) or 0),
        progress=progress,
        sink=writer.add_bytes,
    )


def build_atlas(
    model: nn.Module,
    loader: DataLoader | Any,
    *,
    layers: Sequence[str],
    classes: Sequence[str],
    out: str | Path,
    config: SummitConfig = SummitConfig(),
    graph_config: GraphConfig = GraphConfig(),
    embedding_config: EmbeddingConfig = EmbeddingConfig(),
    class_map: Sequence[int] | None = None,
    device: str = "cpu",
    preprocessing: Preprocessing | None = None,
    crops_per_channel: int = 3,
    model_info: dict[str, Any] | None = None,
    dataset_info: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    title: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    save_weights: bool | None = None,
    mapper: bool = True,
    mapper_capacity: int = 100_000,
    mapper_mode: str = "position",
    mapper_crops: int = 2_000,
    checkpoint_every: int | None = None,
    checkpoint_dir: str | Path | None = None,
    restart: bool = False,
    channels_last: bool = False,
    decoder: Callable[[Any], Any] | None = None,
    precision: str = "fp32",
    decode: str | None = None,
) -> Path:
    """Build a complete atlas (Summit counts, examples, embedding, graphs) of a classifier.

    Everything cheap is checked before the pass: the output path, the device, the layers
    (they must exist and output ``[N, C, H, W]`` maps), the classes against the model's
    outputs (from a forward pass on the first batch), and the loader's order when it
    yields no indices. Then one streaming pass aggregates every layer at once.

    Args:
        model: the classifier; it returns logits ``[N, outputs]``. Put in eval mode.
        loader: yields ``(images, labels)`` or ``(images, labels, indices)`` with
            ``labels`` in ``0..len(classes)-1`` and ``indices`` the dataset index of each
            image (without indices the loader must not shuffle: a running count is used).
        layers: module names to map, input to output (see ``python -m compute layers``).
        classes: class names; ``labels`` index them.
        out: where to write the atlas directory.
        config: Summit aggregation settings.
        graph_config: attribution-graph (PageRank) settings.
        embedding_config: class-embedding (UMAP) settings.
        class_map: model output index of each class (``None``: class ``i`` is output ``i``).
        device: ``cpu`` or ``cuda`` (``cuda:N``).
        preprocessing: how images were fed to the model (recorded in the manifest, and
            undone to show crops; ``None``: crops are min-max stretched).
        crops_per_channel: receptive-field crops saved per channel (ranks 0..n-1); 0: none.
            Needs ``loader.dataset[index]`` to return the model input tensor first.
        model_info: manifest ``model`` entries overriding the defaults (name, spec, ...).
        dataset_info: manifest ``dataset`` entries (name, split, description).
        metrics: manifest ``metrics``, e.g. ``{"accuracy": {"test": 0.97}}``.
        title: dashboard title (default: model name on dataset name).
        seed: recorded in ``parameters`` (the pass itself is deterministic; the
            embedding has its own seed in ``embedding_config``).
        overwrite: replace an existing atlas at ``out``.
        progress: show tqdm progress bars.
        save_weights: store the state dict as ``model/weights.pt`` (manifest
            ``model.weights``) so later steps can rebuild the model from ``model.spec``;
            ``None``: only when it is at most 64 MB.
        mapper: also collect, in the same pass, the TopoAct sample (one activation vector
            per sampled image and layer) and store the ``mapper`` part: per layer a Mapper
            index (docs/topology.md) and crops around the sampled positions.
        mapper_capacity: images sampled at most (a bottom-K hash sketch: the same images
            whatever the batch size, order or process count).
        mapper_mode: ``"position"`` (one hashed spatial position per image and layer, as
            TopoAct) or ``"mean"`` (spatial mean).
        mapper_crops: sample rows cropped per layer in hash order (plus up to 12 members of
            each node of the default graph); 0: no sample crops.
        checkpoint_every: write a checkpoint of the partial aggregates every this many
            batches, and resume from one made by the same inputs (docs/performance.md);
            ``None``: no checkpoints.
        checkpoint_dir: where checkpoints go (default: ``OUT.checkpoint`` beside ``out``;
            removed once the atlas is written).
        restart: discard an existing checkpoint instead of resuming from it.
        channels_last: run the model and the batches in ``torch.channels_last`` memory
            format (faster convolutions on GPUs with tensor cores; the same arrays on the
            CPU, tests/unit/test_fast_path.py). The model is converted in place.
        decoder: applied to every loader batch before it is read, e.g.
            :class:`compute.data.JpegBatchDecoder` to decode JPEG bytes in batches on the
            device (``--decode jpeg-device``).
        precision: ``"fp32"`` (default): exact. ``"bf16"`` or ``"fp16"`` (fp16 on CUDA only): an
            explicitly **approximate** mode: the pass's forward, influence and gradient
            steps run under ``torch.autocast``, so values near a selection threshold or a
            top-k boundary can fall the other way and counts can differ from fp32's. The
            manifest records it (``build.precision``, ``build.approximate``).
        decode: how the images were decoded, recorded in the manifest (``"pil"``,
            ``"jpeg-device"``); ``None``: ``"jpeg-device"`` with a ``decoder``, else
            ``"loader"`` (the loader's own decoding, not known here).

    Under ``torch.distributed`` (``torchrun``), each process aggregates a contiguous shard
    of the loader's dataset (the loader must read it in order), the partial aggregates are
    merged exactly on rank 0, and rank 0 alone writes the atlas (compute/distributed.py).

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
    from tqdm import tqdm

    from compute.crops import save_example_crops
    from compute.summit.aggregate import SummitPass
    from compute.summit.embedding import class_embeddings
    from compute.summit.graph import attribution_graphs

    stages = _Stages()
    out = Path(out)
    layers = list(layers)
    classes = [str(c) for c in classes]
    _check_output(out, overwrite)
    if crops_per_channel < 0:
        raise BuildError("crops_per_channel must be >= 0")
    crops_per_channel = min(crops_per_channel, config.examples_per_channel)
    if mapper and mapper_capacity < 2:
        raise BuildError(f"mapper_capacity must be >= 2, not {mapper_capacity}")
    if mapper_mode not in ("position", "mean"):
        raise BuildError(f"mapper_mode must be 'position' or 'mean', not {mapper_mode!r}")
    if mapper_crops < 0:
        raise BuildError("mapper_crops must be >= 0")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise BuildError(f"checkpoint_every must be >= 1, not {checkpoint_every}")
    torch_device = resolve_device(device)
    check_precision(precision, torch_device)
    if decode is None:
        decode = "jpeg-device" if decoder is not None else "loader"
    model = model.to(torch_device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    rank = current_rank()
    # One writer per output, from the checks to the commit (rank 0 writes the atlas).
    with _hold_output(out) if rank.is_main else contextlib.nullcontext():
        full_loader = loader
        loader, shard = shard_loader(loader, rank)
        progress = progress and rank.is_main

        # -- validation on the first batch (cheap), before the long pass ----------------------
        batches: Generator[Any, None, None] = _read_batches(loader, decoder)
        try:
            first = next(batches)
        except StopIteration:
            raise BuildError("the loader yields no images") from None
        start = shard.start if shard is not None else 0
        images, _, _ = _unpack(first, start)
        if len(first) == 2 and shard is None:
            _check_loader_order(loader)
        input_size = (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))
        num_outputs = count_outputs(model, input_size)
        check_classes(classes, num_outputs, class_map)
        described = check_layers(model, layers, input_size)
        wants_crops = rank.is_main and (crops_per_channel or (mapper and mapper_crops))
        crop_source = _crop_dataset(full_loader) if wants_crops else None
        fields = (
            _receptive_fields_or_whole_image(model, layers, input_size)
            if crop_source is not None
            else None
        )
        stages.done("validate")

        dataset = getattr(loader, "dataset", None)
        # The model's state digest: the checkpoints' fingerprint and the manifest's
        # model.state_sha256 (hashed once; the pass changes no weight or buffer).
        weights_digest = (
            model_fingerprint(model) if checkpoint_every is not None or rank.is_main else None
        )
        store = None
        resumed = None
        if checkpoint_every is not None:
            parameters_now = {
                "layers": layers,
                "classes": classes,
                "class_map": list(class_map) if class_map is not None else None,
                "summit": config.to_manifest(),
                "preprocessing": preprocessing.to_manifest() if preprocessing else None,
                "input_size": list(input_size),
                "mapper": [mapper, mapper_capacity, mapper_mode, seed],
                "precision": precision,
                "batch_size": int(images.shape[0]),
                "processes": [rank.rank, rank.world_size],
                "shard": [shard.start, shard.stop] if shard is not None else None,
            }
            print_now = Fingerprint(
                weights_digest, data_fingerprint(dataset, images), parameters_now
            )
            directory = (
                checkpoint_dir if checkpoint_dir is not None else default_checkpoint_dir(out)
            )
            store = CheckpointStore(directory, rank.rank, rank.world_size, print_now)
            resumed = store.load(restart=restart)

        # -- the one streaming pass ---------------------------------------------------------
        total = None
        if shard is not None:
            total = len(shard)
        elif dataset is not None and hasattr(dataset, "__len__"):
            total = len(dataset)
        done, batches_done = 0, 0
        stream: Iterator[Any] = itertools.chain([first], batches)
        if resumed is not None:
            done, batches_done = resumed.images_done, resumed.batches_done
            if resumed.complete:
                batches.close()
                stream = iter(())
            elif shard is not None:
                batches.close()  # stop the first loader's workers; read only what is left
                stream = _read_batches(
                    reload_range(loader, shard.start + done, shard.stop), decoder
                )
            else:  # a loader we cannot restart mid-way: read and skip what is done
                stream = itertools.islice(stream, batches_done, None)
        counter = start + done
        sampler = None
        sampler_hooks = HookSet()
        if mapper:
            from compute.topology.sample import ActivationSampler

            sampler = ActivationSampler(
                layers,
                [(int(d.channels), int(d.height), int(d.width)) for d in described],  # type: ignore[arg-type]
                capacity=mapper_capacity,
                seed=seed,
                mode=mapper_mode,  # type: ignore[arg-type]
            )
        new_pass = partial(
            SummitPass,
            model,
            layers,
            len(classes),
            config,
            device=str(torch_device),
            class_map=list(class_map) if class_map is not None else None,
        )
        with (
            new_pass() as summit,
            tqdm(
                total=total,
                initial=done,
                desc="summit pass"
                + (f" (rank 0 of {rank.world_size})" if rank.distributed else ""),
                unit="img",
                unit_scale=True,
                smoothing=0.05,
                disable=not progress,
            ) as bar,
            sampler_hooks,
        ):
            # How each pair connects (conv / inception / gradient), for the manifest.
            kinds = [c.kind if c is not None else None for c in summit.connections]
            if resumed is not None:
                summit.merge_state_dict(resumed.summit)
                if sampler is not None and resumed.sampler is not None:
                    sampler.merge_state_dict(resumed.sampler)
            if sampler is not None:
                # Registered after SummitPass's hooks on the same modules: each layer's output
                # is reduced inside the forward, before any later in-place operation.
                for name, module in zip(layers, resolve_modules(model, layers), strict=True):
                    sampler_hooks.on_output(module, partial(sampler.add_layer, name))
            for batch in stream:
                images, labels, indices = _unpack(batch, counter)
                counter += int(images.shape[0])
                if labels.numel():
                    low, high = int(labels.min()), int(labels.max())
                    if low < 0 or high >= len(classes):
                        bad = low if low < 0 else high
                        raise BuildError(
                            f"the loader yields label {bad}, but labels index the "
                            f"{len(classes)} classes (0..{len(classes) - 1})"
                        )
                if sampler is not None:
                    sampler.begin_batch(labels, indices)
                images = images.to(torch_device, non_blocking=True)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast_context(precision, torch_device):  # approximate unless fp32
                    summit.update(images, labels, indices)
                bar.update(int(images.shape[0]))
                done, batches_done = done + int(images.shape[0]), batches_done + 1
                if store is not None and batches_done % int(checkpoint_every or 1) == 0:
                    store.save(summit.state_dict(), _sampler_state(sampler), done, batches_done)
            if store is not None:
                store.save(summit.state_dict(), _sampler_state(sampler), done, batches_done, True)
            if rank.distributed:
                merged = _merge_ranks(summit, sampler, new_pass, rank, torch_device)
                if merged is None:
                    log.info("rank %d: %d images aggregated, sent to rank 0", rank.rank, done)
                    return out
                aggregates, sampler = merged
            else:
                aggregates = summit.result()
        pass_seconds = time.perf_counter() - stages._start
        stages.done("summit pass")
        peak = _peak_rss_mb()
        if peak is not None:
            log.info("peak host memory after the pass: %.0f MB", peak)
        num_images = int(np.sum(aggregates.num_images))
        if num_images == 0:
            raise BuildError("the loader yielded no images")

        # -- derived parts --------------------------------------------------------------------
        counts = [np.asarray(a) for a in aggregates.activation_counts]
        influence = list(aggregates.influence_counts)
        graphs = attribution_graphs(counts, influence, graph_config, progress=progress).arrays()
        stages.done("attribution graphs")
        embeddings = class_embeddings(counts, embedding_config)
        stages.done("class embedding")
        mapper_device = str(torch_device) if torch_device.type == "cuda" else None
        part = _mapper_part(
            sampler, layers, seed, mapper_capacity, mapper_mode, mapper_crops, mapper_device
        )
        if part is not None:
            stages.done("mapper index")

        # -- write ---------------------------------------------------------------------------
        shapes = [tuple(int(v) for v in shape) for shape in aggregates.layer_shapes]
        for row, shape in zip(described, shapes, strict=True):
            if row.channels != shape[0]:
                log.warning(
                    "layer %s: described %s channels, pass saw %s", row.name, row.channels, shape
                )
        info_model = {
            "name": type(model).__name__,
            "spec": None,
            "num_parameters": num_parameters(model),
            "input_size": list(input_size),
            # what later steps (feature visualization) check a rebuilt model against
            "state_sha256": weights_digest,
            **(model_info or {}),
        }
        info_dataset = {
            "name": type(dataset).__name__ if dataset is not None else "dataset",
            "split": None,
            "num_images": num_images,
            "description": "",
            **(dataset_info or {}),
        }
        info_dataset["num_images"] = num_images  # what was aggregated, whatever was claimed
        if preprocessing is not None:
            info_pre = preprocessing.to_manifest()
        else:
            # The loader's own transform: unknown normalisation, recorded as such.
            info_pre = {
                "image_size": input_size[1],
                "mean": None,
                "std": None,
                "grayscale": input_size[0] == 1,
            }
        parameters: dict[str, Any] = {
            **config.to_manifest(),
            **graph_config.to_manifest(),
            **embedding_config.to_manifest(),
            "seed": seed,
            "crops_per_channel": crops_per_channel,
        }
        if class_map is not None:
            parameters["class_map"] = [int(i) for i in class_map]
        if part is not None:
            parameters["mapper"] = part.parameters
        if fields is not None:
            from compute.crops import receptive_fields_manifest

            parameters["receptive_fields"] = receptive_fields_manifest(fields)
        manifest = {
            "title": title or f"{info_model['name']} on {info_dataset['name']}",
            "model": info_model,
            "dataset": info_dataset,
            "preprocessing": info_pre,
            "classes": classes,
            "layers": manifest_layers(layers, shapes, kinds),
            "build": BuildSettings(
                device=torch_device.type,
                device_name=(
                    torch.cuda.get_device_name(torch_device)
                    if torch_device.type == "cuda"
                    else torch_device.type
                ),
                world_size=rank.world_size,
                decode=decode,
                channels_last=bool(channels_last),
                precision=precision,
                torch=torch.__version__,
            ).to_manifest(),
            "parameters": parameters,
            "metrics": metrics or {},
            "parts": [PART_SUMMIT, PART_EXAMPLES, PART_EMBEDDING, PART_GRAPHS]
            + ([PART_MAPPER] if part is not None else []),
        }
        weights_bytes = _state_dict_bytes(model, save_weights)
        if weights_bytes is not None:
            info_model["weights"] = WEIGHTS_PATH
        with AtlasWriter(out, manifest, overwrite=overwrite) as writer:
            if weights_bytes is not None:
                writer.add_bytes(WEIGHTS_PATH, weights_bytes)
            writer.add_array(CLASS_PATHS["num_images"], np.asarray(aggregates.num_images, np.int64))
            writer.add_array(
                CLASS_PATHS["num_correct"], np.asarray(aggregates.num_correct, np.int64)
            )
            writer.add_array(
                CLASS_PATHS["confidence_hist"], np.asarray(aggregates.confidence_hist, np.int64)
            )
            writer.add_array(CONFUSION_PATH, np.asarray(aggregates.confusion, np.int64))
            for i in range(len(layers)):
                writer.add_array(activation_counts_path(i), counts[i].astype(np.int64))
                if i > 0:
                    if influence[i] is None:
                        raise BuildError(f"the pass produced no influence counts for {layers[i]!r}")
                    for key, array in csr_parts(influence[i]).items():
                        writer.add_array(influence_paths(i)[key], array)
                paths = examples_paths(i)
                writer.add_array(
                    paths["image_index"], np.asarray(aggregates.example_index[i], np.int64)
                )
                writer.add_array(
                    paths["activation"], np.asarray(aggregates.example_value[i], np.float32)
                )
                writer.add_array(
                    paths["position"], np.asarray(aggregates.example_position[i], np.int32)
                )
                writer.add_array(embedding_path(i), np.asarray(embeddings[i], np.float32))
            for name, relpath in GRAPH_PATHS.items():
                writer.add_array(relpath, graphs[name])
            if part is not None:
                for relpath, array in part.files.items():
                    writer.add_array(relpath, array)
            stages.done("write arrays")
            num_crops = 0
            if fields is not None:

                def add_crop(relpath: str, png: bytes) -> None:
                    nonlocal num_crops
                    writer.add_bytes(relpath, png)  # streamed: crops never pile up in memory
                    num_crops += 1

                save_example_crops(
                    crop_source,
                    [fields[name] for name in layers],
                    aggregates.example_index,
                    aggregates.example_position,
                    crops_per_channel=crops_per_channel,
                    preprocessing=preprocessing,
                    num_workers=int(getattr(loader, "num_workers", 0) or 0),
                    progress=progress,
                    sink=add_crop,
                )
                stages.done("example crops")
                if part is not None and crop_source is not None:
                    num_crops += _save_mapper_crops(
                        part, crop_source, fields, layers, preprocessing, loader, progress, writer
                    )
                    stages.done("sample crops")
            path = writer.commit()
        if store is not None:
            store.remove_directory()
        stages.done("commit")
        correct = int(np.sum(aggregates.num_correct))
        log.info(
            "atlas %s: %d images (%.0f img/s), %d classes, %d layers (%d channels), "
            "top-1 %.1f%%, %d crops; %s",
            path,
            num_images,
            num_images / max(pass_seconds, 1e-9),
            len(classes),
            len(layers),
            sum(s[0] for s in shapes),
            100.0 * correct / num_images,
            num_crops,
            stages.summary(),
        )
        return path


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------

_BUILD_EPILOG = """\
examples:
  # list the layers of a model (names to paste into --layers)
  python -m compute layers --model torchvision:vgg11 --image-size 224

  # a torchvision model with your trained weights, on an ImageFolder (DIR/CLASS/IMAGE)
  python -m compute build --model torchvision:vgg11 --weights vgg11.pth --device cuda \\
      --data imagenet/val --layers features.11,features.13,features.16,features.18 \\
      --out vgg11-atlas

  # your own model class, 28x28 grayscale, 10 folders = 10 outputs
  python -m compute build --model mypkg.nets:make_cnn --weights cnn.pt --data mnist/train \\
      --image-size 28 --normalize 0.1307,0.3081 --layers features.1,features.4 \\
      --top-k 5 --out mnist-atlas

  # a subset of ImageNet classes: map folders to the model's 1000 outputs
  python -m compute build --model torchvision:vgg16 --weights vgg16.pt --data subset \\
      --class-index folders.json --layers features.25,features.27,features.29 --out vgg-atlas

  # 8 GPUs on one machine (or M machines: run the same command on each, adding
  # --nnodes M --rdzv-backend c10d --rdzv-endpoint HOST:PORT --rdzv-id JOB);
  # rank 0 writes the atlas
  torchrun --nproc-per-node 8 -m compute build --model torchvision:vgg11 \\
      --weights vgg11.pth --data imagenet/train --layers features.13,features.16 \\
      --out vgg11-atlas --device cuda

  # resumable: checkpoint every 500 batches; after a crash run the same command again
  python -m compute build ... --checkpoint-every 500

--normalize: imagenet | cifar10 | mnist | none | MEAN,STD (one value for every channel)
             | M1,M2,M3/S1,S2,S3 (per channel). Images are resized to --image-size
             squared, without cropping. A model whose first convolution takes 1 channel
             gets grayscale input.
--class-index: JSON {"folder name": output index, ...}; without it the sorted class
             folders must be exactly the model's outputs, in order.
--layers:    each layer must depend on the previous one. One convolution between them
             (through channel-wise ops: ReLU, BatchNorm, pooling) gives exact influence;
             an Inception block gives exact per-branch influence and the widest path
             through its bottlenecks; anything else (residual blocks, depthwise-separable
             blocks, several convolutions) uses gradient x activation attribution
             (docs/summit.md). `python -m compute layers` shows which each pair gets.
Weights are never downloaded: --weights FILE is a torch.save()d state dict (or a dict
holding it under "state_dict" or "model"), loaded strictly.
"""


_SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})


def _int_at_least(text: str, minimum: int) -> int:
    """Parse a command-line integer that must be ``>= minimum`` (argparse errors otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, not {value}")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _layer_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _run_build(args: argparse.Namespace) -> int:
    from compute.distributed import init_from_env, shutdown

    rank, device_name = init_from_env(args.device)
    try:
        return _build_command(args, rank, device_name)
    finally:
        shutdown()


def _build_command(args: argparse.Namespace, rank: Rank, device_name: str) -> int:
    from compute.data import (
        JpegBatchDecoder,
        check_images,
        collate_encoded,
        open_image_folder,
    )
    from compute.distributed import shard_range
    from compute.models import get_model, infer_in_channels, model_name

    out = Path(args.out)
    _check_output(out, args.overwrite)
    device = resolve_device(device_name)
    check_precision(args.precision, device)  # before loading the model or reading data
    config = SummitConfig(
        selection="topk" if args.top_k is not None else "mass",
        tau=args.tau if args.tau is not None else SummitConfig.tau,
        top_k=args.top_k if args.top_k is not None else SummitConfig.top_k,
        influence_top_k=args.influence_top_k,
        examples_per_channel=args.examples,
        aggregate_by=args.aggregate_by,
    )
    # Seeded: a model built from random weights (no --weights) is the same in every run,
    # and on every torchrun rank (each rank builds its own copy).
    model = get_model(
        args.model, weights=args.weights, num_classes=args.num_classes, seed=args.seed
    )
    grayscale = infer_in_channels(model) == 1
    preprocessing = Preprocessing.from_arg(
        args.normalize, image_size=args.image_size, grayscale=grayscale
    )
    num_outputs = count_outputs(model, preprocessing.input_size)
    check_layers(model, args.layers, preprocessing.input_size)
    dataset, class_map = open_image_folder(
        args.data,
        preprocessing,
        num_outputs=num_outputs,
        class_index=args.class_index,
        check=not args.no_check_images and not rank.distributed,
        progress=not args.no_progress,
        decode=args.decode,
        encoded=args.decode == "jpeg-device" and device.type == "cuda",
    )
    if rank.distributed and not args.no_check_images:  # each process checks its own shard
        shard = shard_range(len(dataset), rank.rank, rank.world_size)
        check_images([dataset.samples[i][0] for i in shard], progress=False)
    encoded = args.decode == "jpeg-device" and device.type == "cuda"
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=False,
        num_workers=args.workers,
        collate_fn=collate_encoded if encoded else None,
        # Pinned host memory: the pass copies batches with non_blocking=True. Not
        # persistent_workers: the loader is iterated once, and on resume the first
        # loader's workers are meant to stop (they would stay up idle for the whole pass).
        pin_memory=device.type == "cuda",
    )
    decoder = JpegBatchDecoder(preprocessing, str(device)) if encoded else None
    data_path = Path(args.data).resolve()
    # DIR/imagenet/val -> name "imagenet", split "val"; otherwise the folder's own name.
    is_split = data_path.name.lower() in _SPLIT_NAMES
    dataset_name = data_path.parent.name if is_split and data_path.parent.name else data_path.name
    path = build_atlas(
        model,
        loader,
        layers=args.layers,
        classes=dataset.classes,
        out=out,
        config=config,
        class_map=class_map,
        device=str(device),
        preprocessing=preprocessing,
        crops_per_channel=args.crops,
        model_info={
            "name": model_name(args.model),
            "spec": args.model,
            # rebuilding the architecture (feature visualization) needs the head's size
            **({"num_classes": args.num_classes} if args.num_classes is not None else {}),
        },
        dataset_info={
            "name": dataset_name,
            "split": data_path.name if is_split else None,
            "description": f"ImageFolder {args.data}",
        },
        title=args.title,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        save_weights=args.save_weights,
        mapper=args.mapper,
        mapper_capacity=args.mapper_capacity,
        mapper_mode=args.mapper_mode,
        mapper_crops=args.mapper_crops,
        checkpoint_every=args.checkpoint_every,
        checkpoint_dir=args.checkpoint_dir,
        restart=args.restart,
        channels_last=args.channels_last,
        decoder=decoder,
        precision=args.precision,
        decode=args.decode,
    )
    if not rank.is_main:
        return 0
    if args.featurevis:
        from compute.featurevis.cli import run_featurevis

        run_featurevis(path, model=model, device=str(device), progress=not args.no_progress)
    print(f"atlas written to {path}")
    return 0


def _run_layers(args: argparse.Namespace) -> int:
    from compute.models import get_model, infer_in_channels

    model = get_model(args.model, weights=args.weights, num_classes=args.num_classes)
    input_size = (infer_in_channels(model), args.image_size, args.image_size)
    rows = describe_layers(model, input_size)
    if not args.all:
        rows = [row for row in rows if row.spatial]
    from compute.connect import connection_kinds

    kinds = connection_kinds(model, [row.name for row in rows if row.spatial])
    kind_of = dict(zip([row.name for row in rows if row.spatial], kinds, strict=True))
    width = max([len("name"), *(len(row.name) for row in rows)])
    type_width = max([len("type"), *(len(row.type) for row in rows)])
    print(f"# {args.model}, input {input_size[0]}x{input_size[1]}x{input_size[2]}")
    print(f"{'name':<{width}}  {'type':<{type_width}}  {'channels':>8}  {'map':>7}  from previous")
    for row in rows:
        size = f"{row.height}x{row.width}" if row.spatial else "-"
        channels = "-" if row.channels is None else str(row.channels)
        kind = kind_of.get(row.name) or "-"
        print(f"{row.name:<{width}}  {row.type:<{type_width}}  {channels:>8}  {size:>7}  {kind}")
    if not args.all:
        print(
            "# only layers with [N, C, H, W] outputs (usable in --layers); --all for every module"
        )
    print(
        "# 'from previous': how influence from the layer listed above would be computed if both"
        " were chosen: conv (exact, one convolution), inception (exact per branch + widest"
        " path), gradient (gradient x activation), none (cannot be chosen together)"
    )
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``build`` and ``layers`` subcommands to ``python -m compute``."""
    formatter = argparse.RawDescriptionHelpFormatter
    build = subparsers.add_parser(
        "build",
        help="build an atlas of an image classifier over an ImageFolder dataset",
        description=(
            "Build an atlas: one streaming pass of the model over the data aggregates "
            "Summit's activation and influence counts for every chosen layer at once, then "
            "the attribution graphs, the class embedding and the receptive-field crops of "
            "each channel's top examples are derived and written atomically to --out. "
            "Bad input (unknown layer, class folders that do not map to the model's "
            "outputs, an unreadable image, weights that do not fit) is reported in one "
            "line before the pass starts."
        ),
        epilog=_BUILD_EPILOG,
        formatter_class=formatter,
    )
    required = build.add_argument_group("required")
    required.add_argument(
        "--model",
        required=True,
        metavar="SPEC",
        help="torchvision:NAME, package.module:callable, file.py:callable or a registered "
        "name (simple_cnn)",
    )
    required.add_argument(
        "--data", required=True, metavar="DIR", help="ImageFolder directory: DIR/CLASS/IMAGE"
    )
    required.add_argument(
        "--layers",
        required=True,
        type=_layer_list,
        metavar="L1,L2,...",
        help="module names to map, input to output, each depending on the previous one "
        "(see `python -m compute layers` and below)",
    )
    required.add_argument("--out", required=True, metavar="DIR", help="atlas directory to write")
    model_group = build.add_argument_group("model and data")
    model_group.add_argument(
        "--weights",
        metavar="FILE",
        help="state dict to load (strict; a checkpoint whose classifier head has another "
        "number of outputs rebuilds the model with that many)",
    )
    model_group.add_argument(
        "--num-classes",
        type=_positive_int,
        metavar="N",
        help="pass num_classes=N to the model factory (default: the factory's own, or the "
        "checkpoint's head)",
    )
    model_group.add_argument(
        "--image-size",
        type=_positive_int,
        default=224,
        metavar="N",
        help="resize images to N x N, no crop (default 224)",
    )
    model_group.add_argument(
        "--normalize",
        default="imagenet",
        metavar="MEAN,STD|imagenet|none",
        help="input normalisation (default imagenet; syntax below)",
    )
    model_group.add_argument(
        "--class-index", metavar="FILE", help='JSON {"folder": model output index}'
    )
    model_group.add_argument(
        "--batch-size", type=_positive_int, default=64, metavar="B", help="default 64"
    )
    model_group.add_argument(
        "--workers",
        type=_non_negative_int,
        default=_default_workers(),
        metavar="N",
        help=f"data-loading worker processes (default {_default_workers()})",
    )
    model_group.add_argument(
        "--device", default="cpu", metavar="cpu|cuda", help="where the model runs (default cpu)"
    )
    model_group.add_argument(
        "--decode",
        choices=DECODE_MODES,
        default="pil",
        help="pil (default): PIL in the loader's workers; jpeg-device: JPEG files only, "
        "decoded by torchvision.io, in batches on the GPU with --device cuda (in the "
        "workers on the CPU); resized pixels differ from PIL's by at most 1/255",
    )
    model_group.add_argument(
        "--channels-last",
        action="store_true",
        help="model and batches in channels-last memory format (faster on GPUs; same results)",
    )
    model_group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default): exact counts. bf16, fp16 (fp16 on CUDA only): APPROXIMATE mode, the "
        "pass runs under torch.autocast; counts near a threshold may differ from fp32's, "
        "and the atlas records that it is approximate",
    )
    summit = build.add_argument_group("Summit aggregation")
    selection = summit.add_mutually_exclusive_group()
    selection.add_argument(
        "--tau",
        type=float,
        metavar="T",
        help=f"per image, keep the channels holding this share of the layer's max-activation "
        f"mass (default {SummitConfig.tau}; small layers need larger values)",
    )
    selection.add_argument(
        "--top-k", type=_positive_int, metavar="K", help="per image, keep the K strongest channels"
    )
    summit.add_argument(
        "--influence-top-k",
        type=_positive_int,
        default=SummitConfig.influence_top_k,
        metavar="K",
        help=f"input channels counted per output channel and image "
        f"(default {SummitConfig.influence_top_k})",
    )
    summit.add_argument(
        "--examples",
        type=_positive_int,
        default=SummitConfig.examples_per_channel,
        metavar="N",
        help=f"top dataset examples kept per channel (default {SummitConfig.examples_per_channel})",
    )
    summit.add_argument(
        "--crops",
        type=_non_negative_int,
        default=3,
        metavar="N",
        help="receptive-field crops saved per channel (default 3; 0: none)",
    )
    summit.add_argument(
        "--aggregate-by",
        choices=("label", "prediction"),
        default="label",
        help="count each image under its true label or the model's prediction (default label)",
    )
    build.add_argument(
        "--featurevis",
        action="store_true",
        help="also render every channel's feature visualization and diversity images "
        "(slow on CPU; same as running `python -m compute featurevis --atlas OUT` afterwards)",
    )
    topology = build.add_argument_group("TopoAct Mapper (collected in the same pass)")
    topology.add_argument(
        "--no-mapper",
        dest="mapper",
        action="store_false",
        help="do not sample activation vectors nor store the mapper part",
    )
    topology.add_argument(
        "--mapper-capacity",
        type=_positive_int,
        default=100_000,
        metavar="N",
        help="images sampled at most, the same for every layer (default 100000)",
    )
    topology.add_argument(
        "--mapper-mode",
        choices=("position", "mean"),
        default="position",
        help="vector per image: the channels at one hashed spatial position (TopoAct, "
        "default) or their spatial mean",
    )
    topology.add_argument(
        "--mapper-crops",
        type=_non_negative_int,
        default=2_000,
        metavar="N",
        help="sample points cropped per layer, plus 12 per node of the default graph "
        "(default 2000; 0: none)",
    )
    output = build.add_argument_group("output")
    output.add_argument("--title", help="title shown in the dashboard")
    output.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds a model built without --weights (its random initialisation) and the "
        "Mapper sample; recorded in the atlas (default 0)",
    )
    output.add_argument(
        "--save-weights",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="store the state dict in the atlas (model/weights.pt) for later steps such as "
        "feature visualization (default: only when at most 64 MB)",
    )
    output.add_argument("--overwrite", action="store_true", help="replace an existing atlas")
    output.add_argument(
        "--no-check-images",
        action="store_true",
        help="skip opening every image header before the pass (a bad image then stops the "
        "pass when it is reached)",
    )
    output.add_argument("--no-progress", action="store_true", help="no progress bars")
    resume = build.add_argument_group("resumable builds")
    resume.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        metavar="N",
        help="checkpoint the partial aggregates every N batches (atomically); rerunning the "
        "same command after a crash resumes and writes exactly the same atlas",
    )
    resume.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="where checkpoints go (default: OUT.checkpoint beside --out; removed when the "
        "atlas is written)",
    )
    resume.add_argument(
        "--restart",
        action="store_true",
        help="discard an existing checkpoint instead of resuming (a checkpoint of another "
        "model, data or parameters is otherwise refused)",
    )
    build.set_defaults(run=_run_build)

    layers = subparsers.add_parser(
        "layers",
        help="list a model's layers (names, types, channels, map sizes) for --layers",
        description=(
            "Run one dummy image through the model and list every module whose output is a "
            "[N, C, H, W] map, with its channel count and map size at --image-size. Paste "
            "the names, comma-separated and input to output, into `build --layers`."
        ),
        epilog="example:\n  python -m compute layers --model torchvision:vgg11 --image-size 224",
        formatter_class=formatter,
    )
    layers.add_argument("--model", required=True, metavar="SPEC", help="as for build")
    layers.add_argument("--weights", metavar="FILE", help="state dict to load (checks it fits)")
    layers.add_argument(
        "--num-classes", type=_positive_int, metavar="N", help="num_classes=N for the factory"
    )
    layers.add_argument(
        "--image-size", type=_positive_int, default=224, metavar="N", help="default 224"
    )
    layers.add_argument("--all", action="store_true", help="also list non-spatial modules")
    layers.set_defaults(run=_run_layers)
