"""Random transforms applied to the image at every optimisation step (transformation robustness).

Lucid's ``standard_transforms`` are: pad 12 px (grey), jitter 8 px, scale by one of
``1 + (i - 5) / 50`` (0.9..1.1), rotate by one of -10..10 degrees (0 five times more
often), jitter 4 px. Without them the optimiser finds high-frequency patterns that only
work at one exact pixel alignment.

We compose the same random pad / jitter / scale / rotation into **one affine resampling per
image** (``grid_sample``), because this gives exactly the model's input size (models with a
fixed-size head still run), one interpolation instead of two, and independent random
parameters per image of the batch. Sizes are given as fractions of the image side so the
same defaults suit a 32-px digit and a 224-px photograph (at 224 px they are Lucid's).
Everything random is drawn from a caller's :class:`torch.Generator`, so a fixed seed
gives the same transforms.

Examples:
    >>> import torch
    >>> transform = RandomAffine(TransformConfig(), height=32, width=32)
    >>> g = torch.Generator().manual_seed(0)
    >>> tuple(transform(torch.rand(2, 3, 32, 32), g).shape)
    (2, 3, 32, 32)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_LUCID_SIZE = 224.0


@dataclass(frozen=True)
class TransformConfig:
    """Amounts of the random transforms; sizes as fractions of the image's longer side.

    Attributes:
        pad: grey margin (Lucid: 12 px at 224), visible when the image shifts or shrinks.
        jitter: first random shift range (Lucid: 8 px at 224).
        jitter_fine: second random shift range, after scale and rotation (Lucid: 4 px).
        scales: the scale factors drawn uniformly (Lucid: 0.90, 0.92, ..., 1.10).
        angles: rotations in degrees drawn uniformly (Lucid: -10..10 plus five more 0s).
        fill: grey level of the margin, in ``[0, 1]`` pixels.
    """

    pad: float = 12 / _LUCID_SIZE
    jitter: float = 8 / _LUCID_SIZE
    jitter_fine: float = 4 / _LUCID_SIZE
    scales: tuple[float, ...] = tuple(1 + (i - 5) / 50 for i in range(11))
    angles: tuple[float, ...] = tuple(float(a) for a in range(-10, 11)) + (0.0,) * 5
    fill: float = 0.5


def _pixels(fraction: float, size: int) -> int:
    # At least one pixel of any requested transform, so tiny images still get robustness.
    return max(1, round(fraction * size)) if fraction > 0 else 0


class RandomAffine:
    """Lucid's pad / jitter / scale / rotate / jitter as one random affine map per image.

    Args:
        config: the transform amounts.
        height: image height in pixels.
        width: image width in pixels.
    """

    def __init__(self, config: TransformConfig, height: int, width: int) -> None:
        self.config = config
        self.height = height
        self.width = width
        size = max(height, width)
        self.pad = _pixels(config.pad, size)
        self.jitter = _pixels(config.jitter, size)
        self.jitter_fine = _pixels(config.jitter_fine, size)
        # Lucid's model sees the padded, cropped image: its frame is this much larger than
        # the image itself, so the image appears slightly zoomed out with a grey margin.
        self.zoom_out = (size + 2 * self.pad - self.jitter - self.jitter_fine) / size

    def sample_theta(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Draw the random affine maps.

        Args:
            batch: number of images ``N``.
            generator: CPU generator the parameters are drawn from.

        Returns:
            ``float[N, 2, 3]``: ``affine_grid`` matrices (output coords to input coords,
            normalised, ``align_corners=False``).
        """
        cfg = self.config

        def shift(amount: int) -> torch.Tensor:
            # A crop offset in 0..amount, centred: a shift of -amount/2..amount/2 pixels.
            offset = torch.randint(0, amount + 1, (batch, 2), generator=generator)
            return offset.float() - amount / 2

        t = shift(self.jitter) + shift(self.jitter_fine)  # [N, 2] pixels (x, y)
        scales = torch.tensor(cfg.scales, dtype=torch.float32)
        angles = torch.tensor(cfg.angles, dtype=torch.float32)
        s = scales[torch.randint(0, len(scales), (batch,), generator=generator)]
        a = angles[torch.randint(0, len(angles), (batch,), generator=generator)] * (math.pi / 180)
        # In pixel units: x_in = (zoom_out / s) * R(a) x_out + t; then to normalised coords,
        # which differ per axis for non-square images.
        k = self.zoom_out / s
        cos, sin = torch.cos(a) * k, torch.sin(a) * k
        half_w, half_h = self.width / 2, self.height / 2
        theta = torch.zeros(batch, 2, 3)
        theta[:, 0, 0] = cos
        theta[:, 0, 1] = -sin * half_h / half_w
        theta[:, 1, 0] = sin * half_w / half_h
        theta[:, 1, 1] = cos
        theta[:, 0, 2] = t[:, 0] / half_w
        theta[:, 1, 2] = t[:, 1] / half_h
        return theta

    def __call__(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Transform a batch of images.

        Args:
            pixels: ``float[N, C, H, W]`` in ``[0, 1]``.
            generator: CPU generator for the random parameters.

        Returns:
            ``float[N, C, H, W]``: the transformed images (same size), margin filled grey.
        """
        theta = self.sample_theta(pixels.shape[0], generator).to(pixels.device, pixels.dtype)
        grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
        # grid_sample pads with zeros: shift so the margin becomes the grey fill level.
        fill = self.config.fill
        out = F.grid_sample(
            pixels - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        return out + fill
