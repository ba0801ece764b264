"""The Summit pass with bound-pruned influence equals the plain per-image reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compute.summit import influence
from compute.summit.aggregate import SummitPass
from compute.summit.config import SummitConfig
from tests.reference import reference_aggregates

NUM_CLASSES = 3

# torch on one thread for the whole module (fixture in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def wide_chain(seed: int, integer: bool) -> nn.Module:
    """Wide-ish layers (24 and 20 input channels) with stride, padding and dilation."""
    torch.manual_seed(seed)
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(3, 24, 3, padding=1, bias=False))
    model.add_module("relu1", nn.ReLU())
    model.add_module("conv2", nn.Conv2d(24, 20, 3, stride=2, padding=1, bias=False))
    model.add_module("relu2", nn.ReLU())
    model.add_module("pool", nn.MaxPool2d(2))
    model.add_module("conv3", nn.Conv2d(20, 9, 3, padding=2, dilation=2, bias=False))
    model.add_module("relu3", nn.ReLU())
    model.add_module("gap", nn.AdaptiveMaxPool2d(1))
    model.add_module("flat", nn.Flatten())
    model.add_module("head", nn.Linear(9, NUM_CLASSES, bias=False))
    model = model.double()
    if integer:  # exact arithmetic: ties among input channels are real ties
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randint(-1, 2, p.shape).double())
    return model.eval()


@pytest.mark.parametrize("integer", [False, True], ids=["float", "integer-ties"])
def test_pruned_influence_counts_equal_the_reference(monkeypatch, integer: bool) -> None:
    calls: list[int] = []
    original = influence.influence_maxima_pruned

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(influence, "influence_maxima_pruned", spy)
    monkeypatch.setattr(influence, "PRUNE_MIN_RATIO", 2)  # prune these layers ...
    monkeypatch.setattr(influence, "BATCHED_TILE", 0)  # ... which would fit "batched"
    monkeypatch.setattr(influence, "PRUNED_TILE", 500)  # several groups per round
    model = wide_chain(seed=31, integer=integer)
    g = torch.Generator().manual_seed(37)
    n = 11
    if integer:
        images = torch.randint(0, 3, (n, 3, 16, 16), generator=g).double()
    else:
        images = torch.randn((n, 3, 16, 16), generator=g, dtype=torch.float64)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    indices = torch.arange(n) * 2
    layers = ["relu1", "relu2", "relu3"]
    config = SummitConfig(selection="topk", top_k=4, influence_top_k=3, examples_per_channel=2)
    ref = reference_aggregates(model, layers, NUM_CLASSES, config, images, labels, indices)
    for batch in (4, n):
        with SummitPass(model, layers, NUM_CLASSES, config) as summit:
            for start in range(0, n, batch):
                end = start + batch
                summit.update(images[start:end], labels[start:end], indices[start:end])
            fast = summit.result()
        for k in range(len(layers)):
            np.testing.assert_array_equal(fast.activation_counts[k], ref.activation_counts[k])
            i_fast, i_ref = fast.influence_counts[k], ref.influence_counts[k]
            assert (i_fast is None) == (i_ref is None)
            if i_fast is not None and i_ref is not None:
                assert i_ref.nnz > 0
                np.testing.assert_array_equal(i_fast.toarray(), i_ref.toarray())
    assert calls, "the pruned path was not taken"
