"""The one streaming pass: read (and decode) the batches, resume from a checkpoint, run the
model once per batch with every pass's hooks, and merge the ranks' aggregates.

:func:`open_stream` reads the first batch and runs the checks that need it (classes
against the model's outputs, the layers, the loader's order) and positions the stream
after what a checkpoint already holds; :func:`run_pass` then aggregates the rest.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from compute.build.checks import (
    autocast_context,
    check_classes,
    check_labels,
    check_layers,
    check_loader_order,
    unpack_batch,
)
from compute.build.options import BuildOptions
from compute.capture import (
    BatchRider,
    HookSet,
    merge_rider_states,
    resolve_modules,
    rider_states,
)
from compute.checkpoint import (
    CheckpointStore,
    Fingerprint,
    data_fingerprint,
    default_checkpoint_dir,
    model_fingerprint,
)
from compute.distributed import Rank, combine_states, reload_range, shard_loader
from compute.errors import BuildError
from compute.models import LayerDescription, count_outputs, model_input
from compute.summit.aggregate import SummitAggregates, SummitPass
from compute.summit.instances import instances_manifest
from compute.tokens import TOKEN_MAP_WIDTH
from compute.topology.sample import ActivationSampler

log = logging.getLogger(__name__)


def read_batches(
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


@dataclass
class Stream:
    """A loader opened for the pass: checked on its first batch, positioned after what a
    checkpoint holds.

    Attributes:
        loader: this process's shard of the loader (the whole loader on one process).
        shard: the dataset range of this process (``None``: one process).
        batches: the batches still to aggregate.
        input_size: ``(channels, height, width)`` of one input (``None``: text).
        batch_size: images in the first batch.
        described: the chosen layers' descriptions.
        weights_digest: sha256 of the model's state (checkpoint fingerprint, manifest).
        store: the checkpoint store (``None``: no checkpoints).
        resumed: the checkpoint resumed from (``None``: a fresh pass).
        total: images this process aggregates, if known.
        done: images already aggregated (from the checkpoint).
        batches_done: batches already aggregated.
        counter: dataset index of the next image when batches carry no indices.
    """

    loader: Any
    shard: range | None
    batches: Iterator[Any]
    input_size: tuple[int, int, int] | None
    batch_size: int
    described: list[LayerDescription]
    weights_digest: str | None
    store: CheckpointStore | None
    resumed: Any | None
    total: int | None
    done: int
    batches_done: int
    counter: int

    @property
    def dataset(self) -> Any:
        """The loader's dataset (``None`` for a plain iterable of batches)."""
        return getattr(self.loader, "dataset", None)


def open_stream(model: nn.Module, loader: Any, options: BuildOptions, rank: Rank) -> Stream:
    """Shard ``loader`` for this process, read its first batch, check the classes, layers
    and order against it, and resume from a checkpoint made by the same inputs."""
    loader, shard = shard_loader(loader, rank)
    batches = read_batches(loader, options.decoder)
    try:
        first = next(batches)
    except StopIteration:
        raise BuildError("the loader yields no images") from None
    start = shard.start if shard is not None else 0
    images, _, _ = unpack_batch(first, start)
    if len(first) == 2 and shard is None:
        check_loader_order(loader)
    input_size: tuple[int, int, int] | None = None
    if isinstance(images, Mapping):  # a text batch: the model probes itself
        probe: Any = model_input(model)
        first_inputs = images["input_ids"]
    else:
        input_size = (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))
        probe, first_inputs = input_size, images
    check_classes(options.classes, count_outputs(model, probe), options.class_map)
    described = check_layers(model, options.layers, probe)
    dataset = getattr(loader, "dataset", None)
    # The model's state digest: the checkpoints' fingerprint and the manifest's
    # model.state_sha256 (hashed once; the pass changes no weight or buffer).
    wants_digest = options.checkpoint_every is not None or rank.is_main
    weights_digest = model_fingerprint(model) if wants_digest else None
    store, resumed = None, None
    if options.checkpoint_every is not None:
        store = CheckpointStore(
            options.checkpoint_dir or default_checkpoint_dir(options.path),
            rank.rank,
            rank.world_size,
            Fingerprint(
                weights_digest,
                data_fingerprint(dataset, first_inputs),
                _fingerprint_parameters(
                    options, input_size, int(first_inputs.shape[0]), rank, shard
                ),
            ),
        )
        resumed = store.load(restart=options.restart)
    total = None
    if shard is not None:
        total = len(shard)
    elif dataset is not None and hasattr(dataset, "__len__"):
        total = len(dataset)
    done, batches_done = 0, 0
    remaining: Iterator[Any] = itertools.chain([first], batches)
    if resumed is not None:
        done, batches_done = resumed.images_done, resumed.batches_done
        if resumed.complete:
            batches.close()
            remaining = iter(())
        elif shard is not None:
            batches.close()  # stop the first loader's workers; read only what is left
            remaining = read_batches(
                reload_range(loader, shard.start + done, shard.stop), options.decoder
            )
        else:  # a loader we cannot restart mid-way: read and skip what is done
            remaining = itertools.islice(remaining, batches_done, None)
    return Stream(
        loader=loader,
        shard=shard,
        batches=remaining,
        input_size=input_size,
        batch_size=int(first_inputs.shape[0]),
        described=described,
        weights_digest=weights_digest,
        store=store,
        resumed=resumed,
        total=total,
        done=done,
        batches_done=batches_done,
        counter=start + done,
    )


