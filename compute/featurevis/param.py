"""Image parameterisation for feature visualization: Fourier basis, colour decorrelation.

Optimising pixels directly gives high-frequency noise; Lucid (Olah et al., "Feature
Visualization", Distill 2017) optimises instead the Fourier coefficients of the image,
scaled by ``1/frequency`` so every frequency has about equal energy (a "whitened" basis),
and for RGB images decorrelates the colour channels with the square root of ImageNet's
colour covariance. A sigmoid then maps the result into ``[0, 1]`` pixels, which
:class:`ImageSpace` normalises exactly as the model's preprocessing did.

Examples:
    >>> import torch
    >>> space = ImageSpace(channels=1, height=32, width=32, mean=(0.1,), std=(0.3,))
    >>> param = FourierImage(4, space, generator=torch.Generator().manual_seed(0))
    >>> tuple(param().shape)
    (4, 1, 32, 32)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from compute.atlas import AtlasError

#: Square root of ImageNet's colour covariance (Lucid's ``color_correlation_svd_sqrt``).
COLOR_CORRELATION_SVD_SQRT = np.asarray(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32
)
# Normalised so the largest column has unit norm, as Lucid does: keeps the sigmoid's input
# scale the same with or without decorrelation.
_COLOR_CORRELATION = COLOR_CORRELATION_SVD_SQRT / np.max(
    np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0)
)


@dataclass(frozen=True)
class ImageSpace:
    """The model's input: size, channels, and the normalisation its preprocessing applied.

    Pixels live in ``[0, 1]``; the model sees ``(pixel - mean) / std`` per channel.

    Attributes:
        channels: input channels the model takes (``C`` of ``input_size``).
        height: input height in pixels.
        width: input width in pixels.
        mean: per-channel mean (length 1 or ``channels``).
        std: per-channel std (length 1 or ``channels``).
        grayscale: the images are grey: render one channel (repeated to ``channels``).
    """

    channels: int
    height: int
    width: int
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    grayscale: bool = False

    @property
    def image_channels(self) -> int:
        """Channels of the rendered image: 1 for grey, else the model's channels."""
        return 1 if self.grayscale else self.channels

    @property
    def decorrelate(self) -> bool:
        """Whether colour decorrelation applies (RGB images only)."""
        return self.image_channels == 3

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> ImageSpace:
        """The image space an atlas records in ``model.input_size`` and ``preprocessing``.

        Args:
            manifest: a parsed atlas manifest.

        Returns:
            The matching :class:`ImageSpace`.

        Raises:
            AtlasError: a text atlas, or no ``[channels, height, width]`` input size.

        Examples:
            >>> ImageSpace.from_manifest({"model": {"input_size": [1, 8, 8]},
            ...     "preprocessing": {"mean": [0.5], "std": [0.2], "grayscale": True}}).height
            8
        """
        size = (manifest.get("model") or {}).get("input_size")
        if manifest.get("modality") == "text":
            raise AtlasError(
                "this is a text atlas: feature visualization and inversion optimise images "
                "(a text unit's page shows its top tokens instead)"
            )
        if not (isinstance(size, list | tuple) and len(size) == 3):
            raise AtlasError(
                f"the atlas's model.input_size is {size!r}, not [channels, height, width]: "
                "no image to optimise"
            )
        channels, height, width = (int(v) for v in size)
        pre = manifest.get("preprocessing") or {}
        mean = tuple(float(v) for v in pre.get("mean") or (0.0,))
        std = tuple(float(v) for v in pre.get("std") or (1.0,))
        grayscale = bool(pre.get("grayscale", channels == 1))
        return cls(channels, height, width, mean, std, grayscale or channels == 1)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """Turn ``[0, 1]`` pixels ``float[N, image_channels, H', W']`` into model input.

        Returns:
            ``float[N, channels, H', W']``: grey repeated to the model's channels, then
            ``(pixel - mean) / std``.
        """
        if pixels.shape[1] != self.channels:
            pixels = pixels.expand(-1, self.channels, -1, -1)
        mean = _per_channel(self.mean, self.channels, pixels)
        std = _per_channel(self.std, self.channels, pixels)
        return (pixels - mean) / std


def _per_channel(values: Sequence[float], channels: int, like: torch.Tensor) -> torch.Tensor:
    if len(values) not in (1, channels):
        raise ValueError(f"expected 1 or {channels} normalisation values, got {len(values)}")
    tensor = torch.tensor(values, dtype=like.dtype, device=like.device)
    return tensor.reshape(1, -1, 1, 1)


def rfft2d_freqs(height: int, width: int) -> np.ndarray:
    """``float[H, W//2+1]``: the frequency magnitude of each coefficient of ``rfft2``."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    return np.sqrt(fx * fx + fy * fy)


class FourierImage(nn.Module):
    """A batch of images parameterised by scaled Fourier coefficients.

    ``forward`` returns pixels in ``[0, 1]``: inverse real FFT of ``scale * spectrum``
    (``scale = 1 / max(f, 1/max(H, W)) ** decay_power``), divided by 4 as Lucid does,
    colour-decorrelated for RGB, then a sigmoid.

    Args:
        batch: number of images ``N``.
        space: the model's input space (size and channels).
        sd: standard deviation of the initial coefficients (Lucid: 0.01).
        decay_power: how strongly high frequencies are damped (Lucid: 1).
        generator: seeds the initial coefficients (deterministic rendering).
    """

    def __init__(
        self,
        batch: int,
        space: ImageSpace,
        *,
        sd: float = 0.01,
        decay_power: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.space = space
        h, w = space.height, space.width
        freqs = rfft2d_freqs(h, w)
        scale = 1.0 / np.maximum(freqs, 1.0 / max(h, w)) ** decay_power
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32)[..., None])
        self.register_buffer("color", torch.from_numpy(_COLOR_CORRELATION.copy()))
        shape = (batch, space.image_channels, *freqs.shape, 2)  # real and imaginary parts
        init = torch.randn(shape, generator=generator) * sd
        self.spectrum = nn.Parameter(init)

    def forward(self) -> torch.Tensor:
        """Returns: ``float[N, image_channels, H, W]`` pixels in ``[0, 1]``."""
        coeffs = torch.view_as_complex(self.spectrum * self.scale)
        # "ortho" keeps the pixel scale independent of the image size (Lucid's sqrt(w*h)).
        image = torch.fft.irfft2(coeffs, s=(self.space.height, self.space.width), norm="ortho")
        image = image / 4.0
        if self.space.decorrelate:
            image = torch.einsum("nchw,dc->ndhw", image, self.color)
        return torch.sigmoid(image)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """``float[N, C, H, W]`` pixels in ``[0, 1]`` to ``uint8[N, H, W, C]``."""
    array = (pixels.detach().clamp(0, 1) * 255).round().to(torch.uint8)
    return array.permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """``uint8[N, H, W, C]`` to ``float[N, C, H, W]`` pixels in ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
