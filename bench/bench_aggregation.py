"""Benchmark: Summit aggregation pass vs. the bare forward pass on the same synthetic data.

Run ``python bench/bench_aggregation.py [--images N] [--batch B] [--model demo|vgg|both]``.
Prints, per model, the load average, the median wall and CPU time of a bare forward pass
over all images (inference mode, same batches) and of the full :class:`SummitPass`
(activation counts, influence counts, top examples, ``result()``), their ratios, and a
per-stage breakdown of one more, instrumented, pass (self time of each stage, wall and CPU,
as a multiple of the bare forward; "forward + the rest" is the model itself, the hooks
and the Python around them). On a shared machine compare ratios from one run only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compute.summit import activation as activation_module
from compute.summit import aggregate as aggregate_module
from compute.summit import influence as influence_module
from compute.summit.aggregate import SummitPass
from compute.summit.config import SummitConfig


def demo_model() -> tuple[nn.Module, list[str], tuple[int, int, int], int]:
    """The demo CNN (4 conv-BN-ReLU blocks, 16-32-64-64) on 1×32×32, all four ReLUs."""
    try:
        from compute.demo import digits_cnn

        model = digits_cnn(10)
        layers = [f"features.relu{n}" for n in range(1, 5)]
    except ImportError:  # the demo module is optional for this benchmark
        blocks: list[nn.Module] = []
        channels = [1, 16, 32, 64, 64]
        for n in range(4):
            blocks += [
                nn.Conv2d(channels[n], channels[n + 1], 3, padding=1, bias=False),
                nn.BatchNorm2d(channels[n + 1]),
                nn.ReLU(),
            ]
            if n < 3:
                blocks.append(nn.MaxPool2d(2))
        model = nn.Sequential(
            nn.Sequential(*blocks), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)
        )
        layers = ["0.2", "0.6", "0.10", "0.14"]
    return model, layers, (1, 32, 32), 10


def vgg_model(layers: list[str]) -> tuple[nn.Module, list[str], tuple[int, int, int], int]:
    """torchvision VGG-11 (random weights) at 224×224."""
    import torchvision

    return torchvision.models.vgg11(weights=None), layers, (3, 224, 224), 1000


def timed(fn: Callable[[], None], cpu: list[float]) -> float:
    """Wall seconds of one call; its process CPU seconds are appended to ``cpu``.

    On a shared machine wall time mostly measures the other jobs; CPU time (all threads of
    this process) is the steadier figure, and with one thread it is the work itself.
    """
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    cpu.append(time.process_time() - start_cpu)
    return time.perf_counter() - start


#: Stages timed by :class:`StageTimer`: (label, module, attribute). Time is "self" time:
#: a stage called inside another is subtracted from the outer one.
STAGES: list[tuple[str, str, str]] = [
    ("influence: fused kernel", "compute.summit.influence", "influence_topk_fused"),
    ("influence: maxima", "compute.summit.influence", "influence_maxima_batched"),
    ("influence: maxima", "compute.summit.influence", "influence_maxima_input_major"),
    ("influence: maxima", "compute.summit.influence", "influence_maxima_pruned"),
    ("influence: maxima", "compute.summit.influence", "influence_maxima_gemm"),
    ("influence: maxima", "compute.summit.influence", "influence_maxima_1x1"),
    ("influence: top-k", "compute.summit.influence", "topk_triples"),
    ("influence: top-k", "compute.summit.influence", "topk_triples_input_major"),
    ("influence: other", "compute.summit.aggregate", "influence_topk"),
    ("activation: maxima", "compute.summit.aggregate", "spatial_max"),
    ("activation: maxima", "compute.summit.aggregate", "spatial_max_above"),
    ("activation: selection", "compute.summit.aggregate", "select_mass"),
    ("activation: selection", "compute.summit.aggregate", "select_topk"),
    ("top examples", "compute.summit.examples", "RunningTopExamples.update"),
    ("activation: counts", "compute.summit.aggregate", "SummitPass._aggregate_layer"),
    ("influence: counts", "compute.summit.aggregate", "SummitPass._aggregate_influence"),
    ("influence: counts", "compute.summit.aggregate", "SparseCounter.flush"),
    ("class statistics", "compute.summit.aggregate", "SummitPass._class_statistics"),
    ("result()", "compute.summit.aggregate", "SummitPass.result"),
]


class StageTimer:
    """Wraps the pass's stage functions (:data:`STAGES`) to add up their self time.

    Wall time, and the calling thread's CPU time (steadier on a busy machine; it equals the
    work for stages that run on one thread), summed over threads: stages that run in the
    influence workers overlap each other and the calling thread. A context manager: the
    originals are restored on exit. Stages missing from the code (renamed or not used) are
    skipped.
    """

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._local = threading.local()  # per thread: wall and CPU time of nested stages
        self._lock = threading.Lock()
        self._restore: list[tuple[object, str, object]] = []

    def _wrap(self, label: str, function: Callable[..., object]) -> Callable[..., object]:
        def wrapper(*args: object, **kwargs: object) -> object:
            stack = self._local.__dict__.setdefault("stack", [])
            stack.append([0.0, 0.0])
            start, start_cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                wall = time.perf_counter() - start
                cpu = time.thread_time() - start_cpu
                nested_wall, nested_cpu = stack.pop()
                with self._lock:
                    self.spent[label] = self.spent.get(label, 0.0) + wall - nested_wall
                    self.cpu[label] = self.cpu.get(label, 0.0) + cpu - nested_cpu
                if stack:
                    stack[-1][0] += wall
                    stack[-1][1] += cpu

        return wrapper

    def __enter__(self) -> StageTimer:
        import importlib

        for label, module_name, attribute in STAGES:
            owner: object = importlib.import_module(module_name)
            *path, name = attribute.split(".")
            for part in path:
                owner = getattr(owner, part)
            original = getattr(owner, name, None)
            if original is None:
                continue
            self.spent.setdefault(label, 0.0)
            self.cpu.setdefault(label, 0.0)
            self._restore.append((owner, name, original))
            setattr(owner, name, self._wrap(label, original))
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)
        self._restore.clear()


def bench(
    name: str,
    model: nn.Module,
    layers: list[str],
    shape: tuple[int, int, int],
    classes: int,
    images: int,
    batch: int,
    repeats: int,
    compare_matmul: bool = False,
) -> None:
    model.eval()
    generator = torch.Generator().manual_seed(0)
    data = torch.randn((images, *shape), generator=generator)
    labels = torch.randint(0, classes, (images,), generator=generator)
    indices = torch.arange(images)
    config = SummitConfig()

    def bare() -> None:
        with torch.inference_mode():
            for start in range(0, images, batch):
                model(data[start : start + batch])

    def summit() -> None:
        with SummitPass(model, layers, classes, config) as summit_pass:
            for start in range(0, images, batch):
                end = start + batch
                summit_pass.update(data[start:end], labels[start:end], indices[start:end])
            summit_pass.result()

    def summit_matmul() -> None:
        """The pass with the compiled kernel off: the matrix-product paths."""
        influence_module.FUSED = False
        try:
            summit()
        finally:
            influence_module.FUSED = True

    bare()  # warm-up
    summit()  # warm-up (first-call costs: kernel compilation and selection, allocator)
    bare_times, summit_times, matmul_times = [], [], []
    bare_cpu: list[float] = []
    summit_cpu: list[float] = []
    matmul_cpu: list[float] = []
    for _ in range(repeats):  # interleave so load changes hit all alike
        bare_times.append(timed(bare, bare_cpu))
        summit_times.append(timed(summit, summit_cpu))
        if compare_matmul:
            matmul_times.append(timed(summit_matmul, matmul_cpu))
    # One more, instrumented run for the per-stage breakdown (wrappers add a little).
    staged_cpu: list[float] = []
    with StageTimer() as stages:
        t_staged = timed(summit, staged_cpu)
    c_staged = staged_cpu[0]
    t_bare = statistics.median(bare_times)
    t_summit = statistics.median(summit_times)
    print(f"== {name}: {images} images of {shape}, batch {batch}, layers {layers}")
    if hasattr(os, "getloadavg"):
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        print(f"   load average {load} (after the runs), {os.cpu_count()} CPUs")
    cap = getattr(influence_module, "INFLUENCE_THREADS", None)
    print(f"   threads {torch.get_num_threads()} (influence step: {cap or 'same'}), ", end="")
    print(f"repeats {repeats} (median)")
    print(f"   bare forward : {t_bare:8.3f} s  ({images / t_bare:7.1f} img/s)")
    print(f"   summit pass  : {t_summit:8.3f} s  ({images / t_summit:7.1f} img/s)")
    print(f"   ratio        : {t_summit / t_bare:8.2f} x   (target <= 2.0)")
    c_bare, c_summit = statistics.median(bare_cpu), statistics.median(summit_cpu)
    print(f"   CPU time     : {c_bare:8.3f} s bare, {c_summit:8.3f} s summit")
    print(f"   CPU ratio    : {c_summit / c_bare:8.2f} x   (steadier under load)")
    if compare_matmul:
        t_matmul, c_matmul = statistics.median(matmul_times), statistics.median(matmul_cpu)
        print(
            f"   without the fused kernel (matrix products): {t_matmul:.3f} s, "
            f"ratio {t_matmul / t_bare:.2f} x, CPU ratio {c_matmul / c_bare:.2f} x"
        )
    print(
        f"   stages of one more (instrumented) summit run: {t_staged:.3f} s wall, "
        f"{c_staged:.3f} s CPU; per bare forward ({t_bare:.3f} s wall, {c_bare:.3f} s CPU):"
    )
    print(f"     {'stage':<24s}  {'wall':>7s}  {'ratio':>6s}  {'CPU':>7s}  {'ratio':>6s}")
    staged, staged_cpu = 0.0, 0.0
    for stage, seconds in stages.spent.items():
        cpu = stages.cpu[stage]
        staged, staged_cpu = staged + seconds, staged_cpu + cpu
        print(
            f"     {stage:<24s}: {seconds:7.3f}  {seconds / t_bare:5.2f}x  "
            f"{cpu:7.3f}  {cpu / c_bare:5.2f}x"
        )
    rest, rest_cpu = t_staged - staged, c_staged - staged_cpu
    print(
        f"     {'forward + the rest':<24s}: {rest:7.3f}  {rest / t_bare:5.2f}x  "
        f"{rest_cpu:7.3f}  {rest_cpu / c_bare:5.2f}x"
    )
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=None, help="images per run (default 2048 demo, 16 VGG)"
    )
    parser.add_argument("--batch", type=int, default=None, help="batch size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", choices=["demo", "vgg", "both"], default="both")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--influence-threads",
        type=int,
        default=None,
        help="cap on threads in the influence step and per-batch statistics "
        "(0: no cap; default: the modules')",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker threads for the deferred CPU influence step (default: torch's threads)",
    )
    parser.add_argument(
        "--vgg-layers",
        default="features.9,features.12,features.14",
        help="comma-separated VGG-11 layers (ReLU outputs)",
    )
    parser.add_argument(
        "--compare-matmul",
        action="store_true",
        help="also time the pass with the fused influence kernel off (side by side)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.influence_threads is not None:
        influence_module.INFLUENCE_THREADS = args.influence_threads or None
        activation_module.STATISTICS_THREADS = args.influence_threads or None
    if args.workers is not None:
        aggregate_module.INFLUENCE_WORKERS = args.workers
    torch.manual_seed(0)
    if args.model in ("demo", "both"):
        model, layers, shape, classes = demo_model()
        bench(
            "demo CNN", model, layers, shape, classes,
            args.images or 2048, args.batch or 256, args.repeats, args.compare_matmul,
        )  # fmt: skip
    if args.model in ("vgg", "both"):
        model, layers, shape, classes = vgg_model(args.vgg_layers.split(","))
        bench(
            "VGG-11", model, layers, shape, classes,
            args.images or 16, args.batch or 8, args.repeats, args.compare_matmul,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
