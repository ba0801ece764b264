"""Tiny deterministic models for subprocess builds (``--model atlas_models:tiny_cnn``).

Put ``tests/helpers`` on ``PYTHONPATH``. Weights come from a fixed seed, so every process
of a torchrun job, and every run, builds the same model. ``ATLAS_TEST_SLOW_FORWARD``
(seconds) makes each forward of a data batch sleep: tests use it to kill a build mid-pass.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

#: Layers of :func:`tiny_cnn` worth mapping (two ReLUs joined by one convolution).
LAYERS = ("features.1", "features.3")


def _maybe_slow(x: Tensor) -> Tensor:
    """Sleep ``ATLAS_TEST_SLOW_FORWARD`` seconds on data batches (not one-image probes)."""
    delay = float(os.environ.get("ATLAS_TEST_SLOW_FORWARD", "0") or 0)
    if delay and x.shape[0] >= 4:
        time.sleep(delay)
    return x


torch.fx.wrap("_maybe_slow")  # a leaf for the layer-connection trace


class _TinyCNN(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, padding=1, stride=2),
            nn.ReLU(),
        )
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = _maybe_slow(x)
        return self.head(self.features(x).mean(dim=(2, 3)))


def tiny_cnn(num_classes: int = 3) -> nn.Module:
    """A two-convolution CNN with seed-0 weights.

    Args:
        num_classes: outputs.

    Returns:
        The model, in eval mode.
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _TinyCNN(num_classes)
    return model.eval()


def write_image_folder(root: Path, classes: int = 3, per_class: int = 16, size: int = 12) -> Path:
    """Write ``classes × per_class`` seeded random PNGs as ``root/cK/imgN.png``.

    Returns:
        ``root``.
    """
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"c{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            pixels[..., c] //= 2  # a little class signal
            Image.fromarray(pixels).save(folder / f"img{i:05d}.png")
    return root
