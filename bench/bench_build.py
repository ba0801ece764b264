"""Benchmark: images/s of the Summit pass vs a bare forward pass over the same data.

Run ``python bench/bench_build.py [--images N] [--classes K] [--device cuda]
[--decode jpeg-device] [--channels-last] [--precision bf16] [--models googlenet,resnet50]
[--full]``. Writes N generated real-size JPEG files (sides 224-500 px: smooth waves, edges
and noise; K class folders, default 10; in parallel with ``--jobs``) to a temp directory (or
``--keep DIR``, reused and completed on the next run; ``--generate-only`` stops there), then
for each model (torchvision, random weights, 224 px input):

- **forward**: the loader (same workers, pinned memory, decoding) and ``model(images)``
  under ``torch.inference_mode``, nothing else;
- **pass**: the same loader feeding :class:`compute.summit.aggregate.SummitPass` on the
  model's Summit layers (default settings), i.e. the streaming pass of a build without
  the TopoAct sample;
- with ``--full``: the whole :func:`compute.build.build_atlas` (pass, Mapper sample,
  graphs, embedding, crops, writing), wall time;
- with ``--drilldown-overhead``: the pass without the subset counts and instance records
  too, and how much longer the default pass (with them) takes (issue 17: within 10%).

It prints images/s of each and the ratio forward/pass (issue 6 targets on one GPU: at
most 1.5 for GoogLeNet, whose Inception layers are connected by convolutions and counted
exactly, and at most 3 for ResNet-50, whose residual stages need gradient attribution).
One warm-up batch runs before each timing; CUDA is synchronised before each clock read.
``--precision bf16|fp16`` runs both under ``torch.autocast`` (the build's approximate mode).
``bench/gpu_session.sh`` runs every issue-6 figure on one GPU.

Figures (docs/performance.md has them with the machine)::

    python bench/bench_build.py --images 48 --batch-size 16 --workers 1   # 2-core CPU
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from functools import cache, partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compute.atlas import Atlas  # noqa: E402
from compute.build.cli import make_loader as build_loader  # noqa: E402
from compute.data import (  # noqa: E402
    Preprocessing,
    open_image_folder,
)
from compute.models import get_model  # noqa: E402
from compute.summit.aggregate import SummitPass  # noqa: E402
from compute.summit.config import SummitConfig  # noqa: E402
from compute.summit.instances import InstanceConfig  # noqa: E402

#: Summit layers per model: consecutive Inception blocks (exact counts) / residual stages
#: (gradient x activation).
LAYERS = {
    "googlenet": [
        "inception3a", "inception3b", "inception4a", "inception4b", "inception4c",
        "inception4d", "inception4e", "inception5a", "inception5b",
    ],
    "resnet50": ["layer1", "layer2", "layer3", "layer4"],
}  # fmt: skip

NUM_CLASSES = 10
#: Largest generated side; the shared noise tile is this big plus room for offsets.
_MAX_SIDE = 500
_NOISE_SIDE = 1024


@cache
def _noise_tile(seed: int) -> np.ndarray:
    """One float32 N(0, 15) tile per process; each image takes a window at a random offset.

    Drawing fresh Gaussian noise per image cost two thirds of the generation time (10 of
    ~30 ms per image on the 2-core box); a shared tile keeps the JPEGs as hard to
    compress (about 64 KB at ~360 px, quality 90) at a third of the cost.
    """
    rng = np.random.default_rng((seed, 2**32))
    return rng.standard_normal((_NOISE_SIDE, _NOISE_SIDE, 3), dtype=np.float32) * 15


def class_folder(i: int, classes: int) -> str:
    """Folder of image ``i``: ``c{i % classes}``, zero-padded so that sorted folder order is
    class order (``c000`` .. ``c999`` for 1,000 classes = the model's outputs in order)."""
    return f"c{i % classes:0{len(str(classes - 1))}d}"


def jpeg_image(i: int, seed: int = 0) -> bytes:
    """Image ``i`` as JPEG bytes: sides 224-500 px, waves, a checkerboard and noise.

    Args:
        i: image number; with ``seed`` it alone decides the image (any order, any process).
        seed: data set seed.

    Returns:
        The encoded JPEG (quality 90).
    """
    rng = np.random.default_rng((seed, i))
    width, height = (int(v) for v in rng.integers(224, _MAX_SIDE + 1, size=2))
    fx, fy, phase = rng.uniform(3, 40, size=3)
    top, left = (int(v) for v in rng.integers(0, _NOISE_SIDE - _MAX_SIDE, size=2))
    x = np.arange(width, dtype=np.float32)
    y = np.arange(height, dtype=np.float32)[:, None]
    pixels = _noise_tile(seed)[top : top + height, left : left + width].copy()
    pixels[..., 0] += 127 + 100 * np.sin(x / fx + phase)
    pixels[..., 1] += 127 + 100 * np.cos(y / fy)
    pixels[..., 2] += np.where((x // 32 + y // 32) % 2 == 0, 200, 60)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
        buffer, format="JPEG", quality=90
    )
    return buffer.getvalue()


def _write_one(root: Path, classes: int, seed: int, i: int) -> int:
    """Write image ``i`` unless it exists (atomically: a killed run leaves no half file)."""
    path = root / class_folder(i, classes) / f"{i:07d}.jpg"
    if path.exists():
        return 0
    part = path.with_name(f".{path.name}.part")  # not an image extension: never listed
    part.write_bytes(jpeg_image(i, seed))
    os.replace(part, path)
    return 1


def write_jpegs(
    root: Path, count: int, seed: int = 0, classes: int = NUM_CLASSES, jobs: int = 1
) -> int:
    """``count`` JPEG files, sides 224-500 px, in ``classes`` class folders (image ``i`` in
    class ``i % classes``); files already there are kept, so an interrupted run completes.

    Args:
        root: the ImageFolder directory to fill.
        count: images.
        seed: data set seed (the same files whatever ``jobs``).
        classes: class folders.
        jobs: processes writing in parallel.

    Returns:
        How many files were written now.
    """
    for k in range(min(classes, count)):
        (root / class_folder(k, classes)).mkdir(parents=True, exist_ok=True)
    write = partial(_write_one, root, classes, seed)
    if jobs <= 1:
        return sum(map(write, range(count)))
    with get_context("fork" if sys.platform == "linux" else "spawn").Pool(jobs) as pool:
        return sum(pool.imap_unordered(write, range(count), chunksize=256))


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for ``bf16``/``fp16`` (the build's approximate mode), nothing for fp32."""
    from compute.build import autocast_context

    return autocast_context(precision, device)


def make_loader(
    root: Path, pre: Preprocessing, args: argparse.Namespace
) -> tuple[DataLoader, Callable[[Any], Any] | None]:
    """The build's loader and decoder, made as ``python -m compute build`` makes them."""
    device = torch.device(args.device)
    encoded = args.decode == "jpeg-device" and device.type == "cuda"
    dataset, _ = open_image_folder(
        root, pre, check=False, progress=False, decode=args.decode, encoded=encoded
    )
    return build_loader(dataset, pre, device, batch_size=args.batch_size, workers=args.workers)


def batches(
    loader: DataLoader, decoder: Callable[[Any], Any] | None, device: torch.device, cl: bool
) -> Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Images on the device (channels-last if asked), labels and indices."""
    for batch in loader:
        images, labels, indices = decoder(batch) if decoder is not None else batch
        images = images.to(device, non_blocking=True)
        if cl:
            images = images.contiguous(memory_format=torch.channels_last)
        yield images, labels, indices


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(model: torch.nn.Module, loader: DataLoader, decoder: Any, args: Any) -> float:
    """Images/s of the loader plus a bare forward pass."""
    device = torch.device(args.device)
    with torch.inference_mode(), precision_context(args.precision, device):
        warm = next(iter(batches(loader, decoder, device, args.channels_last)))
        model(warm[0])
        sync(device)
        start, count = time.perf_counter(), 0
        for images, _, _ in batches(loader, decoder, device, args.channels_last):
            model(images)
            count += int(images.shape[0])
        sync(device)
    return count / (time.perf_counter() - start)


def time_pass(
    model: torch.nn.Module,
    layers: list[str],
    loader: DataLoader,
    decoder: Any,
    args: Any,
    drilldown: bool = True,
    split: list[float] | None = None,
) -> float:
    """Images/s of the loader plus the Summit streaming pass (``drilldown``: with the
    subset counts and the instance records, as a build by default; random-weight models get
    most images wrong, so this is their worst case: nearly every image is counted twice,
    and the first few thousand are all recorded). ``split``, if given, receives the
    seconds of the streaming part and of the end of the pass (``result()``: merges and
    widest paths, a cost per class that does not grow with the number of images)."""
    device = torch.device(args.device)
    classes = len(loader.dataset.classes)  # type: ignore[attr-defined]
    class_map = list(range(classes))
    config = SummitConfig(subsets=drilldown)
    new_pass = partial(
        SummitPass,
        model,
        layers,
        classes,
        config,
        device=args.device,
        class_map=class_map,
        instances=InstanceConfig() if drilldown else None,
    )
    autocast = partial(precision_context, args.precision, device)
    with new_pass() as scratch, autocast():  # warm-up batch, uncounted (kernels, caches)
        scratch.update(*next(iter(batches(loader, decoder, device, args.channels_last))))
    with new_pass() as summit:
        sync(device)
        start, count = time.perf_counter(), 0
        for images, labels, indices in batches(loader, decoder, device, args.channels_last):
            with autocast():
                summit.update(images, labels, indices)
            count += int(images.shape[0])
        sync(device)
        streamed = time.perf_counter()
        summit.result()
        sync(device)
    end = time.perf_counter()
    if split is not None:
        split[:] = [streamed - start, end - streamed]
    return count / (end - start)


def time_build(
    model: torch.nn.Module, layers: list[str], loader: DataLoader, decoder: Any, args: Any
) -> float:
    """Images/s of the whole ``build_atlas`` (wall time, everything included); prints the
    instance records' storage per recorded input."""
    from compute.build import build_atlas

    classes = list(loader.dataset.classes)  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        build_atlas(
            model,
            loader,
            layers=layers,
            classes=classes,
            class_map=list(range(len(classes))),
            out=Path(out) / "atlas",
            device=args.device,
            progress=False,
            channels_last=args.channels_last,
            decoder=decoder,
            crops_per_channel=1,
            mapper_crops=100,
            precision=args.precision,
            decode=args.decode,
        )
        seconds = time.perf_counter() - start
        records = Path(out) / "atlas" / "instances"
        stored = sum(f.stat().st_size for f in records.rglob("*.npy"))
        images = sum(f.stat().st_size for f in (records / "inputs").glob("*.*"))
        count = Atlas.open(Path(out) / "atlas").instances().num_instances
        print(
            f"# {model.__class__.__name__}: {count} instance records, {stored / 1e6:.2f} MB "
            f"of arrays + {images / 1e6:.2f} MB of input images, "
            f"{stored / max(count, 1) / 1e3:.1f} + {images / max(count, 1) / 1e3:.1f} kB per "
            "input",
            flush=True,
        )
    return len(loader.dataset) / seconds  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--images", type=int, default=2048 if cuda else 48)
    parser.add_argument("--classes", type=int, default=NUM_CLASSES, help="class folders")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes writing the JPEGs"
    )
    parser.add_argument(
        "--generate-only", action="store_true", help="write the JPEG files (--keep) and stop"
    )
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--batch-size", type=int, default=128 if cuda else 16)
    parser.add_argument("--workers", type=int, default=8 if cuda else 1)
    parser.add_argument("--decode", choices=("pil", "jpeg-device"), default="pil")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="bf16/fp16: autocast, the build's approximate mode (fp16 on CUDA only)",
    )
    parser.add_argument("--models", default="googlenet,resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--full", action="store_true", help="also time the whole build_atlas")
    parser.add_argument(
        "--drilldown-overhead",
        action="store_true",
        help="also time the pass without the subset counts and instance records",
    )
    parser.add_argument("--keep", type=Path, help="write the JPEG files here and keep them")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    if args.generate_only and args.keep is None:
        parser.error("--generate-only needs --keep DIR")
    if args.precision == "fp16" and not args.device.startswith("cuda"):
        parser.error("--precision fp16 needs a CUDA device")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp) / "data"
        start = time.perf_counter()
        written = write_jpegs(root, args.images, classes=args.classes, jobs=args.jobs)
        if written:
            seconds = time.perf_counter() - start
            print(
                f"# wrote {written} JPEG files to {root} in {seconds:.1f} s "
                f"({written / seconds:.0f} files/s, {args.jobs} processes)",
                flush=True,
            )
        if args.generate_only:
            return 0
        pre = Preprocessing.from_arg("imagenet", image_size=args.image_size)
        loader, decoder = make_loader(root, pre, args)
        device = torch.device(args.device)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(
            f"# {len(loader.dataset)} JPEG files 224-500 px -> {args.image_size} px, "  # type: ignore[arg-type]
            f"{name}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"batch {args.batch_size}, workers {args.workers}, decode {args.decode}, "
            f"channels-last {args.channels_last}, precision {args.precision}, "
            f"{len(loader.dataset.classes)} classes"  # type: ignore[attr-defined]
        )
        print(f"{'model':<10} {'forward img/s':>14} {'pass img/s':>11} {'ratio':>6}", end="")
        print(f" {'plain img/s':>12} {'overhead':>9}" if args.drilldown_overhead else "", end="")
        print(f" {'build img/s':>12}" if args.full else "")
        for model_name in args.models.split(","):
            model = get_model(f"torchvision:{model_name}").to(device).eval()
            if args.channels_last:
                model = model.to(memory_format=torch.channels_last)
            layers = LAYERS[model_name]
            forward = time_forward(model, loader, decoder, args)
            if not args.drilldown_overhead:
                summit = time_pass(model, layers, loader, decoder, args)
                line = f"{model_name:<10} {forward:>14.1f} {summit:>11.1f} {forward / summit:>6.2f}"
            else:
                # With and without drill-down in turn, twice (with, plain, plain, with), each
                # timed as streaming + end of pass; the figures are the sums, so the shared
                # machine's load falls on both alike.
                runs: dict[bool, list[list[float]]] = {True: [], False: []}
                for drilldown in (True, False, False, True):
                    split: list[float] = []
                    time_pass(
                        model, layers, loader, decoder, args, drilldown=drilldown, split=split
                    )
                    runs[drilldown].append(split)
                images = 2 * len(loader.dataset)  # type: ignore[arg-type]
                stream = {k: sum(r[0] for r in v) for k, v in runs.items()}
                finish = {k: sum(r[1] for r in v) / 2 for k, v in runs.items()}
                summit = images / (stream[True] + 2 * finish[True])
                plain = images / (stream[False] + 2 * finish[False])
                line = f"{model_name:<10} {forward:>14.1f} {summit:>11.1f} {forward / summit:>6.2f}"
                line += f" {plain:>12.1f} {plain / summit - 1:>+9.1%}"
                line += (
                    f"  (streaming {stream[True] / stream[False] - 1:+.1%}; end of pass "
                    f"{finish[True]:.2f} s vs {finish[False]:.2f} s: per class, not per image)"
                )
            if args.full:
                line += f" {time_build(model, layers, loader, decoder, args):>12.1f}"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
