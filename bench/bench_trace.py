"""Benchmark the training trace on the demo: overhead, explain latency, storage, TracIn check.

Prints:
- tracing overhead: traced / untraced demo training time, measured side by side (``--repeats``
  rounds of untraced, traced, untraced; target ≤ 1.5): the median of the rounds' ratios of wall
  time and of process CPU time (steadier on a shared machine), and whether the final weights
  are identical;
- explain latency for one test image over all traced layers (median; target ≤ 200 ms);
- storage of the trace vs the naive per-step history (batch-wise ΔW per step) and vs naive
  per-example-per-epoch records;
- Spearman rank correlation of the final Linear layer's per-example scores with Captum's
  TracInCPFast on the tracer's epoch-end checkpoints (captum is a bench/test dependency).

Examples:
    python bench/bench_trace.py                 # full demo (6 epochs)
    python bench/bench_trace.py --epochs 2 --test-images 50
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compute.demo import (
    DemoConfig,
    evaluate,
    load_digits_splits,
    train_demo_traced,
    train_digits_cnn,
)
from compute.trace import Explainer, capture_inputs, example_scores, explain

log = logging.getLogger("bench_trace")


def timed_train(
    traced: bool, splits, config: DemoConfig, checkpoint_dir: Path | None, momentum: str = "exact"
):
    """Train the demo (traced or not); returns ``(wall s, CPU s, model, trace or None)``."""
    started, cpu = time.perf_counter(), time.process_time()
    if traced:
        model, result = train_demo_traced(
            splits, config, checkpoint_dir=checkpoint_dir, example_momentum=momentum
        )
    else:
        model, result = train_digits_cnn(splits, config), None
    return time.perf_counter() - started, time.process_time() - cpu, model, result


def tracin_spearman(model, result, splits, n_test: int) -> dict[str, float]:
    """Rank agreement of our head scores with TracInCPFast over the training set."""
    from captum.influence import TracInCPFast
    from scipy.stats import spearmanr
    from torch.utils.data import TensorDataset

    from compute.demo import digits_cnn

    def load(net: torch.nn.Module, path: str) -> float:
        saved = torch.load(path, weights_only=True)
        net.load_state_dict(saved["model_state_dict"])
        return float(saved["learning_rate"])

    probe_model = digits_cnn()
    probe_model.eval()
    tracin = TracInCPFast(
        probe_model,
        final_fc_layer="head",
        train_dataset=TensorDataset(splits.train.images, splits.train.labels),
        checkpoints=[str(p) for p in result.checkpoints],
        checkpoints_load_func=load,
        loss_fn=torch.nn.CrossEntropyLoss(reduction="sum"),
        batch_size=512,
    )
    x, y = splits.test.images[:n_test], splits.test.labels[:n_test]
    theirs = tracin.influence((x, y)).detach().numpy()
    ours = example_scores(result, model, x, "head")
    # A loss-direction variant of our scores, closer to what TracIn measures: the first-order
    # change of the test loss caused by each example's recorded updates, -⟨A_i a(x), ∂ℓ/∂z⟩
    # (a check that the recorded per-example updates agree with TracIn's gradients).
    inputs, logits = capture_inputs(model, ("head",), x)
    grad_z = torch.softmax(logits.double(), 1) - torch.nn.functional.one_hot(y, 10).double()
    updates = result.layer("head").example  # [N, 10, 64]
    assert updates is not None
    loss_dir = -torch.einsum("xoi,ni,no->nx", updates, inputs["head"].double(), grad_z).numpy()
    loss_rhos = [spearmanr(a, b).statistic for a, b in zip(loss_dir, theirs, strict=True)]
    labels = splits.train.labels.numpy()
    rhos, top_rhos, overlaps, ours_same, theirs_same = [], [], [], [], []
    for a, b, label in zip(ours, theirs, y.numpy(), strict=True):
        rhos.append(spearmanr(a, b).statistic)
        top = np.union1d(np.argsort(-a)[:50], np.argsort(-b)[:50])
        top_rhos.append(spearmanr(a[top], b[top]).statistic)
        overlaps.append(len(set(np.argsort(-a)[:10]) & set(np.argsort(-b)[:10])) / 10)
        ours_same.append((labels[np.argsort(-a)[:10]] == label).mean())
        theirs_same.append((labels[np.argsort(-b)[:10]] == label).mean())
    return {
        "spearman_all_mean": float(np.mean(rhos)),
        "spearman_all_median": float(np.median(rhos)),
        "spearman_top50_union_mean": float(np.mean(top_rhos)),
        "top10_overlap": float(np.mean(overlaps)),
        "spearman_loss_direction_variant_mean": float(np.mean(loss_rhos)),
        "top10_same_class_ours": float(np.mean(ours_same)),
        "top10_same_class_tracin": float(np.mean(theirs_same)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=DemoConfig.epochs)
    parser.add_argument("--test-images", type=int, default=100, help="images for TracIn")
    parser.add_argument("--latency-images", type=int, default=20)
    parser.add_argument("--skip-tracin", action="store_true")
    parser.add_argument(
        "--example-momentum",
        choices=("exact", "decayed"),
        default="exact",
        help="per-example momentum credit (exact buffers cost O(N) per step)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds of untraced, traced, untraced training"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = dataclasses.replace(DemoConfig(), epochs=args.epochs)
    splits = load_digits_splits(config.seed, config.test_fraction)
    print(
        f"demo: {len(splits.train)} train / {len(splits.test)} test, {config.epochs} epochs, "
        f"torch threads {torch.get_num_threads()}"
    )

    with tempfile.TemporaryDirectory() as folder:
        wall_ratios, cpu_ratios, rounds = [], [], []
        for _ in range(max(1, args.repeats)):
            w1, c1, plain, _ = timed_train(False, splits, config, None)
            w_t, c_t, model, result = timed_train(
                True, splits, config, Path(folder), args.example_momentum
            )
            w2, c2, _, _ = timed_train(False, splits, config, None)
            wall_ratios.append(2 * w_t / (w1 + w2))
            cpu_ratios.append(2 * c_t / (c1 + c2))
            rounds.append(f"{w1:.1f}/{w_t:.1f}/{w2:.1f}")
        assert result is not None
        same = all(
            torch.equal(a, b)
            for a, b in zip(plain.state_dict().values(), model.state_dict().values(), strict=True)
        )
        print(
            f"training (wall s untraced/traced/untraced per round: {', '.join(rounds)}): "
            f"overhead ratio, median of {len(rounds)} rounds: wall "
            f"{statistics.median(wall_ratios):.2f} ({', '.join(f'{r:.2f}' for r in wall_ratios)})"
            f", CPU {statistics.median(cpu_ratios):.2f} "
            f"({', '.join(f'{r:.2f}' for r in cpu_ratios)}) (target <= 1.5); "
            f"weights identical to untraced: {same}; "
            f"test accuracy {evaluate(model, splits.test):.3f}"
        )
        errors = result.reconstruction_error()
        print(
            "reconstruction error |W0 + sum - WT| / |WT| (float32 training): "
            + ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
        )
        example_errors = result.example_reconstruction_error()
        print(
            "per-example credit vs totals: "
            + ", ".join(f"{k} {v:.1e}" for k, v in example_errors.items())
        )

        started = time.perf_counter()
        explainer = Explainer(result, model)  # prepares per-layer tensors once
        prepare_ms = (time.perf_counter() - started) * 1000
        explainer(splits.test.images[:1])  # warm-up
        latencies = []
        for i in range(args.latency_images):
            started = time.perf_counter()
            explainer(splits.test.images[i : i + 1])
            latencies.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        explain(result, model, splits.test.images[:1])
        cold_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        exp = explain(result, model, splits.test.images)
        whole = time.perf_counter() - started
        print(
            f"explain one image, all {len(result.layers)} layers: median "
            f"{statistics.median(latencies):.1f} ms, max {max(latencies):.1f} ms "
            f"(target <= 200 ms; Explainer prepared once in {prepare_ms:.0f} ms, a cold "
            f"explain() call {cold_ms:.0f} ms); whole test split ({len(splits.test)}) "
            f"in {whole:.1f} s; "
            f"max |sum pi - |r|| / |r| = {exp.sum_error.max():.1e}"
        )

        steps = sum(result.epoch_steps)
        weights = sum(int(layer.w0.numel()) for layer in result.layers)
        naive_steps = steps * weights * 4  # float32 ΔW per step (batch-wise recording)
        naive_examples = len(splits.train) * config.epochs * weights * 4
        trace_bytes = result.nbytes()
        print(
            f"storage: trace {trace_bytes / 1e6:.1f} MB (float64 accumulators) vs per-step "
            f"history {naive_steps / 1e6:.1f} MB ({steps} steps; ratio "
            f"{naive_steps / trace_bytes:.2f}) vs per-example-per-epoch "
            f"{naive_examples / 1e6:.1f} MB (ratio {naive_examples / trace_bytes:.1f})"
        )
        for layer in result.layers:
            per_ex = layer.example if layer.example is not None else layer.example_proj
            assert per_ex is not None
            print(
                f"  {layer.name}: #W {layer.w0.numel()}, per-example "
                f"{'exact' if layer.example is not None else 'sketch'} "
                f"{per_ex[0].numel()} numbers/example"
            )

        labels = splits.test.labels.numpy()
        correct = exp.predictions == labels
        for j, name in enumerate(exp.layers):
            same_class = result.train_labels[exp.proponent_index[:, j]] == labels[:, None]
            majority = (same_class.mean(axis=1) > 0.5)[correct].mean()
            largest = (exp.class_share[:, j, :-1].argmax(axis=1) == labels)[correct].mean()
            print(
                f"  {name}: correct test images with a same-class top-10 majority "
                f"{majority:.3f}, true class largest share {largest:.3f}, "
                f"mean regularisation share {exp.class_share[:, j, -1].mean():+.4f}"
            )

        if not args.skip_tracin:
            started = time.perf_counter()
            figures = tracin_spearman(model, result, splits, args.test_images)
            print(
                f"TracInCPFast (head, {len(result.checkpoints)} epoch-end checkpoints, "
                f"{args.test_images} test images, {time.perf_counter() - started:.1f} s): "
                + ", ".join(f"{k} {v:.3f}" for k, v in figures.items())
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
