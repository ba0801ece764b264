"""Subset counts: a class's correct, mistaken and confusion-pair counts are exactly the class
counts of a pass over only those images (the plain definition), for plain convolutions,
Inception blocks (widest paths per subset) and gradient connections, by label or by
prediction, and after merging shards."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from compute.atlas import Atlas, AtlasError
from compute.build import build_atlas
from compute.errors import BuildError
from compute.summit.aggregate import SummitAggregates, SummitPass
from compute.summit.config import SummitConfig
from compute.summit.subsets import SUBSET_KINDS, select_pairs
from tests.unit import test_aggregate, test_inception
from tests.unit.test_build import class_dataset, tiny_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = {
    # conv connections (exact counts) and a BatchNorm layer
    "chain": (test_aggregate.make_chain, test_aggregate.LAYERS, test_aggregate.NUM_CLASSES, 8),
    # an Inception block (widest paths) and a residual (gradient × activation)
    "inception": (test_inception.make_net, test_inception.LAYERS, test_inception.NUM_CLASSES, 7),
}


def run(
    model: nn.Module, layers: list[str], classes: int, config: SummitConfig, data: tuple
) -> SummitAggregates | None:
    """One pass over ``data`` in batches of 5 (``None`` for no images)."""
    images, labels, indices = data
    if images.shape[0] == 0:
        return None
    with SummitPass(model, layers, classes, config) as summit:
        for start in range(0, images.shape[0], 5):
            part = slice(start, start + 5)
            summit.update(images[part], labels[part], indices[part])
        return summit.result()


def dense(matrix: sp.csr_array | None) -> np.ndarray:
    assert matrix is not None
    return matrix.toarray()


def rows_of(whole: np.ndarray, groups: int, group: int) -> np.ndarray:
    return whole.reshape(groups, -1, whole.shape[1])[group]


def assert_class_counts(
    got_a: list[np.ndarray], got_i: list, ref: SummitAggregates | None, groups: list[int]
) -> None:
    """Rows ``k`` of the subset counts equal class ``groups[k]``'s counts of ``ref``."""
    for layer, a in enumerate(got_a):
        want = (
            np.zeros_like(a)
            if ref is None
            else ref.activation_counts[layer][groups]
            if groups
            else a[:0]
        )
        np.testing.assert_array_equal(a, want, err_msg=f"A, layer {layer}")
        if layer == 0:
            assert got_i[layer] is None
            continue
        got = dense(got_i[layer])
        for k, c in enumerate(groups):
            expected = (
                np.zeros_like(rows_of(got, len(groups), k))
                if ref is None
                else rows_of(dense(ref.influence_counts[layer]), ref.num_images.shape[0], c)
            )
            np.testing.assert_array_equal(
                rows_of(got, len(groups), k), expected, err_msg=f"I, layer {layer}, row {k}"
            )


