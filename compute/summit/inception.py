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
    top: sp.csr_array, bottom: sp.csr_array, num_classes: int, limits: np.ndarray
) -> sp.csr_array:
    """``max_b min(top[c, i, b], bottom[c, b, j])``, the ``limits[c]`` largest per row.

    Args:
        top: ``(classes * C_branch, C_bottleneck)`` counts of the branch's last convolution.
        bottom: ``(classes * C_bottleneck, C_in)`` counts of the bottleneck convolution.
        num_classes: number of classes.
        limits: ``int64 [classes]`` entries kept per row (``-1``: all).

    Returns:
        ``(classes * C_branch, C_in)`` int64 counts (only positive entries stored).
    """
    c_b = top.shape[1]
    c_br = top.shape[0] // max(1, num_classes)
    c_in = bottom.shape[1]
    blocks: list[sp.csr_array] = []
    for c in range(num_classes):
        t = top[c * c_br : (c + 1) * c_br].toarray()
        u = bottom[c * c_b : (c + 1) * c_b].toarray()
        w = np.zeros((c_br, c_in), dtype=np.int64)
        for b in np.flatnonzero(t.any(axis=0) & u.any(axis=1)):
            np.maximum(w, np.minimum(t[:, b : b + 1], u[b : b + 1, :]), out=w)
        limit = int(limits[c])
        if 0 <= limit < c_in:
            keep = np.zeros_like(w, dtype=bool)
            if limit > 0:
                order = np.argsort(-w, axis=1, kind="stable")[:, :limit]
                np.put_along_axis(keep, order, True, axis=1)
            w = np.where(keep, w, 0)
        blocks.append(sp.csr_array(w))
    if not blocks:
        return sp.csr_array((0, c_in), dtype=np.int64)
    return sp.csr_array(sp.vstack(blocks, format="csr"))
