"""One input's own attribution graph, laid out on its class's graph (torch-free: the
dashboard and ``compute export`` use it).

The nodes are the input's selected channels of every layer (its instance record), the
edges its own top-k influences among them. A node that its class's graph also has takes
that node's slot; the others are appended to the right of their layer's row, in channel
order. The **overlap** is the share of the input's attribution mass on its class's graph:
per layer, a selected channel's mass is its spatial maximum divided by the sum over the
input's selected channels of that layer (the normalisation the selection rule uses); the
overlap is the mean over layers of the mass on channels the class graph holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compute.atlas import Atlas, AtlasError

#: A channel the class "rarely uses": fewer than this share of the class's images select it.
RARE_SHARE = 0.1


@dataclass(frozen=True)
class InstanceGraph:
    """One input's graph (node arrays of equal length, edges index them).

    Attributes:
        image_index: the input's index.
        label: its true class (the graph is laid out on this class's graph).
        prediction: its predicted class (``-1``: outside the classes).
        layer: ``int64 [n]`` layer of each node.
        channel: ``int64 [n]`` channel of each node.
        value: ``float32 [n]`` the input's spatial maximum of the channel.
        position: ``int64 [n, 2]`` ``(row, col)`` of that maximum in the layer's map.
        mass: ``float64 [n]`` share of the layer's attribution mass.
        on_class_graph: ``bool [n]`` the class's graph holds the channel.
        class_share: ``float64 [n]`` share of the class's images that select the channel.
        x: ``float64 [n]`` slot in the layer's row (the class graph's where it has one).
        source: ``int64 [e]`` lower-layer node of each edge.
        target: ``int64 [e]`` upper-layer node of each edge.
        overlap: mean over layers of the mass on the class graph's channels.
        layer_overlap: ``float64 [layers]`` that share per layer (NaN: no channel).
    """

    image_index: int
    label: int
    prediction: int
    layer: np.ndarray
    channel: np.ndarray
    value: np.ndarray
    position: np.ndarray
    mass: np.ndarray
    on_class_graph: np.ndarray
    class_share: np.ndarray
    x: np.ndarray
    source: np.ndarray
    target: np.ndarray
    overlap: float
    layer_overlap: np.ndarray

    @property
    def num_nodes(self) -> int:
        return int(self.layer.shape[0])

    @property
    def rare(self) -> np.ndarray:
        """``bool [n]``: channels fewer than ``RARE_SHARE`` of the class's images use."""
        return self.class_share < RARE_SHARE


def instance_graph(atlas: Atlas, row: int) -> InstanceGraph:
    """The graph of instance record ``row`` (``Atlas.instances``) on its class's graph.

    Raises:
        AtlasError: a row out of range, or an atlas without the parts it needs
            (``instances``, ``summit``, ``graphs``).
    """
    records = atlas.instances()
    if not 0 <= row < records.num_instances:
        raise AtlasError(f"instance row {row} out of range 0..{records.num_instances - 1}")
    label = int(records.label[row])
    class_graph = atlas.graph(label)
    images = max(int(atlas.class_stats()["num_images"][label]), 1)
    layers: list[int] = []
    channels: list[np.ndarray] = []
    values, positions, masses, shares, xs, on_graph = [], [], [], [], [], []
    layer_overlap = np.full(len(atlas.layers), np.nan)
    for layer in range(len(atlas.layers)):
        chosen, value, position = records.channels(row, layer)
        chosen = chosen.astype(np.int64)
        total = float(value.astype(np.float64).sum())
        mass = value.astype(np.float64) / total if total > 0 else np.zeros(chosen.shape[0])
        row_nodes = class_graph.layer == layer
        slots = dict(
            zip(
                class_graph.channel[row_nodes].tolist(),
                class_graph.x[row_nodes].astype(np.float64).tolist(),
                strict=True,
            )
        )
        held = np.array([c in slots for c in chosen.tolist()], dtype=bool)
        right = max(slots.values(), default=-1.0) + 1.0
        extra = np.cumsum(~held) - 1  # appended nodes, in channel order
        x = np.array(
            [
                slots[c] if h else right + e
                for c, h, e in zip(chosen.tolist(), held, extra, strict=True)
            ],
            dtype=np.float64,
        )
        if chosen.size:
            layer_overlap[layer] = float(mass[held].sum())
        layers += [layer] * chosen.shape[0]
        channels.append(chosen)
        values.append(value.astype(np.float32))
        positions.append(position.astype(np.int64).reshape(-1, 2))
        masses.append(mass)
        shares.append(atlas.activation_counts(layer)[label, chosen] / images)
        xs.append(x)
        on_graph.append(held)
    layer_of = np.array(layers, dtype=np.int64)
    channel_of = np.concatenate(channels) if channels else np.zeros(0, np.int64)
    pairs = zip(layer_of.tolist(), channel_of.tolist(), strict=True)
    node_of = {pair: k for k, pair in enumerate(pairs)}
    sources, targets = [], []
    for layer in range(1, len(atlas.layers)):
        for target, source in records.edges(row, layer).tolist():
            sources.append(node_of[(layer - 1, source)])
            targets.append(node_of[(layer, target)])
    valid = layer_overlap[~np.isnan(layer_overlap)]
    return InstanceGraph(
        image_index=int(records.image_index[row]),
        label=label,
        prediction=int(records.prediction[row]),
        layer=layer_of,
        channel=channel_of,
        value=np.concatenate(values) if values else np.zeros(0, np.float32),
        position=np.concatenate(positions) if positions else np.zeros((0, 2), np.int64),
        mass=np.concatenate(masses) if masses else np.zeros(0),
        on_class_graph=np.concatenate(on_graph) if on_graph else np.zeros(0, bool),
        class_share=np.concatenate(shares).astype(np.float64) if shares else np.zeros(0),
        x=np.concatenate(xs) if xs else np.zeros(0),
        source=np.array(sources, dtype=np.int64),
        target=np.array(targets, dtype=np.int64),
        overlap=float(valid.mean()) if valid.size else float("nan"),
        layer_overlap=layer_overlap,
    )
