"""The atlas contract: round trip, atomic writes and every corruption error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from compute import atlas as fmt
from compute.atlas import Atlas, AtlasError, AtlasWriter, update_atlas

CLASSES = ["cat", "dog", "fox"]
LAYERS = [
    {"name": "a", "channels": 4, "height": 8, "width": 8, "influence_from": None},
    {"name": "b", "channels": 5, "height": 4, "width": 4, "influence_from": "a"},
]


def _manifest(parts: list[str]) -> dict:
    return {
        "title": "test atlas",
        "model": {"name": "tiny", "spec": "none", "num_parameters": 0, "input_size": [1, 8, 8]},
        "dataset": {"name": "made up", "split": "train", "num_images": 6},
        "preprocessing": {"image_size": 8, "mean": [0.0], "std": [1.0], "grayscale": True},
        "classes": CLASSES,
        "layers": LAYERS,
        "parameters": {"confidence_bins": 4},
        "parts": parts,
    }


def _write(out: Path, rng: np.random.Generator, **kwargs) -> dict[str, np.ndarray]:
    n = len(CLASSES)
    arrays: dict[str, np.ndarray] = {
        fmt.CLASS_PATHS["num_images"]: np.array([2, 2, 2], dtype=np.int64),
        fmt.CLASS_PATHS["num_correct"]: np.array([2, 1, 0], dtype=np.int64),
        fmt.CLASS_PATHS["confidence_hist"]: rng.integers(0, 3, (n, 4)).astype(np.int64),
        fmt.activation_counts_path(0): rng.integers(0, 3, (n, 4)).astype(np.int64),
        fmt.activation_counts_path(1): rng.integers(0, 3, (n, 5)).astype(np.int64),
    }
    dense = rng.integers(0, 3, (n * 5, 4)) * (rng.random((n * 5, 4)) < 0.5)
    for key, value in fmt.csr_parts(sp.csr_array(dense)).items():
        arrays[fmt.influence_paths(1)[key]] = value
    with AtlasWriter(out, _manifest(["summit"]), **kwargs) as writer:
        for relpath, array in arrays.items():
            writer.add_array(relpath, array)
        writer.add_bytes(fmt.example_crop_path(0, 1, 0), b"\x89PNG not really")
        writer.commit()
    arrays["dense_influence"] = dense
    return arrays


@pytest.fixture()
def written(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    out = tmp_path / "atlas"
    return out, _write(out, np.random.default_rng(0))


def test_round_trip(written: tuple[Path, dict[str, np.ndarray]]) -> None:
    out, arrays = written
    atlas = Atlas.open(out, verify_hashes=True)
    assert atlas.classes == tuple(CLASSES)
    assert atlas.layer_names == ("a", "b")
    assert atlas.layers[1].influence_from == "a"
    np.testing.assert_array_equal(
        atlas.activation_counts("b"), arrays[fmt.activation_counts_path(1)]
    )
    assert atlas.activation_counts(0).dtype == np.int64
    influence = atlas.influence_counts("b")
    assert influence.shape == (len(CLASSES) * 5, 4)
    np.testing.assert_array_equal(influence.toarray(), arrays["dense_influence"])
    np.testing.assert_array_equal(
        atlas.influence_counts("b", class_index=2).toarray(), arrays["dense_influence"][10:15]
    )
    np.testing.assert_allclose(atlas.accuracy(), [1.0, 0.5, 0.0])
    assert atlas.has(fmt.PART_SUMMIT) and not atlas.has(fmt.PART_GRAPHS)
    assert not (out.parent / ".atlas.tmp").exists()
    assert [p.name for p in out.parent.iterdir()] == ["atlas"], "no temporary left behind"


def test_unknown_layer_lists_available(written: tuple[Path, dict]) -> None:
    atlas = Atlas.open(written[0])
    with pytest.raises(AtlasError, match="unknown layer 'zzz'; available: a, b"):
        atlas.activation_counts("zzz")
    with pytest.raises(AtlasError, match="no previous layer"):
        atlas.influence_counts("a")


def test_missing_part_is_a_clear_error(written: tuple[Path, dict]) -> None:
    atlas = Atlas.open(written[0])
    with pytest.raises(AtlasError, match="no 'graphs' part"):
        atlas.graph(0)
    assert atlas.example_crop("a", 1) is None  # no examples part: no crop, no error


def test_missing_file(written: tuple[Path, dict]) -> None:
    out, _ = written
    (out / fmt.activation_counts_path(1)).unlink()
    with pytest.raises(AtlasError, match=r"missing file layers/01/activation_counts\.npy"):
        Atlas.open(out)


def test_truncated_file(written: tuple[Path, dict]) -> None:
    out, _ = written
    path = out / fmt.influence_paths(1)["data"]
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(AtlasError, match=r"influence_data\.npy .* \(truncated or altered\)"):
        Atlas.open(out)


def test_altered_file_found_by_verify(written: tuple[Path, dict]) -> None:
    out, _ = written
    path = out / fmt.activation_counts_path(0)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    Atlas.open(out)  # sizes still match: the fast open accepts it
    with pytest.raises(AtlasError, match=r"layers/00/activation_counts\.npy .* altered"):
        Atlas.open(out, verify_hashes=True)


def test_missing_manifest_and_bad_json(written: tuple[Path, dict]) -> None:
    out, _ = written
    manifest = out / fmt.MANIFEST
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    with pytest.raises(AtlasError, match=r"manifest\.json .* not valid JSON"):
        Atlas.open(out)
    manifest.unlink()
    with pytest.raises(AtlasError, match=r"missing file manifest\.json"):
        Atlas.open(out)
    with pytest.raises(AtlasError, match="atlas directory not found"):
        Atlas.open(out.parent / "nowhere")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(version=99), "format version 99"),
        (lambda m: m.update(format="other"), "not a network-atlas atlas"),
        (lambda m: m.pop("classes"), "lacks the key 'classes'"),
        (lambda m: m["files"].pop("layers/00/activation_counts.npy"), "does not list required"),
        (lambda m: m["files"].update({"../escape.npy": {"size": 1, "sha256": ""}}), "unsafe path"),
        (lambda m: m["layers"][1].update(influence_from="q"), "unknown layer 'q'"),
    ],
)
def test_manifest_problems(written: tuple[Path, dict], edit, message: str) -> None:
    out, _ = written
    manifest = json.loads((out / fmt.MANIFEST).read_text())
    edit(manifest)
    (out / fmt.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(AtlasError, match=message):
        Atlas.open(out)


def test_wrong_shape_is_refused_on_read(tmp_path: Path) -> None:
    out = tmp_path / "atlas"
    rng = np.random.default_rng(1)
    _write(out, rng)
    with update_atlas(out) as sink:  # replace a file with a well-formed array of the wrong shape
        sink.add_array(fmt.activation_counts_path(0), np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(AtlasError, match=r"activation_counts\.npy in atlas .* has shape \(2, 2\)"):
        Atlas.open(out).activation_counts("a")


def test_existing_output_is_kept_unless_overwrite(written: tuple[Path, dict]) -> None:
    out, _ = written
    with pytest.raises(AtlasError, match="already exists"):
        AtlasWriter(out, _manifest(["summit"]))
    fresh = _write(out, np.random.default_rng(7), overwrite=True)
    np.testing.assert_array_equal(
        Atlas.open(out).activation_counts(0), fresh[fmt.activation_counts_path(0)]
    )


def test_interrupted_write_leaves_previous_atlas(written: tuple[Path, dict]) -> None:
    out, _ = written
    before = (out / fmt.MANIFEST).read_bytes()
    with pytest.raises(RuntimeError), AtlasWriter(out, _manifest(["summit"]), overwrite=True) as w:
        w.add_array(fmt.activation_counts_path(0), np.ones((3, 4), dtype=np.int64))
        raise RuntimeError("build crashed")
    assert (out / fmt.MANIFEST).read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["atlas"]
    Atlas.open(out, verify_hashes=True)


def test_commit_refuses_an_incomplete_part(tmp_path: Path) -> None:
    with (
        pytest.raises(AtlasError, match="does not list required file"),
        AtlasWriter(tmp_path / "x", _manifest(["summit", "graphs"])) as writer,
    ):
        writer.add_array(fmt.activation_counts_path(0), np.ones((3, 4), dtype=np.int64))
        writer.commit()
    assert not (tmp_path / "x").exists()


def test_update_adds_part_atomically(written: tuple[Path, dict]) -> None:
    out, _ = written
    xy = [np.zeros((3, 2), dtype=np.float32), np.ones((3, 2), dtype=np.float32)]
    with update_atlas(out, add_parts=(fmt.PART_EMBEDDING,)) as sink:
        for i, layout in enumerate(xy):
            sink.add_array(fmt.embedding_path(i), layout)
    atlas = Atlas.open(out, verify_hashes=True)
    assert atlas.has(fmt.PART_EMBEDDING)
    np.testing.assert_array_equal(atlas.embedding("b"), xy[1])


def test_writer_refuses_unsafe_paths_and_objects(tmp_path: Path) -> None:
    with AtlasWriter(tmp_path / "x", _manifest(["summit"])) as writer:
        with pytest.raises(AtlasError, match="unsafe"):
            writer.add_bytes("../evil.png", b"")
        with pytest.raises(AtlasError, match="unsafe"):
            writer.add_bytes(fmt.MANIFEST, b"{}")
        with pytest.raises(AtlasError, match="object array"):
            writer.add_array("x.npy", np.array([object()]))


def test_atlas_module_is_torch_free() -> None:
    import subprocess
    import sys

    code = "import sys, compute.atlas; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def _add_mapper(out: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Add a ``mapper`` part (real MapperIndex arrays, 40 points) to the written atlas."""
    from compute.topology import MapperIndex, MapperParams

    n = 40
    sample = {
        "image_index": np.sort(rng.choice(1000, n, replace=False)).astype(np.int64),
        "label": rng.integers(0, len(CLASSES), n).astype(np.int64),
    }
    with update_atlas(out, add_parts=(fmt.PART_MAPPER,)) as sink:
        sink.manifest_updates["parameters"] = {  # type: ignore[attr-defined]
            "confidence_bins": 4,
            "mapper": {"lens": "l2norm", "metric": "euclidean"},
        }
        for key, relpath in fmt.MAPPER_SAMPLE_PATHS.items():
            sink.add_array(relpath, sample[key])
        for i, layer in enumerate(LAYERS):
            vectors = rng.random((n, layer["channels"])).astype(np.float32)
            index = MapperIndex.build(vectors)
            position = rng.integers(0, 4, (n, 2)).astype(np.int32)
            for relpath, array in fmt.mapper_files(i, vectors, position, index.to_arrays()).items():
                sink.add_array(relpath, array)
            sample[f"vectors{i}"] = vectors
            sample[f"graph{i}"] = index.mapper(MapperParams(intervals=5))  # type: ignore[assignment]
        sink.add_bytes(fmt.mapper_crop_path(1, 3), b"\x89PNG not really")
    return sample


