"""A small test atlas with a ``mapper`` part whose shapes are known (for the Topology view).

Layer 0's sample is a planted Y (three arms, label = arm: three flares), layer 1's a noisy
circle (one loop), layer 2's random. The indexes of layers 0 and 1 are exact for up to 10
intervals (band 0.25, no neighbour cap), so the graphs the view computes are exact; layer
2's index keeps 4 neighbours per side (``CAPPED_LAYER``): approximate, unless the view
clusters exactly (small samples, or "Recompute exactly").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compute.atlas import (
    MAPPER_SAMPLE_PATHS,
    PART_MAPPER,
    mapper_crop_path,
    mapper_files,
    mapper_inversion_path,
    update_atlas,
)
from compute.topology import MapperIndex, MapperParams
from tests.conftest import _png, write_test_atlas

LAYER_CHANNELS = (8, 12, 10)
#: Parameters (as URL query) under which layer 0 shows three flares and layer 1 one loop.
SHAPES_QUERY = "ti=10&to=30&te=200"
#: The same parameters: layer 0's nodes under them have (made-up) inversion images.
SHAPES_PARAMS = MapperParams(intervals=10, overlap=0.3, eps_scale=2.0)
#: The layer whose stored index is capped (approximate graphs).
CAPPED_LAYER = 2


def _planar(xy: np.ndarray, dim: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(scale=0.01, size=(len(xy), dim))
    x[:, :2] = xy
    return x.astype(np.float32)


def write_topology_atlas(out: Path, n: int = 600, seed: int = 0) -> Path:
    """The 6-class, 3-layer test atlas plus a mapper part (crops for every 3rd row)."""
    rng = np.random.default_rng(seed)
    path = write_test_atlas(out, num_classes=6, layer_channels=LAYER_CHANNELS, seed=seed)
    arm = rng.integers(0, 3, n)
    t = rng.uniform(0, 1, n)
    angle = arm * 2 * np.pi / 3
    y = np.stack([t * np.cos(angle), t * np.sin(angle)], 1) + rng.normal(scale=0.02, size=(n, 2))
    theta = rng.uniform(0, 2 * np.pi, n)
    ring = np.stack([3 + np.cos(theta), np.sin(theta)], 1) + rng.normal(scale=0.03, size=(n, 2))
    vectors = [
        _planar(y, LAYER_CHANNELS[0], rng),
        _planar(ring, LAYER_CHANNELS[1], rng),
        rng.random((n, LAYER_CHANNELS[2])).astype(np.float32),
    ]
    label = np.where(rng.random(n) < 0.9, arm, rng.integers(0, 6, n)).astype(np.int64)
    with update_atlas(path, add_parts=(PART_MAPPER,)) as sink:
        parameters = dict(_manifest_parameters(path))
        parameters["mapper"] = {
            "lens": "l2norm",
            "metric": "euclidean",
            "num_points": n,
            "inversions": {"steps": 0, "nodes": {}},
        }
        sink.manifest_updates["parameters"] = parameters  # type: ignore[attr-defined]
        sink.add_array(MAPPER_SAMPLE_PATHS["image_index"], np.arange(n, dtype=np.int64) * 2)
        sink.add_array(MAPPER_SAMPLE_PATHS["label"], label)
        for i, x in enumerate(vectors):
            cap = 4 if i == CAPPED_LAYER else 0
            index = MapperIndex.build(x, max_window=0.25, max_neighbors=cap)
            position = rng.integers(0, 4, (n, 2)).astype(np.int32)
            for relpath, array in mapper_files(i, x, position, index.to_arrays()).items():
                sink.add_array(relpath, array)
            if i == 0:
                graph = index.mapper(SHAPES_PARAMS)
                for k in range(graph.num_nodes):
                    sink.add_bytes(mapper_inversion_path(0, graph.node_key(k)), _png((9, 9, 9), 8))
            for row in range(0, n, 3):
                colour = (40 * (label[row] + 1), 120, 200 - 30 * label[row])
                sink.add_bytes(mapper_crop_path(i, row), _png(colour, 8))
    return path


def _manifest_parameters(path: Path) -> dict:
    import json

    return json.loads((path / "manifest.json").read_text())["parameters"]
