"""explain(): shares, ridge, proponents, the atlas part, and the demo's class criteria."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from compute.atlas import Atlas
from compute.trace import (
    PART_TRACE,
    ExplainConfig,
    TraceConfig,
    Tracer,
    example_scores,
    explain,
    load_trace_part,
    write_trace_part,
)
from tests.conftest import write_test_atlas

log = logging.getLogger(__name__)

CLASSES = 3


@pytest.fixture(scope="module")
def small():
    """A linear-BN-linear model on three well-separated clusters, traced with momentum."""
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(CLASSES, 6, generator=generator, dtype=torch.float64) * 3
    y = torch.arange(60) % CLASSES
    x = centers[y] + torch.randn(60, 6, generator=generator, dtype=torch.float64)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, CLASSES)
    ).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    tracer = Tracer(model, opt, TraceConfig(("0", "3"), CLASSES), num_examples=60)
    for _ in range(4):
        model.train()
        for start in range(0, 60, 15):
            idx = torch.arange(start, start + 15)
            opt.zero_grad()
            tracer.set_batch(y[idx], idx)
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        tracer.end_epoch()
    model.eval()
    return model, tracer.finish(), x, y


def test_explanation_arrays(small) -> None:
    model, result, x, y = small
    exp = explain(result, model, x[:10], ExplainConfig(top_k=5, bins=8))
    n, t, c, e = 10, 2, CLASSES, 4
    assert exp.layers == ("0", "3")
    assert exp.norms.shape == (n, t, 3) and exp.class_share.shape == (n, t, c + 1)
    assert exp.epoch_share.shape == (n, t, e, c + 1) and exp.epoch_cosine.shape == (n, t, e)
    assert exp.ridge_hist.shape == (n, t, c, 8) and exp.ridge_edges.shape == (9,)
    assert exp.proponent_index.shape == (n, t, 5) and exp.opponent_score.shape == (n, t, 5)
    np.testing.assert_allclose(exp.class_share.sum(axis=2), 1, rtol=1e-5)
    np.testing.assert_allclose(exp.epoch_share[:, :, -1], exp.class_share, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exp.epoch_cosine[:, :, -1], 1, rtol=1e-5)
    assert float(exp.sum_error.max()) < 1e-10
    assert np.all(np.diff(exp.proponent_score, axis=2) <= 0)
    assert np.all(np.diff(exp.opponent_score, axis=2) >= 0)
    assert np.all(exp.ridge_hist >= 0)
    # example_scores gives every training example's π_i; top-k agrees with it.
    scores = example_scores(result, model, x[:10], "3")
    assert scores.shape == (10, 60)
    np.testing.assert_allclose(
        np.sort(scores, axis=1)[:, ::-1][:, :5], exp.proponent_score[:, 1], rtol=1e-5
    )
    # Chunked evaluation and one image at a time give the same numbers as a batch.
    chunked = explain(result, model, x[:10], ExplainConfig(top_k=5, bins=8, batch_size=3))
    np.testing.assert_allclose(chunked.class_share, exp.class_share, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(chunked.ridge_hist, exp.ridge_hist, rtol=1e-5, atol=1e-6)
    one = explain(result, model, x[3:4], ExplainConfig(top_k=5, bins=8))
    np.testing.assert_allclose(one.class_share[0], exp.class_share[3], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(one.proponent_index[0], exp.proponent_index[3])
    # Well-separated clusters: the head's proponents are mostly of the image's own class.
    same = result.train_labels[exp.proponent_index[:, 1]] == y[:10, None].numpy()
    assert same.mean() > 0.8


def test_explain_checks_the_model(small) -> None:
    _, result, x, _ = small
    other = nn.Sequential(
        nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, CLASSES)
    ).double()
    with pytest.raises(ValueError, match="differs"):
        explain(result, other, x[:2])
    with pytest.raises(ValueError):
        ExplainConfig(top_k=0)


def test_atlas_part_round_trip(small, tmp_path) -> None:
    model, result, x, y = small
    exp = explain(result, model, x[:7], ExplainConfig(top_k=4, bins=6))
    atlas_path = write_test_atlas(tmp_path / "atlas", num_classes=CLASSES)
    write_trace_part(
        atlas_path,
        exp,
        image_index=np.arange(7),
        image_label=y[:7].numpy(),
        train_label=result.train_labels,
        info={"optimizer": "SGD"},
    )
    atlas = Atlas.open(atlas_path, verify_hashes=True)
    assert PART_TRACE in atlas.parts
    meta, arrays = load_trace_part(atlas_path)
    assert meta["num_images"] == 7 and meta["optimizer"] == "SGD"
    assert [layer["name"] for layer in meta["layers"]] == ["0", "3"]
    np.testing.assert_array_equal(arrays["proponent_index"], exp.proponent_index)
    np.testing.assert_allclose(arrays["class_share"], exp.class_share)
    assert arrays["epoch_share"].dtype == np.float32
    with pytest.raises(ValueError):
        write_trace_part(
            atlas_path,
            exp,
            image_index=np.arange(3),
            image_label=y[:7].numpy(),
            train_label=result.train_labels,
        )


# ---------------------------------------------------------------------------------------
# The demo: trained once per module with the tracer
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo():
    from compute.demo import DemoConfig, load_digits_splits, train_demo_traced

    # One torch thread: on the shared 2-core test machine two threads contend with other jobs
    # and ran this fixture several times slower (320 s vs ~60 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            splits = load_digits_splits()
            model, result = train_demo_traced(splits, DemoConfig())
            exp = explain(result, model, splits.test.images)
    finally:
        torch.set_num_threads(threads)
    return splits, result, exp


def test_demo_trace_is_exact(demo) -> None:
    _, result, exp = demo
    # float32 training: W_0 + Σ components = W_T up to the optimizer's float32 rounding.
    for layer, error in result.reconstruction_error().items():
        assert error < 1e-3, (layer, error)
    assert float(exp.sum_error.max()) < 1e-3


def test_demo_class_criteria(demo) -> None:
    """Top-10 proponents share the class, and the true class has the largest share.

    Checked on the final Linear layer, where the issue expects it; every layer's rates are
    logged (conv layers: see docs/trace.md for the measured figures).
    """
    splits, result, exp = demo
    labels = splits.test.labels.numpy()
    correct = exp.predictions == labels
    assert correct.mean() > 0.9
    rates = {}
    for j, layer in enumerate(exp.layers):
        same = result.train_labels[exp.proponent_index[:, j]] == labels[:, None]
        majority = (same.mean(axis=1) > 0.5)[correct].mean()
        largest = (exp.class_share[:, j, :-1].argmax(axis=1) == labels)[correct].mean()
        rates[layer] = (float(majority), float(largest))
        log.info("%s: proponent majority %.3f, largest share %.3f", layer, majority, largest)
    majority, largest = rates["head"]
    assert majority >= 0.8 and largest >= 0.8, rates
