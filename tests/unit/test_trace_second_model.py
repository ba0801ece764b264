"""The training trace's class criteria on the project's second model, not the demo.

The shapes CNN (``tests/helpers/shapes.py``: RGB shapes in random colours, BatchNorm, a
residual block, in-place and reused ReLUs), trained with Adam and a cosine schedule under
the tracer, as a user's loop would. At the classification head, the top-10 proponents of
correctly classified test images mostly share the image's class, and the true class has
the largest class share, far above chance (not the demo's 0.99: docs/trace.md has both
models' figures). Every traced layer's rates are logged. Under the ratio rule Adam once
used, the head's proponents were at chance here.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from compute.trace import TraceConfig, Tracer
from compute.trace.explain import ExplainConfig, explain
from tests.helpers.shapes import normalise, shapes_cnn, shapes_dataset

log = logging.getLogger(__name__)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def traced_shapes() -> tuple:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        images, labels = shapes_dataset(3000, seed=0)
        test_images, test_labels = shapes_dataset(200, seed=1)
        x, x_test = normalise(images), normalise(test_images)
        model = shapes_cnn(0)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        epochs, batch = 6, 64
        config = TraceConfig(layers=("block3.conv", "head"), num_classes=6)
        tracer = Tracer(model, optimizer, config, num_examples=len(x))
        # The same run seen by the rule Adam was split with before (each update credited to
        # the current batch in proportion to its gradient), for comparison.
        ratio = Tracer(model, optimizer, config, num_examples=len(x))
        ratio.rule = "ratio"
        generator = torch.Generator().manual_seed(0)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), batch):
                idx = order[start : start + batch]
                optimizer.zero_grad(set_to_none=True)
                tracer.set_batch(labels[idx], idx)
                ratio.set_batch(labels[idx], idx)
                nn.functional.cross_entropy(model(x[idx]), labels[idx]).backward()
                optimizer.step()
            tracer.end_epoch()
            ratio.end_epoch()
        result = tracer.finish()
        ratio_result = ratio.finish()
        model.eval()
        exp = explain(result, model, x_test, ExplainConfig(top_k=10))
        ratio_exp = explain(ratio_result, model, x_test, ExplainConfig(top_k=10))
    return result, exp, test_labels.numpy(), ratio_result, ratio_exp


def _rates(result, exp, labels: np.ndarray, name: str) -> dict[str, tuple[float, float]]:  # type: ignore[no-untyped-def]
    correct = exp.predictions == labels
    rates = {}
    for j, layer in enumerate(exp.layers):
        same = result.train_labels[exp.proponent_index[:, j]] == labels[:, None]
        majority = float((same.mean(axis=1) > 0.5)[correct].mean())
        largest = float((exp.class_share[:, j, :-1].argmax(axis=1) == labels)[correct].mean())
        rates[layer] = (majority, largest)
        log.info("shapes, %s, %s: proponent majority %.3f, largest share %.3f", name, layer,
                 majority, largest)  # fmt: skip
    return rates


def test_class_criteria_on_the_second_model(traced_shapes: tuple) -> None:
    result, exp, labels, ratio_result, ratio_exp = traced_shapes
    correct = exp.predictions == labels
    assert correct.mean() > 0.6, correct.mean()  # a trained model, not chance (1/6)
    rates = _rates(result, exp, labels, "adam rule")
    before = _rates(ratio_result, ratio_exp, labels, "ratio rule")
    # Chance: 1/6 for the largest share; ~0.002 for a majority of 10 proponents. The
    # demo's head reaches 0.99 / 0.997; this model's, trained to lower accuracy with a
    # nuisance variable (colour), does not (docs/trace.md: the figures of both models).
    majority, largest = rates["head"]
    assert majority >= 0.3 and largest >= 0.45, rates
    assert majority >= before["head"][0] + 0.2, (rates, before)  # the ratio rule: ~chance
    for layer, error in result.reconstruction_error().items():
        assert error < 1e-3, (layer, error)
    assert np.isfinite(exp.class_share).all()
