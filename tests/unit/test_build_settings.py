"""The atlas records how it was built: connection kinds, build settings, precision.

Mixed precision is an explicit approximate mode (``--precision bf16|fp16``), off by
default; older atlases without these records still load (as ``"unknown"``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from compute.atlas import (
    MANIFEST,
    UNKNOWN,
    Atlas,
    AtlasError,
    BuildSettings,
    activation_counts_path,
    manifest_layers,
)
from compute.build import build_atlas
from compute.errors import BuildError
from compute.summit.aggregate import SummitPass
from compute.summit.config import SummitConfig

LAYERS = ["r1", "r2", "r3"]
CONFIG = SummitConfig(selection="topk", top_k=2, influence_top_k=2, examples_per_channel=3)


class ResidualNet(nn.Module):
    """conv -> relu (r1) -> conv -> relu (r2) -> conv + skip -> relu (r3): the pair r1 -> r2
    is one convolution, r2 -> r3 a residual addition (gradient attribution)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.r1 = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()
        self.c2, self.r2 = nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()
        self.c3, self.r3 = nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x: Tensor) -> Tensor:
        y = self.r2(self.c2(self.r1(self.c1(x))))
        return self.head(self.r3(self.c3(y) + y))


def residual_net() -> ResidualNet:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return ResidualNet().eval()


def dataset(n: int = 18) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, 10, 10, generator=generator)
    return TensorDataset(images, torch.arange(n) % 3, torch.arange(n))


def build(out: Path, **kwargs: object) -> Atlas:
    path = build_atlas(
        residual_net(),
        DataLoader(dataset(), batch_size=6),
        layers=LAYERS,
        classes=["a", "b", "c"],
        out=out,
        config=CONFIG,
        crops_per_channel=0,
        mapper_crops=0,
        progress=False,
        save_weights=False,
        **kwargs,  # type: ignore[arg-type]
    )
    return Atlas.open(path, verify_hashes=True)


@pytest.fixture(scope="module")
def exact(tmp_path_factory: pytest.TempPathFactory) -> Atlas:
    return build(tmp_path_factory.mktemp("exact") / "atlas")


def test_the_atlas_records_connection_kinds_and_build_settings(exact: Atlas) -> None:
    assert [layer.connection for layer in exact.layers] == [None, "conv", "gradient"]
    assert [layer.influence_method for layer in exact.layers] == [
        None,
        "exact",
        "gradient-x-activation",
    ]
    entries = exact.manifest["layers"]
    assert [entry["connection"] for entry in entries] == [None, "conv", "gradient"]
    build_entry = exact.manifest["build"]
    assert build_entry == {
        "device": "cpu",
        "device_name": "cpu",
        "world_size": 1,
        "decode": "loader",  # a Python build's own loader decoded the images
        "channels_last": False,
        "precision": "fp32",
        "torch": torch.__version__,
        "approximate": False,
    }
    assert exact.build.approximate is False


def test_the_default_is_exact_fp32(exact: Atlas) -> None:
    """The default build equals a pass run by hand without autocast (the fp32 reference)."""
    with SummitPass(residual_net(), LAYERS, 3, CONFIG) as summit:
        for images, labels, indices in DataLoader(dataset(), batch_size=6):
            summit.update(images, labels, indices)
        reference = summit.result()
    for i in range(len(LAYERS)):
        np.testing.assert_array_equal(exact.activation_counts(i), reference.activation_counts[i])
        np.testing.assert_array_equal(exact.examples(i).activation, reference.example_value[i])
    for i in (1, 2):
        got, want = exact.influence_counts(i), reference.influence_counts[i]
        assert (got != want).nnz == 0


def test_bf16_runs_on_the_cpu_and_the_manifest_says_approximate(
    exact: Atlas, tmp_path: Path
) -> None:
    atlas = build(tmp_path / "bf16", precision="bf16")
    assert atlas.build.precision == "bf16" and atlas.build.approximate is True
    assert atlas.manifest["build"]["approximate"] is True
    assert [layer.connection for layer in atlas.layers] == [None, "conv", "gradient"]
    # The pass really ran under bf16 autocast: the stored maxima are bf16 values (fp32's
    # are not), so this fails if the mode were silently ignored.
    for i in range(len(LAYERS)):
        values = atlas.examples(i).activation
        as_bf16 = torch.from_numpy(np.array(values)).bfloat16().float().numpy()
        np.testing.assert_array_equal(values, as_bf16)
        exact_values = exact.examples(i).activation
        assert not np.array_equal(
            exact_values, torch.from_numpy(np.array(exact_values)).bfloat16().float().numpy()
        )
    # Still a complete atlas: every image counted once per layer with top-k 2.
    assert atlas.activation_counts(2).sum() == 2 * 18


