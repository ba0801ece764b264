"""TopoAct Mapper: activation sampling (torch), Mapper graphs and shapes (torch-free)."""

from compute.topology.mapper import (
    MapperGraph,
    MapperIndex,
    MapperParams,
    NodeStats,
    cover_bounds,
    mapper,
    node_statistics,
)
from compute.topology.shapes import Shape, find_flares, find_loops, find_shapes

__all__ = [
    "MapperGraph",
    "MapperIndex",
    "MapperParams",
    "NodeStats",
    "Shape",
    "cover_bounds",
    "find_flares",
    "find_loops",
    "find_shapes",
    "mapper",
    "node_statistics",
]
