"""Per-image channel statistics and channel selection (Summit's activation aggregation).

All functions work on a whole batch at once, on the tensors' device.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

#: Intra-op CPU threads for the per-batch statistics here and in
#: :class:`~compute.summit.examples.RunningTopExamples` (``None``: whatever torch uses).
#: They are many small ops on ``[B, C]`` tensors; with 2 threads on a shared, loaded
#: 2-core machine each op waits for the slower thread (measured: the non-influence part
#: of the demo pass took ~3× the CPU time of the same work on one thread).
STATISTICS_THREADS: int | None = 1


@contextmanager
def intra_op_threads(limit: int | None) -> Iterator[None]:
    """Cap ``torch``'s intra-op threads at ``limit`` inside the block, then restore them.

    The setting is process-wide, so other Python threads running torch ops meanwhile are
    capped too (the Summit pass runs its hooks in the calling thread).
    """
    previous = torch.get_num_threads()
    if limit is None or previous <= limit:
        yield
        return
    torch.set_num_threads(limit)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def spatial_max(z: Tensor) -> tuple[Tensor, Tensor]:
    """Spatial maximum of every channel and where it is.

    Args:
        z: ``[B, C, H, W]`` layer output.

    Returns:
        ``(values, flat_position)``: ``[B, C]`` maxima (dtype of ``z``) and ``int64 [B, C]``
        index ``row * W + col`` of the first maximum in row-major order.
    """
    with intra_op_threads(_cap(z)):  # one reduction per layer and batch: see STATISTICS_THREADS
        values, positions = z.flatten(2).max(dim=2)
    return values, positions


def spatial_max_above(z: Tensor, floor: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`spatial_max`, with positions only where a maximum is not below ``floor``.

    The maxima come from one ``amax`` (several times faster than ``max`` with indices);
    the first position of the maximum is then found only for the maps whose maximum is not
    below their channel's ``floor`` (e.g. the value a table of top examples already
    holds: no other map can enter it). NaN maxima count as not below. Elsewhere the
    position is 0. Runs on torch's threads: one reduction over the whole layer.

    Args:
        z: ``[B, C, H, W]`` layer output.
        floor: ``[C]`` per channel; compared in ``floor``'s dtype (the maxima are cast to
            it first, so ties after rounding count as not below).

    Returns:
        ``(values, flat_position)`` as :func:`spatial_max`, positions where needed.
    """
    values = z.amax(dim=(2, 3))
    needed = ~(values.to(floor.dtype) < floor)
    positions = torch.zeros(values.shape, dtype=torch.int64, device=z.device)
    b, c = needed.nonzero(as_tuple=True)
    if b.numel():
        # argmax returns the first maximal index in row-major order, like max(dim).
        positions[b, c] = z[b, c].flatten(1).argmax(dim=1)
    return values, positions


def topk_mask(values: Tensor, k: int, *, positive_only: bool = True) -> Tensor:
    """Mark the ``k`` largest entries of each row, ties broken by the lowest index.

    ``torch.topk`` gives the k-th value; every entry strictly above it is kept and the
    remaining places go to entries equal to it, lowest index first. This is exact and
    deterministic whatever ``torch.topk`` does with ties.

    Args:
        values: ``[..., N]`` scores (NaN is never selected).
        k: how many to keep per row (``k >= N`` keeps all, subject to ``positive_only``).
        positive_only: also require ``value > 0``.

    Returns:
        ``bool [..., N]`` mask with at most ``k`` true entries per row.
    """
    n = values.shape[-1]
    if n == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    k = min(k, n)
    # NaN must never win: rank it below everything.
    clean = torch.nan_to_num(values, nan=-torch.inf)
    if positive_only and k <= _ITERATIVE_K:
        return _topk_mask_iterative(clean, k)
    kth = torch.topk(clean, k, dim=-1).values[..., -1:]
    above = clean > kth
    tied = clean == kth
    room = k - above.sum(dim=-1, keepdim=True)
    take_tied = tied & (torch.cumsum(tied, dim=-1) <= room)
    mask = (above | take_tied) & ~torch.isnan(values)
    if positive_only:
        mask &= clean > 0
    return mask


#: Up to this k, k rounds of argmax beat ``torch.topk`` on CPU (short rows, many of them).
_ITERATIVE_K = 16


def _topk_mask_iterative(clean: Tensor, k: int) -> Tensor:
    """``k`` rounds of "take the first maximum, then remove it"; only positive entries.

    ``argmax`` returns the first maximal index, which is exactly the lowest-index tie-break.
    Entries already taken are set to ``-inf``, which is never positive, so picking one of
    them again in a later round (a row with fewer than ``k`` finite entries) changes nothing.
    """
    work = clean.clone()
    mask = torch.zeros_like(clean, dtype=torch.bool)
    for _ in range(k):
        index = work.argmax(dim=-1, keepdim=True)
        mask.scatter_(-1, index, True)
        work.scatter_(-1, index, -torch.inf)
    return mask & (clean > 0)


def select_mass(a: Tensor, tau: float) -> Tensor:
    """Summit's probability-mass selection of channels, per image.

    Channels are sorted by ``a`` descending (ties: lowest channel first); the selected set
    is the shortest prefix whose share ``cumsum(sorted a) / total`` reaches ``tau``, where
    ``total`` is the last cumulative sum. Arithmetic is float64 and the cumulative sum is
    sequential, so the result does not depend on the batch. At least one channel is
    selected unless ``total <= 0``, in which case none is.

    Args:
        a: ``[B, C]`` per-image channel statistics (spatial maxima).
        tau: mass threshold in ``(0, 1]``.

    Returns:
        ``bool [B, C]`` selection mask.
    """
    with intra_op_threads(_cap(a)):
        return _select_mass(a, tau)


def _cap(t: Tensor) -> int | None:
    return STATISTICS_THREADS if t.device.type == "cpu" else None


def _select_mass(a: Tensor, tau: float) -> Tensor:
    b, c = a.shape
    if c == 0:
        return torch.zeros_like(a, dtype=torch.bool)
    values, order = torch.sort(a.double(), dim=1, descending=True, stable=True)
    cumulative = torch.cumsum(values, dim=1)
    total = cumulative[:, -1:]
    share = cumulative / total
    reached = share >= tau
    # First prefix length that reaches tau (the full prefix always does unless total <= 0).
    first = torch.argmax(reached.to(torch.uint8), dim=1, keepdim=True)
    rank = torch.arange(c, device=a.device).expand(b, c)
    take_sorted = (rank <= first) & (total > 0)
    mask = torch.zeros((b, c), dtype=torch.bool, device=a.device)
    mask.scatter_(1, order, take_sorted)
    return mask


def select_topk(a: Tensor, k: int) -> Tensor:
    """The ``k`` largest channels per image (ties: lowest index), only those with ``a > 0``.

    Args:
        a: ``[B, C]`` per-image channel statistics.
        k: channels per image.

    Returns:
        ``bool [B, C]`` selection mask.
    """
    with intra_op_threads(_cap(a)):
        return topk_mask(a, k, positive_only=True)
