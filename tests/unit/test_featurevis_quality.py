"""Feature visualization on models that are not the demo: dead ReLUs (issue 13, item 2).

An image on which a channel is off everywhere gets no gradient through its ReLU; before
the redirected gradient reached functional ReLUs and every step, such channels rendered
blank. These tests use random-weight models and generated shapes only
(``tests/helpers/shapes.py``, the project's second data set); ``bench/bench_featurevis.py
quality`` measures the rates on the trained shapes CNN and ResNet-18.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compute.featurevis import ImageSpace, LayerCapture, RenderConfig, from_uint8, render_channels
from compute.featurevis.render import (
    RedirectedReLUs,
    _mark_objective_relu,
    _RedirectedReLU,
    own_activation,
)
from compute.summit.activation import spatial_max
from tests.helpers.shapes import MEAN, STD, shapes_cnn, shapes_dataset

SPACE = ImageSpace(3, 32, 32, MEAN, STD)


class _FunctionalBlock(nn.Module):
    """``F.relu(conv(x) - offset)``: a functional ReLU, not an ``nn.ReLU`` module."""

    def __init__(self, cin: int, cout: int, stride: int, offset: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x) - self.offset)


def functional_cnn() -> nn.Module:
    """Random weights; the second block's channels are off on a grey image (offset)."""
    with torch.random.fork_rng():
        torch.manual_seed(3)
        return nn.Sequential(
            _FunctionalBlock(3, 16, 1, 0.0),
            _FunctionalBlock(16, 24, 2, 0.6),
        ).eval()


def layer_maxima(model: nn.Module, layer: str, pixels: torch.Tensor) -> torch.Tensor:
    """``float[N, C]``: the layer's (post-activation) spatial maxima, as Summit's examples."""
    with torch.no_grad(), LayerCapture(model, layer) as capture:
        return spatial_max(capture(SPACE.normalise(pixels)))[0]


def test_channels_off_on_the_start_image_do_not_render_blank() -> None:
    """Fails without the redirect on functional ReLUs: most channels stayed at exactly 0."""
    model = functional_cnn()
    images, _ = shapes_dataset(200, seed=5)
    data = layer_maxima(model, "1", images)
    grey = layer_maxima(model, "1", torch.full((1, 3, 32, 32), 0.5))[0]
    firing = [int(c) for c in (data > 0).any(dim=0).nonzero().flatten()]
    assert len(firing) >= 12 and float((grey[firing] <= 0).float().mean()) > 0.5
    vis = render_channels(model, "1", firing, SPACE, RenderConfig(steps=48))
    own = layer_maxima(model, "1", from_uint8(vis))[torch.arange(len(firing)), firing]
    assert int((own <= 0).sum()) == 0, f"blank channels: {(own <= 0).nonzero().flatten()}"
    above_median = float((own > data[:, firing].median(dim=0).values).float().mean())
    assert above_median >= 0.95


def test_without_the_redirect_the_same_channels_render_blank() -> None:
    """The failure the redirect fixes is real on this model (so the test above can fail)."""
    model = functional_cnn()
    images, _ = shapes_dataset(200, seed=5)
    data = layer_maxima(model, "1", images)
    firing = [int(c) for c in (data > 0).any(dim=0).nonzero().flatten()]
    config = RenderConfig(steps=48, redirect_steps=0)
    vis = render_channels(model, "1", firing, SPACE, config)
    own = layer_maxima(model, "1", from_uint8(vis))[torch.arange(len(firing)), firing]
    assert float((own <= 0).float().mean()) > 0.25


