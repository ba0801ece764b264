"""ActivationSampler: order-, batch- and process-independent bounded sample for Mapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compute.capture import HookSet, merge_rider_states, rider_states
from compute.errors import BuildError
from compute.topology.sample import (
    ActivationSampler,
    image_hash,
    sample_positions,
)

SHAPES = {"conv1": (6, 5, 4), "conv2": (3, 2, 2)}
NUM_IMAGES = 300


def dataset(seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Deterministic per-image outputs (so any batching sees the same tensors)."""
    gen = torch.Generator().manual_seed(seed)
    outputs = {
        name: torch.rand(NUM_IMAGES, *shape, generator=gen) for name, shape in SHAPES.items()
    }
    labels = torch.randint(0, 10, (NUM_IMAGES,), generator=gen)
    return outputs, labels, torch.arange(NUM_IMAGES)


def feed(sampler: ActivationSampler, order: np.ndarray, batch: int) -> ActivationSampler:
    outputs, labels, indices = dataset()
    for start in range(0, len(order), batch):
        rows = torch.from_numpy(order[start : start + batch])
        sampler.update({k: v[rows] for k, v in outputs.items()}, labels[rows], indices[rows])
    return sampler


def new(capacity: int = 50, mode: str = "position", seed: int = 3) -> ActivationSampler:
    return ActivationSampler(list(SHAPES), list(SHAPES.values()), capacity, seed, mode)


def assert_same(a: ActivationSampler, b: ActivationSampler) -> None:
    ra, rb = a.result(), b.result()
    for name in SHAPES:
        for field in ("vectors", "image_index", "label", "position"):
            np.testing.assert_array_equal(getattr(ra[name], field), getattr(rb[name], field))


@pytest.mark.parametrize("mode", ["position", "mean"])
def test_order_batch_and_split_independent(mode: str) -> None:
    in_order = feed(new(mode=mode), np.arange(NUM_IMAGES), 32)
    shuffled = feed(new(mode=mode), np.random.default_rng(1).permutation(NUM_IMAGES), 7)
    perm = np.random.default_rng(2).permutation(NUM_IMAGES)
    left = feed(new(mode=mode), perm[:120], 16)
    right = feed(new(mode=mode), perm[120:], 64)
    merged = left.merge(right)
    assert_same(in_order, shuffled)
    assert_same(in_order, merged)
    # Merging into an empty sampler is the identity too.
    assert_same(in_order, new(mode=mode).merge(in_order))


def test_keeps_the_capacity_smallest_hashes_with_their_vectors() -> None:
    sampler = feed(new(capacity=40), np.arange(NUM_IMAGES), 25)
    result = sampler.result()
    expected = np.sort(np.argsort(image_hash(3, np.arange(NUM_IMAGES)))[:40])
    outputs, labels, _ = dataset()
    for name, (_, height, width) in SHAPES.items():
        sample = result[name]
        np.testing.assert_array_equal(sample.image_index, expected)
        np.testing.assert_array_equal(sample.label, labels.numpy()[expected])
        assert sample.vectors.dtype == np.float32 and sample.vectors.shape == (40, SHAPES[name][0])
        assert sample.image_index.dtype == np.int64 and sample.position.dtype == np.int32
        pos = sample_positions(3, expected, name, height, width)
        np.testing.assert_array_equal(sample.position, pos)
        want = outputs[name].numpy()[expected, :, pos[:, 0], pos[:, 1]]
        np.testing.assert_array_equal(sample.vectors, want)


def test_mean_mode_stores_spatial_mean() -> None:
    result = feed(new(capacity=NUM_IMAGES, mode="mean"), np.arange(NUM_IMAGES), 50).result()
    outputs, _, _ = dataset()
    sample = result["conv1"]
    np.testing.assert_allclose(sample.vectors, outputs["conv1"].mean(dim=(2, 3)).numpy(), rtol=1e-6)
    assert (sample.position == -1).all()


def test_memory_is_bounded() -> None:
    sampler = new(capacity=20)
    outputs, labels, indices = dataset()
    row_bytes = 8 + 8 + 8 + sum(4 * c + 8 for c, _, _ in SHAPES.values())
    for _ in range(3):  # 900 distinct images in all
        for start in range(0, NUM_IMAGES, 50):
            sl = slice(start, start + 50)
            sampler.update(
                {k: v[sl] for k, v in outputs.items()}, labels[sl], indices[sl] + _ * 1000
            )
            assert sampler.count <= 20
            assert sampler.nbytes <= 20 * row_bytes
    assert sampler.count == 20


def test_position_hash_is_deterministic_and_in_range() -> None:
    idx = np.arange(10_000)
    a = sample_positions(0, idx, "layer4.1", 7, 5)
    np.testing.assert_array_equal(a, sample_positions(0, idx, "layer4.1", 7, 5))
    assert a[:, 0].min() == 0 and a[:, 0].max() == 6 and a[:, 1].max() == 4
    # Roughly uniform over the 35 cells, and different per layer and per seed.
    counts = np.bincount(a[:, 0] * 5 + a[:, 1], minlength=35)
    assert counts.min() > 200
    assert (a != sample_positions(0, idx, "layer4.0", 7, 5)).any()
    assert (a != sample_positions(1, idx, "layer4.1", 7, 5)).any()
    # Fixed values: the rule must not change silently between releases.
    assert sample_positions(0, np.array([0, 1, 2]), "x", 4, 4).tolist() == [[0, 0], [1, 3], [3, 0]]
    assert len(np.unique(image_hash(0, idx))) == len(idx)


