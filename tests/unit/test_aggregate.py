"""The fast Summit pass equals the plain per-image reference exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compute.errors import BuildError
from compute.summit.aggregate import SummitAggregates, SummitPass
from compute.summit.config import SummitConfig
from tests.reference import reference_aggregates

NUM_CLASSES = 4


# torch on one thread for the whole module (fixture in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ChainNet(nn.Module):
    """Covers BN, max/avg pooling, stride, padding, dilation, 1×1 and k×k convs."""

    def __init__(self, outputs: int = NUM_CLASSES) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        self.bn2 = nn.BatchNorm2d(8)  # makes the 1×1 conv's input signed
        self.conv3 = nn.Conv2d(8, 5, 1, stride=2, padding=1)  # 1×1 reading padding zeros
        self.bn3 = nn.BatchNorm2d(5)
        self.conv4 = nn.Conv2d(5, 7, 3, padding=2, dilation=2)
        self.head = nn.Linear(7, outputs)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(self.block1(x), 2)
        x = self.act2(self.conv2(x))
        x = torch.relu(self.bn3(self.conv3(nn.functional.avg_pool2d(self.bn2(x), 1))))
        x = self.conv4(x)  # chosen as a leaf conv: its output can be negative
        return self.head(F.adaptive_avg_pool2d(F.relu(x), 1).flatten(1))


LAYERS = ["block1", "act2", "bn3", "conv4"]


class IntegerNet(nn.Module):
    """Integer weights and inputs: exact arithmetic, so ties everywhere are real ties."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 5, 3, padding=1, bias=False)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(5, 6, 3, stride=2, bias=False)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(6, 4, 1, bias=False)
        self.relu3 = nn.ReLU()
        self.head = nn.Linear(4, NUM_CLASSES, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        x = self.relu3(self.conv3(x))
        return self.head(x.amax(dim=(2, 3)))


def make_chain(seed: int = 0, outputs: int = NUM_CLASSES) -> nn.Module:
    torch.manual_seed(seed)
    model = ChainNet(outputs).double()
    for bn in (model.block1[1], model.bn2, model.bn3):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def make_integer(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = IntegerNet().double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-1, 2, p.shape).double())
    return model.eval()


def dataset(n: int, shape: tuple[int, ...], seed: int, integer: bool = False):
    g = torch.Generator().manual_seed(seed)
    if integer:
        images = torch.randint(0, 3, (n, *shape), generator=g).double()
    else:
        images = torch.randn((n, *shape), generator=g, dtype=torch.float64)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    indices = torch.arange(100, 100 + n) * 3  # dataset indices need not be 0..n-1
    return images, labels, indices


def run_fast(
    model: nn.Module,
    layers: list[str],
    config: SummitConfig,
    data: tuple[Tensor, Tensor, Tensor],
    batch: int,
    order: Tensor | None = None,
    **kwargs: object,
) -> SummitAggregates:
    images, labels, indices = data
    if order is not None:
        images, labels, indices = images[order], labels[order], indices[order]
    with SummitPass(model, layers, NUM_CLASSES, config, **kwargs) as summit:  # type: ignore[arg-type]
        for start in range(0, images.shape[0], batch):
            end = start + batch
            logits = summit.update(images[start:end], labels[start:end], indices[start:end])
            assert logits.shape[0] == images[start:end].shape[0]
        return summit.result()


def assert_equal(fast: SummitAggregates, ref: SummitAggregates) -> None:
    assert fast.layers == ref.layers
    assert fast.layer_shapes == ref.layer_shapes
    for name in ("num_images", "num_correct", "confidence_hist", "confusion"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(ref, name), err_msg=name)
        assert getattr(fast, name).dtype == np.int64
    for k, layer in enumerate(fast.layers):
        a_fast, a_ref = fast.activation_counts[k], ref.activation_counts[k]
        assert a_fast.dtype == np.int64
        np.testing.assert_array_equal(a_fast, a_ref, err_msg=f"A of {layer}")
        i_fast, i_ref = fast.influence_counts[k], ref.influence_counts[k]
        assert (i_fast is None) == (i_ref is None)
        if i_fast is not None and i_ref is not None:
            assert i_fast.shape == i_ref.shape
            assert i_fast.dtype == np.int64
            np.testing.assert_array_equal(i_fast.toarray(), i_ref.toarray(), err_msg=f"I {layer}")
        np.testing.assert_array_equal(fast.example_index[k], ref.example_index[k])
        np.testing.assert_array_equal(fast.example_value[k], ref.example_value[k])
        np.testing.assert_array_equal(fast.example_position[k], ref.example_position[k])
        assert fast.example_value[k].dtype == np.float32
        assert fast.example_position[k].dtype == np.int32


