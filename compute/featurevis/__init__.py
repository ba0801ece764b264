"""Feature visualization, diversity and activation inversion (our own, Lucid-style).

See :mod:`compute.featurevis.render` for the loop, :mod:`~compute.featurevis.param` for the
Fourier image, :mod:`~compute.featurevis.transforms` and
:mod:`~compute.featurevis.objectives`. ``python -m compute featurevis`` / ``invert`` are in
:mod:`compute.featurevis.cli`.
"""

from compute.featurevis.objectives import channel, direction_cossim, diversity, gram_matrices
from compute.featurevis.param import FourierImage, ImageSpace, from_uint8, to_uint8
from compute.featurevis.render import (
    LayerCapture,
    RenderConfig,
    invert_activations,
    optimise,
    render_channels,
)
from compute.featurevis.transforms import RandomAffine, TransformConfig

__all__ = [
    "FourierImage",
    "ImageSpace",
    "LayerCapture",
    "RandomAffine",
    "RenderConfig",
    "TransformConfig",
    "channel",
    "direction_cossim",
    "diversity",
    "from_uint8",
    "gram_matrices",
    "invert_activations",
    "optimise",
    "render_channels",
    "to_uint8",
]