def test_mapper_part_round_trip(written: tuple[Path, dict]) -> None:
    from compute.topology import MapperIndex, MapperParams

    out, _ = written
    sample = _add_mapper(out, np.random.default_rng(1))
    atlas = Atlas.open(out, verify_hashes=True)
    assert atlas.has(fmt.PART_MAPPER)
    got = atlas.mapper_sample("b")
    assert isinstance(got.vectors, np.memmap)
    np.testing.assert_array_equal(got.image_index, sample["image_index"])
    np.testing.assert_array_equal(got.label, sample["label"])
    np.testing.assert_array_equal(got.vectors, sample["vectors1"])
    index = MapperIndex.from_arrays(atlas.mapper_index_arrays(1))
    graph, expected = index.mapper(MapperParams(intervals=5)), sample["graph1"]
    for key, array in expected.to_arrays().items():  # type: ignore[attr-defined]
        np.testing.assert_array_equal(graph.to_arrays()[key], array)
    assert atlas.mapper_crop("b", 3) == fmt.mapper_crop_path(1, 3)
    assert atlas.mapper_crop("b", 4) is None and atlas.mapper_crop("a", 3) is None


def test_mapper_part_missing_file(written: tuple[Path, dict]) -> None:
    out, _ = written
    _add_mapper(out, np.random.default_rng(1))
    (out / fmt.mapper_paths(0)["indptr"]).unlink()
    with pytest.raises(AtlasError, match=r"missing file layers/00/mapper_indptr\.npy"):
        Atlas.open(out)
    manifest = json.loads((out / fmt.MANIFEST).read_text())
    del manifest["files"][fmt.mapper_paths(0)["indptr"]]
    (out / fmt.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(AtlasError, match=r"does not list required file layers/00/mapper_indptr"):
        Atlas.open(out)


def test_confusion_is_optional_and_checked(tmp_path: Path) -> None:
    """An atlas without the confusion file (built before it was recorded) reads ``None``;
    one with it gives the array; a wrongly shaped one is refused naming the file."""
    rng = np.random.default_rng(3)
    plain = tmp_path / "plain"
    _write(plain, rng)
    assert Atlas.open(plain).confusion() is None

    n = len(CLASSES)
    for name, confusion, fine in (
        ("with", np.array([[2, 0, 0], [1, 1, 0], [0, 2, 0]], dtype=np.int64), True),
        ("bad", np.zeros((n, n + 1), dtype=np.int64), False),
    ):
        out = tmp_path / name
        manifest = _manifest(["summit"])
        with AtlasWriter(out, manifest) as writer:
            for relpath, array in _write(tmp_path / f"{name}-source", rng).items():
                if relpath != "dense_influence":
                    writer.add_array(relpath, array)
            writer.add_array(fmt.CONFUSION_PATH, confusion)
            writer.commit()
        atlas = Atlas.open(out, verify_hashes=True)
        if fine:
            np.testing.assert_array_equal(atlas.confusion(), confusion)
        else:
            with pytest.raises(AtlasError, match=r"classes/confusion\.npy"):
                atlas.confusion()