CONFIGS = [
    SummitConfig(selection="mass", tau=0.3, influence_top_k=2, examples_per_channel=3),
    SummitConfig(selection="topk", top_k=3, influence_top_k=3, examples_per_channel=5),
    SummitConfig(
        selection="mass", tau=0.6, influence_top_k=1, aggregate_by="prediction", confidence_bins=7
    ),
]


@pytest.mark.parametrize("config", CONFIGS, ids=["mass", "topk", "prediction"])
def test_chain_matches_reference_for_any_batching(config: SummitConfig) -> None:
    model = make_chain()
    data = dataset(23, (3, 16, 16), seed=1)
    ref = reference_aggregates(model, LAYERS, NUM_CLASSES, config, *data)
    assert ref.influence_counts[1] is not None and ref.influence_counts[1].nnz > 0
    for batch in (1, 7, 23):
        assert_equal(run_fast(model, LAYERS, config, data, batch), ref)
    shuffled = torch.randperm(23, generator=torch.Generator().manual_seed(5))
    assert_equal(run_fast(model, LAYERS, config, data, 5, order=shuffled), ref)


@pytest.mark.parametrize(
    "config",
    [CONFIGS[1], SummitConfig(selection="mass", tau=0.5, influence_top_k=2)],
    ids=["topk", "mass-exact-half"],
)
def test_integer_ties_match_reference(config: SummitConfig) -> None:
    model = make_integer()
    data = dataset(17, (2, 9, 9), seed=2, integer=True)
    layers = ["relu1", "relu2", "relu3"]
    ref = reference_aggregates(model, layers, NUM_CLASSES, config, *data)
    # The test only means something if there are ties to break.
    values = ref.example_value[0]
    assert any(len(set(row)) < len(row) for row in values.tolist())
    for batch in (1, 6, 17):
        assert_equal(run_fast(model, layers, config, data, batch), ref)


def test_tiny_budget_chunks_give_same_result() -> None:
    model = make_chain(seed=3)
    config = CONFIGS[0]
    data = dataset(9, (3, 16, 16), seed=3)
    ref = reference_aggregates(model, LAYERS, NUM_CLASSES, config, *data)
    assert_equal(run_fast(model, LAYERS, config, data, 9, budget=500), ref)


def test_pruned_gemm_path_matches_reference(monkeypatch) -> None:
    from compute.summit import influence

    monkeypatch.setattr(influence, "PRUNE_MIN_RATIO", 0)  # prune even these narrow layers
    monkeypatch.setattr(influence, "GEMM_TILE", 64)
    model = make_chain(seed=8)
    config = CONFIGS[1]
    data = dataset(9, (3, 16, 16), seed=8)
    ref = reference_aggregates(model, LAYERS, NUM_CLASSES, config, *data)
    assert_equal(run_fast(model, LAYERS, config, data, 4), ref)


def test_class_map_maps_predictions() -> None:
    model = make_chain(seed=4, outputs=6)
    class_map = [5, 0, 2, 3]  # model outputs 1 and 4 belong to no class
    config = SummitConfig(selection="topk", top_k=2, aggregate_by="prediction")
    data = dataset(15, (3, 16, 16), seed=4)
    ref = reference_aggregates(model, LAYERS, NUM_CLASSES, config, *data, class_map=class_map)
    fast = run_fast(model, LAYERS, config, data, 4, class_map=class_map)
    assert_equal(fast, ref)
    assert fast.num_images.sum() == 15


def test_single_layer_and_class_stats_are_plausible() -> None:
    model = make_chain(seed=6)
    config = SummitConfig(confidence_bins=5)
    data = dataset(11, (3, 16, 16), seed=6)
    fast = run_fast(model, ["act2"], config, data, 4)
    assert fast.influence_counts == [None]
    np.testing.assert_array_equal(fast.num_images, np.bincount(data[1].numpy(), minlength=4))
    np.testing.assert_array_equal(fast.confidence_hist.sum(axis=1), fast.num_images)
    assert (fast.num_correct <= fast.num_images).all()
    # without a class map every prediction is a class: rows add up, the diagonal is correct
    np.testing.assert_array_equal(fast.confusion.sum(axis=1), fast.num_images)
    np.testing.assert_array_equal(np.diag(fast.confusion), fast.num_correct)
    # every image contributes at least one channel in mass mode when its maxima are positive
    assert fast.activation_counts[0].sum() >= 11


