"""TopoAct Mapper: activation sampling (torch), Mapper graphs and shapes (torch-free)."""

from compute.topology.mapper import (
    MapperGraph,
    MapperIndex,
    MapperParams,
    NodeStats,
    compute_mapper,
    cover_bounds,
    node_statistics,
)
from compute.topology.shapes import Shape, find_flares, find_loops, find_shapes

__all__ = [
    "MapperGraph",
    "MapperIndex",
    "MapperParams",
    "NodeStats",
    "Shape",
    "compute_mapper",
    "cover_bounds",
    "find_flares",
    "find_loops",
    "find_shapes",
    "node_statistics",
]
