"""The per-input token statistic (max over non-padding tokens) against a plain reference,
padding in a real model's batch, and which token layers are usable."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

from compute.capture import HookSet
from compute.hf import load_hf_classifier
from compute.models import LayerDescription, describe_layers, model_input
from compute.text_data import BY_INDEX, TextCollate, TextDataset, TextRows
from compute.tokens import ROLE_MLP, ROLE_MLP_PRE, residual_width, token_layers, token_max
from tests.helpers.text_models import INTERMEDIATE, SENTENCES, write_tiny_bert


def reference_token_max(outputs: Tensor, mask: Tensor) -> tuple[list[list[float]], list[list[int]]]:
    """Plain loops: for each input and unit, the first largest value among real tokens."""
    values, positions = [], []
    for n in range(outputs.shape[0]):
        row_values, row_positions = [], []
        for d in range(outputs.shape[2]):
            best, where = -math.inf, None
            for t in range(outputs.shape[1]):
                if mask[n, t] and (where is None or float(outputs[n, t, d]) > best):
                    best, where = float(outputs[n, t, d]), t
            row_values.append(best)
            row_positions.append(where)
        values.append(row_values)
        positions.append(row_positions)
    return values, positions  # type: ignore[return-value]


@pytest.mark.parametrize("seed", range(4))
def test_token_max_equals_the_reference(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    outputs = torch.randn(5, 7, 6, generator=generator) - 3.0  # mostly negative
    outputs[0, :, 0] = -math.inf  # every value -inf
    outputs[1, 2, :] = outputs[1, 4, :]  # ties: the first wins
    outputs[2] = outputs[2].round()  # many ties
    lengths = torch.tensor([7, 5, 1, 3, 6])
    mask = (torch.arange(7)[None, :] < lengths[:, None]).long()
    outputs[mask == 0] = 10.0  # padding holds the largest values: it must never win
    values, positions = token_max(outputs, mask)
    expected_values, expected_positions = reference_token_max(outputs, mask)
    assert values.tolist() == expected_values
    assert positions.tolist() == expected_positions
    assert positions.dtype == torch.int64


def test_token_max_left_padding_and_bool_mask() -> None:
    outputs = torch.full((2, 4, 3), -math.inf)
    outputs[1, 3] = torch.tensor([-1.0, -2.0, -3.0])
    mask = torch.tensor([[False, False, True, True], [False, True, True, True]])
    values, positions = token_max(outputs, mask)
    assert positions.tolist() == [[2, 2, 2], [3, 3, 3]]
    assert values[1].tolist() == [-1.0, -2.0, -3.0]


def test_token_max_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="no real"):
        token_max(torch.zeros(2, 3, 4), torch.tensor([[1, 1, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"outputs \[N, T, D\] and mask \[N, T\]"):
        token_max(torch.zeros(2, 3, 4), torch.ones(2, 4))


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert")


def layer_outputs(model: torch.nn.Module, name: str, batch: dict[str, Tensor]) -> Tensor:
    captured: list[Tensor] = []
    with HookSet() as hooks, torch.no_grad():
        hooks.on_forward(
            dict(model.named_modules())[name], lambda _m, _i, out: captured.append(out)
        )
        model(batch)
    return captured[0]


@pytest.mark.parametrize(
    "layer", ["bert.encoder.layer.0.intermediate", "bert.encoder.layer.1.output"]
)
def test_padding_in_a_batch_changes_nothing(bert_dir: Path, layer: str) -> None:
    """Each input's maxima in a padded batch equal those of the input run alone, unpadded."""
    model = load_hf_classifier(bert_dir)
    texts = tuple(text for group in SENTENCES.values() for text in group)
    data = TextDataset(TextRows(texts, (0,) * len(texts), BY_INDEX, "test"), model.tokenizer, 16)
    batch, _, _ = TextCollate(model.tokenizer.pad_token_id)([data[i] for i in range(len(data))])
    assert (batch["attention_mask"] == 0).any()  # the batch has padding
    values, positions = token_max(layer_outputs(model, layer, batch), batch["attention_mask"])
    for i in range(len(data)):
        alone, _, _ = TextCollate(model.tokenizer.pad_token_id)([data[i]])
        out = layer_outputs(model, layer, alone)
        one_values, one_positions = token_max(out, alone["attention_mask"])
        torch.testing.assert_close(values[i], one_values[0], rtol=1e-5, atol=1e-5)
        assert torch.equal(positions[i], one_positions[0])


def test_token_layers_of_the_tiny_bert(bert_dir: Path) -> None:
    model = load_hf_classifier(bert_dir)
    rows = describe_layers(model, model_input(model, tokens=6))
    found = {layer.name: layer for layer in token_layers(rows, 6)}
    assert residual_width(rows) == 32
    assert found["bert.encoder.layer.0.intermediate"].role == ROLE_MLP
    assert found["bert.encoder.layer.0.intermediate.intermediate_act_fn"].role == ROLE_MLP
    assert found["bert.encoder.layer.0.intermediate.dense"].role == ROLE_MLP_PRE
    assert found["bert.encoder.layer.0.intermediate"][2:4] == (6, INTERMEDIATE)
    assert found["bert.encoder.layer.1.attention.self"].units == 32  # a tuple: its first
    assert found["bert.encoder.layer.1"].role == ""
    assert all(layer.usable for layer in found.values())
    assert "bert.pooler" not in found and "classifier" not in found


def test_a_token_layer_of_another_length_is_not_usable() -> None:
    rows = [
        LayerDescription("a", "Linear", 8, None, None, 6),
        LayerDescription("pooled", "Pool", 8, None, None, 3),
    ]
    assert [layer.usable for layer in token_layers(rows, 6)] == [True, False]
    assert [layer.usable for layer in token_layers(rows, None)] == [True, True]