def test_errors_are_build_errors() -> None:
    model = make_chain()
    config = SummitConfig()
    with pytest.raises(BuildError, match="unknown layer 'nope'"):
        SummitPass(model, ["block1", "nope"], NUM_CLASSES, config)
    with pytest.raises(BuildError, match="'block1' does not depend on 'bn3'"):
        SummitPass(model, ["bn3", "block1"], NUM_CLASSES, config)
    summit = SummitPass(model, ["block1"], NUM_CLASSES, config)
    images, labels, indices = dataset(3, (3, 16, 16), seed=0)
    with pytest.raises(BuildError, match="labels must be in"):
        summit.update(images, labels + NUM_CLASSES, indices)
    with pytest.raises(BuildError, match="no images"):
        summit.result()
    summit.close()
    wrong = SummitPass(make_chain(outputs=6), ["block1"], NUM_CLASSES, config)
    with pytest.raises(BuildError, match="give a class_map"):
        wrong.update(images, labels, indices)
    wrong.close()
    flat = SummitPass(model, ["head"], NUM_CLASSES, config)
    with pytest.raises(BuildError, match="not a \\[B, C, H, W\\] map or a \\[B, T, D\\] token"):
        flat.update(images, labels, indices)
    flat.close()


def test_close_removes_hooks() -> None:
    model = make_chain()
    summit = SummitPass(model, LAYERS, NUM_CLASSES, SummitConfig())
    summit.close()
    images, _, _ = dataset(2, (3, 16, 16), seed=0)
    with torch.no_grad():
        model(images)  # would raise in the hooks (no batch state) if they were still there
    assert not summit._hooks._handles


@pytest.mark.parametrize("config", CONFIGS[:2], ids=["mass", "topk"])
def test_merged_shard_states_equal_one_pass(config: SummitConfig) -> None:
    """Shards (any split, any order) merged through state dicts give the reference exactly."""
    model = make_chain(seed=4)
    data = dataset(29, (3, 16, 16), seed=6)
    ref = reference_aggregates(model, LAYERS, NUM_CLASSES, config, *data)
    images, labels, indices = data
    order = torch.randperm(29, generator=torch.Generator().manual_seed(8))
    states = []
    for shard in (order[:4], order[4:20], order[20:]):
        with SummitPass(model, LAYERS, NUM_CLASSES, config) as summit:
            for start in range(0, len(shard), 6):
                rows = shard[start : start + 6]
                summit.update(images[rows], labels[rows], indices[rows])
            states.append(summit.state_dict())
    with SummitPass(model, LAYERS, NUM_CLASSES, config) as merged:
        for state in reversed(states):
            merged.merge_state_dict(state)
        assert_equal(merged.result(), ref)


def test_merging_a_state_of_other_classes_is_refused() -> None:
    model = make_chain(seed=4)
    images, labels, indices = dataset(5, (3, 16, 16), seed=6)
    with SummitPass(model, LAYERS, NUM_CLASSES, CONFIGS[0]) as summit:
        summit.update(images, labels, indices)
        state = summit.state_dict()
    state["num_images"] = torch.zeros(NUM_CLASSES + 1, dtype=torch.int64)
    with (
        SummitPass(model, LAYERS, NUM_CLASSES, CONFIGS[0]) as other,
        pytest.raises(BuildError, match="classes"),
    ):
        other.merge_state_dict(state)


