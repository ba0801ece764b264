"""The atlas ``mapper`` part from a sample: per-layer Mapper index, crop subset, manifest entry.

Shared by :func:`compute.build.build_atlas` (a real sample from the streaming pass) and
:mod:`compute.synthetic` (a made-up one). Torch-free apart from the sampling hash, which
lives in :mod:`compute.topology.sample`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compute.atlas import (
    MAPPER_SAMPLE_PATHS,
    PART_MAPPER,
    Atlas,
    AtlasError,
    mapper_files,
    update_atlas,
)
from compute.topology.mapper import (
    EXACT_POINTS,
    MapperGraph,
    MapperIndex,
    MapperParams,
    default_graph_params,
    default_params,
)

log = logging.getLogger(__name__)

#: Crops stored per layer: the first ``CROP_POINTS`` sample rows in hash order (a uniform
#: subset) plus up to ``CROPS_PER_NODE`` members of every node of the default graph.
CROP_POINTS = 2_000
CROPS_PER_NODE = 12
#: Per-point neighbour cap of the stored index (docs/topology.md §2).
MAX_NEIGHBORS = 64


@dataclass
class MapperPart:
    """What a build writes for the ``mapper`` part.

    Attributes:
        files: ``{atlas relpath: array}`` of every ``.npy`` file of the part.
        crop_rows: per layer, int64 sample rows whose crop should be stored (ascending).
        parameters: the manifest's ``parameters.mapper`` entry.
    """

    files: dict[str, np.ndarray]
    crop_rows: list[np.ndarray]
    parameters: dict[str, Any]


def _hash_rank(image_index: np.ndarray, seed: int) -> np.ndarray:
    """Rank of each row in the sampler's hash order (0 = the most "random" first pick)."""
    from compute.topology.sample import image_hash

    keys = image_hash(seed, image_index)
    rank = np.empty(len(keys), dtype=np.int64)
    rank[np.argsort(keys, kind="stable")] = np.arange(len(keys))
    return rank


def crop_subset(
    graph_members: Sequence[np.ndarray],
    rank: np.ndarray,
    crop_points: int = CROP_POINTS,
    crops_per_node: int = CROPS_PER_NODE,
) -> np.ndarray:
    """Sample rows to crop: the ``crop_points`` lowest-ranked plus ``crops_per_node`` per node.

    Args:
        graph_members: members of each node of the default graph.
        rank: hash rank of every sample row.
        crop_points: rows taken in rank order.
        crops_per_node: lowest-ranked members taken from each node.

    Returns:
        int64 sample rows, ascending, distinct.

    Examples:
        >>> crop_subset([np.array([3, 4])], np.array([4, 3, 2, 1, 0]), 1, 1).tolist()
        [4]
    """
    chosen = [np.flatnonzero(rank < crop_points)]
    for members in graph_members:
        if len(members):
            chosen.append(members[np.argsort(rank[members], kind="stable")[:crops_per_node]])
    return np.unique(np.concatenate(chosen)).astype(np.int64)