def test_rejects_bad_input() -> None:
    sampler = new()
    outputs, labels, indices = dataset()
    with pytest.raises(ValueError, match="output shape"):
        sampler.update(
            {"conv1": outputs["conv1"][:4], "conv2": outputs["conv2"][:5]}, labels[:4], indices[:4]
        )
    with pytest.raises(ValueError, match="merge"):
        sampler.merge(new(capacity=7))
    with pytest.raises(ValueError, match="mode"):
        new(mode="max")


def test_per_layer_hook_api_matches_update() -> None:
    outputs, labels, indices = dataset()
    hooked = new()
    for start in range(0, NUM_IMAGES, 40):
        sl = slice(start, start + 40)
        hooked.begin_batch(labels[sl], indices[sl])
        for name in reversed(list(SHAPES)):  # hooks may fire in any order
            hooked.add_layer(name, outputs[name][sl])
    assert_same(hooked, feed(new(), np.arange(NUM_IMAGES), 40))
    incomplete = new()
    incomplete.begin_batch(labels[:10], indices[:10])
    incomplete.add_layer("conv1", outputs["conv1"][:10])
    with pytest.raises(RuntimeError, match="conv2"):
        incomplete.result()


def _same(a: ActivationSampler, b: ActivationSampler) -> None:
    ra, rb = a.result(), b.result()
    for name in SHAPES:
        np.testing.assert_array_equal(ra[name].image_index, rb[name].image_index)
        np.testing.assert_array_equal(ra[name].label, rb[name].label)
        np.testing.assert_array_equal(ra[name].vectors, rb[name].vectors)
        np.testing.assert_array_equal(ra[name].position, rb[name].position)


@pytest.mark.parametrize("mode", ["position", "mean"])
def test_state_dicts_of_shards_merge_to_one_pass(mode: str) -> None:
    whole = feed(new(mode=mode), np.arange(NUM_IMAGES), 32)
    merged = new(mode=mode)
    for shard in np.array_split(np.arange(NUM_IMAGES), 3):  # contiguous, as torchrun ranks
        part = feed(new(mode=mode), shard, 17)
        state = {k: v.clone() for k, v in part.state_dict().items()}
        merged.merge_state_dict(state)
    _same(merged, whole)


def test_state_dict_round_trip_restores_and_continues() -> None:
    order = np.arange(NUM_IMAGES)
    whole = feed(new(capacity=40), order, 25)
    first = feed(new(capacity=40), order[:100], 25)
    resumed = new(capacity=40).merge_state_dict(first.state_dict())
    _same(resumed, first)
    feed(resumed, order[100:], 25)
    _same(resumed, whole)
    empty = new(capacity=40).merge_state_dict(new(capacity=40).state_dict())
    assert empty.count == 0


def test_state_dict_refuses_other_settings() -> None:
    state = feed(new(capacity=40), np.arange(50), 25).state_dict()
    with pytest.raises(ValueError, match="same layers"):
        new(capacity=41).merge_state_dict(state)
    with pytest.raises(ValueError, match="same layers"):
        new(capacity=40, seed=4).merge_state_dict(state)


def test_as_a_rider_its_prefixed_states_merge_to_one_pass() -> None:
    """The sampler as a :class:`BatchRider`: the shards' prefixed states (checkpoints, rank
    merges) merged into an empty copy equal one pass; a state of a rider the build does not
    run is refused."""
    whole = feed(new(), np.arange(NUM_IMAGES), 32)
    merged = new().empty_copy()
    assert merged.name == "mapper" and merged.count == 0
    for shard in np.array_split(np.arange(NUM_IMAGES), 3):
        state = rider_states([feed(new(), shard, 17)])
        assert state is not None and all(key.startswith("mapper/") for key in state)
        merge_rider_states([merged], state)
    _same(merged, whole)
    assert rider_states([]) is None
    with pytest.raises(BuildError, match="rider 'records'"):
        merge_rider_states([merged], {"records/x": torch.zeros(1)})


def test_attach_samples_the_layers_in_the_forward() -> None:
    """``attach`` registers one output hook per layer: a forward through those modules
    after ``begin_batch`` samples as ``update`` does."""
    outputs, labels, indices = dataset()
    modules = {name: torch.nn.Identity() for name in SHAPES}
    rider = new()
    with HookSet() as hooks:
        rider.attach(hooks, modules)
        for start in range(0, NUM_IMAGES, 32):
            rows = slice(start, start + 32)
            rider.begin_batch(labels[rows], indices[rows])
            for name, module in modules.items():
                module(outputs[name][rows])
    _same(rider, feed(new(), np.arange(NUM_IMAGES), 32))