def _fingerprint_parameters(
    options: BuildOptions,
    input_size: tuple[int, int, int] | None,
    batch_size: int,
    rank: Rank,
    shard: range | None,
) -> dict[str, Any]:
    """What a checkpoint must have been made with to be resumed (docs/performance.md)."""
    return {
        "layers": list(options.layers),
        "classes": list(options.classes),
        "class_map": list(options.class_map) if options.class_map is not None else None,
        "summit": options.config.to_manifest(),
        "instances": instances_manifest(options.instances),
        "preprocessing": options.preprocessing.to_manifest() if options.preprocessing else None,
        "input_size": list(input_size) if input_size is not None else None,
        "mapper": [options.mapper, options.mapper_capacity, options.mapper_mode, options.seed],
        "precision": options.precision,
        "batch_size": batch_size,
        "processes": [rank.rank, rank.world_size],
        "shard": [shard.start, shard.stop] if shard is not None else None,
    }


@dataclass
class PassResult:
    """What the pass aggregated (on rank 0, every process's share merged).

    Attributes:
        aggregates: Summit's counts, statistics and top examples.
        riders: the passes that rode on the forward, by name (``"mapper"``: the TopoAct
            sample, with ``options.mapper``).
        kinds: how each consecutive layer pair connects (conv, inception, gradient).
        images: images this process aggregated.
        seconds: wall time of the pass.
    """

    aggregates: SummitAggregates
    riders: dict[str, BatchRider]
    kinds: list[str | None]
    images: int
    seconds: float

    @property
    def sampler(self) -> ActivationSampler | None:
        """The TopoAct sample (``None`` without ``options.mapper``)."""
        rider = self.riders.get(ActivationSampler.name)
        return rider if isinstance(rider, ActivationSampler) else None


def _sample_shape(layer: LayerDescription) -> tuple[int, int, int]:
    """A chosen layer's shape as the TopoAct sample takes it: ``(C, H, W)`` of a map, or a
    token layer's ``(D, 1, TOKEN_MAP_WIDTH)`` (any number of tokens)."""
    if layer.tokens is not None:
        return (int(layer.channels or 0), 1, TOKEN_MAP_WIDTH)
    return (int(layer.channels or 0), int(layer.height or 0), int(layer.width or 0))


def make_riders(options: BuildOptions, stream: Stream) -> list[BatchRider]:
    """The passes that ride on Summit's forward for these options (each a
    :class:`~compute.capture.BatchRider`), in hook order."""
    riders: list[BatchRider] = []
    if options.mapper:
        riders.append(
            ActivationSampler(
                list(options.layers),
                [_sample_shape(d) for d in stream.described],
                capacity=options.mapper_capacity,
                seed=options.seed,
                mode=options.mapper_mode,  # type: ignore[arg-type]
            )
        )
    return riders


