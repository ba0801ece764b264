"""Instance records equal the plain per-input definition: the recorded inputs are the two
bottom-K sets of the hash (every input, the misclassified ones), and each record's channels,
maxima, positions and edges are what a pass over that one input counts; batch order, shards
and a restored checkpoint give the same records."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from compute.atlas import Atlas, InstanceArrays
from compute.capture import TensorRecorder
from compute.connect import InceptionConnection
from compute.errors import BuildError
from compute.summit.aggregate import SummitAggregates, SummitPass
from compute.summit.config import SummitConfig
from compute.summit.instances import REASON_MISTAKE, REASON_SAMPLE, InstanceConfig
from compute.topology.sample import image_hash
from tests.unit import test_aggregate, test_inception
from tests.unit.test_build import build_tiny, class_dataset, tiny_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = {
    "chain": (test_aggregate.make_chain, test_aggregate.LAYERS, test_aggregate.NUM_CLASSES, 8),
    "inception": (test_inception.make_net, test_inception.LAYERS, test_inception.NUM_CLASSES, 7),
}
CONFIG = SummitConfig(selection="topk", top_k=3, influence_top_k=2, subsets=False)


def data(classes: int, size: int, n: int = 30) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(21)
    images = torch.randn(n, 3, size, size, dtype=torch.float64, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    return images, labels, torch.arange(n) * 5 + 2


def run(
    model: nn.Module,
    layers: list[str],
    classes: int,
    batches: list[tuple[Tensor, Tensor, Tensor]],
    instances: InstanceConfig | None,
) -> SummitAggregates:
    with SummitPass(model, layers, classes, CONFIG, instances=instances) as summit:
        for batch in batches:
            summit.update(*batch)
        return summit.result()


def split(batch: tuple[Tensor, ...], size: int, order: Tensor | None = None) -> list[tuple]:
    if order is not None:
        batch = tuple(t[order] for t in batch)
    n = batch[0].shape[0]
    return [tuple(t[s : s + size] for t in batch) for s in range(0, n, size)]


def record(arrays: InstanceArrays, row: int, layer: int) -> tuple[np.ndarray, ...]:
    a, b = arrays.channel_indptr[layer][row : row + 2]
    e0, e1 = arrays.edge_indptr[layer][row : row + 2]
    return (
        arrays.channel[layer][a:b],
        arrays.value[layer][a:b],
        arrays.position[layer][a:b],
        arrays.edge[layer][e0:e1],
    )


def same_records(x: InstanceArrays, y: InstanceArrays) -> None:
    for name in ("image_index", "label", "prediction", "reason", "confidence", "margin"):
        np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=name)
    for name in ("channel_indptr", "channel", "value", "position", "edge_indptr", "edge"):
        for a, b in zip(getattr(x, name), getattr(y, name), strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)


def direct_rows(model: nn.Module, layers: list[str], classes: int) -> list[int]:
    """Output channels of the Inception block's one-convolution branches."""
    with SummitPass(model, layers, classes, CONFIG) as summit:
        connection = summit.connections[1]
    assert isinstance(connection, InceptionConnection)
    return [
        row
        for branch in connection.branches
        if branch.bottleneck is None
        for row in range(branch.offset, branch.offset + branch.channels)
    ]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_records_equal_the_per_input_definition(name: str) -> None:
    make, layers, classes, size = MODELS[name]
    model = make()
    images, labels, indices = data(classes, size)
    config = InstanceConfig(sample=3, mistakes=4, seed=3)
    result = run(model, layers, classes, split((images, labels, indices), 4), config)
    arrays = result.instances
    assert arrays is not None
    # Which inputs: the 3 smallest keys, and the 4 smallest keys among the mistakes.
    with torch.no_grad():
        logits = model(images)
    predicted = logits.argmax(dim=1).numpy()
    keys = image_hash(3, indices.numpy())
    sample = set(np.argsort(keys)[:3].tolist())
    wrong = np.flatnonzero(predicted != labels.numpy())
    mistakes = set(wrong[np.argsort(keys[wrong])][:4].tolist())
    rows = sorted(sample | mistakes)
    assert len(mistakes) == 4 and len(rows) > len(sample)
    np.testing.assert_array_equal(arrays.image_index, indices.numpy()[rows])
    np.testing.assert_array_equal(arrays.prediction, predicted[rows])
    # Certainty: the softmax's top probability and its lead over the runner-up.
    top = torch.softmax(logits.double(), dim=1).topk(2, dim=1).values.numpy()[rows]
    np.testing.assert_allclose(arrays.confidence, top[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arrays.margin, top[:, 0] - top[:, 1], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(
        arrays.reason,
        [(REASON_SAMPLE if r in sample else 0) | (REASON_MISTAKE if r in mistakes else 0)
         for r in rows],
    )  # fmt: skip
    # What: each record is what a pass over that one input counts.
    inception = {1} if name == "inception" else set()
    for row, k in enumerate(rows):
        one = tuple(t[k : k + 1] for t in (images, labels, indices))
        alone = run(model, layers, classes, [one], None)
        with TensorRecorder(model, outputs=layers) as seen, torch.no_grad():
            model(images[k : k + 1])
        c = int(labels[k])
        for layer, layer_name in enumerate(layers):
            channels, values, positions, edges = record(arrays, row, layer)
            np.testing.assert_array_equal(
                channels, np.flatnonzero(alone.activation_counts[layer][c])
            )
            output = seen.outputs[layer_name][0][0]
            flat = output.flatten(1)
            np.testing.assert_array_equal(values, flat.amax(1).float().numpy()[channels])
            where = flat.argmax(1).numpy()[channels]
            np.testing.assert_array_equal(
                positions, np.stack([where // output.shape[2], where % output.shape[2]], 1)
            )
            if layer == 0:
                assert edges.shape == (0, 2)
                continue
            influence = alone.influence_counts[layer]
            assert influence is not None
            block = influence.toarray().reshape(classes, -1, influence.shape[1])[c]
            chosen = np.zeros(block.shape[0], bool)
            chosen[channels] = True
            below = np.zeros(block.shape[1], bool)
            below[record(arrays, row, layer - 1)[0]] = True
            if layer in inception:  # only the direct branches' edges are per input
                mask = np.zeros(block.shape[0], bool)
                mask[direct_rows(model, layers, classes)] = True
                chosen &= mask
            want = np.argwhere(block * chosen[:, None] * below[None, :] > 0)
            np.testing.assert_array_equal(edges, want, err_msg=f"edges of layer {layer}")
    assert sum(e.shape[0] for e in arrays.edge) > 0


def test_batch_order_shards_and_checkpoints_give_the_same_records() -> None:
    make, layers, classes, size = MODELS["inception"]
    model = make()
    batch = data(classes, size)
    config = InstanceConfig(sample=4, mistakes=3, seed=1)
    whole = run(model, layers, classes, split(batch, 5), config).instances
    order = torch.randperm(30, generator=torch.Generator().manual_seed(0))
    shuffled = run(model, layers, classes, split(batch, 3, order), config).instances
    assert whole is not None and shuffled is not None
    same_records(whole, shuffled)
    states = []
    for part in (slice(0, 13), slice(13, 30)):
        with SummitPass(model, layers, classes, CONFIG, instances=config) as shard:
            for piece in split(tuple(t[part] for t in batch), 4):
                shard.update(*piece)
            states.append(shard.state_dict())
    with SummitPass(model, layers, classes, CONFIG, instances=config) as merged:
        for state in states:
            merged.merge_state_dict(state)
        merged_records = merged.result().instances
    assert merged_records is not None
    same_records(whole, merged_records)
    old = {k: v for k, v in states[0].items() if not k.startswith("instances.")}
    fresh = SummitPass(model, layers, classes, CONFIG, instances=config)
    with fresh, pytest.raises(BuildError, match="instance records"):
        fresh.merge_state_dict(old)


def test_a_users_list_records_exactly_those_inputs() -> None:
    make, layers, classes, size = MODELS["chain"]
    batch = data(classes, size)
    wanted = (7, 52, 142, 999)  # 999 is not in the data
    result = run(make(), layers, classes, split(batch, 4), InstanceConfig(indices=wanted))
    assert result.instances is not None
    assert result.instances.image_index.tolist() == [7, 52, 142]
    with pytest.raises(BuildError):
        InstanceConfig(sample=-1)


def test_a_built_atlas_holds_the_passs_records(tmp_path) -> None:
    """The build writes the records the pass keeps; the reader gives them back checked."""
    config = InstanceConfig(sample=4, mistakes=3, seed=2)
    path = build_tiny(tmp_path / "atlas", instances=config)
    atlas = Atlas.open(path, verify_hashes=True)
    assert "instances" in atlas.parts
    assert atlas.parameters["instances"] == {"sample": 4, "mistakes": 3, "seed": 2}
    records = atlas.instances()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = tiny_cnn()
    dataset = class_dataset()
    loader_config = SummitConfig(
        selection="topk", top_k=2, influence_top_k=2, examples_per_channel=4
    )
    with SummitPass(model, ["1", "4"], 3, loader_config, instances=config) as summit:
        for start in range(0, len(dataset), 4):
            images, labels = (
                dataset.tensors[0][start : start + 4],
                dataset.tensors[1][start : start + 4],
            )
            summit.update(images, labels, torch.arange(start, start + images.shape[0]))
        want = summit.result().instances
    assert want is not None
    same_records(records, want)
    row = 2
    assert atlas.instance_row(int(records.image_index[row])) == row
    assert atlas.instance_row(10**6) is None
    channels, values, positions = records.channels(row, 1)
    assert channels.shape == values.shape == positions.shape[:1] and channels.size
    assert records.edges(row, 1).shape[1] == 2
    # Each recorded input's image is stored: the model's input (min-max stretched: the tiny
    # build gives no normalisation), what the dashboard cuts the input's own crops from.
    for index in records.image_index.tolist():
        relpath = atlas.instance_input(index)
        assert relpath is not None and relpath.endswith(".jpg")
        image = np.asarray(Image.open(io.BytesIO(atlas.read_bytes(relpath))), dtype=float)
        pixels = dataset.tensors[0][index].permute(1, 2, 0).double()
        want = (pixels - pixels.min()) / (pixels.max() - pixels.min()) * 255
        assert image.shape == tuple(want.shape)
        # JPEG: close, not equal (these inputs are noise, JPEG's worst case)
        correlation = np.corrcoef(image.ravel(), want.numpy().ravel())[0, 1]
        assert correlation > 0.95, f"input {index}: {correlation}"
        assert abs(image.mean() - float(want.mean())) < 3
    assert atlas.instance_input(10**6) is None
    none = build_tiny(tmp_path / "none", instances=None)
    assert "instances" not in Atlas.open(none).parts
