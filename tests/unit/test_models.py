"""Model specs, the registry, strict weight loading and layer descriptions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from compute.errors import BuildError
from compute.models import (
    count_outputs,
    describe_layers,
    get_model,
    infer_in_channels,
    list_models,
    load_weights,
    model_name,
    num_parameters,
    parse_spec,
    register_model,
)


def tiny_net(num_classes: int = 3) -> nn.Module:
    """Importable as ``test_models:tiny_net`` (module:callable specs)."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, num_classes)
    )


def no_classes_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def not_a_module() -> int:
    return 42


def test_parse_spec_forms() -> None:
    assert parse_spec("torchvision:resnet18") == ("torchvision", "resnet18")
    assert parse_spec("pkg.mod:make") == ("callable", "pkg.mod:make")
    assert parse_spec("simple_cnn") == ("registered", "simple_cnn")
    assert model_name("torchvision:resnet18") == "resnet18"
    assert model_name("pkg.mod:factory.make") == "make"
    assert model_name("simple_cnn") == "simple_cnn"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty model spec"),
        ("resnet_nope", "unknown model spec 'resnet_nope'"),
        ("torchvision:", "name a model"),
    ],
)
def test_parse_spec_errors(spec: str, message: str) -> None:
    with pytest.raises(BuildError, match=message):
        parse_spec(spec)


def test_unknown_spec_lists_registered_models() -> None:
    with pytest.raises(BuildError, match="simple_cnn"):
        get_model("nope")


def test_torchvision_model_offline_with_num_classes() -> None:
    model = get_model("torchvision:resnet18", num_classes=7)
    assert model.fc.out_features == 7
    assert not model.training
    assert count_outputs(model, (3, 32, 32)) == 7


def test_torchvision_unknown_name_suggests() -> None:
    with pytest.raises(BuildError, match="did you mean resnet18"):
        get_model("torchvision:resnet81")


def test_module_callable_spec() -> None:
    model = get_model(f"{__name__}:tiny_net", num_classes=5)
    assert count_outputs(model, (3, 8, 8)) == 5


def test_file_callable_spec(tmp_path: Path) -> None:
    source = tmp_path / "mynet_file.py"
    source.write_text(
        "from torch import nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(12, 2))\n"
    )
    model = get_model(f"{source}:make")
    assert count_outputs(model, (3, 2, 2)) == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_pkg_xyz.nets:make", "cannot import module 'no_such_pkg_xyz.nets'"),
        (f"{__name__}:missing", "has no attribute 'missing'"),
        (f"{__name__}:not_a_module", "returned int, not an nn.Module"),
        ("/nonexistent/dir/net.py:make", "model file not found"),
    ],
)
def test_module_callable_errors(spec: str, message: str) -> None:
    with pytest.raises(BuildError, match=message):
        get_model(spec)


def test_num_classes_for_a_factory_without_it() -> None:
    with pytest.raises(BuildError, match="takes no num_classes"):
        get_model(f"{__name__}:no_classes_net", num_classes=3)


def test_registry() -> None:
    @register_model("test_registry_net")
    def factory(num_classes: int = 2) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    assert "test_registry_net" in list_models()
    assert list_models() == sorted(list_models())
    assert isinstance(get_model("test_registry_net"), nn.Sequential)
    with pytest.raises(ValueError, match="already registered"):
        register_model("test_registry_net")(factory)


def test_simple_cnn_registered() -> None:
    model = get_model("simple_cnn", num_classes=4)
    assert count_outputs(model, (3, 16, 16)) == 4
    assert infer_in_channels(get_model("simple_cnn")) == 3
    assert num_parameters(model) == sum(p.numel() for p in model.parameters())


