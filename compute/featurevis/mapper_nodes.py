"""Activation-inversion images of Mapper nodes (TopoAct's per-node "average activation" image).

For every layer of an atlas with the ``mapper`` part, the default Mapper graph (the
parameters the atlas records, clustered as the dashboard shows it first) is recomputed, and
each node's **mean activation vector** is inverted with Activation Atlas' objective
(:func:`compute.featurevis.render.invert_activations`): the image whose activation at the
layer points along the mean. Images are named by the node's member hash
(:meth:`~compute.topology.mapper.MapperGraph.node_key`), so the dashboard finds the image of a
node in any graph where that node appears, and an old atlas without them stays readable.

Cheap by design (TopoAct renders one such image per node): few Adam steps
(:data:`INVERSION_STEPS`), the model's own input size, all nodes of a layer in a few batches.

Examples:
    python -m compute featurevis --atlas demo-atlas --mapper-only
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from torch import nn
from tqdm import tqdm

from compute.atlas import PART_MAPPER, Atlas, AtlasError, mapper_inversion_path, update_atlas
from compute.featurevis.param import ImageSpace
from compute.featurevis.render import (
    RenderConfig,
    bar_progress,
    invert_activations,
    render_steps,
)
from compute.png import png_bytes
from compute.topology.mapper import (
    MapperGraph,
)
from compute.topology.part import default_graph

log = logging.getLogger(__name__)

#: Adam steps per inversion: a node image is a 20-40 px glyph in TopoAct, and 64 steps
#: reach most of the objective on small inputs (the channel images use 128-256).
INVERSION_STEPS = 64


def node_means(graph: MapperGraph, vectors: np.ndarray) -> np.ndarray:
    """float32 ``[nodes, C]`` mean activation vector of every node's members.

    Examples:
        >>> from compute.topology.mapper import MapperIndex, MapperParams
        >>> x = np.random.default_rng(0).random((200, 3)).astype(np.float32)
        >>> g = MapperIndex.build(x).mapper(MapperParams(intervals=4))
        >>> bool(np.allclose(node_means(g, x)[0], x[g.members(0)].mean(axis=0)))
        True
    """
    x = np.asarray(vectors, dtype=np.float64)
    sums = np.add.reduceat(x[graph.node_members], graph.node_indptr[:-1], axis=0)
    if graph.num_nodes == 0:
        return np.zeros((0, x.shape[1]), dtype=np.float32)
    return (sums / graph.node_sizes[:, None]).astype(np.float32)


def render_mapper_inversions(
    atlas_path: str | Path,
    *,
    model: nn.Module,
    steps: int = INVERSION_STEPS,
    device: str = "cpu",
    seed: int = 0,
    layers: list[int] | None = None,
    progress: bool = True,
) -> int:
    """Render and add the inversion image of every node of each layer's default graph.

    Args:
        atlas_path: the atlas directory (with the ``mapper`` part).
        model: the atlas's model, on ``device``.
        steps: Adam steps per image.
        device: where to optimise.
        seed: render seed (same seed, same bytes).
        layers: layer indices (``None``: every layer).
        progress: a progress bar over the optimisation steps (each takes seconds on a
            CPU); each layer adds its steps when it starts (its graph says how many).

    Returns:
        The number of images written.

    Raises:
        AtlasError: the atlas has no ``mapper`` part.
    """

    atlas = Atlas.open(atlas_path)
    if PART_MAPPER not in atlas.parts:
        raise AtlasError(f"atlas {atlas.path} has no 'mapper' part: nothing to invert")
    space = ImageSpace.from_manifest(atlas.manifest)
    settings = dict(atlas.parameters.get("mapper") or {})
    position = "mean" if settings.get("mode") == "mean" else "center"
    config = RenderConfig(steps=steps, seed=seed, batch_channels=64)
    chosen = list(range(len(atlas.layers))) if layers is None else list(layers)
    written = 0
    counts: dict[str, int] = {}
    with (
        update_atlas(atlas.path) as sink,
        tqdm(total=0, desc="Mapper node inversions", unit="step", disable=not progress) as bar,
    ):
        step = bar_progress(bar)
        for i in chosen:
            layer = atlas.layers[i]
            bar.set_postfix_str(layer.name)
            graph = default_graph(atlas, i)
            if graph.num_nodes == 0:
                counts[layer.name] = 0
                continue
            step(0, render_steps(graph.num_nodes, config))
            means = node_means(graph, np.asarray(atlas.mapper_sample(i).vectors))
            images = invert_activations(
                model,
                layer.name,
                means,
                space,
                config,
                position=position,
                device=device,
                progress=step,
            )
            for k in range(graph.num_nodes):
                sink.add_bytes(mapper_inversion_path(i, graph.node_key(k)), png_bytes(images[k]))
            written += graph.num_nodes
            counts[layer.name] = graph.num_nodes
            log.info("inverted %d Mapper node means of %s", graph.num_nodes, layer.name)
        parameters = dict(atlas.parameters)
        settings["inversions"] = {
            "objective": "dot(a, v) * max(0.1, cos(a, v))^2 of the node's mean vector v",
            "position": position,
            "steps": steps,
            "seed": seed,
            "nodes": counts,
        }
        parameters["mapper"] = settings
        sink.manifest_updates["parameters"] = parameters  # type: ignore[attr-defined]
    return written


__all__ = ["INVERSION_STEPS", "node_means", "render_mapper_inversions"]
