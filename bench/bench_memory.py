"""Benchmark: peak host memory of ``python -m compute build`` on n and 10·n images.

Run ``python bench/bench_memory.py [--images N] [--image-size PX] [--keep DIR]``. Writes
two ImageFolder datasets of generated PNGs (10 classes; N and 10·N images), runs the same
build command on each in a fresh subprocess (``--workers 0``, one process, so its own
peak RSS is the build's), and prints both peaks (of the whole build, and up to the end of
the streaming pass, before the derived stages) and their ratios. Target: the ratio stays
within 1.10 (the pass streams; what it keeps is bounded by the number of channels,
classes, the ``--examples`` per channel and the Mapper ``--mapper-capacity``, which is
set below N here so the sample is full in both runs).

Example output (2-core shared CPU box, default settings)::

      images     peak RSS   after pass  pass img/s  wall s
        1000    1043.5 MB       767 MB        60.0   218.7
       10000    1045.0 MB       959 MB       131.0   221.4
    ratio 10n / n: whole build 1.001, up to the end of the pass 1.250
    target: <= 1.10

The end-of-pass growth there is the influence counters' pending-key buffer (bounded: a
merge every 2**22 keys per connection) not yet full at n = 1000. Once it has filled, e.g.
``--images 3000 --influence-top-k 50``: 1041.3 / 1068.0 MB whole build (ratio 1.026),
1026 / 1068 MB at the end of the pass (1.041). See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: Runs the build in this process, then reports its own peak RSS (KiB on Linux) as JSON.
_CHILD = """
import json, resource, sys
from compute.cli import main
code = main(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("PEAK_RSS_JSON " + json.dumps({"code": code, "peak_kib": peak}))
"""


def write_images(root: Path, count: int, size: int, classes: int = 10) -> Path:
    """``count`` seeded random PNGs of ``size``² pixels in ``classes`` folders.

    Args:
        root: folder to create.
        count: images in all.
        size: side in pixels.
        classes: class folders.

    Returns:
        ``root``.
    """
    from PIL import Image

    rng = np.random.default_rng(count)
    for c in range(classes):
        (root / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"class{i % classes:02d}" / f"{i:07d}.png")
    return root


def measure(
    data: Path, out: Path, image_size: int, capacity: int, extra: list[str]
) -> dict[str, float]:
    """Run one build in a subprocess; its peak RSS, pass throughput and wall time.

    Returns:
        ``{"peak_mb", "img_per_s", "wall_s"}``.
    """
    args = [
        "build", "--model", "simple_cnn", "--data", str(data),
        "--layers", "features.1,features.4,features.7", "--out", str(out),
        "--image-size", str(image_size), "--normalize", "0.5,0.5", "--workers", "0",
        "--batch-size", "64", "--mapper-capacity", str(capacity), "--no-progress", *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    line = [x for x in result.stdout.splitlines() if x.startswith("PEAK_RSS_JSON ")]
    if result.returncode != 0 or not line:
        raise SystemExit(f"build failed:\n{result.stderr[-3000:]}")
    report = json.loads(line[-1].split(" ", 1)[1])
    rate = re.search(r"(\d+) images \((\d+) img/s\)", result.stderr)
    after_pass = re.search(r"peak host memory after the pass: (\d+) MB", result.stderr)
    return {
        "peak_mb": report["peak_kib"] / 1024.0,
        "pass_mb": float(after_pass.group(1)) if after_pass else float("nan"),
        "img_per_s": float(rate.group(2)) if rate else float("nan"),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="n (default 1000)")
    parser.add_argument("--image-size", type=int, default=32, help="pixels (default 32)")
    parser.add_argument(
        "--mapper-capacity", type=int, default=500, help="Mapper sample size (default 500)"
    )
    parser.add_argument(
        "--influence-top-k",
        type=int,
        help="passed to the build (more influence keys per image fill the influence "
        "counters' bounded pending buffer, 2**22 keys per connection, at a smaller n)",
    )
    parser.add_argument("--keep", type=Path, help="write the data and atlases here")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-memory-"))
    rows = []
    for count in (args.images, 10 * args.images):
        data = base / f"data-{count}"
        if not data.exists():
            write_images(data, count, args.image_size)
        out = base / f"atlas-{count}"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        extra = (
            [] if args.influence_top_k is None else ["--influence-top-k", str(args.influence_top_k)]
        )
        rows.append((count, measure(data, out, args.image_size, args.mapper_capacity, extra)))
    print(f"{'images':>8} {'peak RSS':>12} {'after pass':>12} {'pass img/s':>11} {'wall s':>7}")
    for count, row in rows:
        print(
            f"{count:>8} {row['peak_mb']:>9.1f} MB {row['pass_mb']:>9.0f} MB "
            f"{row['img_per_s']:>11.1f} {row['wall_s']:>7.1f}"
        )
    ratio = rows[1][1]["peak_mb"] / rows[0][1]["peak_mb"]
    ratio_pass = rows[1][1]["pass_mb"] / rows[0][1]["pass_mb"]
    print(f"ratio 10n / n: whole build {ratio:.3f}, up to the end of the pass {ratio_pass:.3f}")
    print("target: <= 1.10")


if __name__ == "__main__":
    main()
