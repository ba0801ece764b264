"""``python -m compute build`` / ``layers``: help, one-line errors before any work, e2e."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from compute.atlas import Atlas, featurevis_path

SPEC = "tests.unit.test_cli:tiny_cnn"
CLASSES = ("cat", "dog", "owl")


def tiny_cnn(num_classes: int = 3) -> nn.Module:
    """The model the CLI tests build (importable as ``tests.unit.test_cli:tiny_cnn``)."""
    with torch.random.fork_rng():  # deterministic weights, global RNG left alone
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, num_classes),
        )  # fmt: skip


def tiny_gray_cnn(num_classes: int = 5) -> nn.Module:
    """A 1-channel model with more outputs than the test data has classes."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes),
        )  # fmt: skip


def make_image_folder(root: Path, classes: tuple[str, ...] = CLASSES, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, size=(10, 12, 3), dtype=np.uint8)
            pixels[..., c % 3] += 150  # class colour, so classes differ
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from compute.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data")


@pytest.fixture
def no_long_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the CLI gets as far as the build (the long part)."""
    import compute.build.cli

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("build_atlas was called: the error came too late")

    monkeypatch.setattr(compute.build.cli, "build_atlas", refuse)


def base_args(data: Path, out: Path) -> list[str]:
    return [
        "build", "--model", SPEC, "--data", str(data), "--layers", "1,4", "--out", str(out),
        "--image-size", "8", "--normalize", "0.5,0.5", "--workers", "0", "--no-progress",
    ]  # fmt: skip


def test_build_help_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "compute", "build", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for text in ("--model SPEC", "--layers L1,L2,...", "--class-index", "examples:", "imagenet"):
        assert text in result.stdout


def test_layers_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["layers", "--model", SPEC, "--image-size", "8"], capsys)
    assert code == 0
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line[0] != "#"}
    assert lines["1"] == ["1", "ReLU", "4", "8x8", "none"]  # only channel-wise ops from 0
    assert lines["3"] == ["3", "Conv2d", "6", "4x4", "conv"]  # one convolution from 2
    assert lines["4"] == ["4", "ReLU", "6", "4x4", "none"]
    assert "7" not in lines  # the Linear is not a map
    code, out, _ = run_cli(["layers", "--model", SPEC, "--image-size", "8", "--all"], capsys)
    assert "Linear" in out


def bad_weights(tmp_path: Path) -> str:
    path = tmp_path / "bad.pt"
    state = tiny_cnn().state_dict()
    state["3.weight"] = torch.zeros(6, 5, 3, 3)  # a conv of another architecture
    torch.save(state, path)
    return str(path)


@pytest.mark.usefixtures("no_long_work")
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "torchvision:nonet"], "torchvision has no model"),
        (["--model", "nopkg_zz.mod:make"], "cannot import module"),
        (["--layers", "1,9"], r"unknown layer\(s\) '9'; available: 0, 1"),
        (["--layers", "1,7"], "do not output a"),
        (["--layers", "0,1"], "not connected by a single convolution"),
        (["--layers", "4,1"], r"listed from input to output.*'4' runs later; try --layers 1,4"),
        (["--data", "{tmp}/nowhere"], "data directory not found"),
        (["--weights", "{bad_weights}"], r"bad\.pt does not fit the model"),
        (["--weights", "{tmp}/none.pt"], "weights file not found"),
        (["--normalize", "1,2,3"], "bad --normalize"),
        (["--tau", "2"], r"tau must be in \(0, 1\]"),
        (["--out", "{data}"], "exists and is not an atlas"),
        (["--instances-from", "{tmp}/none.txt"], r"none\.txt: cannot read it"),
        (["--instances-from", "{indices_bad}"], r"bad\.txt, line 2: 'x7' is not an input index"),
        (["--instances-from", "{indices_far}"], r"index 99 is beyond the data's 12 inputs"),
    ],
)
def test_bad_input_is_one_line_before_work(
    extra: list[str], message: str, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    places = {"data": str(data), "tmp": str(tmp_path)}
    (tmp_path / "bad.txt").write_text("1, 2\nx7\n")
    (tmp_path / "far.txt").write_text("# inputs to explain\n3 99\n")
    places["indices_bad"], places["indices_far"] = (
        str(tmp_path / "bad.txt"),
        str(tmp_path / "far.txt"),
    )
    if "{bad_weights}" in extra:
        places["bad_weights"] = bad_weights(tmp_path)
    argv = [*base_args(data, tmp_path / "atlas"), *(arg.format(**places) for arg in extra)]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(message, lines[0]), lines[0]


@pytest.mark.usefixtures("no_long_work")
def test_unmapped_folders_and_class_index(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (data / "emu").mkdir()
    Image.new("RGB", (4, 4)).save(data / "emu" / "0.png")
    code, _, err = run_cli(base_args(data, tmp_path / "a"), capsys)
    assert code == 2 and "4 class folders ('cat', 'dog', 'emu', 'owl')" in err
    assert "3 outputs" in err and len(err.strip().splitlines()) == 1
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"cat": 0, "dog": 1, "owl": 2}))
    code, _, err = run_cli([*base_args(data, tmp_path / "a"), "--class-index", str(index)], capsys)
    assert code == 2 and "class folders not in the class index: 'emu'" in err


@pytest.mark.usefixtures("no_long_work")
def test_unreadable_image_is_named(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (data / "dog" / "9.jpg").write_bytes(b"definitely not a jpeg")
    code, _, err = run_cli(base_args(data, tmp_path / "a"), capsys)
    assert code == 2
    assert err.startswith("error: unreadable image ") and "dog/9.jpg" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.usefixtures("no_long_work")
def test_cuda_without_cuda(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli([*base_args(data, tmp_path / "a"), "--device", "cuda"], capsys)
    assert code == 2 and "no CUDA device" in err


def test_argparse_rejects_bad_numbers(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli([*base_args(data, tmp_path / "a"), "--batch-size", "0"], capsys)
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        run_cli([*base_args(data, tmp_path / "a"), "--tau", "0.1", "--top-k", "3"], capsys)
    with pytest.raises(SystemExit):
        run_cli([*base_args(data, tmp_path / "a"), "--graph-mass", "0"], capsys)
    assert "--graph-mass: 0 is not in (0, 1]" in capsys.readouterr().err


def test_cli_build_end_to_end(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "tiny.pt"
    torch.save(tiny_cnn().state_dict(), weights)
    out = tmp_path / "atlas"
    argv = [
        *base_args(data, out), "--weights", str(weights), "--top-k", "2",
        "--influence-top-k", "2", "--examples", "3", "--crops", "2", "--batch-size", "5",
        "--title", "Tiny CLI atlas", "--graph-mass", "0.4",
    ]  # fmt: skip
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    assert f"atlas written to {out}" in stdout
    atlas = Atlas.open(out, verify_hashes=True)
    assert atlas.classes == CLASSES
    assert atlas.title == "Tiny CLI atlas"
    assert atlas.parameters["pagerank"]["mass"] == 0.4
    assert atlas.manifest["model"]["spec"] == SPEC
    assert atlas.manifest["model"]["name"] == "tiny_cnn"
    assert atlas.manifest["preprocessing"] == {
        "image_size": 8, "mean": [0.5] * 3, "std": [0.5] * 3, "grayscale": False,
    }  # fmt: skip
    assert atlas.manifest["dataset"]["num_images"] == 12
    num_images = atlas.class_stats()["num_images"]
    assert num_images.tolist() == [4, 4, 4]
    for layer in atlas.layer_names:
        counts = atlas.activation_counts(layer)
        # --top-k 2: each image adds exactly 2 to its class row
        assert (counts.sum(axis=1) == 2 * num_images).all()
        assert (counts <= num_images[:, None]).all()
    examples = atlas.examples("4")
    assert examples.image_index.shape == (6, 3)
    assert set(examples.image_index[examples.image_index >= 0].tolist()) <= set(range(12))
    assert atlas.example_crop("4", 0, 1) is not None
    assert atlas.example_crop("4", 0, 2) is None  # --crops 2
    code, stdout, _ = run_cli(["verify", str(out)], capsys)
    assert code == 0 and stdout.startswith("ok: ")


def test_cli_build_with_feature_visualizations(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "atlas"
    argv = [*base_args(data, out), "--top-k", "2", "--no-mapper", "--featurevis", "--no-progress"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    atlas = Atlas.open(out, verify_hashes=True)
    assert atlas.has("featurevis")
    for index, layer in enumerate(atlas.layers):
        for channel in range(layer.channels):
            for kind in ("vis", "div-0", "div-3"):
                assert featurevis_path(index, channel, kind) in atlas.files


def test_unreadable_image_during_the_pass_without_pre_check(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (data / "dog" / "9.jpg").write_bytes(b"definitely not a jpeg")
    argv = [*base_args(data, tmp_path / "a"), "--no-check-images", "--top-k", "2"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert err.startswith("error: reading the data failed: ") and "dog/9.jpg" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists()


# With --aggregate-by prediction an untrained model leaves some class rows empty; the PCA
# embedding of such tiny data divides by a zero variance (harmless here).
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_cli_build_grayscale_with_class_index(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"cat": 4, "dog": 0, "owl": 2, "unused": 1}))
    out = tmp_path / "gray"
    argv = [
        "build", "--model", "tests.unit.test_cli:tiny_gray_cnn", "--data", str(data),
        "--layers", "1,3", "--out", str(out), "--image-size", "6", "--normalize", "imagenet",
        "--class-index", str(index), "--workers", "0", "--no-progress", "--top-k", "1",
        "--crops", "1", "--aggregate-by", "prediction",
    ]  # fmt: skip
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    atlas = Atlas.open(out, verify_hashes=True)
    assert atlas.classes == CLASSES
    assert atlas.manifest["parameters"]["class_map"] == [4, 0, 2]
    assert atlas.manifest["parameters"]["aggregate_by"] == "prediction"
    pre = atlas.manifest["preprocessing"]
    assert pre["grayscale"] is True and len(pre["mean"]) == 1
    assert atlas.manifest["model"]["input_size"] == [1, 6, 6]
    assert atlas.class_stats()["num_images"].tolist() == [4, 4, 4]
    crop = Image.open(out / atlas.example_crop("3", 0, 0))
    assert crop.mode == "L"


def test_checkpoint_flags_refuse_another_build_and_restart(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from compute.checkpoint import CheckpointStore, Fingerprint, default_checkpoint_dir

    out = tmp_path / "atlas"
    with pytest.raises(SystemExit):
        run_cli([*base_args(data, out), "--checkpoint-every", "0"], capsys)
    stale = CheckpointStore(default_checkpoint_dir(out), 0, 1, Fingerprint("m", "d", {}))
    stale.save({}, None, images_done=4, batches_done=1)
    argv = [*base_args(data, out), "--checkpoint-every", "1", "--batch-size", "4"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and not out.exists()
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: checkpoint ") and "changed: model weights, data" in last
    assert "--restart" in last
    code, stdout, err = run_cli([*argv, "--restart"], capsys)
    assert code == 0, err
    assert f"atlas written to {out}" in stdout
    assert not default_checkpoint_dir(out).exists()
    custom = tmp_path / "ck"
    other = [*base_args(data, tmp_path / "b"), "--checkpoint-every", "1"]
    code, _, err = run_cli([*other, "--checkpoint-dir", str(custom)], capsys)
    assert code == 0, err
    assert not custom.exists()  # removed once written