def test_weights_roundtrip_and_wrappers(tmp_path: Path) -> None:
    source = tiny_net()
    state = source.state_dict()
    plain, wrapped, parallel = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "c.pt"
    torch.save(state, plain)
    torch.save({"state_dict": state, "epoch": 3}, wrapped)
    torch.save({f"module.{k}": v for k, v in state.items()}, parallel)
    for path in (plain, wrapped, parallel):
        model = get_model(f"{__name__}:tiny_net", weights=path)
        for key, value in model.state_dict().items():
            assert torch.equal(value, state[key]), (path, key)


def test_weights_mismatch_messages(tmp_path: Path) -> None:
    state = tiny_net().state_dict()
    missing = tmp_path / "missing.pt"
    torch.save({k: v for k, v in state.items() if k != "3.bias"}, missing)
    with pytest.raises(BuildError, match=r"missing\.pt does not fit.*missing key.*'3\.bias'"):
        load_weights(tiny_net(), missing)

    extra = tmp_path / "extra.pt"
    torch.save({**state, "head.weight": torch.zeros(1)}, extra)
    with pytest.raises(BuildError, match=r"unexpected key.*'head\.weight'"):
        load_weights(tiny_net(), extra)

    shape = tmp_path / "shape.pt"
    torch.save(tiny_net(num_classes=5).state_dict(), shape)
    with pytest.raises(BuildError, match=r"shape mismatch.*'3\.weight': file \(5, 256\) vs model"):
        load_weights(tiny_net(), shape)


def test_weights_file_errors(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="weights file not found"):
        load_weights(tiny_net(), tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(BuildError, match="cannot load weights file"):
        load_weights(tiny_net(), garbage)
    not_tensors = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_tensors)
    with pytest.raises(BuildError, match="does not hold a state dict"):
        load_weights(tiny_net(), not_tensors)


def test_describe_layers() -> None:
    model = get_model("simple_cnn", num_classes=4)
    model.train()
    rows = {row.name: row for row in describe_layers(model, (3, 16, 16))}
    assert model.training  # mode restored
    assert rows["features.1"].channels == 16
    assert (rows["features.4"].height, rows["features.4"].width) == (8, 8)
    assert rows["features.4"].type == "ReLU"
    assert rows["features.4"].spatial
    assert not rows["fc"].spatial
    assert rows["fc"].channels == 4


def test_describe_layers_lists_modules_in_the_order_they_run() -> None:
    """Registration order is not execution order: ``layers`` lists what runs first first
    (a container before its children, although its output comes after theirs), so the
    names of layers that follow one another can be copied into ``--layers`` in order; a
    module that does not run is not listed."""

    class Backwards(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.late = nn.Linear(4, 3)
            self.unused = nn.Linear(4, 4)
            self.early = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.late(self.early(x))

    rows = describe_layers(Backwards(), (3, 2, 2))
    assert [row.name for row in rows] == ["early", "early.0", "early.1", "late"]


def test_describe_layers_bad_input_size() -> None:
    with pytest.raises(BuildError, match="cannot run on input of size"):
        describe_layers(tiny_net(), (3, 9, 9))


def test_head_size_is_taken_from_fine_tuned_weights(tmp_path: Path) -> None:
    path = tmp_path / "fine_tuned.pt"
    torch.save(get_model("torchvision:resnet18", num_classes=10).state_dict(), path)
    model = get_model("torchvision:resnet18", weights=path)
    assert model.fc.out_features == 10
    torch.save(tiny_net(num_classes=6).state_dict(), path)
    assert count_outputs(get_model(f"{__name__}:tiny_net", weights=path), (3, 8, 8)) == 6
    # an explicit num_classes is respected, so the mismatch is reported
    with pytest.raises(BuildError, match=r"shape mismatch.*'3\.weight'"):
        get_model(f"{__name__}:tiny_net", weights=path, num_classes=3)
    # a mismatch outside the head is never "fixed"
    state = tiny_net().state_dict()
    state["0.weight"] = torch.zeros(5, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(BuildError, match=r"'0\.weight': file \(5, 3, 3, 3\)"):
        get_model(f"{__name__}:tiny_net", weights=path)
