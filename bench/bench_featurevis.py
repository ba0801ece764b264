"""Benchmarks of feature visualization (``compute.featurevis``); prints figures.

1. ``demo``: every channel of the demo CNN's four layers (16+32+64+64 = 176 channels),
   one visualization and 4 diversity images each, on CPU. Target: <= 3 minutes on 2 cores.
2. ``googlenet``: channels per second for torchvision's GoogLeNet (random weights,
   ``init_weights=True``) at 224 px, 256 steps, a few channels of ``inception4a``.
3. ``quality``: blank and weak visualizations on models that are *not* the demo (issue
   13): the shapes CNN of ``tests/helpers/shapes.py`` (trained here in seconds) and
   torchvision's ResNet-18 (random weights) on generated shapes at 64 px. Per layer, of
   the channels that fire on some data set image (spatial max > 0), the share whose
   visualization's spatial max (Summit's top-example statistic, post-activation) is
   exactly 0, beats the median image's, and beats the top example's, for each render
   setting side by side: ``off`` (no redirect, post-activation objective), ``lucid16``
   (the previous default: redirect for 16 steps, pre-activation objective) and ``fix``
   (the default: redirect on every step, to each dead channel's peak unit,
   post-activation objective, channels still dead after the render retried once);
   ``lucid_all`` (as ``fix`` with Lucid's redirect to every
   unit) and ``fix_noretry`` (``fix`` without the retry of channels still dead after the
   render) are there to compare, with ``--settings``. Targets: >= 95%
   above the median, >= 80% above the top example. Not part of ``all``.

Examples:
    python bench/bench_featurevis.py demo --steps 128
    python bench/bench_featurevis.py googlenet --channels 4 --steps 256
    python bench/bench_featurevis.py all
    python bench/bench_featurevis.py quality --steps 256
    python bench/bench_featurevis.py quality --no-redirect   # only the 'off' setting
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

from compute.featurevis import (
    ImageSpace,
    LayerCapture,
    RenderConfig,
    from_uint8,
    render_channels,
)

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


#: The render settings ``quality`` compares (``RenderConfig`` overrides).
QUALITY_SETTINGS: dict[str, dict[str, object]] = {
    "off": {"redirect_steps": 0, "pre_activation": False, "retry_dead": False},
    "lucid16": {
        "redirect_steps": 16,
        "pre_activation": True,
        "redirect_to_peak": False,
        "retry_dead": False,
    },
    "lucid_all": {"redirect_to_peak": False, "retry_dead": False},
    "fix_noretry": {"retry_dead": False},
    "fix": {},
}
MEDIAN_TARGET, TOP_TARGET = 0.95, 0.80


def quality_rates(
    model: torch.nn.Module,
    layer: str,
    images: torch.Tensor,
    space: ImageSpace,
    config: RenderConfig,
    max_channels: int | None = None,
) -> dict[str, float]:
    """Render the channels of ``layer`` that fire on ``images`` and score the renders.

    Args:
        model: the network (eval mode).
        layer: module name; its output is what is measured (post-activation).
        images: ``float[N, C, H, W]`` data set pixels in ``[0, 1]`` (not normalised).
        space: the model's input space.
        config: render settings.
        max_channels: render only the first this many firing channels.

    Returns:
        ``channels`` (layer width), ``firing`` (fire on some image), ``rendered``, and
        the shares of the rendered channels whose visualization's spatial max is
        ``zero`` (<= 0), ``above_median`` and ``above_top`` (of the data set's spatial
        maxima), and ``seconds`` of rendering.
    """
    from compute.summit.activation import spatial_max

    with torch.no_grad(), LayerCapture(model, layer) as capture:
        data = torch.cat([spatial_max(capture(space.normalise(b)))[0] for b in images.split(100)])
    fires = (data > 0).any(dim=0)
    channels = [int(c) for c in fires.nonzero().flatten()][:max_channels]
    started = time.perf_counter()
    vis = render_channels(model, layer, channels, space, config)
    seconds = time.perf_counter() - started
    with torch.no_grad(), LayerCapture(model, layer) as capture:
        own = spatial_max(capture(space.normalise(from_uint8(vis))))[0]
    index = torch.tensor(channels, dtype=torch.int64)
    own = own[torch.arange(len(channels)), index]
    n = max(1, len(channels))
    return {
        "channels": float(data.shape[1]),
        "firing": float(fires.sum()),
        "rendered": float(len(channels)),
        "zero": float((own <= 0).sum()) / n,
        "above_median": float((own > data[:, index].median(dim=0).values).sum()) / n,
        "above_top": float((own > data[:, index].amax(dim=0)).sum()) / n,
        "seconds": seconds,
    }


def bench_quality(args: argparse.Namespace) -> dict[str, float]:
    """Blank/weak visualization rates per layer, shapes CNN and ResNet-18; prints tables."""
    import torchvision

    from compute.featurevis.cli import default_steps
    from tests.helpers import shapes

    settings = ["off"] if args.no_redirect else list(args.settings.split(","))
    started = time.perf_counter()
    if args.shapes_weights and Path(args.shapes_weights).exists():
        shapes_model = shapes.shapes_cnn()
        shapes_model.load_state_dict(torch.load(args.shapes_weights, weights_only=True))
        shapes_model.eval()
    else:
        shapes_model = shapes.train_shapes_cnn()
        if args.shapes_weights:
            torch.save(shapes_model.state_dict(), args.shapes_weights)
    train_s = time.perf_counter() - started
    held_out, labels = shapes.shapes_dataset(args.images, seed=1)
    print(
        f"shapes CNN trained or loaded in {train_s:.1f} s, held-out accuracy "
        f"{shapes.accuracy(shapes_model, held_out, labels):.1%} ({args.images} images)"
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        resnet = torchvision.models.resnet18(weights=None).eval()
    cases = [
        (
            "shapes CNN (32 px)",
            shapes_model,
            held_out,
            ImageSpace(3, 32, 32, shapes.MEAN, shapes.STD),
            shapes.SHAPES_LAYERS,
            None,
        ),
        (
            "ResNet-18, random weights (64 px shapes)",
            resnet,
            shapes.shapes_dataset(args.images // 2, seed=2, size=64)[0],
            ImageSpace(3, 64, 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            tuple(args.resnet_layers.split(",")),
            args.resnet_channels,
        ),
    ]
    figures: dict[str, float] = {}
    wanted = args.models.split(",")
    cases = [case for case, name in zip(cases, ("shapes", "resnet"), strict=True) if name in wanted]
    for title, model, images, space, layers, limit in cases:
        steps = args.steps or default_steps(space)
        print(f"\n{title}, {steps} steps; per setting: zero / > median / > top (seconds)")
        print(f"  {'layer':<12} {'fire':>8}  " + "  ".join(f"{s:>26}" for s in settings))
        for layer in layers:
            cells, row = [], None
            for setting in settings:
                config = RenderConfig(steps=steps, seed=args.seed, **QUALITY_SETTINGS[setting])
                row = quality_rates(model, layer, images, space, config, limit)
                cells.append(
                    f"{row['zero']:4.0%} / {row['above_median']:4.0%} / {row['above_top']:4.0%}"
                    f" ({row['seconds']:4.1f})"
                )
                for key in ("zero", "above_median", "above_top", "seconds"):
                    figures[f"{title}/{layer}/{setting}/{key}"] = row[key]
            assert row is not None
            fire = f"{row['rendered']:.0f}/{row['firing']:.0f}/{row['channels']:.0f}"
            print(f"  {layer:<12} {fire:>8}  " + "  ".join(f"{c:>26}" for c in cells))
    for setting in settings:
        rates = [
            (figures[f"{k[: -len('zero')]}above_median"], figures[f"{k[: -len('zero')]}above_top"])
            for k in figures
            if k.endswith(f"/{setting}/zero")
        ]
        worst_median = min(r[0] for r in rates)
        worst_top = min(r[1] for r in rates)
        ok = worst_median >= MEDIAN_TARGET and worst_top >= TOP_TARGET
        print(
            f"{setting}: worst layer > median {worst_median:.0%} (target >= 95%), "
            f"> top {worst_top:.0%} (target >= 80%): {'met' if ok else 'NOT met'}"
        )
    print("fire: rendered / firing on some image / layer width")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "which", choices=("demo", "googlenet", "all", "quality"), nargs="?", default="all"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="demo 128, googlenet 256, quality: the CLI's"
    )
    parser.add_argument("--batch-channels", type=int, default=64, help="demo batch (channels)")
    parser.add_argument("--channels", type=int, default=4, help="googlenet channels")
    parser.add_argument("--layer", default="inception4a", help="googlenet layer")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", help="cache the trained demo state dict here")
    parser.add_argument("--save", help="save the demo images to this .npz")
    parser.add_argument(
        "--settings",
        default="off,lucid16,fix",
        help=f"quality: comma-separated render settings of {sorted(QUALITY_SETTINGS)}",
    )
    parser.add_argument(
        "--no-redirect", action="store_true", help="quality: only the 'off' setting"
    )
    parser.add_argument("--shapes-weights", help="quality: cache the trained shapes CNN here")
    parser.add_argument("--models", default="shapes,resnet", help="quality: shapes, resnet")
    parser.add_argument("--images", type=int, default=400, help="quality: shapes images")
    parser.add_argument(
        "--resnet-layers",
        default="relu,layer1.0,layer2.1,layer3.0,layer4.1",
        help="quality: ResNet-18 layers",
    )
    parser.add_argument(
        "--resnet-channels", type=int, default=16, help="quality: channels per ResNet layer"
    )
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
    if args.which == "quality":
        bench_quality(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