def test_redirected_relu_gradient_and_in_place_form() -> None:
    x = torch.tensor([[-1.0, -2.0], [-1.0, 3.0]], requires_grad=True)
    # Loss gradient -1 raises x under gradient descent, +1 would lower it.
    grad = torch.tensor([[-1.0, 1.0], [-1.0, 1.0]])
    _RedirectedReLU.apply(x, False).backward(grad)
    # Row 0 is off everywhere: only the "raise x" gradient passes. Row 1 has a live unit:
    # the ordinary ReLU gradient.
    assert torch.equal(x.grad, torch.tensor([[-1.0, 0.0], [0.0, 1.0]]))
    # Maps [N, C, h, w]: Lucid's form at a hidden ReLU; at the objective's own ReLU
    # (marked by the render loop), a dead image's gradient goes to each channel's peak.
    maps = torch.tensor([[[[-3.0, -0.5], [-1.0, -2.0]]], [[[-1.0, 2.0], [0.5, -4.0]]]])
    down = torch.full((2, 1, 2, 2), -1.0)
    hidden = maps.clone().requires_grad_(True)
    _RedirectedReLU.apply(hidden * 1, False).backward(down)
    lucid = torch.tensor([[[[-1.0, -1.0], [-1.0, -1.0]]], [[[0.0, -1.0], [-1.0, 0.0]]]])
    assert torch.equal(hidden.grad, lucid)
    own = maps.clone().requires_grad_(True)
    acts = _RedirectedReLU.apply(own * 1, False)
    _mark_objective_relu(acts, to_peak=True)
    acts.backward(down)
    peak = torch.tensor([[[[0.0, -1.0], [0.0, 0.0]]], [[[0.0, -1.0], [-1.0, 0.0]]]])
    assert torch.equal(own.grad, peak)
    # In place: same values as relu_, the input tensor is the output, gradients as relu's.
    a = torch.randn(3, 4, 5, 5, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    out = _RedirectedReLU.apply(a * 1, True)
    ref = torch.relu_(b * 1)
    assert torch.equal(out, ref)
    weights = torch.randn(3, 4, 5, 5)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    assert torch.equal(a.grad, b.grad)  # every image has live units: the true gradient


@pytest.mark.parametrize(
    "call",
    [
        lambda x: torch.relu(x),
        lambda x: F.relu(x),
        lambda x: F.relu(x, inplace=True),
        lambda x: F.relu(x, True),
        lambda x: x.relu(),
        lambda x: x.relu_(),
        lambda x: nn.ReLU(inplace=True)(x),
        lambda x: nn.ReLU()(x),
    ],
)
def test_every_relu_entry_point_is_redirected(call: Callable[[torch.Tensor], torch.Tensor]) -> None:
    x = torch.full((2, 3, 4, 4), -1.0, requires_grad=True)
    with RedirectedReLUs():
        out = call(x * 1)
    assert torch.equal(out, torch.zeros(2, 3, 4, 4))
    out.sum().neg().backward()  # all off: only the redirect gives a gradient
    assert float(x.grad.abs().sum()) == 2 * 3 * 16  # every unit (a hidden ReLU: Lucid's)
    assert "_RedirectedReLU" not in type(F.relu(x * 1).grad_fn).__name__  # mode exited


def _hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def test_render_leaves_the_model_unchanged_also_on_error() -> None:
    model = shapes_cnn()  # inplace ReLUs and a ReLU module called twice (as ResNet)
    model.train()
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        before = model(x)
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    render_channels(model, "block4", [0, 5], SPACE, RenderConfig(steps=3))

    def boom(acts: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("objective failed")

    from compute.featurevis import optimise

    with pytest.raises(RuntimeError, match="objective failed"):
        optimise(model, "block3.relu", boom, 2, SPACE, RenderConfig(steps=2))
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert _hook_count(model) == 0
    assert not any("forward" in vars(m) for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), before)
    # No function mode left behind: ReLUs outside a render are torch's own.
    y = F.relu(torch.randn(3, requires_grad=True))
    assert type(y.grad_fn).__name__ == "ReluBackward0"


def test_render_with_redirect_is_deterministic() -> None:
    model = shapes_cnn()
    config = RenderConfig(steps=12, batch_channels=3)
    first = render_channels(model, "block4", [0, 7, 9, 30], SPACE, config)
    again = render_channels(model, "block4", [0, 7, 9, 30], SPACE, config)
    assert first.dtype == np.uint8 and first.shape == (4, 32, 32, 3)
    assert first.tobytes() == again.tobytes()
    functional = functional_cnn()
    a = render_channels(functional, "1", [1, 2], SPACE, RenderConfig(steps=8))
    b = render_channels(functional, "1", [1, 2], SPACE, RenderConfig(steps=8))
    assert a.tobytes() == b.tobytes()


def test_retry_rescues_channels_still_dead_after_a_short_render(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A channel whose image leaves it at 0 is re-optimised (other seed, twice the steps)
    and the better image kept; channels that fire keep their first image, byte for byte.
    Fails without the retry: at 4 steps several channels of this model are still off."""
    model = functional_cnn()
    images, _ = shapes_dataset(200, seed=5)
    firing = [int(c) for c in (layer_maxima(model, "1", images) > 0).any(dim=0).nonzero()[:, 0]]
    plain = render_channels(model, "1", firing, SPACE, RenderConfig(steps=4, retry_dead=False))
    retried = render_channels(model, "1", firing, SPACE, RenderConfig(steps=4))
    before = own_activation(model, "1", plain, firing, SPACE)
    after = own_activation(model, "1", retried, firing, SPACE)
    dead = before <= 0
    assert int(dead.sum()) >= 4
    assert int((after <= 0).sum()) <= int(dead.sum()) // 2  # most dead ones rescued
    assert bool((after >= before).all())  # the better image is kept
    assert np.array_equal(retried[~dead.numpy()], plain[~dead.numpy()])
    again = render_channels(model, "1", firing, SPACE, RenderConfig(steps=4))
    assert again.tobytes() == retried.tobytes()  # deterministic
    # A batch without a dead channel is not optimised again (one forward to check).
    from compute.featurevis import render

    config = RenderConfig(steps=4, batch_channels=2)
    first = render_channels(
        model, "1", firing, SPACE, dataclasses.replace(config, retry_dead=False)
    )
    off = (own_activation(model, "1", first, firing, SPACE) <= 0).view(-1, 2).any(dim=1)
    assert 0 < int(off.sum()) < len(off)

    calls: list[int] = []
    original = render.optimise

    def counting(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(render, "optimise", counting)
    render_channels(model, "1", firing, SPACE, config)
    assert len(calls) == len(off) + int(off.sum())
