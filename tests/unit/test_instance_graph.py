"""One input's graph on its class's graph, checked against a plain recomputation from the
stored record and class graph (the demo atlas records every training image)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compute.atlas import Atlas, AtlasError
from compute.summit.instance_graph import RARE_SHARE, instance_graph


def plain_overlap(demo: Atlas, row: int) -> float:
    """Mean over layers of the share of the input's summed maxima on its class graph."""
    records = demo.instances()
    graph = demo.graph(int(records.label[row]))
    shares = []
    for layer in range(len(demo.layers)):
        channels, values, _ = records.channels(row, layer)
        held = {int(c) for c, at in zip(graph.channel, graph.layer, strict=True) if at == layer}
        total = sum(float(v) for v in values)
        if len(channels):
            on = sum(float(v) for c, v in zip(channels, values, strict=True) if int(c) in held)
            shares.append(on / total)
    return sum(shares) / len(shares)


@pytest.mark.parametrize("pick", ["first", "mistake", "last"])
def test_the_graph_is_the_record_on_its_class_graph(demo: Atlas, pick: str) -> None:
    records = demo.instances()
    wrong = np.flatnonzero(records.prediction != records.label)
    row = {"first": 0, "mistake": int(wrong[0]), "last": records.num_instances - 1}[pick]
    got = instance_graph(demo, row)
    label = int(records.label[row])
    assert (got.label, got.prediction) == (label, int(records.prediction[row]))
    class_graph = demo.graph(label)
    slots = {
        (int(at), int(c)): float(x)
        for at, c, x in zip(class_graph.layer, class_graph.channel, class_graph.x, strict=True)
    }
    images = int(demo.class_stats()["num_images"][label])
    for layer in range(len(demo.layers)):
        channels, values, positions = records.channels(row, layer)
        mine = got.layer == layer
        np.testing.assert_array_equal(got.channel[mine], channels)
        np.testing.assert_array_equal(got.value[mine], values)
        np.testing.assert_array_equal(got.position[mine], positions)
        right = max((x for (at, _), x in slots.items() if at == layer), default=-1.0)
        appended = []
        for c, x, held, share in zip(
            got.channel[mine],
            got.x[mine],
            got.on_class_graph[mine],
            got.class_share[mine],
            strict=True,
        ):
            assert held == ((layer, int(c)) in slots)
            if held:
                assert x == slots[(layer, int(c))]
            else:
                appended.append(x)
            assert share == demo.activation_counts(layer)[label, c] / images
        assert appended == [right + 1 + k for k in range(len(appended))]
    assert math.isclose(got.overlap, plain_overlap(demo, row), rel_tol=1e-12)
    edges = {
        (int(got.layer[t]), int(got.channel[t]), int(got.layer[s]), int(got.channel[s]))
        for s, t in zip(got.source, got.target, strict=True)
    }
    stored = {
        (layer, int(t), layer - 1, int(s))
        for layer in range(1, len(demo.layers))
        for t, s in records.edges(row, layer)
    }
    assert edges == stored and edges
    assert got.rare.tolist() == (got.class_share < RARE_SHARE).tolist()


def test_mistaken_inputs_lie_less_on_their_class_graph(demo: Atlas) -> None:
    """A sanity property of the measure on the demo: its five mistaken training images
    overlap their (true) class's graph less than the median correct image."""
    records = demo.instances()
    overlaps = np.array([instance_graph(demo, r).overlap for r in range(records.num_instances)])
    wrong = records.prediction != records.label
    assert wrong.sum() == 5
    assert np.all((overlaps >= 0) & (overlaps <= 1))
    assert np.median(overlaps[wrong]) < np.median(overlaps[~wrong])


def test_a_row_out_of_range_is_refused(demo: Atlas) -> None:
    with pytest.raises(AtlasError, match="out of range"):
        instance_graph(demo, demo.instances().num_instances)
