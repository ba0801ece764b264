"""The synthetic atlas: a complete, valid, deterministic atlas without a model."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compute.atlas import GRAPH_PATHS, Atlas, featurevis_path
from compute.errors import BuildError
from compute.synthetic import (
    FEATUREVIS_SIZE,
    register_cli,
    synthetic_class_names,
    synthetic_counts,
    write_synthetic_atlas,
)

SMALL = {"num_classes": 12, "layer_channels": (8, 16, 16), "images_per_class": 50}


@pytest.fixture(scope="module")
def small_atlas(tmp_path_factory: pytest.TempPathFactory) -> Atlas:
    path = write_synthetic_atlas(tmp_path_factory.mktemp("syn") / "atlas", seed=5, **SMALL)
    return Atlas.open(path, verify_hashes=True)


def test_manifest_and_shapes(small_atlas: Atlas) -> None:
    atlas = small_atlas
    assert atlas.title == "Synthetic ImageNet-shaped atlas"
    assert atlas.parts == {
        "summit",
        "examples",
        "embedding",
        "graphs",
        "mapper",
        "featurevis",
        "trace",
        "instances",
    }
    assert atlas.parameters["synthetic"] is True
    assert atlas.manifest["dataset"]["split"] == "synthetic"
    assert atlas.layer_names == ("layer0", "layer1", "layer2")
    assert [layer.influence_from for layer in atlas.layers] == [None, "layer0", "layer1"]
    assert len(set(atlas.classes)) == 12
    stats = atlas.class_stats()
    assert np.all(stats["num_correct"] <= stats["num_images"])
    np.testing.assert_array_equal(stats["confidence_hist"].sum(axis=1), stats["num_images"])
    for t, layer in enumerate(atlas.layers):
        counts = atlas.activation_counts(t)
        assert counts.shape == (12, layer.channels)
        assert counts.min() >= 0 and np.all(counts <= stats["num_images"][:, None])
        assert atlas.embedding(t).shape == (12, 2)
        table = atlas.examples(t)
        assert table.image_index.shape == (layer.channels, 10)
        assert np.all(np.diff(table.activation, axis=1) <= 0)  # best first
        assert np.all(table.position < [layer.height, layer.width])
        assert atlas.example_crop(t, layer.channels - 1, 0) is not None
        if t > 0:
            influence = atlas.influence_counts(t)
            assert influence.shape == (12 * layer.channels, atlas.layers[t - 1].channels)
            assert influence.data.min() > 0


def test_mapper_part(small_atlas: Atlas, tmp_path: Path) -> None:
    from compute.topology import MapperIndex, MapperParams

    atlas = small_atlas
    stats = atlas.class_stats()
    sample = atlas.mapper_sample(2)
    n = atlas.parameters["mapper"]["num_points"]
    assert sample.vectors.shape == (n, 16) and n == min(2_000, int(stats["num_images"].sum()))
    assert sample.vectors.min() >= 0  # ReLU
    assert np.all(np.diff(sample.image_index) > 0) and sample.label.max() < 12
    graph = MapperIndex.from_arrays(atlas.mapper_index_arrays(2)).mapper(MapperParams())
    assert graph.num_nodes > 0
    assert any(atlas.mapper_crop(2, row) for row in range(n))


def test_featurevis_part(small_atlas: Atlas) -> None:
    from PIL import Image

    atlas = small_atlas
    assert atlas.parameters["featurevis"]["layers"] == list(atlas.layer_names)
    for t, layer in enumerate(atlas.layers):
        for channel in (0, layer.channels - 1):
            for kind in ("vis", "div-0", "div-3"):
                relpath = featurevis_path(t, channel, kind)
                assert relpath in atlas.files
                with Image.open(atlas.path / relpath) as image:
                    assert image.size == (FEATUREVIS_SIZE, FEATUREVIS_SIZE)
                    assert image.mode == "RGB"
    vis = [atlas.files[featurevis_path(0, c)]["sha256"] for c in range(8)]
    assert len(set(vis)) == 8  # a different picture per channel


def test_trace_part_shapes_and_invariants(small_atlas: Atlas) -> None:
    atlas = small_atlas
    meta, a = atlas.trace()  # shape-checked by the reader
    n, t, c = meta["num_images"], len(meta["layers"]), atlas.num_classes
    assert (n, t, c) == (200, 2, 12)
    assert [layer["name"] for layer in meta["layers"]] == ["layer2", "logits"]
    stats = atlas.class_stats()
    assert meta["num_train"] == int(stats["num_images"].sum()) == a["train_label"].shape[0]
    np.testing.assert_array_equal(np.bincount(a["train_label"]), stats["num_images"])
    assert np.all(np.diff(a["image_index"]) > 0)
    np.testing.assert_array_equal(a["train_label"][a["image_index"]], a["image_label"])
    assert 0.5 < np.mean(a["prediction"] == a["image_label"]) < 1.0
    np.testing.assert_allclose(a["class_share"].sum(axis=2), 1.0, atol=1e-4)
    np.testing.assert_allclose(a["epoch_share"][:, :, -1], a["class_share"], atol=1e-6)
    np.testing.assert_allclose(a["epoch_cosine"][:, :, -1], 1.0)
    assert np.all(np.diff(a["epoch_cosine"], axis=2) >= 0)
    norms = a["norms"]
    assert norms.min() > 0 and np.all(norms[..., 2] <= norms[..., 0] + norms[..., 1] + 1e-4)
    assert a["ridge_hist"].min() >= 0
    np.testing.assert_allclose(a["ridge_edges"], np.linspace(-1, 1, 21), atol=1e-6)
    assert np.all(np.diff(a["proponent_score"], axis=2) <= 0) and a["proponent_score"].min() > 0
    assert np.all(np.diff(a["opponent_score"], axis=2) >= 0) and a["opponent_score"].max() < 0
    for name in ("proponent_index", "opponent_index"):
        assert a[name].min() >= 0 and a[name].max() < meta["num_train"]
    own = a["train_label"][a["proponent_index"]] == a["image_label"][:, None, None]
    assert own.mean() > 0.6
    assert np.all(a["train_label"][a["opponent_index"]] != a["image_label"][:, None, None])
    assert atlas.trace_thumbnail("test", n - 1) is not None
    assert atlas.trace_thumbnail("train", int(a["opponent_index"][0, 0, 0])) is not None


def test_parts_load_in_the_dashboard_data_layer(small_atlas: Atlas) -> None:
    from dashboard import data as atlas_data
    from dashboard.state import ViewState
    from dashboard.views.topology.data import MapperData
    from dashboard.views.training.data import trace_data

    data = atlas_data.load(str(small_atlas.path), None)
    assert data.featurevis(1, 3) == featurevis_path(1, 3)
    assert len(data.diversity(1, 3)) == 4
    trace = trace_data(data)
    assert trace is not None and trace.num_layers == 2
    row = int(trace.rows("all", None)[0])
    image = trace.image(row, trace.default_layer)
    assert image["class_share"].shape == (13,)
    examples = trace.examples(row, trace.default_layer, "proponent")
    assert len(examples) == 10 and all(e.thumbnail for e in examples)
    mapper = MapperData(data)
    assert mapper.available
    params, _ = mapper.params(ViewState(), 2)
    assert mapper.result(2, params).graph.num_nodes > 0


def test_parts_can_be_left_out(tmp_path: Path) -> None:
    path = write_synthetic_atlas(
        tmp_path / "bare",
        featurevis=False,
        trace_images=0,
        mapper_points=0,
        instances=0,
        **SMALL,
    )
    assert Atlas.open(path).parts == {"summit", "examples", "embedding", "graphs"}
    with pytest.raises(BuildError):
        write_synthetic_atlas(tmp_path / "bad", trace_images=-1, **SMALL)


def test_graphs_non_empty_and_consistent_with_counts(small_atlas: Atlas) -> None:
    atlas = small_atlas
    channels = [layer.channels for layer in atlas.layers]
    for c in range(atlas.num_classes):
        graph = atlas.graph(c)
        assert graph.num_nodes > 0 and graph.num_edges > 0
        for s, d, w in zip(graph.source, graph.target, graph.weight, strict=True):
            t = int(graph.layer[d])
            assert graph.layer[s] == t - 1
            i, j = int(graph.channel[d]), int(graph.channel[s])
            assert atlas.influence_counts(t, c)[i, j] == w
        for t in range(len(channels)):
            kept = graph.channel[graph.layer == t]
            # Kept nodes are active channels of the class (PageRank > 0 via A or edges).
            assert np.all(kept < channels[t])


def test_deterministic_for_a_seed(tmp_path: Path, small_atlas: Atlas) -> None:
    again = Atlas.open(write_synthetic_atlas(tmp_path / "again", seed=5, **SMALL))
    assert again.files == small_atlas.files  # same sha256 for every file
    other = Atlas.open(write_synthetic_atlas(tmp_path / "other", seed=6, **SMALL))
    key = "layers/00/activation_counts.npy"
    assert other.files[key]["sha256"] != small_atlas.files[key]["sha256"]


def test_overwrite_and_bad_arguments(tmp_path: Path) -> None:
    path = write_synthetic_atlas(tmp_path / "a", num_classes=3, layer_channels=(4, 4))
    with pytest.raises(Exception, match="already exists"):
        write_synthetic_atlas(path, num_classes=3, layer_channels=(4, 4))
    write_synthetic_atlas(path, num_classes=3, layer_channels=(4, 4), overwrite=True, seed=1)
    with pytest.raises(BuildError):
        write_synthetic_atlas(tmp_path / "b", num_classes=1)
    with pytest.raises(BuildError):
        write_synthetic_atlas(tmp_path / "b", num_classes=3, layer_channels=(4,), embedding="x")


def test_inception_shape_names_and_class_names() -> None:
    counts, influence, stats = synthetic_counts(30, rng=1)
    assert [a.shape[1] for a in counts] == [256, 480, 508, 512, 512, 528, 832, 832, 1024]
    assert influence[0] is None and influence[8].shape == (30 * 1024, 832)
    assert stats["num_images"].max() <= 1300
    names = synthetic_class_names(1700)
    assert len(set(names)) == 1700


def test_cli_subcommand(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    args = parser.parse_args(
        ["synthetic", "--out", str(out), "--classes", "4", "--channels", "4", "6", "--seed", "2"]
    )
    assert args.run(args) == 0
    atlas = Atlas.open(out, verify_hashes=True)
    assert atlas.num_classes == 4 and len(atlas.layers) == 2
    assert set(GRAPH_PATHS.values()) <= set(atlas.files)


def test_imports_no_torch() -> None:
    code = (
        "import sys, compute.synthetic, compute.summit.graph, compute.summit.embedding; "
        "bad = [m for m in ('torch', 'dash', 'umap') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_confusion_is_consistent_with_accuracy(small_atlas: Atlas) -> None:
    """Rows add up to the class's images, the diagonal is its correct ones, and mistakes go
    to at most five other classes."""
    stats = small_atlas.class_stats()
    confusion = small_atlas.confusion()
    assert confusion is not None
    np.testing.assert_array_equal(confusion.sum(axis=1), stats["num_images"])
    np.testing.assert_array_equal(np.diag(confusion), stats["num_correct"])
    off = confusion - np.diag(np.diag(confusion))
    assert ((off > 0).sum(axis=1) <= 5).all() and off.sum() > 0


def test_synthetic_instance_records_agree_with_the_atlas(small_atlas: Atlas) -> None:
    """Records of inputs of real classes, channels within each layer, edges between the
    input's own selected channels, and an Instance graph that reads them."""
    from compute.summit.instance_graph import instance_graph

    records = small_atlas.instances()
    assert records.num_instances > 0
    assert np.all(np.diff(records.image_index) > 0)
    assert np.all((records.label >= 0) & (records.label < small_atlas.num_classes))
    for row in (0, records.num_instances - 1):
        for layer, info in enumerate(small_atlas.layers):
            channels, _, positions = records.channels(row, layer)
            assert np.all(channels < info.channels) and channels.size
            assert np.all((positions >= 0) & (positions < info.height))
            if layer:
                below = set(records.channels(row, layer - 1)[0].tolist())
                for target, source in records.edges(row, layer).tolist():
                    assert target in channels and source in below
        assert 0 <= instance_graph(small_atlas, row).overlap <= 1
