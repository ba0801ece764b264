"""Receptive fields and crop boxes: where a layer's map position looks in the input.

Torch-free, so the dashboard cuts an input's crops with the same boxes the build cuts the
dataset examples' crops with (:mod:`compute.crops` measures the fields).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ReceptiveField:
    """Where a layer's map positions look in the input image (per axis: rows, cols).

    Position ``(r, c)`` sees a ``size`` window centred on
    ``(offset[0] + r * stride[0], offset[1] + c * stride[1])`` in input pixel coordinates
    (pixel ``i`` has centre ``i``); windows are clipped to the image.

    Attributes:
        size: ``(height, width)`` of the receptive field in input pixels.
        stride: input pixels between neighbouring map positions.
        offset: input-pixel centre of map position ``(0, 0)``.
    """

    size: tuple[int, int]
    stride: tuple[float, float]
    offset: tuple[float, float]

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any]) -> ReceptiveField:
        """The field of one ``parameters.receptive_fields`` entry of a manifest.

        Examples:
            >>> ReceptiveField.from_manifest({"size": [3, 3], "stride": [1, 1], "offset": [0, 0]})
            ReceptiveField(size=(3, 3), stride=(1.0, 1.0), offset=(0.0, 0.0))
        """
        size, stride, offset = (entry[key] for key in ("size", "stride", "offset"))
        return cls(
            (int(size[0]), int(size[1])),
            (float(stride[0]), float(stride[1])),
            (float(offset[0]), float(offset[1])),
        )


def crop_box(
    field: ReceptiveField, row: int, col: int, image_size: int | tuple[int, int]
) -> tuple[int, int, int, int]:
    """The input-pixel box a map position sees, clipped to the image.

    Args:
        field: the layer's receptive field.
        row: map row of the position.
        col: map column of the position.
        image_size: side of the (square) input, or ``(height, width)``.

    Returns:
        ``(top, left, bottom, right)``, bottom/right exclusive, never empty.

    Examples:
        >>> crop_box(ReceptiveField((5, 5), (1.0, 1.0), (0.0, 0.0)), 0, 0, 8)
        (0, 0, 3, 3)
        >>> crop_box(ReceptiveField((5, 5), (1.0, 1.0), (0.0, 0.0)), 4, 4, 8)
        (2, 2, 7, 7)
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size

    def axis(index: int, axis_no: int, limit: int) -> tuple[int, int]:
        centre = field.offset[axis_no] + index * field.stride[axis_no]
        start = math.floor(centre - (field.size[axis_no] - 1) / 2 + 1e-9)
        end = start + field.size[axis_no]
        start, end = max(0, start), min(limit, end)
        if end <= start:  # the centre falls outside the image: keep the nearest pixel
            start = min(max(0, start), limit - 1)
            end = start + 1
        return start, end

    top, bottom = axis(row, 0, height)
    left, right = axis(col, 1, width)
    return top, left, bottom, right
