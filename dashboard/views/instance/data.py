"""The Instance view's data (no Dash): the recorded inputs a picker lists, one input's
graph ready to draw beside its class's graph, and the crops of the input's own channels."""

from __future__ import annotations

import io
import math
import re
from functools import lru_cache

import numpy as np
from PIL import Image

from compute.atlas import PART_INSTANCES, AtlasError
from compute.png import THUMBNAIL_SIZE, thumbnail_png
from compute.receptive_field import crop_box
from compute.summit.instance_graph import InstanceGraph, instance_graph
from dashboard.data import AtlasData, ClassGraph, uncertain_by_lead

#: Inputs the picker lists at most (the class's first by index; the filter narrows them).
PICKER_LIMIT = 60


def picker_rows(
    data: AtlasData, cls: int, mode: str, mistaken_for: int | None = None
) -> np.ndarray:
    """Record rows of class ``cls``'s recorded inputs, by input index: ``mode`` ``"all"``,
    ``"wrong"`` (misclassified) or ``"uncertain"`` (misclassified, or a softmax margin
    among the lowest of all recorded inputs: :func:`dashboard.data.uncertain_by_lead`);
    with ``mistaken_for``, only those predicted as that class (the graph's confusion)."""
    if not data.has(PART_INSTANCES):
        return np.zeros(0, dtype=np.int64)
    records = data.atlas.instances()
    keep = records.label == cls
    if mistaken_for is not None:
        keep &= records.prediction == mistaken_for
    wrong = records.prediction != records.label
    if mode == "wrong":
        keep &= wrong
    elif mode == "uncertain":
        keep &= wrong | uncertain_by_lead(records.margin)
    return np.flatnonzero(keep)


def picked_row(data: AtlasData, index: int | None, rows: np.ndarray) -> int | None:
    """The record shown: the state's input if the picker lists it (the selected class, the
    filter), else the picker's first. Selecting another class (anywhere) therefore shows
    one of its inputs, not the previous class's input beside the new class's graph."""
    if index is not None and data.has(PART_INSTANCES):
        row = data.atlas.instance_row(index)
        if row is not None and row in set(rows.tolist()):
            return row
    return int(rows[0]) if rows.size else None


@lru_cache(maxsize=256)
def _graph(data: AtlasData, row: int) -> InstanceGraph:
    return instance_graph(data.atlas, row)


def input_graph(data: AtlasData, row: int) -> tuple[InstanceGraph, ClassGraph]:
    """Record ``row``'s graph (memoised per worker) and the same drawable: node sizes by
    the input's attribution mass, slots on its class graph's."""
    graph = _graph(data, row)
    edges = np.ones(graph.source.shape[0], dtype=np.float32)
    drawn = data.drawable(
        graph.layer, graph.channel, graph.mass, graph.x, graph.source, graph.target, edges
    )
    return graph, drawn


# -- crops at the input's own positions ------------------------------------------------------

#: The file route's virtual path of a crop: made on request from the input's stored image
#: (the atlas keeps one image per recorded input, not one file per channel).
_CROP_PATH = re.compile(r"instances/crops/(\d{1,12})/(\d{1,4})-(\d{1,7})\.png")


def instance_crop_path(image_index: int, layer: int, channel: int) -> str:
    """The file route's path of input ``image_index``'s crop for a channel of ``layer``."""
    return f"instances/crops/{int(image_index)}/{int(layer)}-{int(channel)}.png"


def parse_instance_crop_path(relpath: str) -> tuple[int, int, int] | None:
    """``(input index, layer, channel)`` of a crop path, ``None`` for any other path.

    Examples:
        >>> parse_instance_crop_path("instances/crops/12/0-3.png")
        (12, 0, 3)
        >>> parse_instance_crop_path("instances/crops/12/0-3.png/..") is None
        True
    """
    found = _CROP_PATH.fullmatch(relpath)
    return None if found is None else (int(found[1]), int(found[2]), int(found[3]))


@lru_cache(maxsize=4096)
def instance_crop(data: AtlasData, image_index: int, layer: int, channel: int) -> bytes | None:
    """PNG of what channel ``channel`` of ``layer`` saw in recorded input ``image_index`` at
    its own maximum: the receptive-field box of that position (the box the build crops the
    channel's dataset examples with), cut from the input's stored image.

    Returns:
        The PNG (longer side :data:`compute.png.THUMBNAIL_SIZE`), or ``None`` when the input
        has no record or stored image, the channel is not among its selected channels of
        that layer, or the layer's receptive field is not recorded.
    """
    if not data.has(PART_INSTANCES) or not 0 <= layer < len(data.layer_names):
        return None
    row = data.atlas.instance_row(image_index)
    relpath = data.atlas.instance_input(image_index)
    field = data.receptive_field(layer)
    if row is None or relpath is None or field is None:
        return None
    channels, _, positions = data.atlas.instances().channels(row, layer)
    found = np.flatnonzero(channels == channel)
    if found.size == 0:
        return None
    size = data.atlas.manifest.get("model", {}).get("input_size") or []
    try:
        image = Image.open(io.BytesIO(data.atlas.read_bytes(relpath)))
        image.load()
    except (AtlasError, OSError) as exc:
        raise AtlasError(f"input image {relpath} cannot be read: {exc}") from None
    height, width = (int(size[1]), int(size[2])) if len(size) == 3 else image.size[::-1]
    row_at, col_at = (int(v) for v in positions[int(found[0])])
    top, left, bottom, right = crop_box(field, row_at, col_at, (height, width))
    # The stored image may be smaller than the model input: scale the box, keep >= 1 pixel.
    sy, sx = image.height / height, image.width / width
    box = (
        math.floor(left * sx),
        math.floor(top * sy),
        max(math.floor(left * sx) + 1, math.ceil(right * sx)),
        max(math.floor(top * sy) + 1, math.ceil(bottom * sy)),
    )
    return thumbnail_png(np.asarray(image.crop(box)), THUMBNAIL_SIZE)
