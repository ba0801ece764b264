"""Which chosen-layer chains are accepted, and how the rest is refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compute.capture import TensorRecorder, list_layers, resolve_modules
from compute.connect import (
    Connection,
    GradientConnection,
    InceptionBranch,
    InceptionConnection,
    connection_kinds,
    find_connections,
)
from compute.errors import BuildError


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True))
        self.block = nn.Sequential(
            nn.MaxPool2d(2), nn.Dropout(0.1), nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16), nn.GELU()
        )
        self.conv3 = nn.Conv2d(16, 4, 1)
        self.bn3 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block(self.stem(x))
        x = F.avg_pool2d(x, 2).relu()
        x = torch.relu(self.bn3(self.conv3(F.dropout(x, 0.0, self.training))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.a(x)
        return self.c(self.b(x) + x)


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(4, 4, 1)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.a(x)
        return self.c(torch.cat([self.b(x), x], dim=1))


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(4, 4, 3, groups=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.b(self.a(x))


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 3, 1)
        self.b = nn.Conv2d(3, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.b(self.a(self.a(x)))


class Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 3, 1)
        self.b = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.b(torch.flatten(self.a(x), 1))


class Dynamic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 3, 1)
        self.b = nn.Conv2d(3, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            x = self.a(x)
        return self.b(x)


def test_accepts_plain_chain_with_containers_leaves_and_functionals() -> None:
    model = Plain()
    got = find_connections(model, ["stem", "block", "bn3"])
    assert got == [
        None,
        Connection("stem", "block", "block.2", 8, 16),
        Connection("block", "bn3", "conv3", 16, 4),
    ]
    assert find_connections(model, ["stem.0", "block.4"])[1] == Connection(
        "stem.0", "block.4", "block.2", 8, 16
    )
    assert find_connections(model, ["block"]) == [None]


def test_accepts_vgg_relus() -> None:
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):  # tracing needs no weights; skips a slow 133M-weight init
        model = torchvision.models.vgg11(weights=None)
    got = find_connections(model, ["features.1", "features.4", "features.7"])
    assert [c.conv if c else None for c in got] == [None, "features.3", "features.6"]


@pytest.mark.parametrize(
    ("model", "layers", "reason"),
    [
        (Residual(), ["a", "c"], "add"),
        (Concat(), ["a", "c"], "cat"),
        (Grouped(), ["a", "b"], "grouped convolution 'b' (groups=2)"),
        (Plain(), ["stem", "conv3"], "2 convolutions: 'block.2', 'conv3'"),
        (Flat(), ["a", "b"], "flatten"),
        (Plain(), ["bn3", "fc"], "Linear 'fc'"),
    ],
)
def test_everything_else_gets_gradient_attribution(model, layers, reason) -> None:
    got = find_connections(model, layers)[1]
    assert got == GradientConnection(layers[0], layers[1], reason)
    assert got.kind == "gradient"


def test_refuses_a_layer_that_does_not_depend_on_the_previous_one() -> None:
    with pytest.raises(BuildError) as info:
        find_connections(Plain(), ["block", "stem"])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("layers 'block' -> 'stem' are not connected: 'stem' does not")


def test_refuses_layers_with_only_channelwise_operations_between() -> None:
    with pytest.raises(BuildError) as info:
        find_connections(Plain(), ["stem.0", "stem.1"])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("layers 'stem.0' -> 'stem.1' are not connected by a single conv")
    assert "found no convolution" in message


class Inception(nn.Module):
    """A small Inception block: 1×1, two bottleneck branches, pool branch; ReLU after cat."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.b1 = nn.Sequential(nn.Conv2d(6, 2, 1), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(6, 3, 1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1))
        self.b3 = nn.Sequential(nn.Conv2d(6, 2, 1), nn.BatchNorm2d(2), nn.Conv2d(2, 3, 5, 1, 2))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(6, 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.stem(x))
        branches = [self.b1(x), self.b2(x), self.b3(x), self.b4(x)]
        return torch.cat(branches, dim=1).relu()