def test_dense_and_sparse_counters_agree() -> None:
    """The dense array (small key spaces) and the sorted sparse form count identically."""
    from compute.summit import aggregate

    g = torch.Generator().manual_seed(3)
    batches = [torch.randint(0, 500, (n,), generator=g) for n in (0, 7, 300, 1, 64)]
    extra_keys, extra_counts = torch.tensor([3, 499, 3]), torch.tensor([5, 1, 2])
    counters = [aggregate.SparseCounter(torch.device("cpu"), flush_at=50) for _ in range(3)]
    counters[1].use_dense(500)
    for k, batch in enumerate(batches):
        if k == 2:
            counters[2].use_dense(500)  # switched mid-way: what was counted moves over
        for counter in counters:
            counter.add(batch)
    for counter in counters:
        counter.add_counts(extra_keys, extra_counts)
        counter.flush()
    extra = torch.tensor([3] * 7 + [499])  # extra_keys repeated by extra_counts
    expected = torch.bincount(torch.cat([*batches, extra]), minlength=500)
    keys = torch.nonzero(expected).view(-1)
    for counter in counters:
        torch.testing.assert_close(counter.keys, keys)
        torch.testing.assert_close(counter.counts, expected[keys])


def test_sparse_counting_matches_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every key space above the dense limit the sorted sparse counter is used."""
    from compute.summit import aggregate

    monkeypatch.setattr(aggregate, "DENSE_COUNTER_LIMIT", 0)
    model = make_chain(seed=5)
    data = dataset(19, (3, 16, 16), seed=9)
    ref = reference_aggregates(model, LAYERS, NUM_CLASSES, CONFIGS[1], *data)
    assert_equal(run_fast(model, LAYERS, CONFIGS[1], data, 4), ref)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_float32_pass_matches_reference_with_influence_workers(monkeypatch, workers: int) -> None:
    """float32 takes the packed selection; the deferred influence step gives the same
    counts inline or split over worker threads, for batches of 1, odd and all images."""
    from compute.summit import aggregate

    monkeypatch.setattr(aggregate, "INFLUENCE_WORKERS", workers)
    model = make_integer(seed=6).float()  # integer values: exact in float32, real ties
    images, labels, indices = dataset(13, (2, 9, 9), seed=6, integer=True)
    data = (images.float(), labels, indices)
    layers = ["relu1", "relu2", "relu3"]
    config = SummitConfig(selection="topk", top_k=2, influence_top_k=2, examples_per_channel=4)
    ref = reference_aggregates(model, layers, NUM_CLASSES, config, *data)
    for batch in (1, 5, 13):
        assert_equal(run_fast(model, layers, config, data, batch), ref)
    chain = make_chain(seed=7).float()
    images, labels, indices = dataset(11, (3, 16, 16), seed=7)
    data = (images.float(), labels, indices)
    ref = reference_aggregates(chain, LAYERS, NUM_CLASSES, CONFIGS[0], *data)
    assert ref.influence_counts[3] is not None and ref.influence_counts[3].nnz > 0
    # One batch, as the reference: float32 forward passes differ in the last bit between
    # batch sizes (the backend picks other kernels), which is not what is tested here.
    assert_equal(run_fast(chain, LAYERS, CONFIGS[0], data, 11), ref)


def test_influence_in_the_hook_equals_the_deferred_step(monkeypatch) -> None:
    """Above ``DEFER_LIMIT`` (and on accelerators) influence is reduced in the hook."""
    from compute.summit import aggregate

    model = make_chain(seed=9)
    data = dataset(10, (3, 16, 16), seed=10)
    ref = reference_aggregates(model, LAYERS, NUM_CLASSES, CONFIGS[1], *data)
    for limit in (0, 700):  # never deferred; only the small late inputs deferred
        monkeypatch.setattr(aggregate, "DEFER_LIMIT", limit)
        assert_equal(run_fast(model, LAYERS, CONFIGS[1], data, 3), ref)


def test_deferred_copy_is_immune_to_later_in_place_changes() -> None:
    """The convolution input is copied in its hook: an in-place change of that tensor after
    the convolution has read it does not alter the counts."""

    class InPlace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
            self.relu2 = nn.ReLU()
            self.head = nn.Linear(3, NUM_CLASSES)

        def forward(self, x: Tensor) -> Tensor:
            h = self.relu1(self.conv1(x))
            y = self.relu2(self.conv2(h))
            h.mul_(-1.0)  # after conv2 has read it
            return self.head(y.amax(dim=(2, 3)) + h.mean())

    torch.manual_seed(11)
    model = InPlace().double().eval()
    data = dataset(6, (2, 8, 8), seed=11)
    ref = reference_aggregates(model, ["relu1", "relu2"], NUM_CLASSES, CONFIGS[1], *data)
    assert_equal(run_fast(model, ["relu1", "relu2"], CONFIGS[1], data, 4), ref)
