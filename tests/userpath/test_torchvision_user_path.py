"""A new user's path with real torchvision architectures, run as they would run it.

Each model is a torchvision classifier with random weights (BatchNorm, residual,
depthwise, Inception, LayerNorm blocks) and a 3-class head, over a folder of generated
images, and every command runs **from another working directory with relative paths**:

- ``build``, then the same build interrupted by an unreadable image after a checkpoint
  and re-run (``--checkpoint-every``): the resumed atlas equals the uninterrupted one;
- the same build under ``torchrun --nproc-per-node 2`` (gloo): equal counts;
- ``verify``; ``featurevis`` with few steps (weights not stored in the atlas are rebuilt
  from the seeded spec, checked against the build's digest);
- ``python -m dashboard --atlas RELATIVE`` serving pages, pictures and view callbacks.

CI runs the whole path for ResNet-18 and MobileNetV2 and build + featurevis + dashboard for
the others; ``pytest -m slow tests/userpath`` runs every step for every model (run it
before resolving a build or serving issue).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compute.atlas import Atlas
from tests.helpers.atlas_compare import assert_same_atlas
from tests.helpers.dash_payloads import pages_callback_body

ROOT = Path(__file__).resolve().parents[2]

#: torchvision name -> two consecutive layers worth mapping at 64 px.
MODELS: dict[str, str] = {
    "resnet18": "layer1,layer2",
    "mobilenet_v2": "features.2,features.3",
    "googlenet": "inception3a,inception3b",
    "vgg11_bn": "features.2,features.6",
    "efficientnet_b0": "features.1,features.2",
    "convnext_tiny": "features.0,features.1",
}
#: Models whose resume and torchrun steps run in CI (the rest: ``-m slow``).
FULL_IN_CI = ("resnet18", "mobilenet_v2")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETWORK_ATLAS_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return env


def _run(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    return result


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.args, result.stderr[-3000:])
    return result.stdout + result.stderr


def _write_images(root: Path, per_class: int = 4, size: int = 64) -> Path:
    """Generated RGB images: a coloured disc per class on noise (no download)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for c, colour in enumerate(((220, 40, 40), (40, 200, 60), (50, 80, 230))):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
            cy, cx, r = rng.integers(16, 48), rng.integers(16, 48), rng.integers(8, 16)
            pixels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = colour
            Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
    return root


def _build_args(name: str, out: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "compute", "build", "--model", f"torchvision:{name}",
        "--num-classes", "3", "--data", "data", "--layers", MODELS[name], "--out", out,
        "--image-size", "64", "--normalize", "imagenet", "--batch-size", "4", "--workers", "0",
        "--no-progress", "--crops", "1", "--mapper-capacity", "12", "--mapper-crops", "2",
        "--top-k", "3", "--examples", "3", *extra,
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(url: str, body: dict) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _serve_and_click(cwd: Path, atlas: str) -> None:
    """``python -m dashboard --atlas RELATIVE`` from ``cwd``: the page, its pictures and
    the explorer's callbacks answer, with no error shown."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "dashboard", "--atlas", atlas, "--port", str(port),
         "--cache-dir", "cache"],
        cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise AssertionError(server.stderr.read()[-3000:] if server.stderr else "")
            try:
                if _get(base + "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.3)
        status, page = _get(base + "/")
        assert status == 200, page[:500]
        manifest = Atlas.open(cwd / atlas)
        pictures = [p for p in manifest.files if p.endswith(".png")][:5]
        assert pictures
        for relpath in pictures:
            status, body = _get(f"{base}/atlas-file/{relpath}")
            assert status == 200 and body[:4] == b"\x89PNG", (relpath, status, body[:200])
        status, _ = _get(f"{base}/atlas-file/model/weights.pt")
        assert status == 404  # compute-only files are never served
        status, body = _post(base + "/_dash-update-component", pages_callback_body("/", "?class=1"))
        assert status == 200, body[:500]
        text = body.decode()
        assert "Could not show" not in text and "Traceback" not in text
    finally:
        server.terminate()
        server.wait(timeout=30)


def _corrupt_same_size(path: Path) -> bytes:
    """Make an image unreadable without changing its size (the data fingerprint includes
    sizes, so the repaired folder is the same data set); returns the original bytes."""
    original = path.read_bytes()
    path.write_bytes(b"\x00" * 16 + original[16:])
    return original


def _user_path(name: str, tmp_path: Path, full: bool) -> None:
    work = tmp_path / "work"  # the user's folder: not the repository
    work.mkdir()
    _write_images(work / "data")
    _ok(_run(work, *_build_args(name, "atlases/reference")))
    reference = work / "atlases" / "reference"
    out = _ok(_run(work, sys.executable, "-m", "compute", "verify", "atlases/reference"))
    assert "ok:" in out
    # No --weights: the architecture's random initialisation, which the atlas must say.
    assert Atlas.open(reference).manifest["model"]["random_weights"] is True

    if full:
        # Interrupted after a checkpoint by an unreadable image, then re-run: resumed.
        victim = work / "data" / "class2" / "img001.png"
        original = _corrupt_same_size(victim)
        failed = _run(
            work, *_build_args(name, "atlases/resumed", "--checkpoint-every", "1",
                               "--no-check-images"),
        )  # fmt: skip
        assert failed.returncode != 0 and "img001" in failed.stderr, failed.stderr[-2000:]
        assert "Traceback" not in failed.stderr
        victim.write_bytes(original)
        resumed = _ok(_run(work, *_build_args(name, "atlases/resumed", "--checkpoint-every", "1")))
        assert "resuming from checkpoint" in resumed
        assert assert_same_atlas(reference, work / "atlases" / "resumed") > 5

        # The same build over two processes: every image once, the same counts.
        torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
        args = _build_args(name, "atlases/two")[1:]  # torchrun runs the module itself
        _ok(_run(work, torchrun, "--nproc-per-node", "2", "--master-port",
                 str(_free_port()), *args))  # fmt: skip
        assert assert_same_atlas(reference, work / "atlases" / "two") > 5

    first = MODELS[name].split(",")[0]
    _ok(
        _run(work, sys.executable, "-m", "compute", "featurevis", "--atlas", "atlases/reference",
             "--layers", first, "--steps", "2", "--no-mapper", "--batch-channels", "64")
    )  # fmt: skip
    report = _ok(_run(work, sys.executable, "-m", "compute", "verify", "atlases/reference"))
    assert "featurevis: PARTIAL" in report  # one layer of two: said, not hidden
    _serve_and_click(work, "atlases/reference")


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_new_user_s_torchvision_model(name: str, tmp_path: Path) -> None:
    _user_path(name, tmp_path, full=name in FULL_IN_CI)


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("name", sorted(set(MODELS) - set(FULL_IN_CI)))
def test_every_step_for_every_model(name: str, tmp_path: Path) -> None:
    _user_path(name, tmp_path, full=True)