def test_finds_inception_blocks_by_tracing() -> None:
    got = find_connections(Inception(), ["stem", "b4"])[1]
    assert got is not None and got.kind == "conv"  # one branch alone: a single convolution
    block = find_connections(Inception(), ["stem", "b1"])[1]
    assert block is not None and block.kind == "conv"

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = Inception()

        def forward(self, x: Tensor) -> Tensor:
            return self.block(x)

    connection = find_connections(Wrapped(), ["block.stem", "block"])[1]
    assert connection == InceptionConnection(
        "block.stem",
        "block",
        (
            InceptionBranch("block.b1.0", 0, 2),
            InceptionBranch("block.b2.2", 2, 4, "block.b2.0", 3),
            InceptionBranch("block.b3.2", 6, 3, "block.b3.0", 2),
            InceptionBranch("block.b4.1", 9, 2),
        ),
        6,
        11,
    )
    assert connection.kind == "inception"


def test_unknown_repeated_twice_called_and_untraceable() -> None:
    with pytest.raises(BuildError, match=r"unknown layer 'stem\.9'; available modules: stem, "):
        find_connections(Plain(), ["stem.9", "block"])
    with pytest.raises(BuildError, match="chosen twice"):
        find_connections(Plain(), ["stem", "stem"])
    with pytest.raises(BuildError, match="'a' is called 2 times"):
        find_connections(Twice(), ["a", "b"])
    with pytest.raises(BuildError, match=r"cannot trace the model with torch\.fx"):
        find_connections(Dynamic(), ["a", "b"])
    assert find_connections(Dynamic(), ["a"]) == [None]  # one layer needs no tracing


def test_unknown_layer_message_is_short_for_huge_models() -> None:
    model = nn.Sequential(*[nn.ReLU() for _ in range(500)])
    with pytest.raises(BuildError) as info:
        resolve_modules(model, ["x"])
    assert "(500 modules in all)" in str(info.value) and len(str(info.value)) < 600


def test_list_layers_and_recorder_clones_against_inplace_ops() -> None:
    model = Plain().eval()
    assert ("stem.1", "ReLU") in list_layers(model)
    with TensorRecorder(model, outputs=["stem.0"], inputs=["block.2"]) as rec, torch.no_grad():
        x = torch.randn(2, 3, 8, 8)
        model(x)
    # stem.1 is ReLU(inplace=True): the recorded conv output must keep its negatives.
    assert (rec.outputs["stem.0"][0] < 0).any()
    assert rec.inputs["block.2"][0].shape == (2, 8, 4, 4)


def test_connection_kinds_for_listings_never_raise() -> None:
    kinds = connection_kinds(Plain(), ["stem.0", "stem.1", "block.2", "block", "conv3", "fc"])
    assert kinds == [None, "none", "conv", "none", "conv", "gradient"]
    assert connection_kinds(Twice(), ["a", "b"]) == [None, "none"]
    assert connection_kinds(Dynamic(), ["a", "b"]) == [None, "none"]
    assert connection_kinds(Plain(), ["stem"]) == [None]


def test_spatial_padding_keeps_channels_like_lucid_ports() -> None:
    class Padded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.b = nn.Conv2d(4, 5, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.b(F.pad(F.relu(self.a(x)), (1, 1, 1, 1)))

    class ChannelPad(Padded):
        def forward(self, x: Tensor) -> Tensor:
            return self.b(F.pad(self.a(x), (0, 0, 0, 0, 0, 0))[:, :4])

    assert find_connections(Padded(), ["a", "b"])[1] == Connection("a", "b", "b", 4, 5)
    assert find_connections(ChannelPad(), ["a", "b"])[1].kind == "gradient"


def test_the_check_does_not_see_a_running_pass_s_hooks() -> None:
    """Rank 0 of a torchrun build checks connections again while the pass is hooked: fx
    runs a block's forward hooks with Proxy outputs, which a pass's hook refuses. The check
    sets hooks aside (and puts them back)."""

    class Blocks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block1 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
            self.block2 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block2(self.block1(x))

    model = Blocks()
    seen: list[type] = []

    def tensors_only(_module: nn.Module, _inputs: object, output: object) -> None:
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"outputs {type(output).__name__}, not a tensor")
        seen.append(type(output))

    handle = model.block1.register_forward_hook(tensors_only)
    connections = find_connections(model, ["block1", "block2"])
    assert connections[1] is not None and connections[1].kind == "conv"
    model(torch.zeros(1, 3, 4, 4))  # the hook is back
    assert seen == [torch.Tensor]
    handle.remove()