def mapper_part(
    image_index: np.ndarray,
    label: np.ndarray,
    vectors: Sequence[np.ndarray],
    positions: Sequence[np.ndarray],
    *,
    seed: int = 0,
    capacity: int | None = None,
    mode: str = "position",
    params: MapperParams | None = None,
    max_neighbors: int = MAX_NEIGHBORS,
    crop_points: int = CROP_POINTS,
    crops_per_node: int = CROPS_PER_NODE,
    device: str | None = None,
) -> MapperPart:
    """Index every layer's sample and choose the rows to crop.

    Args:
        image_index: int64 ``[n]`` sampled images (ascending), the same for every layer.
        label: int64 ``[n]`` their class.
        vectors: per layer, float32 ``[n, C]``.
        positions: per layer, int32 ``[n, 2]`` sampled positions.
        seed: the sampling seed (orders the crop subset).
        capacity: the sampler's capacity (recorded).
        mode: ``"position"`` or ``"mean"`` (recorded).
        params: the default Mapper parameters (``None``: :func:`default_params` of the
            sample size); their lens, metric and ``min_samples`` shape the index, their
            graph picks per-node crops (and the nodes whose inversions are rendered).
        max_neighbors: neighbour cap of the index.
        crop_points: rows cropped in hash order per layer (0: none).
        crops_per_node: members cropped per default-graph node (0: none).
        device: torch device for the index build's distance blocks (the build's CUDA
            device; ``None``: numpy on the CPU). Same candidates, cap and tie rule.

    Returns:
        The :class:`MapperPart`.

    Raises:
        ValueError: fewer than 2 sampled points, or inconsistent shapes.
    """
    image_index = np.asarray(image_index, dtype=np.int64)
    n = len(image_index)
    params = params if params is not None else default_params(n)
    if n < 2:
        raise ValueError(f"the Mapper sample holds {n} image(s); at least 2 are needed")
    files: dict[str, np.ndarray] = {
        MAPPER_SAMPLE_PATHS["image_index"]: image_index,
        MAPPER_SAMPLE_PATHS["label"]: np.asarray(label, dtype=np.int64),
    }
    rank = _hash_rank(image_index, seed)
    crop_rows: list[np.ndarray] = []
    for i, (x, position) in enumerate(zip(vectors, positions, strict=True)):
        if len(x) != n or len(position) != n:
            raise ValueError(f"layer {i}: {len(x)} vectors for {n} sampled images")
        index = MapperIndex.build(
            x,
            params.metric,
            lens=params.lens,
            max_neighbors=max_neighbors,
            min_samples=params.min_samples,
            seed=seed,
            device=device,
        )
        files.update(mapper_files(i, x, position, index.to_arrays()))
        members: list[np.ndarray] = []
        if crops_per_node > 0:
            # Small samples: the exact graph, as the dashboard shows it (EXACT_POINTS).
            graph = index.mapper(params, vectors=x, exact=n <= EXACT_POINTS)
            members = [graph.members(k) for k in range(graph.num_nodes)]
        crop_rows.append(
            crop_subset(members, rank, crop_points, crops_per_node)
            if crop_points > 0 or crops_per_node > 0
            else np.empty(0, dtype=np.int64)
        )
    defaults = {
        key: value
        for key, value in dataclasses.asdict(params).items()
        if key not in ("lens", "metric")
    }
    parameters = {
        "capacity": int(capacity) if capacity is not None else n,
        "seed": int(seed),
        "mode": mode,
        "lens": params.lens,
        "metric": params.metric,
        "min_samples": params.min_samples,
        "max_neighbors": int(max_neighbors),
        "num_points": n,
        "crops": {"points": int(crop_points), "per_node": int(crops_per_node)},
        "defaults": defaults,
    }
    return MapperPart(files=files, crop_rows=crop_rows, parameters=parameters)


def refresh_default_params(atlas_path: str | Path) -> MapperParams:
    """Record :func:`default_params` of the sample size as an atlas's Mapper defaults.

    For atlases built before the defaults depended on the sample size (they recorded
    TopoAct's 70 intervals / 30 % whatever the size). Only ``parameters.mapper.defaults``
    changes (the index and crops do not depend on them), so this equals a rebuild's
    manifest entry without redoing the pass.

    Args:
        atlas_path: the atlas directory (with the ``mapper`` part).

    Returns:
        The parameters recorded.

    Raises:
        AtlasError: the atlas has no ``mapper`` part.
    """
    atlas = Atlas.open(atlas_path)
    if PART_MAPPER not in atlas.parts:
        raise AtlasError(f"atlas {atlas.path} has no 'mapper' part")
    settings = dict(atlas.parameters.get("mapper") or {})
    params = default_params(int(settings.get("num_points") or 1))
    settings["defaults"] = {
        key: value
        for key, value in dataclasses.asdict(params).items()
        if key not in ("lens", "metric")
    }
    with update_atlas(atlas.path) as sink:
        parameters = dict(atlas.parameters)
        parameters["mapper"] = settings
        sink.manifest_updates["parameters"] = parameters  # type: ignore[attr-defined]
    return params


def default_graph(atlas: Atlas, layer: int) -> MapperGraph:
    """The layer's Mapper graph at the atlas's default parameters, as the dashboard shows it
    with no Mapper parameter in its URL: the graph featurevis inverts and ``export`` writes.

    Small samples (up to ``EXACT_POINTS``) are clustered exactly, larger ones from the
    stored index (the dashboard's first view).
    """
    index = MapperIndex.from_arrays(atlas.mapper_index_arrays(layer))
    params = default_graph_params(atlas.parameters.get("mapper"), index)
    vectors = np.asarray(atlas.mapper_sample(layer).vectors)
    return index.mapper(params, vectors=vectors, exact=index.num_points <= EXACT_POINTS)
