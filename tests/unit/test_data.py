"""Preprocessing, the indexed ImageFolder and the up-front data checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from compute.data import (
    ImageFolderWithIndex,
    Preprocessing,
    check_images,
    find_class_folders,
    load_class_index,
    map_classes,
    open_image_folder,
)
from compute.errors import BuildError


def make_image_folder(
    root: Path, classes: tuple[str, ...] = ("cat", "dog", "owl"), per_class: int = 2, size=10
) -> Path:
    """A tiny ImageFolder of solid-colour PNGs."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            colour = (40 * c + 20, 30 * i + 10, 200 - 50 * c)
            Image.new("RGB", (size, size + 2), colour).save(root / name / f"{i}.png")
    return root


# -- preprocessing ------------------------------------------------------------------------


def test_normalize_presets() -> None:
    pre = Preprocessing.from_arg("imagenet", image_size=32)
    assert pre.mean == (0.485, 0.456, 0.406)
    assert pre.std == (0.229, 0.224, 0.225)
    assert pre.input_size == (3, 32, 32)
    none = Preprocessing.from_arg("none")
    assert none.mean == (0.0, 0.0, 0.0) and none.std == (1.0, 1.0, 1.0)
    gray = Preprocessing.from_arg("imagenet", grayscale=True)
    assert len(gray.mean) == 1 and gray.mean[0] == pytest.approx(0.449)
    assert Preprocessing.from_arg("MNIST", grayscale=True).std == (0.3081,)


def test_normalize_numbers() -> None:
    assert Preprocessing.from_arg("0.5,0.25").mean == (0.5, 0.5, 0.5)
    assert Preprocessing.from_arg("0.5,0.25").std == (0.25, 0.25, 0.25)
    pre = Preprocessing.from_arg("0.1,0.2,0.3/0.4,0.5,0.6")
    assert pre.mean == (0.1, 0.2, 0.3) and pre.std == (0.4, 0.5, 0.6)


@pytest.mark.parametrize(
    ("arg", "grayscale", "message"),
    [
        ("imagenett", False, "bad --normalize 'imagenett'"),
        ("0.1,0.2,0.3", False, "use MEAN,STD"),
        ("0.5,0", False, "std must be > 0"),
        ("0.1,0.2/0.3,0.4", False, "2 means and 2 stds, but the model input has 3"),
        ("0.1,0.2,0.3/0.3,0.4,0.5", True, "has 1 channel"),
        ("a,b/c", False, "must be numbers"),
    ],
)
def test_normalize_errors(arg: str, grayscale: bool, message: str) -> None:
    with pytest.raises(BuildError, match=message):
        Preprocessing.from_arg(arg, grayscale=grayscale)


def test_preprocessing_manifest_transform_and_unnormalize() -> None:
    pre = Preprocessing.from_arg("0.5,0.5", image_size=6)
    assert pre.to_manifest() == {
        "image_size": 6,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "grayscale": False,
    }
    tensor = pre.transform()(Image.new("RGB", (9, 4), (255, 0, 128)))
    assert tensor.shape == (3, 6, 6)  # resized to a square, no crop
    assert tensor[0].max() == pytest.approx(1.0) and tensor[1].min() == pytest.approx(-1.0)
    back = pre.unnormalize(tensor)
    assert back[0].min() == pytest.approx(1.0) and back[1].max() == pytest.approx(0.0)
    gray = Preprocessing.from_arg("none", image_size=5, grayscale=True)
    assert gray.transform()(Image.new("RGB", (8, 8), (10, 20, 30))).shape == (1, 5, 5)
    with pytest.raises(BuildError, match="image size"):
        Preprocessing(image_size=0)


# -- ImageFolder ----------------------------------------------------------------------------


def test_image_folder_with_index(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "data")
    dataset = ImageFolderWithIndex(str(root), transform=Preprocessing(8).transform())
    image, label, index = dataset[3]
    assert isinstance(image, torch.Tensor) and image.shape == (3, 8, 8)
    assert (label, index) == (1, 3)


def test_open_image_folder_ok(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "data")
    dataset, class_map = open_image_folder(root, Preprocessing(8), num_outputs=3)
    assert class_map is None
    assert dataset.classes == ["cat", "dog", "owl"] and len(dataset) == 6
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"cat": 7, "dog": 2, "owl": 0, "emu": 5}))
    _, class_map = open_image_folder(root, Preprocessing(8), num_outputs=10, class_index=index)
    assert class_map == [7, 2, 0]


def test_missing_and_non_image_folder(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="data directory not found"):
        open_image_folder(tmp_path / "nope", Preprocessing(8))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(BuildError, match="is not a directory"):
        find_class_folders(tmp_path / "file.txt")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (4, 4)).save(flat / "a.png")
    with pytest.raises(BuildError, match="is not an ImageFolder"):
        open_image_folder(flat, Preprocessing(8))


def test_folder_count_must_match_outputs(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "data")
    with pytest.raises(BuildError, match=r"3 class folders \('cat', 'dog', 'owl'\).*10 outputs"):
        open_image_folder(root, Preprocessing(8), num_outputs=10)


def test_class_index_errors(tmp_path: Path) -> None:
    folders = ["cat", "dog", "owl"]
    with pytest.raises(BuildError, match=r"not in the class index: 'dog', 'owl' \(2 of 3\)"):
        map_classes(folders, 10, {"cat": 1})
    with pytest.raises(BuildError, match=r"maps folders 'owl' outside the model's 10 outputs"):
        map_classes(folders, 10, {"cat": 1, "dog": 2, "owl": 10})
    with pytest.raises(BuildError, match="'cat' and 'dog' to the same output 1"):
        map_classes(folders, 10, {"cat": 1, "dog": 1, "owl": 3})
    with pytest.raises(BuildError, match="class index file not found"):
        load_class_index(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BuildError, match="is not valid JSON"):
        load_class_index(bad)
    bad.write_text('{"cat": "one"}')
    with pytest.raises(BuildError, match="must be a JSON object"):
        load_class_index(bad)


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "data")
    broken = root / "dog" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not really a jpeg")
    with pytest.raises(BuildError, match=r"unreadable image .*dog/broken\.jpg"):
        open_image_folder(root, Preprocessing(8), num_outputs=3)
    truncated = tmp_path / "truncated.png"
    Image.new("RGB", (30, 30), (1, 2, 3)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(BuildError, match=r"truncated\.png"):
        check_images([truncated], progress=False)


def test_class_folder_without_images(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "data")
    (root / "zebra").mkdir()
    with pytest.raises(BuildError, match="zebra"):
        open_image_folder(root, Preprocessing(8), num_outputs=4)
