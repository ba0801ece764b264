"""The GPU data path, exercised on the CPU: channels-last gives the same atlas, and the
batched ``--decode jpeg-device`` plumbing (encoded batches decoded in ``build_atlas``)
gives the same atlas as decoding in the loader's workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from compute.build import build_atlas
from compute.data import JpegBatchDecoder, Preprocessing, collate_encoded, open_image_folder
from compute.summit.config import SummitConfig
from tests.helpers.atlas_compare import assert_same_atlas
from tests.unit.test_decode import jpeg_folder

CONFIG = SummitConfig(selection="topk", top_k=2, influence_top_k=3, examples_per_channel=3)


def small_cnn(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 2),
        )  # fmt: skip


def build(out: Path, loader: DataLoader, pre: Preprocessing, **kwargs: object) -> Path:
    return build_atlas(
        small_cnn(),
        loader,
        layers=["1", "4"],
        classes=["a", "b"],
        out=out,
        config=CONFIG,
        preprocessing=pre,
        crops_per_channel=1,
        mapper_crops=4,
        progress=False,
        **kwargs,  # type: ignore[arg-type]
    )


def test_channels_last_gives_the_same_atlas(tmp_path: Path) -> None:
    pre = Preprocessing.from_arg("imagenet", image_size=24)
    dataset, _ = open_image_folder(jpeg_folder(tmp_path / "data", 4), pre, num_outputs=2)
    loader = DataLoader(dataset, batch_size=3)
    plain = build(tmp_path / "plain", loader, pre)
    fast = build(tmp_path / "fast", loader, pre, channels_last=True)
    # The same counts and maxima; the logits' last float bit may follow the memory format,
    # so the recorded inputs' softmax confidence and margin agree to float32 rounding.
    close = ("instances/confidence.npy", "instances/margin.npy")
    assert assert_same_atlas(plain, fast, close=close) > 10


def test_channels_last_model_really_runs_channels_last() -> None:
    model = small_cnn().to(memory_format=torch.channels_last)
    weight = model[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()


def test_batched_decoding_in_the_build_equals_decoding_in_workers(tmp_path: Path) -> None:
    root = jpeg_folder(tmp_path / "data", 4)
    pre = Preprocessing.from_arg("imagenet", image_size=24)
    per_item, _ = open_image_folder(root, pre, num_outputs=2, decode="jpeg-device")
    encoded, _ = open_image_folder(root, pre, num_outputs=2, decode="jpeg-device", encoded=True)
    in_workers = build(tmp_path / "workers", DataLoader(per_item, batch_size=3), pre)
    batched = build(
        tmp_path / "batched",
        DataLoader(encoded, batch_size=3, collate_fn=collate_encoded),
        pre,
        decoder=JpegBatchDecoder(pre, "cpu"),
    )
    assert assert_same_atlas(in_workers, batched) > 10


def test_cli_jpeg_device_and_channels_last_on_the_cpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from compute.atlas import Atlas
    from compute.cli import main

    root = jpeg_folder(tmp_path / "data", 3)
    common = ["build", "--model", "simple_cnn", "--num-classes", "2", "--data", str(root)]
    common += ["--layers", "features.1,features.4", "--image-size", "16", "--workers", "0"]
    common += ["--normalize", "0.5,0.5", "--no-progress", "--mapper-crops", "0"]
    out = tmp_path / "atlas"
    argv = [*common, "--out", str(out), "--decode", "jpeg-device", "--channels-last"]
    assert main(argv) == 0
    assert Atlas.open(out).manifest["dataset"]["num_images"] == 6
    Image.new("RGB", (8, 8)).save(root / "a" / "x.png")
    assert main([*common, "--out", str(tmp_path / "other"), "--decode", "jpeg-device"]) == 2
    assert "reads only JPEG files" in capsys.readouterr().err
