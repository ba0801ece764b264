"""The Summit pass on token layers ``[N, T, D]`` (issue 16): a tiny random BERT text
classifier and a tiny ViT, against a plain per-input reference.

The reference runs each input alone (no padding), takes each hidden unit's maximum over
the input's tokens with a Python loop, selects units with the plain selection rule, and
measures each selected unit's influences by finite differences (the source unit scaled
over all tokens) in float64. The pass runs padded batches of two sizes; padding must
change nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from compute.models import get_model
from compute.summit.aggregate import SummitAggregates, SummitPass
from compute.summit.config import SummitConfig
from compute.summit.gradient import MAX_CHANNELS, positionwise_chain
from compute.summit.instances import InstanceConfig
from compute.text_data import TextCollate, TextDataset, TextRows, pad_token_id
from tests.helpers.text_models import CLASSES, SENTENCES, tiny_vit, write_tiny_bert
from tests.reference import layer_outputs, output_with_scaled_channel, select_mass, select_topk

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The tiny BERT's MLP units (wider than the residual stream) in both blocks.
BERT_LAYERS = ["bert.encoder.layer.0.intermediate", "bert.encoder.layer.1.intermediate"]
#: The tiny ViT's MLP units after the GELU, in both blocks.
VIT_LAYERS = ["encoder.layers.encoder_layer_0.mlp.1", "encoder.layers.encoder_layer_1.mlp.1"]
CONFIG = SummitConfig(tau=0.3, influence_top_k=3, examples_per_channel=4)


def texts() -> TextRows:
    """Labelled texts of different lengths (so batches hold padding)."""
    rows: list[tuple[str, int]] = []
    for label, name in enumerate(CLASSES):
        sentences = SENTENCES[name]
        rows += [(s, label) for s in sentences]
        rows.append((f"{sentences[0]} and {sentences[1]} in {sentences[2]}", label))
    return TextRows(
        texts=tuple(t for t, _ in rows),
        labels=tuple(label for _, label in rows),
        label_kind="index",
        source="test",
    )


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    model = get_model(f"hf:{write_tiny_bert(tmp_path_factory.mktemp('bert') / 'bert')}")
    return model.double().eval()


def text_batches(model: nn.Module, size: int) -> list[tuple[dict[str, Tensor], Tensor, Tensor]]:
    dataset = TextDataset(texts(), model.tokenizer, 32)
    collate = TextCollate(pad_token_id(model.tokenizer))
    items = [dataset[i] for i in range(len(dataset))]
    return [collate(items[k : k + size]) for k in range(0, len(items), size)]


def run(model: nn.Module, layers: list[str], batches: Sequence[tuple], **kwargs: object):
    with SummitPass(model, layers, len(CLASSES), CONFIG, **kwargs) as summit:  # type: ignore[arg-type]
        for inputs, labels, indices in batches:
            summit.update(inputs, labels, indices)
        return summit.result()


def token_max_plain(z: Tensor) -> tuple[list[float], list[int]]:
    """Per unit of ``z [T, D]`` (one input, no padding): its maximum over the tokens and the
    first token where it occurs, by loops."""
    values, where = [], []
    for unit in range(z.shape[1]):
        best, at = -math.inf, 0
        for token in range(z.shape[0]):
            if float(z[token, unit]) > best:
                best, at = float(z[token, unit]), token
        values.append(best)
        where.append(at)
    return values, where


def reference(
    model: nn.Module, layers: list[str], alone: Sequence[tuple[object, int, int]]
) -> dict[str, object]:
    """Counts, examples and influence counts of inputs run one by one, without padding."""
    counts: list[np.ndarray] = []
    best: list[list[list[tuple[float, int, int]]]] = []  # per layer, unit: (value, index, t)
    influence = None
    stats: list[list[tuple[list[float], list[int]]]] = []
    for inputs, label, index in alone:
        seen = layer_outputs(model, layers, inputs)
        per_layer = [token_max_plain(seen[name][0]) for name in layers]
        stats.append(per_layer)
        for k, (values, where) in enumerate(per_layer):
            if len(counts) <= k:
                counts.append(np.zeros((len(CLASSES), len(values)), np.int64))
                best.append([[] for _ in values])
            for unit in select_mass(values, CONFIG.tau):
                counts[k][label, unit] += 1
            for unit, (value, token) in enumerate(zip(values, where, strict=True)):
                best[k][unit].append((value, index, token))
        # Influence of the first layer's units on the second's selected ones (top by value).
        values, where = per_layer[1]
        sources = len(per_layer[0][0])
        if influence is None:
            influence = np.zeros((len(CLASSES) * len(values), sources), np.int64)
        chosen = sorted(select_mass(values, CONFIG.tau), key=lambda i: (-values[i], i))
        for unit in chosen[:MAX_CHANNELS]:
            g = []
            for j in range(sources):
                h = 1e-6
                up = output_with_scaled_channel(model, inputs, *layers[:2], j, 1 + h, -1)
                down = output_with_scaled_channel(model, inputs, *layers[:2], j, 1 - h, -1)
                g.append(float(up[where[unit], unit] - down[where[unit], unit]) / (2 * h))
            for j in select_topk(g, CONFIG.influence_top_k):
                influence[label * len(values) + unit, j] += 1
    examples = [
        [sorted(entries, key=lambda e: (-e[0], e[1]))[: CONFIG.examples_per_channel]
         for entries in layer]
        for layer in best
    ]  # fmt: skip
    return {"counts": counts, "examples": examples, "influence": influence, "stats": stats}


def check(result: SummitAggregates, want: dict[str, object]) -> None:
    for k, counts in enumerate(want["counts"]):  # type: ignore[arg-type]
        np.testing.assert_array_equal(result.activation_counts[k], counts, err_msg=f"layer {k}")
        assert result.layer_shapes[k][0] == counts.shape[1]
        for unit, entries in enumerate(want["examples"][k]):  # type: ignore[index]
            index = result.example_index[k][unit]
            assert index.tolist() == [e[1] for e in entries], (k, unit)
            np.testing.assert_allclose(
                result.example_value[k][unit], [e[0] for e in entries], rtol=1e-6
            )
            # The token where the maximum is: position (0, t).
            assert result.example_position[k][unit].tolist() == [[0, e[2]] for e in entries]
    influence = result.influence_counts[1]
    assert influence is not None
    np.testing.assert_array_equal(influence.toarray(), want["influence"])
    assert influence.nnz > 0


def test_a_text_classifier_padded_in_batches_equals_each_input_alone(bert: nn.Module) -> None:
    alone = [
        (inputs, int(labels[0]), int(indices[0]))
        for inputs, labels, indices in text_batches(bert, 1)
    ]
    want = reference(bert, BERT_LAYERS, alone)
    for size in (4, 5):
        batches = text_batches(bert, size)
        assert any(bool((b["attention_mask"] == 0).any()) for b, _, _ in batches), "no padding"
        check(run(bert, BERT_LAYERS, batches), want)


def test_padding_never_wins_even_where_every_real_value_is_low(bert: nn.Module) -> None:
    """Padding positions that would hold every unit's maximum change nothing: the padded
    batch's maxima are those of the inputs alone (GELU units are often negative)."""
    batches = text_batches(bert, 12)
    inputs, _, _ = batches[0]
    seen = layer_outputs(bert, BERT_LAYERS[:1], inputs)[BERT_LAYERS[0]]
    mask = inputs["attention_mask"].bool()
    assert (
        seen.max(dim=1).values > seen.masked_fill(~mask[..., None], -1e9).max(dim=1).values
    ).any(), "padding holds no larger value: this test would not see it leak"
    result = run(bert, BERT_LAYERS[:1], batches)
    alone = [(i, int(lab[0]), int(idx[0])) for i, lab, idx in text_batches(bert, 1)]
    want = reference_counts_only(bert, BERT_LAYERS[0], alone)
    np.testing.assert_array_equal(result.activation_counts[0], want)


