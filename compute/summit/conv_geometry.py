"""Convolution geometry shared by the influence kernels (``influence``, ``fused``).

Kept apart so that both import it at the top: ``influence`` dispatches to ``fused``, and
``fused`` needs the same output sizes and padding.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

#: ``(height, width)`` of a kernel, stride, padding or dilation.
Pair = tuple[int, int]


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution along one axis (PyTorch's formula).

    Examples:
        >>> conv_output_size(32, 3, 1, 1, 1), conv_output_size(32, 3, 2, 1, 1)
        (32, 16)
    """
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_output_hw(
    x: Tensor, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair
) -> tuple[int, int]:
    """``(Ho, Wo)`` of a convolution of ``x [B, C, H, W]``."""
    return (
        conv_output_size(x.shape[2], kernel[0], stride[0], padding[0], dilation[0]),
        conv_output_size(x.shape[3], kernel[1], stride[1], padding[1], dilation[1]),
    )


def zero_padded(x: Tensor, padding: Pair) -> Tensor:
    """``x [B, C, H, W]`` zero-padded and contiguous (one copy at most)."""
    if padding != (0, 0):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    return x.contiguous()
