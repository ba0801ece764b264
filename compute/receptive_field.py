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

    A Vision Transformer's token layer is a map of one row: its position ``(0, t)`` is
    token ``t``. With ``token_columns`` set, token ``t`` (after ``token_prefix`` class
    tokens) shows its own patch, at grid position ``divmod(t - token_prefix,
    token_columns)`` of the field's grid; a class token shows the whole image. (After
    attention a token sees the whole image; its patch is where it comes from, the
    convention of ViT attribution views.)

    Attributes:
        size: ``(height, width)`` of the receptive field in input pixels.
        stride: input pixels between neighbouring map positions.
        offset: input-pixel centre of map position ``(0, 0)``.
        token_prefix: class tokens before a token layer's patch tokens.
        token_columns: patches per row of a token layer's grid (0: not a token layer).
    """

    size: tuple[int, int]
    stride: tuple[float, float]
    offset: tuple[float, float]
    token_prefix: int = 0
    token_columns: int = 0

    @classmethod
    def patches(cls, patch: int, columns: int, prefix: int) -> ReceptiveField:
        """The field of a ViT token layer: ``patch``-pixel patches, ``columns`` per row,
        after ``prefix`` class tokens.

        Examples:
            >>> crop_box(ReceptiveField.patches(8, 4, 1), 0, 6, 32)   # token 6: patch (1, 1)
            (8, 8, 16, 16)
            >>> crop_box(ReceptiveField.patches(8, 4, 1), 0, 0, 32)   # the class token
            (0, 0, 32, 32)
        """
        centre = (patch - 1) / 2
        return cls((patch, patch), (float(patch), float(patch)), (centre, centre), prefix, columns)

    def to_manifest(self) -> dict[str, Any]:
        """The ``parameters.receptive_fields`` entry (:meth:`from_manifest` reads it)."""
        entry: dict[str, Any] = {
            "size": list(self.size),
            "stride": list(self.stride),
            "offset": list(self.offset),
        }
        if self.token_columns:
            entry["tokens"] = {"prefix": self.token_prefix, "columns": self.token_columns}
        return entry

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any]) -> ReceptiveField:
        """The field of one ``parameters.receptive_fields`` entry of a manifest.

        Examples:
            >>> field = {"size": [3, 3], "stride": [1, 1], "offset": [0, 0]}
            >>> ReceptiveField.from_manifest(field).size
            (3, 3)
            >>> ReceptiveField.from_manifest({**field, "tokens": {"prefix": 1, "columns": 4}})
            ... # doctest: +NORMALIZE_WHITESPACE
            ReceptiveField(size=(3, 3), stride=(1.0, 1.0), offset=(0.0, 0.0), token_prefix=1,
                           token_columns=4)
        """
        size, stride, offset = (entry[key] for key in ("size", "stride", "offset"))
        tokens = entry.get("tokens") or {}
        return cls(
            (int(size[0]), int(size[1])),
            (float(stride[0]), float(stride[1])),
            (float(offset[0]), float(offset[1])),
            int(tokens.get("prefix", 0)),
            int(tokens.get("columns", 0)),
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
    if field.token_columns:  # a token layer: token ``col`` is a patch, or a class token
        token = col - field.token_prefix
        if token < 0:
            return 0, 0, height, width
        row, col = divmod(token, field.token_columns)

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
