"""The demo atlas that ships inside the package, and the demo that rebuilds it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compute.atlas import FORMAT_VERSION, Atlas

SHIPPED = Path(__file__).resolve().parents[2] / "dashboard" / "demos" / "digits"


@pytest.fixture(scope="module")
def shipped() -> Atlas:
    return Atlas.open(SHIPPED, verify_hashes=True)


def test_shipped_atlas_is_valid_for_the_current_format(shipped: Atlas) -> None:
    assert shipped.version == FORMAT_VERSION
    assert {
        "summit",
        "examples",
        "embedding",
        "graphs",
        "featurevis",
        "mapper",
        "trace",
    } <= shipped.parts
    assert len(shipped.classes) == 10
    total = sum(path.stat().st_size for path in SHIPPED.rglob("*") if path.is_file())
    assert total <= 15 * 2**20, f"demo atlas is {total / 2**20:.1f} MB, keep it <= 15 MB"


def test_shipped_atlas_reports_accuracy_on_both_splits(shipped: Atlas) -> None:
    accuracy = shipped.manifest["metrics"]["accuracy"]
    assert accuracy["train"] > 0.95 and accuracy["test"] > 0.9
    stats = shipped.class_stats()
    assert int(stats["num_images"].sum()) == shipped.manifest["dataset"]["num_images"]


def test_demo_selects_a_handful_of_channels_per_image(shipped: Atlas) -> None:
    images = int(shipped.class_stats()["num_images"].sum())
    for layer in shipped.layer_names:
        per_image = shipped.activation_counts(layer).sum() / images
        assert 1.5 <= per_image <= 12, f"{layer}: {per_image:.1f} channels per image"


def test_rebuilding_the_demo_reproduces_the_shipped_counts(tmp_path: Path, shipped: Atlas) -> None:
    """The shipped atlas's own weights, built again, give exactly its counts. (Training is
    not part of this: float32 training follows the CPU's kernels, so another processor
    trains other weights; the build from given weights is what must not drift.)"""
    from compute.demo import DemoConfig, build_demo_summit, digits_cnn, load_digits_splits
    from compute.models import load_weights

    config = DemoConfig()
    model = digits_cnn()
    load_weights(model, shipped.path / shipped.manifest["model"]["weights"])
    splits = load_digits_splits(config.seed, config.test_fraction)
    accuracy = dict(shipped.manifest["metrics"]["accuracy"])
    rebuilt = Atlas.open(
        build_demo_summit(model.eval(), splits, tmp_path / "demo", config, accuracy)
    )
    assert rebuilt.classes == shipped.classes
    for layer in shipped.layer_names:
        np.testing.assert_array_equal(
            rebuilt.activation_counts(layer), shipped.activation_counts(layer)
        )
        if shipped.layers[shipped.layer_index(layer)].influence_from is not None:
            assert (rebuilt.influence_counts(layer) != shipped.influence_counts(layer)).nnz == 0


def test_shipped_atlas_carries_the_training_trace(shipped: Atlas) -> None:
    meta, arrays = shipped.trace()
    assert meta["split"] == "test" and meta["num_images"] == 360
    assert meta["layers"][-1]["name"] == "head"
    # Projections sum to the refinement's norm, so class shares (with regularisation) sum to 1.
    np.testing.assert_allclose(np.asarray(arrays["class_share"]).sum(axis=-1), 1.0, atol=1e-3)
    head = len(meta["layers"]) - 1
    correct = np.asarray(arrays["prediction"]) == np.asarray(arrays["image_label"])
    largest = np.asarray(arrays["class_share"])[:, head, :-1].argmax(axis=1)
    share_ok = (largest == np.asarray(arrays["image_label"]))[correct].mean()
    assert share_ok >= 0.8, f"true class has the largest share for only {share_ok:.0%}"
