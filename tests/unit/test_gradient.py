"""Gradient × activation attribution equals finite differences; the pass counts it exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from compute.summit.activation import spatial_max, topk_mask
from compute.summit.aggregate import SummitPass
from compute.summit.config import SummitConfig
from compute.summit.gradient import (
    MAX_CHANNELS,
    attribution_topk,
    gradient_attribution,
    gradient_seeds,
    positionwise_attribution,
    positionwise_chain,
)
from tests.reference import finite_difference_attribution, gradient_reference_counts

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NUM_CLASSES = 3


class Residual(nn.Module):
    """conv-BN-SiLU-conv plus the identity, then SiLU (a ResNet basic block, smooth)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.silu(self.conv2(nn.functional.silu(self.bn1(self.conv1(x)))) + x)


class Separable(nn.Module):
    """Depthwise 3×3 (GELU) then pointwise 1×1: a MobileNet block without the residual."""

    def __init__(self, channels: int, out: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.pointwise = nn.Conv2d(channels, out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(nn.functional.gelu(self.depthwise(x)))


class Concat(nn.Module):
    """Two convolutions concatenated with a strided pooled copy of the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(channels, 3, 3, stride=2, padding=1)
        self.b = nn.Conv2d(3, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.tanh(self.a(x))
        return torch.cat([y, self.b(y), nn.functional.avg_pool2d(x, 2)], dim=1)


def blocks() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {"residual": Residual(4), "separable": Separable(4, 5), "concat": Concat(4)}


def as_model(block: nn.Module) -> nn.Module:
    """Source ``"0"`` (identity), target ``"1"`` (the block), in float64 eval mode."""
    model = nn.Sequential(nn.Identity(), block).double().eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("name", ["residual", "separable", "concat"])
def test_attribution_equals_finite_differences(name: str) -> None:
    model = as_model(blocks()[name])
    z = torch.randn(3, 4, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    leaf = z.clone().requires_grad_(True)
    target = model[1](leaf)
    values, positions = spatial_max(target.detach())
    channels = gradient_seeds(values, topk_mask(values, 3), MAX_CHANNELS)
    assert channels.shape == (3, 3)
    # a budget of two slots per chunk: one batched chunk of 2, then a single slot
    budget = 2 * 3 * max(target[0].numel(), z[0].numel())
    got = gradient_attribution(leaf, target, channels, positions, budget)
    assert got.shape == (3, 3, 4)
    width = target.shape[3]
    for t in range(3):
        for b in range(3):
            i = int(channels[t, b])
            p = int(positions[b, i])
            want = finite_difference_attribution(model, z[b], "0", "1", i, divmod(p, width), 4)
            np.testing.assert_allclose(got[t, b].numpy(), want, rtol=1e-6, atol=1e-8)


def test_seeds_order_ties_and_padding() -> None:
    values = torch.tensor([[1.0, 3.0, 3.0, 2.0], [5.0, 0.0, 0.0, 0.0]])
    selected = torch.tensor([[True, True, True, False], [True, False, False, False]])
    assert gradient_seeds(values, selected, 8).tolist() == [[1, 0], [2, -1], [0, -1]]
    assert gradient_seeds(values, selected, 2).tolist() == [[1, 0], [2, -1]]
    assert gradient_seeds(values, torch.zeros_like(selected), 8).shape == (0, 2)
    attribution = torch.tensor([[[1.0, 2.0, 0.0]], [[4.0, 4.0, 4.0]]])  # [m=2, B=1, C_s=3]
    b, i, j = attribution_topk(attribution, torch.tensor([[7], [-1]]), 5)
    assert (b.tolist(), i.tolist(), j.tolist()) == ([0, 0], [7, 7], [0, 1])  # empty slot: none


class Net(nn.Module):
    """stem -> residual block (gradient) -> separable block (gradient) -> conv (exact)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = Residual(4)
        self.sep = Separable(4, 5)
        self.conv = nn.Conv2d(5, 3, 3, stride=2)
        self.head = nn.Linear(3, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.sep(self.block(torch.tanh(self.stem(x))))
        return self.head(self.conv(nn.functional.silu(x)).mean(dim=(2, 3)))


def make_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = Net().double().eval()
    model.block.bn1.running_mean.uniform_(-0.5, 0.5)
    return model


LAYERS = ["stem", "block", "sep", "conv"]


@pytest.mark.parametrize(
    "config",
    [
        SummitConfig(selection="topk", top_k=3, influence_top_k=2),
        SummitConfig(selection="mass", tau=0.3, influence_top_k=3),
    ],
)
def test_pass_counts_equal_the_finite_difference_reference(config: SummitConfig) -> None:
    model = make_net()
    g = torch.Generator().manual_seed(2)
    images = torch.randn(5, 3, 8, 8, dtype=torch.float64, generator=g)
    labels = torch.tensor([0, 2, 1, 2, 0])
    with SummitPass(model, LAYERS, NUM_CLASSES, config) as summit:
        assert [c.kind if c else None for c in summit.connections] == [
            None,
            "gradient",
            "gradient",
            "conv",
        ]
        for b0 in (0, 2):  # batches of 2 and 3: nothing depends on batching
            stop = 2 if b0 == 0 else 5
            logits = summit.update(images[b0:stop], labels[b0:stop], torch.arange(b0, stop))
            assert logits.shape == (stop - b0, NUM_CLASSES) and not logits.requires_grad
        fast = summit.result()
    assert all(p.requires_grad for p in model.parameters())  # restored after each update
    for index in (1, 2):
        want, _ = gradient_reference_counts(
            model,
            LAYERS[index - 1],
            LAYERS[index],
            NUM_CLASSES,
            config,
            images,
            labels.tolist(),
            MAX_CHANNELS,
        )
        got = fast.influence_counts[index]
        assert got is not None and got.shape == want.shape
        np.testing.assert_array_equal(got.toarray(), want)
        assert want.sum() > 0


def test_layers_and_model_unchanged_after_close() -> None:
    model = make_net()
    images = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        before = model(images)
    with SummitPass(model, LAYERS, NUM_CLASSES, SummitConfig()) as summit:
        logits = summit.update(images, torch.tensor([0, 1]), torch.tensor([0, 1]))
    torch.testing.assert_close(logits, before)
    with torch.no_grad():
        torch.testing.assert_close(model(images), before)
    assert not model.stem._forward_hooks and not model.block._forward_hooks


class TokenMixer(nn.Module):
    """Attention-like: each token's output sees the mean of all tokens (not position-wise)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.linear(x) + x.mean(dim=1, keepdim=True))


def token_block_case(target_module: nn.Module) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """source ``[3, 6, 5]`` → a mixing layer → ``target_module``: (source, module input,
    target, seeds, positions), padding in the last input."""
    torch.manual_seed(0)
    source = torch.randn(3, 6, 5, dtype=torch.float64, requires_grad=True)
    mixing = TokenMixer(5).double()
    module_input = mixing(source)
    target = target_module(module_input)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[2, 4:] = False
    values, positions = target.detach().masked_fill(~mask[..., None], -1e9).max(dim=1)
    channels = gradient_seeds(values, values > values.median(dim=1, keepdim=True).values, 3)
    return source, module_input, target, channels, positions


def test_the_position_wise_shortcut_equals_the_full_backward() -> None:
    """A target module acting on each token alone (Linear then GELU, BERT's MLP units): the
    backward from its input at one token gives the same g_ij as the full backward."""
    module = nn.Sequential(nn.Linear(5, 12), nn.GELU()).double()
    source, module_input, target, channels, positions = token_block_case(module)
    assert (channels >= 0).sum() > 3
    mask = torch.ones(3, 6)
    mask[2, 4:] = 0
    fast = positionwise_attribution(
        source, [module], module_input, target, channels, positions, token_mask=mask
    )
    source, _, target, channels, positions = token_block_case(module)  # a fresh graph
    full = gradient_attribution(source, target, channels, positions, token_mask=mask)
    assert fast is not None
    torch.testing.assert_close(fast, full, rtol=1e-12, atol=1e-12)
    assert fast.abs().sum() > 0


def test_a_target_module_that_mixes_tokens_is_refused_by_the_shortcut() -> None:
    module = TokenMixer(5).double()
    source, module_input, target, channels, positions = token_block_case(module)
    refused = positionwise_attribution(source, [module], module_input, target, channels, positions)
    assert refused is None


def test_the_shortcut_chain_climbs_sequential_containers_until_a_hooked_module() -> None:
    mlp = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 4))
    block = nn.Sequential(nn.LayerNorm(4), mlp)
    model = nn.Sequential(nn.Linear(4, 4), block)
    start, rerun = positionwise_chain(model, mlp[1], set())
    assert start is model and rerun == [model[0], block[0], mlp[0], mlp[1]]
    # The source layer is the first Linear: the climb stops below it.
    start, rerun = positionwise_chain(model, mlp[1], {id(model[0])})
    assert start is block and rerun == [block[0], mlp[0], mlp[1]]
    # A hook inside the target itself: no shortcut.
    assert positionwise_chain(model, block, {id(mlp[1])}) is None


class KeywordTarget(nn.Module):
    """Token layers ``a`` → (tokens mixed) → ``b``, with ``b`` called by keyword or not."""

    def __init__(self, by_keyword: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.by_keyword = by_keyword
        self.a = nn.Linear(4, 6)
        self.mix = TokenMixer(6)
        self.b = nn.Sequential(nn.Linear(6, 8), nn.GELU())
        self.head = nn.Linear(8, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        h = self.mix(torch.tanh(self.a(x)))
        y = self.b(input=h) if self.by_keyword else self.b(h)
        return self.head(y.mean(dim=1))


def test_a_target_called_by_keyword_takes_the_full_backward_with_the_same_counts() -> None:
    """A target module called with keyword arguments only gives its pre-hook no input: the
    pass takes the full backward (before, the hook failed with an IndexError) and counts
    what the shortcut counts when the same model calls it positionally."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(10, 5, 4, generator=generator, dtype=torch.float64)
    labels = torch.arange(10) % NUM_CLASSES
    results, shortcut = [], []
    for by_keyword in (True, False):
        model = KeywordTarget(by_keyword).double().eval()
        with SummitPass(model, ["a", "b"], NUM_CLASSES, SummitConfig(tau=0.3)) as summit:
            for k in range(0, 10, 4):
                summit.update(x[k : k + 4], labels[k : k + 4], torch.arange(k, min(k + 4, 10)))
                shortcut.append(summit.positionwise[1])
            results.append(summit.result())
    assert shortcut == [False] * 3 + [True] * 3
    keyword, positional = (r.influence_counts[1] for r in results)
    assert keyword is not None and positional is not None and keyword.nnz > 0
    np.testing.assert_array_equal(keyword.toarray(), positional.toarray())


def test_the_shortcut_leaves_a_batch_without_seeds_to_the_full_path() -> None:
    module = nn.Sequential(nn.Linear(5, 12), nn.GELU()).double()
    source, module_input, target, channels, positions = token_block_case(module)
    empty = torch.full_like(channels, -1)
    fast = positionwise_attribution(source, [module], module_input, target, empty, positions)
    assert fast is None
    nothing = gradient_attribution(source, target, channels[:0], positions)
    assert nothing.shape == (0, 3, 5)