def reference_counts_only(model: nn.Module, layer: str, alone: Sequence[tuple]) -> np.ndarray:
    counts = None
    for inputs, label, _ in alone:
        values, _ = token_max_plain(layer_outputs(model, [layer], inputs)[layer][0])
        if counts is None:
            counts = np.zeros((len(CLASSES), len(values)), np.int64)
        for unit in select_mass(values, CONFIG.tau):
            counts[label, unit] += 1
    assert counts is not None
    return counts


def test_instance_records_of_a_text_input_are_its_own_units_and_tokens(bert: nn.Module) -> None:
    batches = text_batches(bert, 5)
    result = run(bert, BERT_LAYERS, batches, instances=InstanceConfig(sample=20, mistakes=0))
    records = result.instances
    assert records is not None and records.num_instances == len(texts())
    for row, (inputs, _, _) in enumerate(text_batches(bert, 1)):
        seen = layer_outputs(bert, BERT_LAYERS, inputs)
        for k, name in enumerate(BERT_LAYERS):
            values, where = token_max_plain(seen[name][0])
            channels, maxima, positions = records.channels(row, k)
            assert set(channels.tolist()) == select_mass(values, CONFIG.tau)
            np.testing.assert_allclose(maxima, [values[c] for c in channels], rtol=1e-6)
            assert positions.tolist() == [[0, where[c]] for c in channels]


