"""Any torchvision CNN: connections found by tracing, and a tiny Summit pass end to end.

Random weights (``weights=None``, nothing downloaded), 64 px images, a few layers each.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from compute.connect import find_connections
from compute.models import get_model
from compute.summit.aggregate import SummitPass
from compute.summit.config import SummitConfig

torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NUM_CLASSES = 3

#: name -> chosen layers and the kind of each consecutive pair.
CASES: dict[str, tuple[list[str], list[str]]] = {
    "googlenet": (
        ["conv3", "inception3a", "inception3b", "inception4a", "inception4c"],
        ["inception", "inception", "inception", "gradient"],
    ),
    "resnet18": (
        ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1", "layer2"],
        ["conv", "conv", "gradient", "gradient"],
    ),
    "resnet50": (
        ["layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3", "layer1", "layer2"],
        ["conv", "conv", "gradient", "gradient"],
    ),
    "vgg11": (["features.1", "features.4", "features.9"], ["conv", "gradient"]),
    "mobilenet_v3_small": (["features.0", "features.1", "features.2"], ["gradient", "gradient"]),
    "mobilenet_v3_large": (["features.1", "features.2", "features.4"], ["gradient", "gradient"]),
    "efficientnet_b0": (["features.0", "features.1", "features.2"], ["gradient", "gradient"]),
    "convnext_tiny": (["features.0", "features.1"], ["gradient"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_find_connections_classifies_the_models_own_layers(name: str) -> None:
    layers, kinds = CASES[name]
    with torch.device("meta"):  # tracing needs no weights
        extra = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
        model = torchvision.models.get_model(name, weights=None, **extra)
    got = find_connections(model, layers)
    assert got[0] is None
    assert [c.kind for c in got[1:] if c is not None] == kinds
    pairs = [(c.source, c.target) for c in got[1:] if c is not None]
    assert pairs == list(itertools.pairwise(layers))


def small(name: str) -> nn.Module:
    """A random-weight model with a 3-class head (VGG's 100M-weight head replaced)."""
    torch.manual_seed(0)
    if name != "vgg11":
        return get_model(f"torchvision:{name}", num_classes=NUM_CLASSES)
    with torch.device("meta"):
        model = torchvision.models.vgg11(weights=None)
    model.classifier = nn.Linear(512 * 7 * 7, NUM_CLASSES, device="meta")
    model = model.to_empty(device="cpu")
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.reset_parameters()
    return model


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_tiny_summit_pass_runs_end_to_end(name: str) -> None:
    layers, kinds = CASES[name]
    layers = layers[:4]
    model = small(name)
    config = SummitConfig(selection="topk", top_k=2, influence_top_k=3)
    g = torch.Generator().manual_seed(1)
    with SummitPass(model, layers, NUM_CLASSES, config) as summit:
        for step in range(2):
            images = torch.rand(2, 3, 64, 64, generator=g)
            labels = torch.tensor([step, 2])
            logits = summit.update(images, labels, torch.tensor([2 * step, 2 * step + 1]))
            assert logits.shape == (2, NUM_CLASSES)
        result = summit.result()
        state = summit.state_dict()
    assert result.num_images.tolist() == [1, 1, 2]
    assert [c.kind for c in summit.connections[1:] if c is not None] == kinds[: len(layers) - 1]
    for index, (channels, height, width) in enumerate(result.layer_shapes):
        assert height >= 1 and width >= 1
        assert result.activation_counts[index].shape == (NUM_CLASSES, channels)
        assert result.activation_counts[index].sum() == 4 * 2  # top_k=2 channels per image
        assert result.example_index[index].shape[0] == channels
        counts = result.influence_counts[index]
        if index == 0:
            assert counts is None
            continue
        assert counts is not None
        assert counts.shape == (NUM_CLASSES * channels, result.layer_shapes[index - 1][0])
        assert counts.nnz > 0 and counts.dtype == np.int64 and counts.data.min() > 0
        assert counts.sum() <= 4 * channels * 3  # at most k=3 per (image, output channel)
        if summit.connections[index].kind == "gradient":  # only the 2 selected per image
            assert np.count_nonzero(counts.sum(axis=1)) <= 4 * 2
    # A checkpoint restored into a fresh pass gives the same aggregates.
    with SummitPass(model, layers, NUM_CLASSES, config) as restored:
        restored.merge_state_dict(state)
        again = restored.result()
    for a, b in zip(again.influence_counts[1:], result.influence_counts[1:], strict=True):
        assert a is not None and b is not None
        assert (a != b).nnz == 0
