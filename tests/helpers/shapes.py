"""The project's second model and data set for quality measures: coloured shapes.

The rules ask that no quality figure be tuned on the demo (``compute.demo``: grey digits,
its own CNN) alone. This module is the other one, generated and deterministic, needing no
network or downloaded weights:

- :func:`shapes_dataset`: RGB images of one of :data:`SHAPES` (disc, square, triangle,
  cross, ring, bar) in one of :data:`COLOURS`, at a random position and size, on a noisy
  background of random tint. Image ``i`` of seed ``s`` depends on ``(s, i)`` only. The
  label is the shape (the colour is a nuisance variable, so colour channels appear too).
- :func:`shapes_cnn`: a small ReLU CNN that is *not* the demo's: RGB input, widths
  12-24-32-32, BatchNorm in the first two blocks only, strided convolutions instead of
  pooling, ``inplace=True`` ReLUs (as torchvision's) and one ReLU module used twice (as
  torchvision's ``BasicBlock``).
- :func:`train_shapes_cnn`: a deterministic CPU training run (a few seconds on 2 cores,
  ~90% test accuracy).

Used by ``tests/unit/test_featurevis_quality.py`` and ``bench/bench_featurevis.py
quality`` (which puts the repository root on ``sys.path``)::

    from tests.helpers.shapes import SHAPES_LAYERS, shapes_dataset, train_shapes_cnn
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

SHAPES = ("disc", "square", "triangle", "cross", "ring", "bar")
#: RGB in [0, 1].
COLOURS = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.8, 0.2),
    "blue": (0.15, 0.25, 0.95),
    "yellow": (0.95, 0.85, 0.1),
    "magenta": (0.85, 0.15, 0.8),
    "cyan": (0.1, 0.85, 0.9),
    "white": (0.95, 0.95, 0.95),
}
#: The ReLU output of each block of :func:`shapes_cnn`.
SHAPES_LAYERS = ("block1.relu", "block2.relu", "block3.relu", "block4")
#: Per-channel mean and std used to normalise the images (close to the data's own).
MEAN = (0.45, 0.45, 0.45)
STD = (0.25, 0.25, 0.25)


def _mask(shape: str, size: int, cy: float, cx: float, r: float, angle: float) -> np.ndarray:
    """``bool[size, size]``: the pixels inside ``shape`` centred at ``(cy, cx)``, radius ``r``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy  # rotated coordinates
    if shape == "disc":
        return dx**2 + dy**2 <= r**2
    if shape == "ring":
        d2 = dx**2 + dy**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if shape == "square":
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if shape == "bar":
        return (np.abs(u) <= r) & (np.abs(v) <= 0.28 * r)
    if shape == "cross":
        return ((np.abs(u) <= r) & (np.abs(v) <= 0.3 * r)) | (
            (np.abs(v) <= r) & (np.abs(u) <= 0.3 * r)
        )
    if shape == "triangle":
        # Upward triangle in the rotated frame: below the two slanted edges, above the base.
        return (v <= 0.6 * r) & (v >= -r + 1.6 * np.abs(u))
    raise ValueError(f"unknown shape {shape!r}")


def shapes_image(seed: int, index: int, size: int = 32) -> tuple[np.ndarray, int]:
    """Image ``index`` of the data set ``seed``.

    Returns:
        ``(float32[3, size, size] in [0, 1], label)``; the label indexes :data:`SHAPES`.
    """
    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(len(SHAPES)))
    colour = np.array(list(COLOURS.values())[int(rng.integers(len(COLOURS)))], np.float32)
    background = rng.uniform(0.1, 0.6) + rng.uniform(-0.1, 0.1, size=3)
    image = np.broadcast_to(background[:, None, None], (3, size, size)).astype(np.float32)
    image = image + rng.normal(0.0, 0.06, size=(3, size, size)).astype(np.float32)
    r = rng.uniform(0.18, 0.32) * size
    cy, cx = rng.uniform(r * 0.8, size - r * 0.8, size=2)
    mask = _mask(SHAPES[label], size, cy, cx, r, rng.uniform(0, 2 * np.pi))
    shade = rng.uniform(0.75, 1.0)
    image = np.where(mask[None], colour[:, None, None] * shade, image)
    return np.clip(image, 0.0, 1.0).astype(np.float32), label


def shapes_dataset(n: int, seed: int = 0, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of data set ``seed``.

    Returns:
        ``(float32[n, 3, size, size] in [0, 1], int64[n] labels)`` (not normalised: see
        :func:`normalise`).
    """
    pairs = [shapes_image(seed, i, size) for i in range(n)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs]))
    return images, torch.tensor([p[1] for p in pairs], dtype=torch.int64)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """``(images - MEAN) / STD`` per channel (the input :func:`shapes_cnn` expects)."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (images - mean) / std


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, batchnorm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not batchnorm)
        self.bn = nn.BatchNorm2d(cout) if batchnorm else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class _Residual(nn.Module):
    """``relu(x + conv(relu(conv(x))))`` with one ReLU module called twice (as ResNet)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.conv1(x))
        return self.relu(self.conv2(out) + x)


class ShapesCNN(nn.Module):
    """See :func:`shapes_cnn`."""

    def __init__(self, num_classes: int = len(SHAPES)) -> None:
        super().__init__()
        self.block1 = _Block(3, 12, 1, batchnorm=True)
        self.block2 = _Block(12, 24, 2, batchnorm=True)
        self.block3 = _Block(24, 32, 2, batchnorm=False)
        self.block4 = _Residual(32)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block4(self.block3(self.block2(self.block1(x))))
        return self.head(x.mean(dim=(2, 3)))


def shapes_cnn(seed: int = 0) -> ShapesCNN:
    """The untrained shapes CNN with weights from ``seed`` (torch's default init)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ShapesCNN()


@dataclass(frozen=True)
class ShapesTraining:
    """Settings of :func:`train_shapes_cnn` (defaults: ~5-15 s on 2 shared cores)."""

    seed: int = 0
    train_images: int = 3000
    epochs: int = 6
    batch_size: int = 64
    learning_rate: float = 3e-3


def train_shapes_cnn(
    config: ShapesTraining = ShapesTraining(),
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> ShapesCNN:
    """Train :func:`shapes_cnn` deterministically on CPU; returns it in eval mode.

    Args:
        config: training settings.
        data: ``(images, labels)`` as :func:`shapes_dataset` returns, to reuse a data set
            already generated (default: ``config.train_images`` images of seed
            ``config.seed``).
    """
    images, labels = data if data is not None else shapes_dataset(config.train_images, config.seed)
    x = normalise(images)
    model = shapes_cnn(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        for _ in range(config.epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), config.batch_size):
                idx = order[start : start + config.batch_size]
                loss = nn.functional.cross_entropy(model(x[idx]), labels[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``images`` (unnormalised, as generated) classified as ``labels``."""
    with torch.no_grad():
        return float((model(normalise(images)).argmax(1) == labels).float().mean())