def test_a_vision_transformer_equals_each_image_alone() -> None:
    model = tiny_vit().double().eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(10, 3, 32, 32, generator=generator, dtype=torch.float64)
    labels = torch.arange(10) % 3
    alone = [(images[i : i + 1], int(labels[i]), i) for i in range(10)]
    want = reference(model, VIT_LAYERS, alone)
    batches = [(images[k : k + 4], labels[k : k + 4], torch.arange(k, min(k + 4, 10)))
               for k in range(0, 10, 4)]  # fmt: skip
    check(run(model, VIT_LAYERS, batches), want)


def test_a_token_layer_that_the_next_does_not_depend_on_is_refused(bert: nn.Module) -> None:
    from compute.errors import BuildError

    backwards = [BERT_LAYERS[1], BERT_LAYERS[0]]
    with pytest.raises(BuildError, match=r"not differentiable|did not run|order"):
        run(bert, backwards, text_batches(bert, 4))


def test_gradient_attribution_over_tokens_skips_padding() -> None:
    """``g_ij = Σ_t Z_j[t] ∂Y_i[t*]/∂Z_j[t]`` over the real tokens only: the padded token's
    product is left out even where the target depends on it."""
    from compute.summit.gradient import gradient_attribution

    z = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]], requires_grad=True)  # [1, T, 2]
    y = torch.stack([z[..., 0].cumsum(1), 2 * z[..., 1].cumsum(1)], dim=2)  # [1, T, 2]
    channels = torch.tensor([[0], [1]])  # both target units of the one input
    positions = torch.tensor([[2, 2]])  # their maxima at the last token
    full = gradient_attribution(z, y, channels, positions, token_mask=None)
    assert full[:, 0].tolist() == [[9.0, 0.0], [0.0, 24.0]]
    z2 = z.detach().clone().requires_grad_(True)
    y2 = torch.stack([z2[..., 0].cumsum(1), 2 * z2[..., 1].cumsum(1)], dim=2)
    masked = gradient_attribution(z2, y2, channels, positions, token_mask=torch.tensor([[1, 1, 0]]))
    assert masked[:, 0].tolist() == [[4.0, 0.0], [0.0, 12.0]]