def test_unknown_and_cpu_fp16_precisions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="fp16 needs --device cuda"):
        build(tmp_path / "fp16", precision="fp16")
    with pytest.raises(BuildError, match="unknown precision 'fp8'"):
        build(tmp_path / "fp8", precision="fp8")
    assert not (tmp_path / "fp16").exists()


def test_cli_refuses_fp16_on_the_cpu_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line, before the model is loaded or the (here missing) data is looked at."""
    from compute.cli import main

    argv = ["build", "--model", "no.such:model", "--data", str(tmp_path / "missing"),
            "--layers", "a,b", "--out", str(tmp_path / "out"), "--precision", "fp16"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "fp16 needs --device cuda" in err


def test_cli_passes_precision_and_decode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import compute.build.cli
    from compute.build import BuildOptions
    from compute.cli import main
    from tests.unit.test_cli import base_args, make_image_folder

    seen: dict[str, object] = {}

    def fake_build(_model: object, _loader: object, options: BuildOptions) -> Path:
        seen.update(vars(options))
        return tmp_path / "out"

    monkeypatch.setattr(compute.build.cli, "build_atlas", fake_build)
    argv = base_args(make_image_folder(tmp_path / "data"), tmp_path / "out")
    assert main(argv) == 0
    assert (seen["precision"], seen["decode"]) == ("fp32", "pil")
    assert main([*argv, "--precision", "bf16"]) == 0
    assert seen["precision"] == "bf16"


def test_help_mentions_the_approximate_mode(capsys: pytest.CaptureFixture[str]) -> None:
    from compute.cli import main

    with pytest.raises(SystemExit):
        main(["build", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--precision {fp32,bf16,fp16}" in text and "APPROXIMATE" in text


def test_verify_prints_the_build_and_the_connections(
    exact: Atlas, capsys: pytest.CaptureFixture[str]
) -> None:
    from compute.cli import main

    assert main(["verify", str(exact.path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ok: ")
    assert lines[1] == (
        f"build: device cpu, processes 1, decode loader, channels-last no, "
        f"precision fp32 (exact), torch {torch.__version__}"
    )
    assert lines[2:] == [
        "influence r1 -> r2: conv (exact)",
        "influence r2 -> r3: gradient (gradient x activation attribution)",
    ]


def test_an_atlas_without_these_records_still_loads(
    exact: Atlas, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An atlas written before build settings and connection kinds were recorded."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(exact.path, old)
    manifest = json.loads((old / MANIFEST).read_text())
    del manifest["build"]
    for entry in manifest["layers"]:
        del entry["connection"], entry["influence_method"]
    (old / MANIFEST).write_text(json.dumps(manifest))
    atlas = Atlas.open(old, verify_hashes=True)
    assert atlas.version == exact.version == 1
    assert atlas.build == BuildSettings()
    assert atlas.build.precision == UNKNOWN and atlas.build.approximate is None
    assert [layer.connection for layer in atlas.layers] == [None, UNKNOWN, UNKNOWN]
    assert [layer.influence_method for layer in atlas.layers] == [None, UNKNOWN, UNKNOWN]
    np.testing.assert_array_equal(atlas.activation_counts(1), exact.activation_counts(1))
    from compute.cli import main

    assert main(["verify", str(old)]) == 0
    out = capsys.readouterr().out
    assert "precision unknown," in out and "influence r1 -> r2: unknown (unknown)" in out
    # A partial record keeps what it says; a malformed one is refused.
    manifest["build"] = {"precision": "bf16", "future_key": 1}
    (old / MANIFEST).write_text(json.dumps(manifest))
    partial = Atlas.open(old)
    assert partial.build.precision == "bf16" and partial.build.device == UNKNOWN
    assert partial.build.approximate is True
    manifest["build"] = ["bf16"]
    (old / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(AtlasError, match="'build' must be an object"):
        Atlas.open(old)


def test_manifest_layers_checks_connection_kinds() -> None:
    shapes = [(2, 4, 4), (3, 4, 4)]
    assert "connection" not in manifest_layers(["a", "b"], shapes)[1]
    entry = manifest_layers(["a", "b"], shapes, [None, "inception"])[1]
    assert (entry["connection"], entry["influence_method"]) == ("inception", "exact-widest-path")
    with pytest.raises(ValueError, match="unknown connection kind"):
        manifest_layers(["a", "b"], shapes, [None, "magic"])
    with pytest.raises(ValueError, match="1 connection kinds for 2 layers"):
        manifest_layers(["a", "b"], shapes, [None])
    assert activation_counts_path(0)  # the module's other helpers are untouched
