"""Distance kernels of the index build: k-NN sample and lens-band radius graph.

numpy (float32 GEMMs of augmented rows, row-block selection, thread pool) and, given a
``device``, torch (imported lazily inside the functions that need it, so that importing
this module never imports torch). :class:`~compute.topology.index.MapperIndex` builds
with :func:`augmented`, :func:`knn_sample` and :func:`radius_graph`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from compute.topology.params import Metric

#: Sorted rows per distance block of the index build. A block computes its rows against
#: every point up to its last row's band end, so smaller blocks waste fewer pairs (the
#: triangle beyond each row's own band); below ~256 the GEMM loses efficiency.
ROW_BLOCK = 256
#: float32 elements of one distance block at most (wide bands get fewer rows per block).
BLOCK_BUDGET = 1 << 23
#: float32 elements of earlier blocks kept for the earlier-side selection (beyond this,
#: those pieces are recomputed by GEMM: bounded memory for very wide bands).
RETAIN_BUDGET = 1 << 25
#: Sorted rows per block, and float32 elements per block side at most, of the torch
#: device path (``MapperIndex.build(device=...)``): a GPU wants large GEMMs, and every
#: pair outside a row's candidates is masked, so the graph does not depend on them.
DEVICE_ROW_BLOCK = 4096
DEVICE_BLOCK_BUDGET = 1 << 26
#: Largest k of the k-NN distances kept for ε rules (min_samples up to KNN_K + 1).
KNN_K = 8


def augmented(x: np.ndarray, order: np.ndarray, metric: Metric) -> np.ndarray:
    """float32 ``[n, D + 2]`` lens-sorted points with two extra columns for one-GEMM distances.

    Row ``j`` is ``[x_j, |x_j|², 1]`` (Euclidean) or ``[x̂_j, 1, 0]`` (cosine, unit rows), so
    that ``_query_rows(P[i]) · P[j]`` is ``|x_i - x_j|²`` or ``1 - cos``: the GEMM itself
    produces the (squared) distance, with no elementwise passes over the block.
    """
    n, dim = x.shape
    p = np.empty((n, dim + 2), dtype=np.float32)
    chunk = max(1, (1 << 22) // max(dim, 1))  # bounded temporaries (no second n x D copy)
    for a in range(0, n, chunk):
        rows = x[order[a : a + chunk]]
        if metric == "cosine":
            norm = np.linalg.norm(rows, axis=1, keepdims=True)
            rows = rows / np.where(norm > 0, norm, 1.0)
        p[a : a + chunk, :dim] = rows
        if metric == "cosine":
            p[a : a + chunk, dim] = 1.0
            p[a : a + chunk, dim + 1] = 0.0
        else:
            p[a : a + chunk, dim] = np.einsum("ij,ij->i", rows, rows)
            p[a : a + chunk, dim + 1] = 1.0
    return p


def _query_rows(p: np.ndarray, metric: Metric) -> np.ndarray:
    """The GEMM's left operand for augmented rows ``p`` (see :func:`augmented`)."""
    dim = p.shape[1] - 2
    q = np.empty_like(p)
    if metric == "cosine":
        np.multiply(p[:, :dim], -1.0, out=q[:, :dim])
        q[:, dim] = 1.0
        q[:, dim + 1] = 0.0
    else:
        np.multiply(p[:, :dim], -2.0, out=q[:, :dim])
        q[:, dim] = 1.0
        q[:, dim + 1] = p[:, dim]
    return q


def _to_distance(values: np.ndarray, metric: Metric) -> np.ndarray:
    """Distances (float32) from GEMM values: ``sqrt`` of squared Euclidean, cosine as is."""
    values = np.maximum(values, np.float32(0.0))  # rounding can make them slightly negative
    return np.sqrt(values, out=values) if metric == "euclidean" else values


