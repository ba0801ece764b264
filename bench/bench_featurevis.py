"""Benchmarks of feature visualization (``compute.featurevis``); prints figures.

1. ``demo``: every channel of the demo CNN's four layers (16+32+64+64 = 176 channels),
   one visualization and 4 diversity images each, on CPU. Target: <= 3 minutes on 2 cores.
2. ``googlenet``: channels per second for torchvision's GoogLeNet (random weights,
   ``init_weights=True``) at 224 px, 256 steps, a few channels of ``inception4a``.

Examples:
    python bench/bench_featurevis.py demo --steps 128
    python bench/bench_featurevis.py googlenet --channels 4 --steps 256
    python bench/bench_featurevis.py all
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compute.featurevis import ImageSpace, LayerCapture, RenderConfig, render_channels

log = logging.getLogger("bench_featurevis")


def bench_demo(args: argparse.Namespace) -> dict[str, float]:
    """Render all 176 demo channels (vis + diversity); returns the timings in seconds."""
    from compute.demo import DEMO_LAYERS, digits_cnn, load_digits_splits, train_digits_cnn

    splits = load_digits_splits()
    started = time.perf_counter()
    if args.weights and Path(args.weights).exists():
        model = digits_cnn()
        model.load_state_dict(torch.load(args.weights, weights_only=True))
        train_s = 0.0
    else:
        model = train_digits_cnn(splits)
        train_s = time.perf_counter() - started
        if args.weights:
            torch.save(model.state_dict(), args.weights)
    space = ImageSpace(1, 32, 32, (splits.mean,), (splits.std,), grayscale=True)
    config = RenderConfig(steps=args.steps, batch_channels=args.batch_channels, seed=args.seed)
    figures = {"train_s": train_s}
    saved: dict[str, np.ndarray] = {}
    total = cpu = 0.0
    for layer in DEMO_LAYERS:
        with torch.no_grad(), LayerCapture(model, layer) as capture:
            channels = range(capture(splits.train.images[:1]).shape[1])
        started, cpu_started = time.perf_counter(), time.process_time()
        vis = render_channels(model, layer, channels, space, config)
        div = render_channels(model, layer, channels, space, config, diversity=4)
        elapsed = time.perf_counter() - started
        total += elapsed
        cpu += time.process_time() - cpu_started
        figures[f"{layer}_s"] = elapsed
        saved[f"{layer}/vis"], saved[f"{layer}/div"] = vis, div
        print(f"  {layer}: {len(channels)} channels, vis + 4 diversity in {elapsed:.1f} s")
    figures["render_s"], figures["render_cpu_s"] = total, cpu
    if args.save:
        np.savez_compressed(args.save, **saved)
    print(
        f"demo: 176 channels x (1 vis + 4 diversity) = 880 images, {args.steps} steps: "
        f"{total:.1f} s wall ({total / 60:.2f} min; target <= 3 min), {cpu:.1f} s CPU time "
        f"(process, all threads); training {train_s:.1f} s (not included)"
    )
    return figures


def bench_googlenet(args: argparse.Namespace) -> dict[str, float]:
    """Channels per second for GoogLeNet at 224 px; returns the figures."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    model.eval()
    space = ImageSpace(3, 224, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    config = RenderConfig(steps=args.steps, batch_channels=args.channels, seed=args.seed)
    started, cpu_started = time.perf_counter(), time.process_time()
    images = render_channels(model, args.layer, range(args.channels), space, config)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    rate = args.channels / elapsed
    print(
        f"googlenet {args.layer}: {args.channels} channels x {args.steps} steps at 224 px in "
        f"{elapsed:.1f} s: {rate:.3f} channels/s ({elapsed / args.channels:.1f} s/channel; "
        f"images {images.shape}); CPU time {cpu:.1f} s"
    )
    return {"googlenet_s": elapsed, "channels_per_s": rate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=("demo", "googlenet", "all"), nargs="?", default="all")
    parser.add_argument("--steps", type=int, default=None, help="demo 128, googlenet 256")
    parser.add_argument("--batch-channels", type=int, default=64, help="demo batch (channels)")
    parser.add_argument("--channels", type=int, default=4, help="googlenet channels")
    parser.add_argument("--layer", default="inception4a", help="googlenet layer")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", help="cache the trained demo state dict here")
    parser.add_argument("--save", help="save the demo images to this .npz")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    steps = args.steps
    if args.which in ("demo", "all"):
        args.steps = steps or 128
        bench_demo(args)
    if args.which in ("googlenet", "all"):
        args.steps = steps or 256
        bench_googlenet(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
