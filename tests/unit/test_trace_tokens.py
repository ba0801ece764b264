"""The training trace of a token model (issue 16): a tiny BERT fine-tuned with AdamW and a
learning-rate schedule, its Linear layers traced over token sequences.

What must hold: the identity stays exact (reconstruction, ``Σ π = ‖r‖``), and padding never
reaches a figure: an input explained alone equals the same input explained in a batch that
pads it, although the padded positions' layer inputs are not zero in the network.
"""

from __future__ import annotations

from pathlib import Path

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


def test_inputs_explain_cannot_read_are_refused_in_one_line(traced) -> None:
    """Token ids without their mask, or texts not yet tokenised, are refused with what to
    pass: a batch without ``attention_mask`` would let padding into the figures."""
    model, result, items = traced
    batch, _, _ = TextCollate(pad_token_id(model.tokenizer))(items[:3])
    with pytest.raises(ValueError, match="look like token ids"):
        explain(result, model, batch["input_ids"])
    with pytest.raises(ValueError, match="needs 'attention_mask'"):
        explain(result, model, {"input_ids": batch["input_ids"]})
    with pytest.raises(TypeError, match="tokenise texts first"):
        explain(result, model, ["the cat eats fish"])  # type: ignore[arg-type]
    listed = model.tokenizer(["the cat", "a dog eats"], padding=True)  # lists, not tensors
    with pytest.raises(ValueError, match="must be tensors"):
        explain(result, model, dict(listed))
    one = {key: value[0] for key, value in batch.items()}  # one input, no batch dimension
    with pytest.raises(ValueError, match="add a batch dimension"):
        explain(result, model, one)


def test_a_users_traced_fine_tuning_links_its_cli_built_atlas(
    traced, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's path: fine-tune with the tracer, save the model, build its atlas of the
    test texts with the CLI (``--split test``, from the user's folder), explain the same
    texts and write the trace: every recorded input links Training and Instance."""
    import csv

    from compute.cli import main
    from compute.text_data import TextDataset, read_text_rows
    from compute.trace import trace_texts, write_trace_part
    from dashboard import data as atlas_data
    from dashboard.views.training.data import trace_data

    model, result, items = traced
    model.hf_model.save_pretrained(tmp_path / "tuned")
    model.tokenizer.save_pretrained(tmp_path / "tuned")
    with open(tmp_path / "test.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for name in CLASSES:
            for sentence in SENTENCES[name]:
                writer.writerow([f"{sentence} again", name])
    monkeypatch.chdir(tmp_path)
    argv = ["build", "--model", "hf:tuned", "--data", "test.csv", "--split", "test",
            "--layers", TRACED[0].removesuffix(".dense"), "--out", "atlas", "--no-progress",
            "--workers", "0"]  # fmt: skip
    assert main(argv) == 0
    rows = read_text_rows("test.csv", model.classes)
    dataset = TextDataset(rows, model.tokenizer, 64)
    batch, labels, _ = TextCollate(pad_token_id(model.tokenizer))(
        [dataset[i] for i in range(len(rows))]
    )
    explanations = explain(result, model, batch)
    train = [model.tokenizer.decode(e["input_ids"], skip_special_tokens=True) for e, _, _ in items]
    write_trace_part(
        "atlas", explanations, image_index=np.arange(len(rows)), image_label=labels.numpy(),
        train_label=result.train_labels, split="test",
        texts=trace_texts(explanations, rows.texts, train),
    )  # fmt: skip
    trace = trace_data(atlas_data.load(str(tmp_path / "atlas"), str(tmp_path / "cache")))
    assert trace is not None
    linked = [row for row in range(len(rows)) if trace.record_row(row) is not None]
    assert linked == list(range(len(rows)))  # every test text is recorded (9 < 2,000)
    assert trace.text("test", 4) == rows.texts[4]
