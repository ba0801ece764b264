"""Resumable builds: checkpoints every N batches, kill -9, resume to the same atlas."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from compute.atlas import Atlas
from compute.build import build_atlas
from compute.checkpoint import CheckpointStore, Fingerprint, default_checkpoint_dir
from compute.errors import BuildError
from compute.summit.config import SummitConfig
from tests.helpers.atlas_compare import assert_same_atlas
from tests.helpers.atlas_models import LAYERS, tiny_cnn, write_image_folder

ROOT = Path(__file__).resolve().parents[2]
SPEC = "tests.helpers.atlas_models:tiny_cnn"


# -- the checkpoint store ----------------------------------------------------------------


def test_store_round_trip_and_atomic_replace(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ck", 0, 1, Fingerprint("m", "d", {"seed": 0}))
    assert store.load() is None
    state = {"num_images": torch.arange(3)}
    store.save(state, None, images_done=16, batches_done=2)
    store.save({"num_images": torch.arange(3) + 1}, None, images_done=24, batches_done=3)
    assert sorted(p.name for p in store.directory.iterdir()) == ["rank0-of-1.pt"]  # no temp
    resumed = store.load()
    assert resumed is not None and (resumed.images_done, resumed.batches_done) == (24, 3)
    assert resumed.summit["num_images"].tolist() == [1, 2, 3] and not resumed.complete


def test_store_refuses_another_build_in_one_line(tmp_path: Path) -> None:
    CheckpointStore(tmp_path, 0, 1, Fingerprint("m", "d", {"seed": 0, "layers": ["a"]})).save(
        {}, None, 8, 1
    )
    other = CheckpointStore(tmp_path, 0, 1, Fingerprint("m2", "d", {"seed": 1, "layers": ["a"]}))
    with pytest.raises(BuildError, match=r"changed: model weights, parameter seed\)") as info:
        other.load()
    assert "\n" not in str(info.value) and "--restart" in str(info.value)
    assert other.load(restart=True) is None and not other.path.exists()
    CheckpointStore(tmp_path, 1, 2, Fingerprint("m", "d", {})).save({}, None, 8, 1)
    with pytest.raises(BuildError, match="another number of processes"):
        CheckpointStore(tmp_path, 0, 1, Fingerprint("m", "d", {})).load()
    (tmp_path / "rank0-of-1.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BuildError, match="cannot read checkpoint"):
        CheckpointStore(tmp_path, 0, 1, Fingerprint("m", "d", {})).load()


# -- in-process: a build that fails mid-pass, then resumes ---------------------------------


class _Images(Dataset):
    """Seeded images; item ``fail_at`` raises while ``failing`` (a real read error)."""

    def __init__(self, n: int = 40, fail_at: int | None = None) -> None:
        gen = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, 8, 8, generator=gen)
        self.labels = torch.arange(n) % 3
        self.fail_at = fail_at

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        if index == self.fail_at:
            raise OSError(f"disk error reading image {index}")
        return self.images[index], int(self.labels[index]), index


def _build(model: nn.Module, data: _Images, out: Path, **kwargs: object) -> Path:
    return build_atlas(
        model,
        DataLoader(data, batch_size=8),
        layers=list(LAYERS),
        classes=["a", "b", "c"],
        out=out,
        config=SummitConfig(selection="topk", top_k=3, examples_per_channel=4),
        crops_per_channel=0,
        mapper_capacity=20,
        mapper_crops=0,
        progress=False,
        **kwargs,  # type: ignore[arg-type]
    )


def test_failed_build_resumes_to_the_uninterrupted_atlas(tmp_path: Path) -> None:
    reference = _build(tiny_cnn(), _Images(), tmp_path / "reference")
    out = tmp_path / "atlas"
    with pytest.raises(BuildError, match="disk error reading image 29"):
        _build(tiny_cnn(), _Images(fail_at=29), out, checkpoint_every=2)
    store = default_checkpoint_dir(out) / "rank0-of-1.pt"
    saved = torch.load(store, weights_only=True)
    assert (saved["images_done"], saved["batches_done"], saved["complete"]) == (16, 2, False)
    other_model = tiny_cnn()
    with torch.no_grad():
        other_model.head.bias.add_(1.0)
    with pytest.raises(BuildError, match=r"changed: model weights\)"):
        _build(other_model, _Images(), out, checkpoint_every=2)
    with pytest.raises(BuildError, match=r"changed: parameter mapper\)"):
        _build(tiny_cnn(), _Images(), out, checkpoint_every=2, seed=1)
    _build(tiny_cnn(), _Images(), out, checkpoint_every=2)
    assert assert_same_atlas(reference, out) > 10
    assert not default_checkpoint_dir(out).exists()  # removed once the atlas is written


def test_restart_discards_the_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "atlas"
    with pytest.raises(BuildError):
        _build(tiny_cnn(), _Images(fail_at=20), out, checkpoint_every=1)
    other = tiny_cnn()
    with torch.no_grad():
        other.head.bias.add_(1.0)
    _build(other, _Images(), out, checkpoint_every=1, restart=True)
    assert_same_atlas(_build(other, _Images(), tmp_path / "reference"), out)


# -- a real process killed with SIGKILL after a checkpoint ---------------------------------


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "compute", "build", "--model", SPEC, "--data", str(data),
        "--layers", ",".join(LAYERS), "--out", str(out), "--image-size", "12",
        "--normalize", "0.5,0.5", "--batch-size", "8", "--workers", "0", "--no-progress",
        "--crops", "1", "--mapper-capacity", "40", "--mapper-crops", "3", "--top-k", "3",
        "--examples", "4", *extra,
    ]  # fmt: skip


def _env(slow: float = 0.0) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("ATLAS_TEST_SLOW_FORWARD", None)
    if slow:
        env["ATLAS_TEST_SLOW_FORWARD"] = str(slow)
    return env


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.timeout(240)
def test_kill_9_mid_pass_then_rerun_gives_the_same_atlas(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "data", classes=3, per_class=16)  # 48 images, 6 batches
    reference = subprocess.Popen(  # runs beside the victim
        _args(data, tmp_path / "reference"),
        cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out = tmp_path / "atlas"
    checkpoint = default_checkpoint_dir(out) / "rank0-of-1.pt"
    command = _args(data, out, "--checkpoint-every", "1")
    victim = subprocess.Popen(
        command, cwd=ROOT, env=_env(slow=0.5), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, victim.stderr.read().decode()[-2000:] if victim.stderr else ""
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert not out.exists()
    saved = torch.load(checkpoint, weights_only=True)
    assert 0 < saved["images_done"] < 48 and not saved["complete"]

    _, errors = reference.communicate(timeout=120)
    assert reference.returncode == 0, errors[-2000:]
    resumed = _run(command)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from checkpoint {checkpoint}: {saved['images_done']} images" in (
        resumed.stderr
    )
    assert assert_same_atlas(tmp_path / "reference", out) > 10
    assert not checkpoint.parent.exists()
    assert Atlas.open(out).manifest["dataset"]["num_images"] == 48  # each image once
