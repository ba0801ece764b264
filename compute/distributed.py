"""Builds across processes, GPUs and machines: ``torchrun ... -m compute build ...``.

Every process (rank) aggregates a contiguous shard of the dataset's indices (no padding,
no duplicates: every image counts exactly once), then the partial aggregates meet on
rank 0: dense integer counts by an all-reduce, the sparse influence counts, top-example
tables and Mapper samples gathered and merged with the exact merges of
:meth:`compute.summit.aggregate.SummitPass.merge_state_dict` and
:meth:`compute.topology.sample.ActivationSampler.merge_state_dict`. Rank 0 alone derives
the graphs, embedding and Mapper index and writes the atlas. NCCL on GPUs, gloo on CPU.

Contiguous shards keep a rank's images a range ``[start, stop)`` of dataset indices, so a
loader that yields no indices still gets the right ones (a running count from ``start``)
and a checkpoint only has to remember how far into its range a rank got.

Examples:
    >>> shard_range(10, rank=1, world_size=3)
    range(3, 6)
    >>> [len(shard_range(10, r, 3)) for r in range(3)]
    [3, 3, 4]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, SequentialSampler

from compute.errors import BuildError

log = logging.getLogger(__name__)

#: Entries of :meth:`SummitPass.state_dict` that are plain integer sums (all-reduced).
_DENSE_KEYS = ("images_seen", "num_images", "num_correct", "confidence_hist", "confusion")


@dataclass(frozen=True)
class Rank:
    """Where this process stands in the job.

    Attributes:
        rank: global rank, ``0 .. world_size - 1`` (0 writes the atlas).
        world_size: number of processes.
        local_rank: rank on this machine (picks the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes the atlas."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether several processes share the build."""
        return self.world_size > 1


def env_world_size(environ: Mapping[str, str] | None = None) -> int:
    """The ``WORLD_SIZE`` torchrun set (1 outside torchrun).

    Examples:
        >>> env_world_size({"WORLD_SIZE": "4"}), env_world_size({})
        (4, 1)
    """
    env = os.environ if environ is None else environ
    try:
        return max(1, int(env.get("WORLD_SIZE", "1")))
    except ValueError:
        raise BuildError(f"WORLD_SIZE={env.get('WORLD_SIZE')!r} is not an integer") from None


def current_rank() -> Rank:
    """This process's place in an initialised process group (rank 0 of 1 without one).

    Examples:
        >>> current_rank()
        Rank(rank=0, world_size=1, local_rank=0)
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return Rank()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return Rank(dist.get_rank(), dist.get_world_size(), local)


def init_from_env(device: str) -> tuple[Rank, str]:
    """Join the process group torchrun describes in the environment, if there is one.

    Uses NCCL when ``device`` is CUDA (each process takes GPU ``LOCAL_RANK``), gloo
    otherwise. Does nothing outside torchrun (``WORLD_SIZE`` unset or 1) or when a group
    is already initialised.

    Args:
        device: the ``--device`` asked for (``cpu``, ``cuda``, ``cuda:N``).

    Returns:
        ``(rank, device)``: this process's rank and the device it should use
        (``cuda:LOCAL_RANK`` for CUDA under torchrun).

    Examples:
        >>> init_from_env("cpu")
        (Rank(rank=0, world_size=1, local_rank=0), 'cpu')
    """
    import torch.distributed as dist

    if env_world_size() <= 1:
        return current_rank(), device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.device(device).type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise BuildError("--device cuda was asked for, but no CUDA device is available here")
        if local >= torch.cuda.device_count():
            raise BuildError(
                f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s) here: "
                "use --nproc-per-node at most the number of GPUs"
            )
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank = current_rank()
    log.info("rank %d of %d (%s, %s)", rank.rank, rank.world_size, dist.get_backend(), device)
    return rank, device


def shutdown() -> None:
    """Leave the process group if this process joined one (idempotent).

    Examples:
        >>> shutdown()
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_range(num_items: int, rank: int, world_size: int) -> range:
    """The contiguous block of indices ``rank`` aggregates (sizes differ by at most one).

    Args:
        num_items: dataset size.
        rank: this process's rank.
        world_size: number of processes.

    Returns:
        ``range(start, stop)``; the blocks of all ranks partition ``range(num_items)``.

    Examples:
        >>> [list(shard_range(5, r, 2)) for r in range(2)]
        [[0, 1], [2, 3, 4]]
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    return range(rank * num_items // world_size, (rank + 1) * num_items // world_size)


class RangeSampler(Sampler[int]):
    """Yields the dataset indices ``start .. stop - 1`` in order (a shard, or its rest).

    Args:
        start: first index.
        stop: one past the last index.

    Examples:
        >>> list(RangeSampler(3, 6))
        [3, 4, 5]
    """

    def __init__(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop:
            raise ValueError(f"bad range {start}..{stop}")
        self.start, self.stop = int(start), int(stop)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def loader_range(loader: Any) -> range | None:
    """The dataset indices a loader reads, in order, if it reads a contiguous range.

    ``None`` for anything else (shuffling, custom samplers, plain iterables).

    Examples:
        >>> loader_range(DataLoader(list(range(5)), batch_size=2))
        range(0, 5)
    """
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        return None
    sampler = loader.sampler
    if isinstance(sampler, RangeSampler):
        return range(sampler.start, sampler.stop)
    if isinstance(sampler, SequentialSampler):
        return range(len(sampler))
    return None


def reload_range(loader: DataLoader, start: int, stop: int) -> DataLoader:
    """The same loader (dataset, batch size, workers, collate) over indices ``start..stop-1``.

    Args:
        loader: a map-style :class:`DataLoader` with a batch size.
        start: first dataset index.
        stop: one past the last.

    Returns:
        A new loader reading that range in order.

    Examples:
        >>> [b.tolist() for b in reload_range(DataLoader(list(range(9)), batch_size=2), 5, 9)]
        [[5, 6], [7, 8]]
    """
    workers = int(loader.num_workers)
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=RangeSampler(start, stop),
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        prefetch_factor=loader.prefetch_factor if workers else None,
        persistent_workers=loader.persistent_workers if workers else False,
    )


def shard_loader(loader: Any, rank: Rank) -> tuple[Any, range | None]:
    """This rank's part of ``loader``: the same loader restricted to its shard.

    Args:
        loader: what :func:`compute.build.build_atlas` was given.
        rank: this process's rank.

    Returns:
        ``(loader, indices)``: the loader to iterate and the dataset indices it reads
        (``None`` when unknown, only possible outside a distributed job).

    Raises:
        BuildError: in a distributed job, for a loader that is not an in-order
            :class:`DataLoader` over an indexable dataset, or fewer images than processes.

    Examples:
        >>> shard_loader(DataLoader(list(range(4)), batch_size=2), Rank())[1]
        range(0, 4)
    """
    whole = loader_range(loader)
    if not rank.distributed:
        return loader, whole
    if whole is None:
        raise BuildError(
            "a distributed build needs a DataLoader with shuffle=False (or a "
            "compute.distributed.RangeSampler) over a map-style dataset: it shards it"
        )
    if len(whole) < rank.world_size:
        raise BuildError(
            f"{len(whole)} images for {rank.world_size} processes: use at most {len(whole)}"
        )
    shard = shard_range(len(whole), rank.rank, rank.world_size)
    part = range(whole.start + shard.start, whole.start + shard.stop)
    return reload_range(loader, part.start, part.stop), part


def _layer_count_keys(state: Mapping[str, Tensor]) -> list[str]:
    return sorted(k for k in state if k.startswith("layer.") and k.endswith(".counts"))


def dense_keys(state: Mapping[str, Tensor]) -> list[str]:
    """The entries of a Summit state that are integer sums (all-reduced, not gathered).

    Examples:
        >>> dense_keys({"num_images": torch.zeros(2), "layer.0.counts": torch.zeros(2),
        ...             "influence.1.counts": torch.zeros(1)})
        ['num_images', 'layer.0.counts']
    """
    present = [k for k in _DENSE_KEYS if k in state]
    return present + _layer_count_keys(state)


def all_reduce_sum(tensors: list[Tensor], device: torch.device) -> list[Tensor]:
    """Sum integer tensors over all ranks (exact); returns CPU tensors, every rank.

    Args:
        tensors: same shapes and dtypes on every rank.
        device: where the collective runs (the rank's GPU for NCCL, CPU for gloo).

    Returns:
        The sums, on the CPU.
    """
    import torch.distributed as dist

    out = []
    for tensor in tensors:
        if tensor.is_floating_point():
            raise TypeError("all_reduce_sum is for integer counts only (exactness)")
        work = tensor.to(device).clone()
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
        out.append(work.cpu())
    return out


def gather_to_main(obj: Any, rank: Rank) -> list[Any] | None:
    """Every rank's ``obj`` (picklable), in rank order, on rank 0; ``None`` elsewhere."""
    import torch.distributed as dist

    gathered: list[Any] | None = [None] * rank.world_size if rank.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def combine_states(
    summit_state: dict[str, Tensor],
    rider_state: dict[str, Tensor] | None,
    rank: Rank,
    device: torch.device,
) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]] | None:
    """Bring every rank's partial aggregates to rank 0, ready to merge.

    Dense counts (:func:`dense_keys`) are summed by an integer all-reduce; everything else
    (influence keys and counts, top-example tables, the riders' states such as the Mapper
    sample) is gathered.

    Args:
        summit_state: this rank's :meth:`SummitPass.state_dict`.
        rider_state: this rank's riders' states (:func:`compute.capture.rider_states`), or
            ``None``.
        rank: this process's rank.
        device: where collectives run.

    Returns:
        On rank 0, ``(summit_states, rider_states)``: merging all of them into fresh
        objects gives the aggregates of one pass over every image (the first Summit state
        carries the summed dense counts, the others zeros). ``None`` on other ranks.
    """
    keys = dense_keys(summit_state)
    sums = all_reduce_sum([summit_state[k] for k in keys], device)
    sparse = {k: v for k, v in summit_state.items() if k not in keys}
    gathered = gather_to_main((sparse, rider_state), rank)
    if gathered is None:
        return None
    states: list[dict[str, Tensor]] = []
    for i, (part, _) in enumerate(gathered):
        dense = sums if i == 0 else [torch.zeros_like(s) for s in sums]
        states.append({**part, **dict(zip(keys, dense, strict=True))})
    riders = [s for _, s in gathered if s is not None]
    return states, riders