def test_a_token_layers_shape_is_one_row_of_the_longest_input(bert: nn.Module) -> None:
    """The pass reports a token layer as ``(D, 1, longest input in tokens)``, the same
    from batches, shards and a checkpoint merged (the longest of the parts)."""
    batches = text_batches(bert, 4)
    longest = max(int(b["attention_mask"].sum(dim=1).max()) for b, _, _ in batches)
    whole = run(bert, BERT_LAYERS, batches)
    assert whole.layer_shapes == [(64, 1, longest)] * 2
    with SummitPass(bert, BERT_LAYERS, len(CLASSES), CONFIG) as first:
        first.update(*batches[0])
        saved = first.state_dict()
    with SummitPass(bert, BERT_LAYERS, len(CLASSES), CONFIG) as rest:
        for batch in batches[1:]:
            rest.update(*batch)
        others = rest.state_dict()
    with SummitPass(bert, BERT_LAYERS, len(CLASSES), CONFIG) as shards:
        shards.merge_state_dict(saved)
        shards.merge_state_dict(others)
        merged = shards.result()
    assert merged.layer_shapes == whole.layer_shapes
    assert merged.top_tokens is not None and whole.top_tokens is not None
    for a, b in zip(merged.top_tokens, whole.top_tokens, strict=True):
        assert a is not None and b is not None
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    for a, b in zip(merged.activation_counts, whole.activation_counts, strict=True):
        np.testing.assert_array_equal(a, b)


def test_each_units_top_tokens_are_counted_over_the_dataset(bert: nn.Module) -> None:
    """Per unit, the token ids most often at its maximum among the inputs that select it
    (most frequent first, ties to the lowest id): as counted input by input, alone."""
    from collections import Counter

    from compute.summit.aggregate import TOP_TOKENS

    counted: list[Counter[tuple[int, int]]] = [Counter() for _ in BERT_LAYERS]
    for inputs, _, _ in text_batches(bert, 1):
        seen = layer_outputs(bert, BERT_LAYERS, inputs)
        ids = inputs["input_ids"][0].tolist()
        for k, name in enumerate(BERT_LAYERS):
            values, where = token_max_plain(seen[name][0])
            for unit in select_mass(values, CONFIG.tau):
                counted[k][(unit, ids[where[unit]])] += 1
    result = run(bert, BERT_LAYERS, text_batches(bert, 5))
    assert result.top_tokens is not None
    for k, found in enumerate(result.top_tokens):
        assert found is not None
        ids, counts = found
        for unit in range(ids.shape[0]):
            mine = sorted(((-n, token) for (u, token), n in counted[k].items() if u == unit))[
                :TOP_TOKENS
            ]
            want_ids = [token for _, token in mine] + [-1] * (TOP_TOKENS - len(mine))
            want_counts = [-n for n, _ in mine] + [0] * (TOP_TOKENS - len(mine))
            assert ids[unit].tolist() == want_ids, (k, unit)
            assert counts[unit].tolist() == want_counts, (k, unit)
    assert (
        run(
            tiny_vit().double().eval(),
            VIT_LAYERS,
            [
                (
                    torch.randn(2, 3, 32, 32, dtype=torch.float64),
                    torch.tensor([0, 1]),
                    torch.arange(2),
                )
            ],
        ).top_tokens
        is None
    )  # an image model's token layers have no token ids


def test_the_reference_runs_above_take_the_position_wise_shortcut(bert: nn.Module) -> None:
    """BERT's MLP units and a ViT's GELU act on each token alone: their gradient influence
    starts at the module's input, or the ViT MLP block's (``positionwise_attribution``), so
    the reference tests above check that path against finite differences."""
    for model, layers, batch in (
        (bert, BERT_LAYERS, text_batches(bert, 4)[0]),
        (tiny_vit().double().eval(), VIT_LAYERS, (torch.randn(2, 3, 32, 32).double(),
                                                   torch.tensor([0, 1]), torch.arange(2))),
    ):  # fmt: skip
        with SummitPass(model, layers, len(CLASSES), CONFIG) as summit:
            summit.update(*batch)
            assert summit.positionwise == {1: True}
    # The ViT's chain starts at its MLP block's input: the Linear before the GELU is rerun.
    vit = tiny_vit()
    modules = dict(vit.named_modules())
    chain = positionwise_chain(vit, modules[VIT_LAYERS[1]], set())
    assert chain is not None
    assert chain[0] is modules["encoder.layers.encoder_layer_1.mlp"]
    assert [type(m).__name__ for m in chain[1]] == ["Linear", "GELU"]
