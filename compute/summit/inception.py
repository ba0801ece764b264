"""Summit's rule for Inception blocks: exact influence per branch, widest path through bottlenecks.

In an Inception block the target's channels are a concatenation of branches. A branch with
one convolution (1×1, or pooling then 1×1) reads the source directly: its channels get the
exact convolution influence counts, like any single-convolution connection. A branch with a
bottleneck (a 1×1 reduction ``b`` then a 3×3/5×5 convolution) has two count matrices,
``I_top[c, i, b]`` (branch channel from bottleneck channel) and ``I_bot[c, b, j]``
(bottleneck channel from source channel); following the original, the branch channel's count
for source channel ``j`` is the widest path

    ``w[c, i, j] = max_b min(I_top[c, i, b], I_bot[c, b, j])``

of which only the ``m_c`` largest per row are kept (ties: lowest ``j``), with ``m_c`` the
floor of the mean number of counted source channels over the direct-branch channels of class
``c`` that have any (no limit when the block has no direct branch).

Examples:
    >>> import scipy.sparse as sp
    >>> top = sp.csr_array(np.array([[2, 5]]))            # 1 class, 1 branch channel, 2 bottleneck
    >>> bottom = sp.csr_array(np.array([[4, 0], [1, 3]]))  # 2 bottleneck, 2 source channels
    >>> widest_path(top, bottom, 1, np.array([2])).toarray()
    array([[2, 3]])
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def direct_limits(main: sp.csr_array, num_classes: int, direct_rows: np.ndarray) -> np.ndarray:
    """``m_c``: floor of the mean row count of the direct-branch rows that have any entry.

    Args:
        main: ``(classes * C_out, C_in)`` counts of the direct branches (other rows empty).
        num_classes: number of classes.
        direct_rows: ``int64`` target channels that belong to direct (one-convolution)
            branches.

    Returns:
        ``int64 [classes]`` limits; ``-1`` (no limit) when there is no direct row at all,
        ``0`` for a class whose direct rows are all empty.

    Examples:
        >>> main = sp.csr_array(np.array([[1, 1, 0], [0, 0, 0], [1, 1, 1]]))
        >>> direct_limits(main, 1, np.array([0, 2])).tolist()
        [2]
    """
    limits = np.full(num_classes, -1, dtype=np.int64)
    if direct_rows.size == 0:
        return limits
    c_out = main.shape[0] // max(1, num_classes)
    per_row = np.diff(main.indptr).astype(np.int64).reshape(num_classes, c_out)[:, direct_rows]
    used = (per_row > 0).sum(axis=1)
    total = per_row.sum(axis=1)
    limits[:] = np.where(used > 0, total // np.maximum(used, 1), 0)
    return limits


def widest_path(
    top: sp.csr_array,
    bottom: sp.csr_array,
    num_classes: int,
    limits: np.ndarray,
    device: torch.device | str = "cpu",
    budget: int = 1 << 24,
) -> sp.csr_array:
    """``max_b min(top[c, i, b], bottom[c, b, j])``, the ``limits[c]`` largest per row.

    Args:
        top: ``(classes * C_branch, C_bottleneck)`` counts of the branch's last convolution.
        bottom: ``(classes * C_bottleneck, C_in)`` counts of the bottleneck convolution.
        num_classes: number of classes.
        limits: ``int64 [classes]`` entries kept per row (``-1``: all); ties: lowest ``j``.
        device: where the products are computed.
        budget: bound on the elements of any intermediate (classes and entries are chunked).

    Returns:
        ``(classes * C_branch, C_in)`` int64 counts (only positive entries stored).

    Only stored entries of ``top`` are visited: the cost is ``nnz(top) · C_in`` element
    operations, vectorised over classes, not ``C_branch · C_bottleneck · C_in`` per class.
    """
    c_b = top.shape[1]
    c_br = top.shape[0] // max(1, num_classes)
    c_in = bottom.shape[1]
    top = sp.csr_array(top)
    bottom = sp.csr_array(bottom)
    step = max(1, budget // max(1, (2 * c_br + c_b) * c_in))
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for c0 in range(0, num_classes, step):
        c1 = min(num_classes, c0 + step)
        t = top[c0 * c_br : c1 * c_br]
        if t.nnz == 0:
            continue
        # Stored entries of each row, padded to the longest row with a zero count that
        # points at an appended all-zero bottleneck row.
        lengths = np.diff(t.indptr)
        width = int(lengths.max())
        rows_of = np.repeat(np.arange(t.shape[0]), lengths)
        slots = np.arange(t.nnz) - t.indptr[rows_of]
        u = np.zeros(((c1 - c0) * c_b + 1, c_in), dtype=np.int32)  # counts < 2**31
        u[:-1] = bottom[c0 * c_b : c1 * c_b].toarray()
        index = np.full((t.shape[0], width), u.shape[0] - 1, dtype=np.int64)
        index[rows_of, slots] = (rows_of // c_br) * c_b + t.indices
        counts = np.zeros((t.shape[0], width), dtype=np.int32)
        counts[rows_of, slots] = t.data
        u_t = torch.as_tensor(u, device=device)
        index_t = torch.as_tensor(index, device=device)
        counts_t = torch.as_tensor(counts, device=device)
        w = torch.empty((t.shape[0], c_in), dtype=torch.int32, device=device)
        per = max(1, budget // max(1, width * c_in))
        for r0 in range(0, t.shape[0], per):
            terms = torch.minimum(counts_t[r0 : r0 + per, :, None], u_t[index_t[r0 : r0 + per]])
            w[r0 : r0 + per] = terms.amax(dim=1)
        limit = torch.as_tensor(limits[c0:c1].astype(np.int64), device=device)
        limit = limit.repeat_interleave(c_br)[:, None]  # per row
        if bool((limit >= 0).any()):
            order = torch.sort(w, dim=1, descending=True, stable=True).indices
            rank = torch.empty_like(order)
            rank.scatter_(1, order, torch.arange(c_in, device=device).expand_as(order))
            w = torch.where((limit < 0) | (rank < limit), w, 0)
        rr, cc = w.nonzero(as_tuple=True)
        found.append(((rr + c0 * c_br).cpu().numpy(), cc.cpu().numpy(), w[rr, cc].cpu().numpy()))
    shape = (num_classes * c_br, c_in)
    if not found:
        return sp.csr_array(shape, dtype=np.int64)
    rows, cols, data = (np.concatenate(part) for part in zip(*found, strict=True))
    matrix = sp.coo_array((data.astype(np.int64), (rows, cols)), shape=shape).tocsr()
    matrix.sort_indices()
    return matrix
