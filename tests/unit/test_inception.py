"""Inception blocks: exact counts per branch, the original's widest path through bottlenecks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from compute.capture import TensorRecorder
from compute.connect import InceptionConnection
from compute.summit.aggregate import SummitPass
from compute.summit.config import SummitConfig
from compute.summit.inception import direct_limits, widest_path
from tests.reference import conv_topk_counts, widest_path_reference

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NUM_CLASSES = 3


def test_widest_path_equals_the_plain_reference() -> None:
    rng = np.random.default_rng(0)
    classes, c_br, c_b, c_in = 3, 4, 5, 6
    top = rng.integers(0, 4, (classes * c_br, c_b)) * (rng.random((classes * c_br, c_b)) < 0.6)
    bottom = rng.integers(0, 4, (classes * c_b, c_in)) * (rng.random((classes * c_b, c_in)) < 0.6)
    limits = np.array([-1, 2, 0])
    got = widest_path(sp.csr_array(top), sp.csr_array(bottom), classes, limits).toarray()
    # a tiny budget: one class and a few rows per step give the same
    small = widest_path(sp.csr_array(top), sp.csr_array(bottom), classes, limits, budget=20)
    np.testing.assert_array_equal(small.toarray(), got)
    for c in range(classes):
        want = widest_path_reference(
            top[c * c_br : (c + 1) * c_br],
            bottom[c * c_b : (c + 1) * c_b],
            None if limits[c] < 0 else int(limits[c]),
        )
        np.testing.assert_array_equal(got[c * c_br : (c + 1) * c_br], want)
    assert got[c_br : 2 * c_br].astype(bool).sum(axis=1).max() <= 2
    assert not got[2 * c_br :].any()


def test_direct_limits() -> None:
    main = sp.csr_array(
        np.array([[1, 1, 0], [5, 5, 5], [1, 1, 1], [0, 0, 0], [9, 0, 0], [0, 0, 0]])
    )
    # two classes of three rows; rows 0 and 2 direct: class 0 (2 + 3) // 2; class 1 all empty
    assert direct_limits(main, 2, np.array([0, 2])).tolist() == [2, 0]
    assert direct_limits(main, 2, np.array([], dtype=np.int64)).tolist() == [-1, -1]


class Block(nn.Module):
    """1×1, 1×1→3×3, 1×1→BN→5×5 and pool→1×1 branches, concatenated (GoogLeNet's shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(6, 2, 1), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(6, 3, 1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1))
        self.b3 = nn.Sequential(nn.Conv2d(6, 2, 1), nn.BatchNorm2d(2), nn.Conv2d(2, 3, 5, 1, 2))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(6, 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.block = Block()
        self.tail = nn.Conv2d(11, 11, 3, padding=1)
        self.act = nn.SiLU()
        self.head = nn.Linear(11, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block(torch.relu(self.stem(x)))
        x = self.act(torch.tanh(self.tail(x)) + x)  # residual: a gradient connection
        return self.head(x.mean(dim=(2, 3)))


LAYERS = ["stem", "block", "act"]


def make_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = Net().double().eval()
    model.block.b3[1].running_mean.uniform_(-0.5, 0.5)
    return model


def reference_inception_counts(
    model: nn.Module, connection: InceptionConnection, images: Tensor, classes: list[int], k: int
) -> np.ndarray:
    """The block's counts from the per-conv reference counts and the plain widest path."""
    named = dict(model.named_modules())
    convs = [b.conv for b in connection.branches]
    convs += [b.bottleneck for b in connection.branches if b.bottleneck is not None]
    with TensorRecorder(model, inputs=convs) as rec, torch.no_grad():
        model(images)
    c_out, c_in = connection.out_channels, connection.in_channels
    counts = {
        name: conv_topk_counts(rec.inputs[name][0], named[name], classes, NUM_CLASSES, k)
        for name in convs
    }
    dense = np.zeros((NUM_CLASSES, c_out, c_in), np.int64)
    direct = [b for b in connection.branches if b.bottleneck is None]
    for branch in direct:
        block = counts[branch.conv].reshape(NUM_CLASSES, branch.channels, c_in)
        dense[:, branch.offset : branch.offset + branch.channels] = block
    for c in range(NUM_CLASSES):
        sizes = [
            int((dense[c, row] > 0).sum())
            for b in direct
            for row in range(b.offset, b.offset + b.channels)
        ]
        used = [s for s in sizes if s > 0]
        limit = sum(used) // len(used) if used else 0
        for branch in connection.branches:
            if branch.bottleneck is None:
                continue
            width = branch.bottleneck_channels
            top = counts[branch.conv][c * branch.channels : (c + 1) * branch.channels]
            bottom = counts[branch.bottleneck][c * width : (c + 1) * width]
            rows = slice(branch.offset, branch.offset + branch.channels)
            dense[c, rows] = widest_path_reference(top, bottom, limit)
    return dense.reshape(NUM_CLASSES * c_out, c_in)


def test_pass_equals_the_reference_and_shards_merge_exactly() -> None:
    model = make_net()
    config = SummitConfig(selection="topk", top_k=3, influence_top_k=2)
    g = torch.Generator().manual_seed(3)
    images = torch.randn(6, 3, 7, 7, dtype=torch.float64, generator=g)
    labels = torch.tensor([0, 1, 2, 0, 0, 1])
    indices = torch.arange(6)
    with SummitPass(model, LAYERS, NUM_CLASSES, config) as summit:
        kinds = [c.kind if c else None for c in summit.connections]
        assert kinds == [None, "inception", "gradient"]
        connection = summit.connections[1]
        assert isinstance(connection, InceptionConnection)
        summit.update(images, labels, indices)
        whole = summit.result()
        state_keys = set(summit.state_dict())
    assert {"influence.1.branch1.top.keys", "influence.1.branch2.bottom.counts"} <= state_keys
    want = reference_inception_counts(model, connection, images, labels.tolist(), 2)
    got = whole.influence_counts[1]
    assert got is not None and got.shape == (NUM_CLASSES * 11, 6)
    np.testing.assert_array_equal(got.toarray(), want)
    assert want[:, :].sum() > 0 and want.reshape(NUM_CLASSES, 11, 6)[:, 2:9].sum() > 0
    # Two shards (and a checkpoint restored into a fresh pass) give exactly the same.
    states = []
    for part in (slice(0, 2), slice(2, 6)):
        with SummitPass(model, LAYERS, NUM_CLASSES, config) as shard:
            shard.update(images[part], labels[part], indices[part])
            states.append(shard.state_dict())
    with SummitPass(model, LAYERS, NUM_CLASSES, config) as merged:
        for state in states:
            merged.merge_state_dict(state)
        result = merged.result()
    for a, b in zip(result.influence_counts[1:], whole.influence_counts[1:], strict=True):
        assert a is not None and b is not None
        np.testing.assert_array_equal(a.toarray(), b.toarray())
    for a, b in zip(result.activation_counts, whole.activation_counts, strict=True):
        np.testing.assert_array_equal(a, b)