def run_pass(
    model: nn.Module,
    stream: Stream,
    options: BuildOptions,
    device: torch.device,
    rank: Rank,
) -> PassResult | None:
    """Aggregate every remaining batch of ``stream`` in one forward each (Summit's pass
    and its riders); ``None`` on a process other than rank 0 once it has sent its share."""
    start = time.perf_counter()
    layers = list(options.layers)
    riders = make_riders(options, stream)
    new_pass = partial(
        SummitPass,
        model,
        layers,
        len(options.classes),
        options.config,
        device=str(device),
        class_map=list(options.class_map) if options.class_map is not None else None,
        instances=options.instances,
    )
    done, batches_done, counter = stream.done, stream.batches_done, stream.counter
    every = options.checkpoint_every
    with (
        new_pass() as summit,
        tqdm(
            total=stream.total,
            initial=done,
            desc="summit pass" + (f" (rank 0 of {rank.world_size})" if rank.distributed else ""),
            unit="img",
            unit_scale=True,
            smoothing=0.05,
            disable=not (options.progress and rank.is_main),
        ) as bar,
        HookSet(model) as rider_hooks,  # riders read channels-last maps channels first
    ):
        kinds = [c.kind if c is not None else None for c in summit.connections]
        if stream.resumed is not None:
            summit.merge_state_dict(stream.resumed.summit)
            if stream.resumed.riders is not None:
                merge_rider_states(riders, stream.resumed.riders)
        # Registered after SummitPass's hooks on the same modules.
        modules = dict(zip(layers, resolve_modules(model, layers), strict=True))
        for rider in riders:
            rider.attach(rider_hooks, modules)
        for batch in stream.batches:
            images, labels, indices = unpack_batch(batch, counter)
            size = int(labels.shape[0])
            counter += size
            check_labels(labels, len(options.classes))
            mask = images.get("attention_mask") if isinstance(images, Mapping) else None
            for rider in riders:
                rider.begin_batch(labels, indices, mask)
            if isinstance(images, Mapping):  # a text batch: SummitPass moves its tensors
                pass
            else:
                images = images.to(device, non_blocking=True)
                if options.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
            with autocast_context(options.precision, device):  # approximate unless fp32
                summit.update(images, labels, indices)
            bar.update(size)
            done, batches_done = done + size, batches_done + 1
            if stream.store is not None and batches_done % int(every or 1) == 0:
                stream.store.save(summit.state_dict(), rider_states(riders), done, batches_done)
        if stream.store is not None:
            state, ridden = summit.state_dict(), rider_states(riders)
            stream.store.save(state, ridden, done, batches_done, True)
        if rank.distributed:
            merged = _merge_ranks(summit, riders, new_pass, rank, device)
            if merged is None:
                log.info("rank %d: %d images aggregated, sent to rank 0", rank.rank, done)
                return None
            aggregates, riders = merged
        else:
            aggregates = summit.result()
    return PassResult(
        aggregates,
        {rider.name: rider for rider in riders},
        kinds,
        done,
        time.perf_counter() - start,
    )


def _merge_ranks(
    summit: SummitPass,
    riders: list[BatchRider],
    new_pass: Callable[[], SummitPass],
    rank: Rank,
    device: torch.device,
) -> tuple[SummitAggregates, list[BatchRider]] | None:
    """On rank 0, the aggregates and riders of every rank merged; else ``None``."""
    combined = combine_states(summit.state_dict(), rider_states(riders), rank, device)
    if combined is None:
        return None
    summit_states, rider_parts = combined
    with new_pass() as merged:
        for state in summit_states:
            merged.merge_state_dict(state)
        aggregates = merged.result()
    fresh = [rider.empty_copy() for rider in riders]
    for state in rider_parts:
        merge_rider_states(fresh, state)
    log.info("merged the aggregates of %d processes", rank.world_size)
    return aggregates, fresh


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far in MB (``None`` where unknown)."""
    try:
        import resource  # POSIX only: optional
    except ImportError:  # Windows
        return None
    peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)
