"""Running top-n dataset examples per channel, merged batch by batch in bounded memory."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from compute.summit import activation

_LAST = torch.iinfo(torch.int64).max


class RunningTopExamples:
    """The ``n`` images with the largest spatial maximum of every channel.

    Order: value descending, ties broken by the lowest dataset index; this is a total order,
    so the result does not depend on batch size or batch order. Memory is ``O(C · n)``.

    Args:
        channels: number of channels ``C``.
        n: examples kept per channel.
        device: where the running state lives (the model's device).
        dtype: dtype in which values are compared (the layer's dtype).
    """

    def __init__(
        self, channels: int, n: int, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> None:
        self.n = n
        self.values = torch.full((channels, n), -torch.inf, dtype=dtype, device=device)
        self.index = torch.full((channels, n), -1, dtype=torch.int64, device=device)
        self.position = torch.zeros((channels, n), dtype=torch.int64, device=device)

    def floor(self) -> Tensor:
        """``[C]`` the last kept value per channel (``-inf`` while a channel has room).

        An image whose maximum is below it cannot enter the table.
        """
        return self.values[:, -1]

    def update(self, values: Tensor, positions: Tensor, indices: Tensor) -> None:
        """Merge one batch.

        Args:
            values: ``[B, C]`` spatial maxima.
            positions: ``int64 [B, C]`` flat position (``row * W + col``) of each maximum.
            indices: ``int64 [B]`` dataset index of each image.
        """
        cap = activation.STATISTICS_THREADS if values.device.type == "cpu" else None
        with activation.intra_op_threads(cap):  # small ops: see STATISTICS_THREADS
            self._update(values, positions, indices)

    def _update(self, values: Tensor, positions: Tensor, indices: Tensor) -> None:
        channels, batch = self.values.shape[0], values.shape[0]
        self._merge(
            values.t().to(self.values.dtype),
            indices.view(1, batch).expand(channels, batch),
            positions.t(),
        )

    def merge(self, other: RunningTopExamples) -> None:
        """Fold in another table (same channels) kept over a disjoint set of images.

        The result equals one table fed both streams: the order is total.
        """
        if other.values.shape[0] != self.values.shape[0]:
            raise ValueError(
                f"cannot merge top examples of {other.values.shape[0]} channels "
                f"into {self.values.shape[0]}"
            )
        self._merge(
            other.values.to(self.values.device, self.values.dtype),
            other.index.to(self.values.device),
            other.position.to(self.values.device),
        )

    def _merge(self, values: Tensor, index: Tensor, position: Tensor) -> None:
        """Merge candidates ``[C, m]`` (value, dataset index or -1, flat position)."""
        cand_values = torch.cat([self.values, values], dim=1)
        cand_index = torch.cat([self.index, index], dim=1)
        cand_position = torch.cat([self.position, position], dim=1)
        # Two stable sorts give (value desc, index asc); empty slots (-1) sort last.
        key_index = torch.where(cand_index < 0, _LAST, cand_index)
        by_index = torch.argsort(key_index, dim=1, stable=True)
        ranked = torch.nan_to_num(cand_values.gather(1, by_index), nan=-torch.inf)
        ranked = torch.where(key_index.gather(1, by_index) == _LAST, -torch.inf, ranked)
        by_value = torch.argsort(ranked, dim=1, descending=True, stable=True)[:, : self.n]
        order = by_index.gather(1, by_value)
        self.values = cand_values.gather(1, order)
        self.index = cand_index.gather(1, order)
        self.position = cand_position.gather(1, order)

    def result(self, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The table as numpy arrays.

        Args:
            width: width ``W`` of the layer's map (to split flat positions).

        Returns:
            ``(index int64 [C, n], value float32 [C, n], position int32 [C, n, 2])`` with
            ``-1`` / ``0`` / ``0`` in empty slots.
        """
        index = self.index.cpu().numpy().astype(np.int64)
        empty = index < 0
        value = self.values.float().cpu().numpy().astype(np.float32)
        value[empty] = 0.0
        flat = self.position.cpu().numpy()
        position = np.stack([flat // width, flat % width], axis=-1).astype(np.int32)
        position[empty] = 0
        return index, value, position
