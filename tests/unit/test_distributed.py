"""torchrun builds: sharding without duplicates, exact merges, rank 0 writes the atlas."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from compute.distributed import (
    RangeSampler,
    Rank,
    dense_keys,
    loader_range,
    reload_range,
    shard_loader,
    shard_range,
)
from compute.errors import BuildError
from tests.helpers.atlas_compare import assert_same_atlas
from tests.helpers.atlas_models import LAYERS, write_image_folder

ROOT = Path(__file__).resolve().parents[2]
SPEC = "tests.helpers.atlas_models:tiny_cnn"


@pytest.mark.parametrize("n", [0, 1, 7, 48, 1001])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_partition_the_indices_once(n: int, world: int) -> None:
    shards = [shard_range(n, r, world) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))  # in order, no padding
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_shard_loader_keeps_the_loader_and_restricts_it() -> None:
    data = list(range(10))
    loader = DataLoader(data, batch_size=3)
    same, indices = shard_loader(loader, Rank())
    assert same is loader and indices == range(10)
    part, indices = shard_loader(loader, Rank(1, 3, 1))
    assert indices == range(3, 6)
    assert [b.tolist() for b in part] == [[3, 4, 5]]
    assert loader_range(part) == range(3, 6)
    rest = reload_range(part, 4, 6)
    assert isinstance(rest.sampler, RangeSampler) and [b.tolist() for b in rest] == [[4, 5]]


def test_shard_loader_refuses_what_it_cannot_shard() -> None:
    shuffled = DataLoader(list(range(10)), batch_size=2, shuffle=True)
    with pytest.raises(BuildError, match="shuffle=False"):
        shard_loader(shuffled, Rank(0, 2))
    with pytest.raises(BuildError, match="shuffle=False"):
        shard_loader([(torch.zeros(1, 3, 4, 4), torch.zeros(1))], Rank(0, 2))
    with pytest.raises(BuildError, match="3 images for 4 processes"):
        shard_loader(DataLoader(list(range(3)), batch_size=2), Rank(0, 4))


def test_dense_keys_are_the_integer_sums() -> None:
    state = {
        "images_seen": torch.tensor(3),
        "num_images": torch.zeros(2, dtype=torch.int64),
        "layer.1.counts": torch.zeros(2, 3, dtype=torch.int64),
        "layer.1.examples.values": torch.zeros(3, 2),
        "influence.1.counts": torch.zeros(4, dtype=torch.int64),
        "influence.1.keys": torch.zeros(4, dtype=torch.int64),
    }
    assert dense_keys(state) == ["images_seen", "num_images", "layer.1.counts"]


def _build_args(data: Path, out: Path) -> list[str]:
    return [
        "build", "--model", SPEC, "--data", str(data), "--layers", ",".join(LAYERS),
        "--out", str(out), "--image-size", "12", "--normalize", "0.5,0.5",
        "--batch-size", "8", "--workers", "0", "--no-progress", "--crops", "1",
        "--mapper-capacity", "40", "--mapper-crops", "3", "--top-k", "3", "--examples", "4",
    ]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("ATLAS_TEST_SLOW_FORWARD", None)
    return env


def _free_port() -> int:
    """A TCP port nothing listens on now (the c10d rendezvous store binds it)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """48 images and their one-process atlas (the reference of the torchrun builds)."""
    root = tmp_path_factory.mktemp("single")
    data = write_image_folder(root / "data", classes=3, per_class=16)  # 48 images
    one = root / "one"
    result = subprocess.run(
        [sys.executable, "-m", "compute", *_build_args(data, one)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return data, one


def _torchrun(launcher: list[str], data: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """Run the build under ``torch.distributed.run`` with 2 CPU (gloo) processes."""
    command = [sys.executable, "-m", "torch.distributed.run", *launcher, "--nproc-per-node=2"]
    return subprocess.run(
        [*command, "-m", "compute", *_build_args(data, out)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip


@pytest.mark.timeout(180)
def test_torchrun_two_gloo_processes_equal_one_process(
    single: tuple[Path, Path], tmp_path: Path
) -> None:
    data, one = single
    two = tmp_path / "two"
    multi = _torchrun(["--standalone"], data, two)
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert "rank 1 of 2 (gloo" in multi.stderr
    assert "merged the aggregates of 2 processes" in multi.stderr
    assert multi.stdout.count("atlas written to") == 1  # rank 0 alone writes
    assert assert_same_atlas(one, two) > 10
    from compute.atlas import Atlas

    assert Atlas.open(one).build.world_size == 1
    assert Atlas.open(two).build.world_size == 2  # the manifest records the processes


@pytest.mark.timeout(180)
def test_torchrun_c10d_rendezvous_form_of_multi_node_builds(
    single: tuple[Path, Path], tmp_path: Path
) -> None:
    """The multi-machine command line (docs/performance.md), with one node on localhost:
    the c10d rendezvous every machine of a real job joins."""
    data, one = single
    out = tmp_path / "c10d"
    launcher = [
        "--nnodes", "1", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"localhost:{_free_port()}", "--rdzv-id", "atlas-test",
    ]  # fmt: skip
    multi = _torchrun(launcher, data, out)
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert "merged the aggregates of 2 processes" in multi.stderr
    assert multi.stdout.count("atlas written to") == 1
    assert assert_same_atlas(one, out) > 10


@pytest.mark.timeout(240)
def test_torchrun_text_build_equals_one_process(tmp_path: Path) -> None:
    """A text classifier's build (issue 16) under torchrun with 2 processes: the same atlas
    as one process, text part included. Only the recorded softmax figures may differ, by
    float32 rounding: each batch is padded to its own longest input, so a shard's batches
    multiply matrices of other shapes than one process's (counts, maxima, examples, the
    Mapper sample and every text are exact)."""
    from tests.helpers.text_models import BERT_MLP_LAYERS, write_texts_csv, write_tiny_bert

    write_tiny_bert(tmp_path / "bert")
    write_texts_csv(tmp_path / "texts.csv")
    args = [
        "build", "--model", "hf:bert", "--data", "texts.csv",
        "--layers", ",".join(BERT_MLP_LAYERS), "--max-length", "12",
        "--batch-size", "4", "--workers", "0", "--no-progress",
    ]  # fmt: skip
    runs = {}
    for name, launcher in (
        ("one", [sys.executable, "-m", "compute"]),
        ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc-per-node=2", "-m", "compute"]),
    ):  # fmt: skip
        runs[name] = subprocess.run(
            [*launcher, *args, "--out", name],
            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert runs[name].returncode == 0, runs[name].stderr[-3000:]
    assert "merged the aggregates of 2 processes" in runs["two"].stderr
    close = ("instances/confidence.npy", "instances/margin.npy")
    assert assert_same_atlas(tmp_path / "one", tmp_path / "two", close=close) > 10
    from compute.atlas import Atlas

    one, two = Atlas.open(tmp_path / "one"), Atlas.open(tmp_path / "two")
    assert two.build.world_size == 2 and two.modality == "text"
    for index in range(18):
        assert one.text_input(index) == two.text_input(index)
