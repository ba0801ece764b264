"""PNG encoding: the one place the compute side turns pixels into PNG bytes.

Torch-free (numpy and Pillow). Pillow's defaults (zlib level 6, no optimisation pass) give
the same bytes for the same array, so atlases rebuilt from the same pixels are identical.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

#: Side of the longer edge of a saved crop, in pixels.
THUMBNAIL_SIZE = 64


def png_bytes(pixels: np.ndarray | Image.Image, *, optimize: bool = False) -> bytes:
    """PNG encoding of ``uint8[H, W]`` (grey), ``uint8[H, W, 1]`` (grey) or ``uint8[H, W, 3]``
    (RGB) pixels, or of a Pillow image.

    Args:
        pixels: the image.
        optimize: Pillow's extra pass for smaller files (slower; used for thumbnails that
            ship in the demo atlas).

    Returns:
        The file's bytes; the same pixels give the same bytes.

    Examples:
        >>> data = png_bytes(np.zeros((2, 3, 1), dtype=np.uint8))
        >>> data[:4], Image.open(io.BytesIO(data)).size
        (b'\\x89PNG', (3, 2))
    """
    if isinstance(pixels, Image.Image):
        image = pixels
    else:
        array = np.asarray(pixels)
        if array.dtype != np.uint8:
            raise ValueError(f"PNG pixels must be uint8, not {array.dtype}")
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        image = Image.fromarray(np.ascontiguousarray(array))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=optimize)
    return buffer.getvalue()


def thumbnail_png(pixels: np.ndarray, size: int = THUMBNAIL_SIZE) -> bytes:
    """PNG bytes of ``pixels`` scaled so the longer side is ``size``.

    Small crops are enlarged with nearest-neighbour (crisp pixels), larger ones shrunk with
    a box filter.
    """
    image = Image.fromarray(pixels)
    longest = max(image.size)
    if longest != size:
        scale = size / longest
        new = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        resample = Image.Resampling.NEAREST if longest < size else Image.Resampling.BOX
        image = image.resize(new, resample)
    return png_bytes(image)
