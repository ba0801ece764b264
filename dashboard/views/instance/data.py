"""The Instance view's data (no Dash): the recorded inputs a picker lists, and one input's
graph ready to draw beside its class's graph."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from compute.atlas import PART_INSTANCES
from compute.summit.instance_graph import InstanceGraph, instance_graph
from dashboard.data import AtlasData, ClassGraph

#: Inputs the picker lists at most (the class's first by index; the filter narrows them).
PICKER_LIMIT = 60


def picker_rows(data: AtlasData, cls: int, mode: str) -> np.ndarray:
    """Record rows of class ``cls``'s recorded inputs (``mode`` ``"wrong"``: only the
    misclassified ones), by input index."""
    if not data.has(PART_INSTANCES):
        return np.zeros(0, dtype=np.int64)
    records = data.atlas.instances()
    keep = records.label == cls
    if mode == "wrong":
        keep &= records.prediction != records.label
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