def _value_threshold(radius: float, metric: Metric) -> np.float32:
    """Largest GEMM value whose distance (:func:`_to_distance`) is ``<= float32(radius)``.

    Selection and the radius test run on the GEMM values (squared Euclidean distances); this
    bound makes them agree exactly with a test on the stored float32 distances.
    """
    r32 = np.float32(radius)
    if metric == "cosine":
        return r32
    big = np.finfo(np.float32).max
    t = np.float32(min(float(r32) ** 2, float(big)))
    up, down = np.float32(np.inf), np.float32(-np.inf)
    while t > 0 and np.sqrt(t) > r32:
        t = np.nextafter(t, down)
    while t < big and np.sqrt(np.nextafter(t, up)) <= r32:
        t = np.nextafter(t, up)
    return np.float32(t)


def knn_sample(
    p: np.ndarray, metric: Metric, queries: int, seed: int, device: str | None = None
) -> np.ndarray:
    """float32 ``[q, KNN_K]`` exact k-NN distances of ``q`` random points among all points.

    Args:
        p: ``[n, D + 2]`` augmented sorted points (:func:`augmented`).
        metric: ``"euclidean"`` or ``"cosine"``.
        queries: points sampled.
        seed: seed of the sample.
        device: torch device for the GEMMs and the selection (``None``: numpy).

    Returns:
        Distances sorted per row; ``inf`` beyond ``n - 1`` neighbours.
    """
    n = len(p)
    q = min(n, queries)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, size=q, replace=False))
    k = min(KNN_K, n - 1)
    out = np.full((q, KNN_K), np.inf, dtype=np.float32)
    # The GEMM proposes candidates (a margin beyond k absorbs its rounding); their distances
    # are then computed directly in float64. The GEMM's |x|² + |y|² - 2x·y cancels
    # catastrophically for near neighbours: duplicate vectors came out as 0 on one CPU and
    # ~1e-3 on another, and since zero distances are left out of the ε rule, "auto" ε
    # moved by 10% between machines (another default graph than the atlas's inversions).
    c = min(n - 1, 2 * k + 8)
    if device is not None:
        candidates = _knn_candidates_torch(p, metric, pick, c, device)
        out[:, :k] = _direct_distances(p, metric, pick, candidates)[:, :k]
        return out
    chunk = max(1, (1 << 24) // n)
    for a in range(0, q, chunk):
        idx = pick[a : a + chunk]
        d = _query_rows(p[idx], metric) @ p.T
        d[np.arange(len(idx)), idx] = np.inf  # not its own neighbour
        candidates = np.argpartition(d, c - 1, axis=1)[:, :c] if c < n else np.argsort(d, axis=1)
        out[a : a + len(idx), :k] = _direct_distances(p, metric, idx, candidates[:, :c])[:, :k]
    return out


def _direct_distances(
    p: np.ndarray, metric: Metric, rows: np.ndarray, candidates: np.ndarray
) -> np.ndarray:
    """float32 ``[len(rows), c]`` distances from each row to its candidates, sorted per row,
    computed as differences in float64 (no cancellation: equal vectors are exactly 0).

    Args:
        p: ``[n, D + 2]`` augmented sorted points (:func:`augmented`).
        metric: ``"euclidean"`` (L2) or ``"cosine"`` (``1 - cos``, as ``|x̂ - ŷ|² / 2``).
        rows: positions of the query points.
        candidates: int ``[len(rows), c]`` positions of their candidate neighbours.
    """
    dim = p.shape[1] - 2
    x = p[:, :dim].astype(np.float64)
    diff = x[candidates] - x[rows][:, None, :]
    squared = np.einsum("qcd,qcd->qc", diff, diff)
    d = np.sqrt(squared) if metric == "euclidean" else 0.5 * squared
    return np.sort(d, axis=1).astype(np.float32)


def _select(
    values: np.ndarray, cap: int, threshold: np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the ``cap`` smallest entries ``<= threshold`` (all of them if ``cap == 0``).

    Ties at the cap go to the lowest column. Invalid pairs must be ``+inf``.

    Args:
        values: float32 ``[b, w]`` C-contiguous GEMM values of one block side.
        cap: entries kept per row (0 = no cap).
        threshold: from :func:`_value_threshold`.

    Returns:
        ``(rows, cols, values, over)``: the kept entries sorted by row then column, and a
        boolean ``[b]``: more than ``cap`` entries were within the threshold (some dropped).
    """
    b, w = values.shape
    if cap <= 0 or w <= cap:
        flat = np.flatnonzero(values <= threshold)  # faster than a 2-D nonzero
        r, c = np.divmod(flat, w)
        return r, c, values.reshape(-1)[flat], np.zeros(b, dtype=bool)
    # One introselect of the values (kth = cap; ~2x cheaper than argpartition) gives the
    # cap-th smallest (the largest of the first cap) and the (cap+1)-th (at `cap`): it says
    # whether entries were dropped and whether a tie straddles the cap. The kept entries
    # are then found by one comparison and flatnonzero, already sorted by row and column.
    part = np.partition(values, cap, axis=1)
    kth = part[:, :cap].max(axis=1)
    following = part[:, cap]
    over = following <= threshold
    limit = np.minimum(kth, threshold)
    flat = np.flatnonzero(values <= limit[:, None])
    rows, cols = np.divmod(flat, w)
    kept = values.reshape(-1)[flat]
    # Ties at the cap (kth == following, both within the threshold): more than cap entries
    # equal or below kth; keep the lowest columns among those equal to kth (rare).
    tied = np.flatnonzero((kth == following) & over)
    if len(tied):
        keep = np.ones(len(flat), dtype=bool)
        starts = np.searchsorted(rows, tied, side="left")
        stops = np.searchsorted(rows, tied, side="right")
        for r, a, z in zip(tied.tolist(), starts.tolist(), stops.tolist(), strict=True):
            equal = np.flatnonzero(kept[a:z] == kth[r])
            extra = (z - a) - cap  # entries beyond the cap, all equal to kth
            keep[a + equal[len(equal) - extra :]] = False
        rows, cols, kept = rows[keep], cols[keep], kept[keep]
    return rows, cols, kept, over


@dataclass
class BuildClock:
    """Seconds spent in each step of the index build (the benchmark prints them)."""

    steps: dict[str, float] = field(default_factory=dict)

    def add(self, step: str, since: float) -> float:
        """Add the time since ``since`` to ``step``; returns now."""
        now = time.perf_counter()
        self.steps[step] = self.steps.get(step, 0.0) + now - since
        return now

    def merge(self, steps: dict[str, float]) -> None:
        """Add another clock's seconds by step (a build thread's)."""
        for step, seconds in steps.items():
            self.steps[step] = self.steps.get(step, 0.0) + seconds


def _block_later(
    p: np.ndarray, ends: np.ndarray, s: int, e: int, metric: Metric, cap: int, threshold: np.float32
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, dict]:
    """Distances of rows ``s..e`` to the points after them, and their later-side selection.

    Returns:
        ``(query rows, values [e-s, ends[e-1]-s] with invalid pairs +inf, (rows, cols,
        values) kept, over [e-s], seconds by step)``.
    """
    clock = BuildClock()
    t = time.perf_counter()
    b, c1 = e - s, int(ends[e - 1])
    q = _query_rows(p[s:e], metric)
    d = q @ p[s:c1].T
    t = clock.add("gemm", t)
    # Valid columns are i < j < ends[i]; the rest of the rectangle is +inf.
    d[:, :b][np.tri(b, dtype=bool)] = np.inf
    e0 = int(ends[s])
    if c1 > e0:
        d[:, e0 - s :][np.arange(e0, c1)[None, :] >= ends[s:e, None]] = np.inf
    t = clock.add("mask", t)
    r, c, v, over = _select(d, cap, threshold)
    clock.add("select", t)
    # int32 positions: the kept lists are the build's largest arrays after the data.
    return q, d, ((r + s).astype(np.int32), (c + s).astype(np.int32), v), over, clock.steps


def _block_earlier(
    p: np.ndarray,
    ends: np.ndarray,
    s: int,
    e: int,
    q: np.ndarray,
    window: list[tuple[int, int, np.ndarray | None]],
    cap: int,
    threshold: np.float32,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, dict]:
    """Earlier-side selection of rows ``s..e`` (points ``i < j`` with ``j < ends[i]``).

    Args:
        window: ``(s_m, e_m, values_m)`` of the blocks holding those points, this block
            last; ``values_m`` ``None`` if not retained (then recomputed by GEMM).

    Returns:
        ``((rows, cols, values) kept, over [e-s], seconds by step)``.
    """
    clock = BuildClock()
    t = time.perf_counter()
    b = e - s
    lo = int(np.searchsorted(ends, s, side="right"))
    early = np.empty((b, e - lo), dtype=np.float32)
    for sm, em, dm in window:
        r0 = max(lo, sm)
        cols = slice(r0 - lo, em - lo)
        if dm is None:  # not retained: recompute this piece, already in row form
            t = clock.add("assemble", t)
            piece = q @ p[r0:em].T
            t = clock.add("gemm", t)
            piece[ends[r0:em][None, :] <= np.arange(s, e)[:, None]] = np.inf
            early[:, cols] = piece
            continue
        stop = min(e, sm + dm.shape[1])  # this block's values reach column `stop`
        if stop > s:
            early[: stop - s, cols] = dm[r0 - sm :, s - sm : stop - sm].T
        early[max(stop - s, 0) :, cols] = np.inf
    t = clock.add("assemble", t)
    r, c, v, over = _select(early, cap, threshold)
    clock.add("select", t)
    return ((r + s).astype(np.int32), (c + lo).astype(np.int32), v), over, clock.steps


class _Inline:
    """A serial stand-in for ``ThreadPoolExecutor`` (one build thread)."""

    def submit(self, fn: Callable[..., object], *args: object) -> Future:
        """Run ``fn(*args)`` now; a finished future."""
        done: Future = Future()
        done.set_result(fn(*args))
        return done


def _blocks(
    ends: np.ndarray, row_block: int = ROW_BLOCK, budget: int = BLOCK_BUDGET
) -> list[tuple[int, int]]:
    """Row blocks ``(s, e)``: ``row_block`` rows, fewer where the band is very wide.

    Both a block's later side (columns up to ``ends[e-1]``) and its earlier side (columns
    from the first point whose band reaches ``s``) stay within ``budget`` elements.
    """
    n = len(ends)
    out = []
    s = 0
    while s < n:
        block = row_block
        lo = int(np.searchsorted(ends, s, side="right"))
        while True:
            e = min(n, s + block)
            width = max(int(ends[e - 1]) - s, e - lo)
            if block <= 16 or (e - s) * width <= budget:
                break
            block //= 2
        out.append((s, e))
        s = e
    return out


def radius_graph(
    p: np.ndarray,
    ends: np.ndarray,
    radius: float,
    metric: Metric,
    cap: int,
    threads: int = 1,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, dict[str, float]]:
    """Symmetric radius graph of lens-sorted points; candidate pairs ``i < j < ends[i]``.

    Row blocks of ``ROW_BLOCK`` sorted points are compared, by one float32 GEMM each, with
    the points after them up to the last row's band end, so every pair is computed once
    and the cost is about the number of pairs in the band. Pairs outside ``i < j <
    ends[i]`` are set to ``+inf``, so the result does not depend on the block size.

    Each point keeps its ``cap`` nearest within ``radius`` among its later candidates (its
    row of the block) and among its earlier ones (its column in the blocks before). The
    earlier side of a block's points is assembled from those blocks (kept while they can
    still be needed, within ``RETAIN_BUDGET``; recomputed by GEMM otherwise), transposed
    into rows, so both sides are one row-wise selection each: no running merges. Ties go
    to the lowest position. The stored graph is the union of both directions, symmetric.

    With ``threads > 1`` blocks run in a thread pool with one BLAS thread each (numpy
    releases the GIL in GEMM and selection); results are collected in block order, so the
    graph is the same as with one thread.

    Args:
        p: ``[n, D + 2]`` augmented sorted points (:func:`augmented`).
        ends: int64 ``[n]`` exclusive band end of each point (non-decreasing, ``> i``).
        radius: largest stored distance.
        metric: ``"euclidean"`` or ``"cosine"``.
        cap: per side neighbour cap (0 = none).
        threads: build threads (numpy path only).
        device: torch device: the blocks run there (:func:`_device_blocks`); ``None``: numpy.

    Returns:
        ``(indptr int64 [n+1], indices int32 [nnz], distances float32 [nnz], truncated,
        seconds by step)``; ``truncated`` = points with more than ``cap`` candidates within
        ``radius`` on a side (the other side's list may still hold the dropped pairs).
    """
    n = len(p)
    threshold = _value_threshold(radius, metric)
    if device is not None:
        start = time.perf_counter()
        later, earlier_kept, over = _device_blocks(p, ends, metric, cap, threshold, device)
        clock = BuildClock()
        t = clock.add("blocks (device)", start)
        indptr, indices, dist = _symmetric(later, earlier_kept, n, metric)
        clock.add("symmetrise", t)
        return indptr, indices, dist, int(over.sum()), clock.steps
    blocks = _blocks(ends)
    clock = BuildClock()
    later: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    earlier: list[Future] = []
    over = np.zeros(n, dtype=bool)
    window: list[tuple[int, int, np.ndarray | None]] = []
    retained = 0
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        # One BLAS thread per GEMM whatever the number of build threads: OpenBLAS rounds
        # some block shapes differently with two threads, and near-ties at the cap would
        # then make the graph depend on the thread count.
        stack.enter_context(_one_blas_thread())
        pool: ThreadPoolExecutor | _Inline = _Inline()
        if threads > 1 and len(blocks) > 1:
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=threads))
        in_flight: dict[int, Future] = {}
        for k, (s, e) in enumerate(blocks):
            for ahead in range(k, min(len(blocks), k + threads + 1)):
                if ahead not in in_flight:
                    in_flight[ahead] = pool.submit(
                        _block_later, p, ends, *blocks[ahead], metric, cap, threshold
                    )
            q, d, kept, o, steps = in_flight.pop(k).result()
            later.append(kept)
            over[s:e] |= o
            clock.merge(steps)
            lo = int(np.searchsorted(ends, s, side="right"))
            still = [w for w in window if w[1] > lo]
            retained -= sum(w[2].size for w in window if w[1] <= lo and w[2] is not None)
            window = still
            earlier.append(
                pool.submit(_block_earlier, p, ends, s, e, q, [*window, (s, e, d)], cap, threshold)
            )
            keep = retained + d.size <= RETAIN_BUDGET
            window.append((s, e, d if keep else None))
            retained += d.size if keep else 0
        earlier_kept = []
        for (s, e), future in zip(blocks, earlier, strict=True):
            kept, o, steps = future.result()
            earlier_kept.append(kept)
            over[s:e] |= o
            clock.merge(steps)
    t = clock.add("blocks (wall)", start)
    indptr, indices, dist = _symmetric(later, earlier_kept, n, metric)
    clock.add("symmetrise", t)
    return indptr, indices, dist, int(over.sum()), clock.steps


@contextlib.contextmanager
def _full_fp32(torch: Any) -> Iterator[None]:
    """fp32 matmuls without TF32 (10-bit mantissa) inside; the setting is restored after.

    Args:
        torch: the torch module (imported lazily by the caller).
    """
    matmul = torch.backends.cuda.matmul
    previous = matmul.allow_tf32
    matmul.allow_tf32 = False
    try:
        yield
    finally:
        matmul.allow_tf32 = previous


def _query_rows_torch(pt: Any, metric: Metric) -> Any:
    """:func:`_query_rows` computed on the device (one upload instead of two).

    The scalings by -2 and -1 are exact, so the rows equal the numpy path's bit for bit.

    Args:
        pt: float32 ``[n, D + 2]`` augmented points on the device.
        metric: ``"euclidean"`` or ``"cosine"``.

    Returns:
        The GEMM's left operand, same shape and device.
    """
    dim = pt.shape[1] - 2
    qt = pt.clone()
    qt[:, :dim] *= -1.0 if metric == "cosine" else -2.0
    qt[:, dim] = 1.0
    qt[:, dim + 1] = 0.0 if metric == "cosine" else pt[:, dim]
    return qt


def _knn_candidates_torch(
    p: np.ndarray, metric: Metric, pick: np.ndarray, k: int, device: str
) -> np.ndarray:
    """int64 ``[len(pick), k]`` positions of the ``k`` smallest GEMM values of ``pick``'s rows,
    on ``device`` (the caller computes their distances exactly).

    The query point itself is excluded.

    Args:
        p: ``[n, D + 2]`` augmented sorted points.
        metric: ``"euclidean"`` or ``"cosine"``.
        pick: sampled positions (ascending).
        k: neighbours per query (``<= n - 1``).
        device: torch device.

    Returns:
        int64 ``[len(pick), k]``.
    """
    import torch

    dev = torch.device(device)
    n = len(p)
    out = np.empty((len(pick), k), dtype=np.int64)
    chunk = max(1, (1 << 26) // n)
    with _full_fp32(torch), torch.no_grad():
        pt = torch.from_numpy(p).to(dev)
        for a in range(0, len(pick), chunk):
            idx = pick[a : a + chunk]
            q = torch.from_numpy(_query_rows(p[idx], metric)).to(dev)
            d = q @ pt.T
            d[torch.arange(len(idx), device=dev), torch.from_numpy(idx).to(dev)] = torch.inf
            out[a : a + len(idx)] = torch.topk(d, k, dim=1, largest=False).indices.cpu().numpy()
    return out


def _select_torch(
    torch: Any, values: Any, cap: int, threshold: np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_select` on a torch tensor: same entries, same tie rule (lowest column).

    A cap selection runs ``topk`` on an int64 key ``(order-preserving int32 of the float32
    value) << 32 | column``: keys are distinct, so the kept set is unique and ties at the
    cap go to the lowest column, as on the numpy path.

    Args:
        torch: the torch module.
        values: float32 ``[b, w]`` tensor, invalid pairs ``+inf``.
        cap: entries kept per row (0 = no cap).
        threshold: from :func:`_value_threshold`.

    Returns:
        ``(rows, cols, values, over)`` as numpy arrays, kept entries sorted by row then column.
    """
    b, w = values.shape
    dev = values.device
    within = values <= float(threshold)
    if cap <= 0 or w <= cap:
        rows, cols = within.nonzero(as_tuple=True)  # row-major: sorted by row, then column
        kept = values[rows, cols]
        over = np.zeros(b, dtype=bool)
    else:
        over = (within.sum(dim=1) > cap).cpu().numpy()
        # +0.0 for -0.0 (equal values must give equal keys); then the float32 bits, with
        # the magnitude bits of negatives flipped, order as the values do.
        bits = (values + 0.0).view(torch.int32)
        key = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(torch.int64) << 32
        key |= torch.arange(w, device=dev, dtype=torch.int64)
        pos = torch.topk(key, cap, dim=1, largest=False, sorted=False).indices
        del key, bits
        picked = values.gather(1, pos)
        # Kept columns ascending within each row; dropped ones (beyond the threshold) last.
        pos = torch.where(picked <= float(threshold), pos, w)
        pos = torch.sort(pos, dim=1).values
        rows, slot = (pos < w).nonzero(as_tuple=True)
        cols = pos[rows, slot]
        kept = values[rows, cols]
    return (
        rows.to(torch.int32).cpu().numpy(),
        cols.to(torch.int32).cpu().numpy(),
        kept.cpu().numpy(),
        over,
    )


def _device_blocks(
    p: np.ndarray, ends: np.ndarray, metric: Metric, cap: int, threshold: np.float32, device: str
) -> tuple[list, list, np.ndarray]:
    """Both sides' selections of every row block, computed with torch on ``device``.

    Per block of rows ``s..e``: the later side is ``Q[s:e] @ P[s:c1].T`` (columns ``j``,
    valid for ``i < j < ends[i]``), the earlier side ``P[s:e] @ Q[lo:e].T`` (columns ``i``,
    valid for ``i < j < ends[i]``): the same products ``q_i · p_j`` as the later side, so a
    pair's value is the same in both lists up to the GEMM's summation order. Each pair is
    computed twice (no retained blocks to transpose), which a GPU affords. Only the kept
    ``(row, column, value)`` triples leave the device.

    Args:
        p: ``[n, D + 2]`` augmented sorted points.
        ends: int64 ``[n]`` exclusive band ends.
        metric: ``"euclidean"`` or ``"cosine"``.
        cap: per side neighbour cap (0 = none).
        threshold: from :func:`_value_threshold`.
        device: torch device.

    Returns:
        ``(later, earlier, over)``: per block ``(rows, cols, values)`` (global int32
        positions, sorted by row then column) of each side, and bool ``[n]`` capped points.
    """
    import torch

    dev = torch.device(device)
    n = len(p)
    over = np.zeros(n, dtype=bool)
    later: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    earlier: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with _full_fp32(torch), torch.no_grad():
        pt = torch.from_numpy(p).to(dev)
        qt = _query_rows_torch(pt, metric)
        ends_t = torch.from_numpy(np.ascontiguousarray(ends, dtype=np.int64)).to(dev)
        for s, e in _blocks(ends, DEVICE_ROW_BLOCK, DEVICE_BLOCK_BUDGET):
            c1 = int(ends[e - 1])
            lo = int(np.searchsorted(ends, s, side="right"))
            rows = torch.arange(s, e, device=dev)[:, None]
            # Later side: row i, column j in s..c1; valid i < j < ends[i].
            d = qt[s:e] @ pt[s:c1].T
            cols = torch.arange(s, c1, device=dev)[None, :]
            d.masked_fill_((cols <= rows) | (cols >= ends_t[s:e, None]), torch.inf)
            r, c, v, o = _select_torch(torch, d, cap, threshold)
            later.append((r + s, c + s, v))
            over[s:e] |= o
            # Earlier side: row j, column i in lo..e; valid i < j < ends[i].
            d = pt[s:e] @ qt[lo:e].T
            cols = torch.arange(lo, e, device=dev)[None, :]
            d.masked_fill_((cols >= rows) | (ends_t[lo:e][None, :] <= rows), torch.inf)
            r, c, v, o = _select_torch(torch, d, cap, threshold)
            earlier.append((r + s, c + lo, v))
            over[s:e] |= o
            del d
    return later, earlier, over


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """One BLAS thread while the build's own threads run (no oversubscription)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn's dependency; without it BLAS keeps its threads
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _symmetric(
    later: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    earlier: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    n: int,
    metric: Metric,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union of the directed neighbour lists, symmetrised, as a CSR sorted within rows.

    Both lists arrive sorted by row then column with no duplicates (canonical CSR), so
    scipy's transposes and element-wise maximum / sum are linear merges, no sort. The CSR
    data are 1-based positions into the concatenated values (exact through the merges,
    zero distances included); a pair in both lists has the same value in each.
    """
    rows_l, cols_l, vals_l = (np.concatenate(a) for a in zip(*later, strict=True))
    rows_e, cols_e, vals_e = (np.concatenate(a) for a in zip(*earlier, strict=True))
    values = np.concatenate([vals_l, vals_e])

    # int32 positions and indices where they fit: scipy keeps them through the merges, and
    # the transposes (the step's largest cost) move half the bytes of int64.
    small = 2 * len(values) < np.iinfo(np.int32).max and n < np.iinfo(np.int32).max
    index = np.int32 if small else np.int64

    def canonical(rows: np.ndarray, cols: np.ndarray, first: int) -> sp.csr_array:
        indptr = np.zeros(n + 1, dtype=index)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        data = np.arange(first, first + len(rows), dtype=index)
        out = sp.csr_array((data, cols.astype(index), indptr), shape=(n, n), copy=False)
        out.has_canonical_format = True
        return out

    upper = canonical(rows_l, cols_l, 1).maximum(
        canonical(rows_e, cols_e, 1 + len(rows_l)).T.tocsr()
    )
    both = (upper + upper.T.tocsr()).tocsr()
    dist = _to_distance(values[both.data - 1], metric)
    return both.indptr.astype(np.int64), both.indices.astype(np.int32), dist