@pytest.mark.parametrize("by", ["label", "prediction"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_subsets_equal_passes_over_only_those_images(name: str, by: str) -> None:
    make, layers, classes, size = MODELS[name]
    model = make()
    config = SummitConfig(
        selection="topk",
        top_k=3,
        influence_top_k=2,
        aggregate_by=by,  # type: ignore[arg-type]
        confusion_min=2,
        confusion_pairs=2,
    )
    g = torch.Generator().manual_seed(11)
    n = 40
    images = torch.randn(n, 3, size, size, dtype=torch.float64, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    indices = torch.arange(n) * 7 + 3
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    counted, other = (labels, predicted) if by == "label" else (predicted, labels)
    wrong = counted != other
    assert 0 < int(wrong.sum()) < n, "the data must hold both correct and wrong images"

    whole = run(model, layers, classes, config, (images, labels, indices))
    assert whole is not None and whole.subsets is not None
    subsets = whole.subsets
    every = list(range(classes))

    def only(mask: Tensor) -> SummitAggregates | None:
        return run(model, layers, classes, config, (images[mask], labels[mask], indices[mask]))

    mistaken, correct = only(wrong), only(~wrong)
    assert_class_counts(
        subsets.activation["mistaken"], subsets.influence["mistaken"], mistaken, every
    )
    assert_class_counts(
        subsets.correct_activation(whole.activation_counts),
        subsets.influence["correct"],
        correct,
        every,
    )
    np.testing.assert_array_equal(
        subsets.mistaken_images, np.bincount(counted[wrong].numpy(), minlength=classes)
    )
    # The stored pairs: the frequent ones, each equal to a pass over its images only.
    table = np.zeros((classes, classes + 1), np.int64)
    np.add.at(table, (counted[wrong].numpy(), other[wrong].numpy()), 1)
    want_pairs = sorted(
        (c, d)
        for c in range(classes)
        for d in sorted(range(classes), key=lambda d: (-table[c, d], d))[:2]
        if table[c, d] >= 2
    )
    assert [tuple(p) for p in subsets.pairs.tolist()] == want_pairs
    assert len(subsets.pairs) > 0
    for k, (c, d) in enumerate(subsets.pairs.tolist()):
        assert subsets.pair_images[k] == table[c, d] >= 2
        ref = only(wrong & (counted == c) & (other == d))
        for layer in range(len(layers)):
            assert ref is not None
            np.testing.assert_array_equal(
                subsets.activation["pairs"][layer][k], ref.activation_counts[layer][c]
            )
            if layer:
                np.testing.assert_array_equal(
                    rows_of(dense(subsets.influence["pairs"][layer]), len(subsets.pairs), k),
                    rows_of(dense(ref.influence_counts[layer]), classes, c),
                )
    # Correct and mistaken add up to the class counts (activation; additive connections).
    for layer, a in enumerate(whole.activation_counts):
        assert (subsets.activation["mistaken"][layer] <= a).all()
    if name == "chain":
        for layer in range(1, len(layers)):
            total = sum(dense(subsets.influence[kind][layer]) for kind in SUBSET_KINDS)
            np.testing.assert_array_equal(total, dense(whole.influence_counts[layer]))


def test_merged_shards_give_the_same_subsets_and_old_states_are_refused() -> None:
    model = test_inception.make_net()
    layers, classes = test_inception.LAYERS, test_inception.NUM_CLASSES
    config = SummitConfig(selection="topk", top_k=3, influence_top_k=2, confusion_min=1)
    g = torch.Generator().manual_seed(5)
    images = torch.randn(12, 3, 7, 7, dtype=torch.float64, generator=g)
    labels = torch.randint(0, classes, (12,), generator=g)
    indices = torch.arange(12)
    whole = run(model, layers, classes, config, (images, labels, indices))
    states = []
    for part in (slice(0, 5), slice(5, 12)):
        with SummitPass(model, layers, classes, config) as shard:
            shard.update(images[part], labels[part], indices[part])
            states.append(shard.state_dict())
    with SummitPass(model, layers, classes, config) as merged:
        for state in states:
            merged.merge_state_dict(state)
        result = merged.result()
    assert whole is not None and whole.subsets is not None and result.subsets is not None
    np.testing.assert_array_equal(result.subsets.pairs, whole.subsets.pairs)
    for kind in ("correct", "mistaken", "pairs"):
        for a, b in zip(result.subsets.influence[kind], whole.subsets.influence[kind], strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a.toarray(), b.toarray())
    for kind in ("mistaken", "pairs"):
        for a, b in zip(
            result.subsets.activation[kind], whole.subsets.activation[kind], strict=True
        ):
            np.testing.assert_array_equal(a, b)
    # A state written without subset counts (an older checkpoint) cannot complete them.
    old = {k: v for k, v in states[0].items() if not k.startswith("subset.")}
    with (
        SummitPass(model, layers, classes, config) as fresh,
        pytest.raises(BuildError, match="subset"),
    ):
        fresh.merge_state_dict(old)
    # With subsets off nothing is counted and the result says so.
    off = run(model, layers, classes, SummitConfig(subsets=False), (images, labels, indices))
    assert off is not None and off.subsets is None


def test_select_pairs_keeps_the_most_frequent_per_class_ties_to_the_lower_class() -> None:
    classes = 3
    table = np.array([[0, 4, 4, 9], [2, 0, 1, 0], [0, 0, 0, 0]])  # last column: outside
    kept = select_pairs(table.reshape(-1), classes, 2, 1)
    assert [divmod(int(p), classes + 1) for p in kept] == [(0, 1), (1, 0)]
    kept = select_pairs(table.reshape(-1), classes, 1, 3)
    assert [divmod(int(p), classes + 1) for p in kept] == [(0, 1), (0, 2), (1, 0), (1, 2)]


def test_a_built_atlas_holds_the_graphs_of_its_subsets(tmp_path) -> None:
    """The mistaken / correct / pair graphs of a build are the class graphs of a build over
    only those images; the reader and the node-link export give them."""

    def build(out, dataset, **config):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = tiny_cnn()
        config = SummitConfig(selection="topk", top_k=2, influence_top_k=2, **config)
        loader = DataLoader(dataset, batch_size=4)
        return model, Atlas.open(
            build_atlas(
                model, loader, layers=["1", "4"], classes=["r", "g", "b"], out=out,
                config=config, crops_per_channel=0, progress=False, mapper=False,
            )
        )  # fmt: skip

    data = class_dataset(per_class=8)
    model, atlas = build(tmp_path / "all", data, confusion_min=1)
    with torch.no_grad():
        predicted = model(data.tensors[0]).argmax(dim=1)
    labels = data.tensors[1]
    wrong = (predicted != labels).nonzero().view(-1).tolist()
    right = (predicted == labels).nonzero().view(-1).tolist()
    assert wrong and right
    assert "subsets" in atlas.parts
    assert atlas.mistaken_images().tolist() == np.bincount(labels[wrong], minlength=3).tolist()
    _, only_wrong = build(tmp_path / "wrong", Subset(data, wrong))
    _, only_right = build(tmp_path / "right", Subset(data, right))

    def same(a, b) -> None:
        for name in ("layer", "channel", "pagerank", "x", "source", "target", "weight"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)

    for c in range(3):
        same(atlas.graph(c, "mistaken"), only_wrong.graph(c))
        same(atlas.graph(c, "correct"), only_right.graph(c))
        for layer in atlas.layer_names:
            np.testing.assert_array_equal(
                atlas.subset_counts(layer, "mistaken")[c], only_wrong.activation_counts(layer)[c]
            )
    pairs, images = atlas.subset_pairs()
    assert len(pairs) > 0
    for (c, d), n in zip(pairs.tolist(), images.tolist(), strict=True):
        members = [i for i in wrong if labels[i] == c and predicted[i] == d]
        assert n == len(members)
        _, only_pair = build(tmp_path / f"pair{c}{d}", Subset(data, members))
        same(atlas.graph(c, "mistaken", other=d), only_pair.graph(c))
        exported = atlas.graph_data(c, "mistaken", other=d)
        assert exported["graph"]["other_index"] == d and exported["graph"]["subset"] == "mistaken"
        assert exported == {**only_pair.graph_data(c), "graph": exported["graph"]}
    with pytest.raises(AtlasError, match="mistaken for"):
        atlas.graph(0, "mistaken", other=0)
    with pytest.raises(AtlasError, match="unknown subset"):
        atlas.graph(0, "wrong")
