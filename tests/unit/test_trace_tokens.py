"""The training trace of a token model (issue 16): a tiny BERT fine-tuned with AdamW and a
learning-rate schedule, its Linear layers traced over token sequences.

What must hold: the identity stays exact (reconstruction, ``Σ π = ‖r‖``), and padding never
reaches a figure: an input explained alone equals the same input explained in a batch that
pads it, although the padded positions' layer inputs are not zero in the network.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compute.capture import HookSet
from compute.hf import HFClassifier, load_hf_classifier
from compute.text_data import TextCollate, pad_token_id
from compute.trace import ExplainConfig, TraceConfig, Tracer, TraceResult, capture_inputs, explain
from tests.helpers.text_models import CLASSES, SENTENCES, write_tiny_bert

TRACED = (
    "bert.encoder.layer.1.intermediate.dense",
    "bert.encoder.layer.1.output.dense",
    "classifier",
)


def _items(model: HFClassifier) -> list[tuple[dict[str, torch.Tensor], int, int]]:
    texts = [(s, c) for c, name in enumerate(CLASSES) for s in SENTENCES[name]] * 3
    return [
        ({k: torch.tensor(v) for k, v in model.tokenizer(text).items()}, label, index)
        for index, (text, label) in enumerate(texts)
    ]


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> tuple[HFClassifier, TraceResult, list]:
    model = load_hf_classifier(write_tiny_bert(tmp_path_factory.mktemp("bert") / "bert"))
    items = _items(model)
    collate = TextCollate(pad_token_id(model.tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    tracer = Tracer(model, optimizer, TraceConfig(layers=TRACED, num_classes=3), len(items))
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(3):
        order = torch.randperm(len(items), generator=generator).tolist()
        for start in range(0, len(order), 8):
            batch, labels, indices = collate([items[i] for i in order[start : start + 8]])
            optimizer.zero_grad()
            tracer.set_batch(labels, indices)
            torch.nn.functional.cross_entropy(model(batch), labels).backward()
            optimizer.step()
            schedule.step()
        tracer.end_epoch()
    model.eval()
    return model, tracer.finish(), items


def test_the_trace_of_token_layers_reconstructs_the_final_weights(traced) -> None:
    _, result, _ = traced
    errors = result.reconstruction_error()
    assert set(errors) == set(TRACED)
    assert max(errors.values()) < 1e-5, errors


def test_padding_never_reaches_an_explanation(traced) -> None:
    model, result, items = traced
    collate = TextCollate(pad_token_id(model.tokenizer))
    batch, _, _ = collate(items[:9])
    lengths = batch["attention_mask"].sum(dim=1)
    assert int(lengths.min()) < batch["input_ids"].shape[1]  # the batch pads some inputs

    # The padded positions' inputs to a traced layer are not zero in the network itself,
    # so excluding them is the explainer's doing, not a property of BERT.
    raw: list[torch.Tensor] = []
    with HookSet() as hooks, torch.no_grad():
        hooks.on_input(dict(model.named_modules())[TRACED[1]], raw.append)
        model(batch)
    padded = ~batch["attention_mask"].bool()
    assert raw[0][padded].abs().max() > 0.1
    inputs, _ = capture_inputs(model, TRACED, batch)
    assert float(inputs[TRACED[1]][padded].abs().max()) == 0.0

    together = explain(result, model, batch)
    assert float(together.sum_error.max()) < 1e-9
    for row in range(9):
        alone_batch, _, _ = collate(items[row : row + 1])
        alone = explain(result, model, alone_batch)
        assert alone_batch["input_ids"].shape[1] == int(lengths[row])
        np.testing.assert_allclose(alone.norms[0], together.norms[row], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(
            alone.class_share[0], together.class_share[row], rtol=1e-4, atol=1e-5
        )
        np.testing.assert_array_equal(alone.proponent_index[0], together.proponent_index[row])
        assert alone.predictions[0] == together.predictions[row]


def test_a_text_batch_is_explained_in_chunks_like_at_once(traced) -> None:
    model, result, items = traced
    batch, _, _ = TextCollate(pad_token_id(model.tokenizer))(items[:7])
    whole = explain(result, model, batch)
    chunked = explain(result, model, batch, ExplainConfig(batch_size=3))
    np.testing.assert_allclose(chunked.class_share, whole.class_share, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(chunked.proponent_index, whole.proponent_index)
