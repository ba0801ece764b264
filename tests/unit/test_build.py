"""build_atlas (Python API), its checks, receptive fields and example crops."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from compute.atlas import Atlas, example_crop_path
from compute.build import check_classes, check_layers, check_loader_order, resolve_device
from compute.crops import (
    ReceptiveField,
    crop_box,
    receptive_fields,
    save_example_crops,
    thumbnail_png,
)
from compute.data import Preprocessing
from compute.errors import BuildError
from compute.summit.config import SummitConfig

# -- receptive fields -----------------------------------------------------------------------


def conv(c_in: int, c_out: int, k: int = 3, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding)


def test_receptive_field_conv3x3_chain() -> None:
    net = nn.Sequential(conv(1, 4), nn.ReLU(), conv(4, 4), nn.ReLU())
    fields = receptive_fields(net, ["1", "3"], (1, 16, 16))
    assert fields["1"] == ReceptiveField((3, 3), (1.0, 1.0), (0.0, 0.0))
    assert fields["3"] == ReceptiveField((5, 5), (1.0, 1.0), (0.0, 0.0))


def test_receptive_field_with_stride_two_pool_and_conv() -> None:
    net = nn.Sequential(
        conv(3, 4), nn.ReLU(), conv(4, 4), nn.MaxPool2d(2), conv(4, 4), nn.ReLU(),
        conv(4, 4, stride=2),
    )  # fmt: skip
    fields = receptive_fields(net, ["3", "5", "6"], (3, 16, 16))
    assert fields["3"].size == (6, 6) and fields["3"].stride == (2.0, 2.0)
    assert fields["3"].offset == (0.5, 0.5)  # map position 0 pools input pixels 0..1
    assert fields["5"].size == (10, 10)
    assert fields["6"].size == (14, 14) and fields["6"].stride == (4.0, 4.0)


def test_receptive_field_unpadded_and_fixed_input_size() -> None:
    # A Linear after Flatten only takes the real input size: the probe falls back to it.
    net = nn.Sequential(conv(3, 2, padding=0), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    field = receptive_fields(net, ["1"], (3, 8, 8))["1"]
    assert field == ReceptiveField((3, 3), (1.0, 1.0), (1.0, 1.0))


def test_receptive_field_resnet_stem() -> None:
    from compute.models import get_model

    model = get_model("torchvision:resnet18", num_classes=3)
    fields = receptive_fields(model, ["relu", "layer1"], (3, 32, 32))
    assert fields["relu"].size == (7, 7) and fields["relu"].stride == (2.0, 2.0)
    assert fields["layer1"].size == (43, 43) and fields["layer1"].stride == (4.0, 4.0)


def test_receptive_field_errors() -> None:
    net = nn.Sequential(conv(1, 2), nn.Flatten(), nn.Linear(2 * 4 * 4, 2))
    with pytest.raises(BuildError, match="unknown layer"):
        receptive_fields(net, ["nope"], (1, 4, 4))
    with pytest.raises(BuildError, match=r"'2' does not output a \[N, C, H, W\] map"):
        receptive_fields(net, ["2"], (1, 4, 4))


def test_crop_box_clips_and_is_never_empty() -> None:
    field = ReceptiveField((5, 5), (2.0, 2.0), (0.5, 0.5))
    assert crop_box(field, 0, 0, 16) == (0, 0, 3, 3)
    assert crop_box(field, 3, 2, 16) == (4, 2, 9, 7)
    assert crop_box(field, 7, 7, 16) == (12, 12, 16, 16)
    assert crop_box(field, 3, 2, (12, 6)) == (4, 2, 9, 6)
    whole = ReceptiveField((100, 100), (8.0, 8.0), (3.5, 3.5))
    assert crop_box(whole, 1, 1, 16) == (0, 0, 16, 16)
    far = ReceptiveField((1, 1), (1.0, 1.0), (0.0, 0.0))
    assert crop_box(far, 40, 40, 8) == (7, 7, 8, 8)


def test_thumbnail_png() -> None:
    tiny = np.zeros((5, 3, 3), dtype=np.uint8)
    image = Image.open(io.BytesIO(thumbnail_png(tiny, 64)))
    assert image.size == (38, 64) and image.mode == "RGB"  # aspect kept, longer side 64
    gray = Image.open(io.BytesIO(thumbnail_png(np.full((100, 100), 9, np.uint8), 32)))
    assert gray.size == (32, 32) and gray.mode == "L"


class CountingDataset(Dataset):
    """Images whose pixel values encode the index; counts fetches."""

    def __init__(self, n: int, size: int = 8) -> None:
        self.n, self.size, self.fetches = n, size, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        self.fetches += 1
        image = torch.full((3, self.size, self.size), (index + 1) / 10.0)
        return (image - 0.5) / 0.5, 0, index


def test_save_example_crops_groups_fetches_by_image() -> None:
    dataset = CountingDataset(5)
    field = ReceptiveField((3, 3), (1.0, 1.0), (0.0, 0.0))
    index = [np.array([[0, 1, 2], [1, 2, -1]]), np.array([[2, 4, 1]])]
    position = [np.zeros((2, 3, 2), np.int32), np.full((1, 3, 2), 4, np.int32)]
    crops = save_example_crops(
        dataset,
        [field, field],
        index,
        position,
        crops_per_channel=2,
        preprocessing=Preprocessing.from_arg("0.5,0.5", image_size=8),
        thumbnail=16,
        progress=False,
    )
    assert sorted(crops) == sorted(
        [example_crop_path(0, c, r) for c in range(2) for r in range(2)]
        + [example_crop_path(1, 0, 0), example_crop_path(1, 0, 1)]
    )
    assert dataset.fetches == 4  # images 0, 1, 2, 4, each once
    image = np.asarray(Image.open(io.BytesIO(crops[example_crop_path(1, 0, 1)])))
    assert image.shape == (16, 16, 3)
    assert int(image[0, 0, 0]) == round(0.5 * 255)  # image 4 un-normalised: (4 + 1) / 10
    assert save_example_crops(dataset, [field], [np.full((1, 2), -1)], [np.zeros((1, 2, 2))]) == {}


# -- checks -------------------------------------------------------------------------------


def tiny_cnn(num_classes: int = 3) -> nn.Sequential:
    return nn.Sequential(
        conv(3, 4), nn.ReLU(), nn.MaxPool2d(2), conv(4, 6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, num_classes),
    )  # fmt: skip


def test_check_layers_messages() -> None:
    model = tiny_cnn()
    rows = check_layers(model, ["1", "4"], (3, 8, 8))
    assert [(r.channels, r.height, r.width) for r in rows] == [(4, 8, 8), (6, 4, 4)]
    with pytest.raises(BuildError, match=r"unknown layer\(s\) 'features.9'; available: 0, 1, 2"):
        check_layers(model, ["1", "features.9"], (3, 8, 8))
    with pytest.raises(BuildError, match=r"'7' do not output a \[N, C, H, W\] map"):
        check_layers(model, ["1", "7"], (3, 8, 8))
    with pytest.raises(BuildError, match="chosen twice"):
        check_layers(model, ["1", "1"], (3, 8, 8))
    with pytest.raises(BuildError, match="no layers chosen"):
        check_layers(model, [], (3, 8, 8))
    with pytest.raises(BuildError, match="not connected by a single convolution"):
        check_layers(model, ["0", "1"], (3, 8, 8))


def test_check_classes_and_device() -> None:
    check_classes(["a", "b"], 2, None)
    check_classes(["a", "b"], 5, [4, 0])
    with pytest.raises(BuildError, match="2 classes but the model has 3 outputs"):
        check_classes(["a", "b"], 3, None)
    with pytest.raises(BuildError, match=r"outside 0\.\.2"):
        check_classes(["a", "b"], 3, [0, 3])
    with pytest.raises(BuildError, match="same output"):
        check_classes(["a", "b"], 3, [1, 1])
    with pytest.raises(BuildError, match="unique"):
        check_classes(["a", "a"], 2, None)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(BuildError, match="unknown device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(BuildError, match="no CUDA device"):
            resolve_device("cuda")


def test_shuffled_loader_without_indices_is_refused() -> None:
    data = TensorDataset(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))
    check_loader_order(DataLoader(data, batch_size=2))
    with pytest.raises(BuildError, match="shuffles but yields no dataset indices"):
        check_loader_order(DataLoader(data, batch_size=2, shuffle=True))


# -- the build ----------------------------------------------------------------------------


def class_dataset(num_classes: int = 3, per_class: int = 5, size: int = 8) -> TensorDataset:
    """Images whose colour depends on the class, so the counts differ between classes."""
    generator = torch.Generator().manual_seed(0)
    images, labels = [], []
    for c in range(num_classes):
        base = torch.zeros(3, size, size)
        base[c % 3] = 1.0
        for _ in range(per_class):
            images.append(base + 0.3 * torch.rand(3, size, size, generator=generator))
            labels.append(c)
    return TensorDataset(torch.stack(images), torch.tensor(labels))


def build_tiny(out: Path, **kwargs: object) -> Path:
    from compute.build import build_atlas

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = tiny_cnn()
    options: dict[str, object] = {
        "layers": ["1", "4"],
        "classes": ["red", "green", "blue"],
        "out": out,
        "config": SummitConfig(selection="topk", top_k=2, influence_top_k=2,
                               examples_per_channel=4),
        "crops_per_channel": 2,
        "progress": False,
        **kwargs,
    }  # fmt: skip
    return build_atlas(model, DataLoader(class_dataset(), batch_size=4), **options)


def test_build_atlas_end_to_end(tmp_path: Path) -> None:
    path = build_tiny(tmp_path / "atlas", title="Tiny", metrics={"accuracy": {"test": 0.5}})
    atlas = Atlas.open(path, verify_hashes=True)
    assert atlas.classes == ("red", "green", "blue")
    assert [(layer.name, layer.channels, layer.height, layer.width) for layer in atlas.layers] == [
        ("1", 4, 8, 8),
        ("4", 6, 4, 4),
    ]
    assert [layer.influence_from for layer in atlas.layers] == [None, "1"]
    assert atlas.parts == {
        *("summit", "examples", "embedding", "graphs", "subsets", "instances", "mapper")
    }
    manifest = atlas.manifest
    assert manifest["title"] == "Tiny"
    assert manifest["model"]["input_size"] == [3, 8, 8]
    assert manifest["model"]["num_parameters"] == sum(p.numel() for p in tiny_cnn().parameters())
    assert manifest["dataset"]["num_images"] == 15
    assert manifest["parameters"]["selection"] == {"mode": "topk", "k": 2}
    assert manifest["parameters"]["pagerank"]["alpha"] == 0.85
    assert manifest["parameters"]["seed"] == 0
    assert manifest["metrics"] == {"accuracy": {"test": 0.5}}
    stats = atlas.class_stats()
    assert stats["num_images"].tolist() == [5, 5, 5]
    assert stats["confidence_hist"].sum(axis=1).tolist() == [5, 5, 5]
    confusion = atlas.confusion()
    assert confusion is not None and confusion.dtype == np.int64
    assert confusion.sum(axis=1).tolist() == [5, 5, 5]
    assert np.diag(confusion).tolist() == stats["num_correct"].tolist()
    for layer in atlas.layer_names:
        counts = atlas.activation_counts(layer)
        # top-k selection: every image counts exactly k channels of each layer
        assert counts.sum(axis=1).tolist() == [10, 10, 10]
        assert counts.max() <= 5
    influence = atlas.influence_counts("4")
    assert influence.shape == (3 * 6, 4) and influence.data.max() <= 5
    examples = atlas.examples("1")
    assert examples.image_index.shape == (4, 4)
    assert atlas.embedding("4").shape == (3, 2)
    assert atlas.example_crop("1", 0, 0) is not None
    assert atlas.graph(0).num_nodes > 0
    assert manifest["model"]["weights"] == "model/weights.pt"
    state = torch.load(path / "model" / "weights.pt", weights_only=True)
    assert set(state) == set(tiny_cnn().state_dict())


def test_build_refuses_before_the_pass(tmp_path: Path) -> None:
    (tmp_path / "exists").mkdir()  # not an atlas: said at once (no --overwrite advice)
    with pytest.raises(BuildError, match="exists and is not an atlas"):
        build_tiny(tmp_path / "exists")
    with pytest.raises(BuildError, match="unknown layer"):
        build_tiny(tmp_path / "a", layers=["1", "nope"])
    with pytest.raises(BuildError, match="2 classes but the model has 3 outputs"):
        build_tiny(tmp_path / "b", classes=["x", "y"])
    with pytest.raises(BuildError, match="loader yields no images"):
        from compute.build import build_atlas

        build_atlas(
            tiny_cnn(), [], layers=["1"], classes=["a", "b", "c"], out=tmp_path / "c",
            progress=False,
        )  # fmt: skip
    assert not any(tmp_path.glob(".*tmp*"))  # nothing half-written


def test_build_overwrite_and_bad_labels(tmp_path: Path) -> None:
    out = build_tiny(tmp_path / "atlas", crops_per_channel=0, save_weights=False)
    atlas = Atlas.open(out)
    assert atlas.example_crop("1", 0, 0) is None
    assert "weights" not in atlas.manifest["model"]
    build_tiny(out, overwrite=True)
    assert Atlas.open(out).example_crop("1", 0, 0) is not None
    from compute.build import build_atlas

    bad = TensorDataset(torch.zeros(2, 3, 8, 8), torch.tensor([0, 7]))
    with pytest.raises(BuildError, match="label 7"):
        build_atlas(
            tiny_cnn(), DataLoader(bad, batch_size=2), layers=["1"], classes=["a", "b", "c"],
            out=tmp_path / "bad", progress=False,
        )  # fmt: skip


def test_overwrite_never_deletes_a_folder_that_is_not_an_atlas(tmp_path: Path) -> None:
    """--overwrite replaces atlases only: a user's folder survives, untouched."""
    user = tmp_path / "mine"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("my notes")
    (user / "sub" / "data.csv").write_text("1,2")
    with pytest.raises(BuildError, match="is not an atlas"):
        build_tiny(user)  # the first answer already says it, not "pass --overwrite"
    with pytest.raises(BuildError, match="is not an atlas") as info:
        build_tiny(user, overwrite=True)
    assert "\n" not in str(info.value)
    assert (user / "notes.txt").read_text() == "my notes"
    assert (user / "sub" / "data.csv").read_text() == "1,2"
    (user / "manifest.json").write_text("{not json")  # a manifest that is no atlas's
    with pytest.raises(BuildError, match="is not a readable atlas"):
        build_tiny(user, overwrite=True)
    assert (user / "notes.txt").exists()
    plain_file = tmp_path / "file.txt"
    plain_file.write_text("x")
    with pytest.raises(BuildError, match="is not an atlas"):
        build_tiny(plain_file, overwrite=True)
    assert plain_file.read_text() == "x"


def test_a_new_atlas_is_readable_as_the_umask_says(tmp_path: Path) -> None:
    """The writer's private temporary folder (0700) became the atlas: a server running as
    another user could not read it. It gets what the umask gives any new folder."""
    import os

    previous = os.umask(0o022)
    try:
        path = build_tiny(tmp_path / "atlas", crops_per_channel=0)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o755


def test_a_second_build_to_the_same_output_is_refused(tmp_path: Path) -> None:
    """While one build holds the output, another is refused in one line (not both
    "succeeding" and one silently replacing the other); the lock goes with its holder."""
    from compute.atlas import output_lock

    out = tmp_path / "atlas"
    with output_lock(out), pytest.raises(BuildError, match="another build is writing"):
        build_tiny(out)
    assert not out.exists()
    build_tiny(out)  # released: builds
    assert Atlas.open(out).classes == ("red", "green", "blue")


def test_stale_temporary_folders_of_a_killed_build_are_removed(tmp_path: Path) -> None:
    """A ``kill -9`` during the write leaves ``.OUT.tmp-*``: the next build removes it, and
    nothing else."""
    stale = tmp_path / ".atlas.tmp-k9xyz"
    (stale / "layers").mkdir(parents=True)
    (stale / "layers" / "x.npy").write_bytes(b"partial")
    old = tmp_path / ".atlas.old-1234"
    old.mkdir()
    other = tmp_path / ".another.tmp-abc"
    other.mkdir()
    build_tiny(tmp_path / "atlas", crops_per_channel=0)
    assert not stale.exists() and not old.exists()
    assert other.exists()  # another output's folder is not ours to remove
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".atlas.")) == [
        ".atlas.lock"
    ]


def test_receptive_field_probe_failure_falls_back_to_whole_images() -> None:
    from compute.build import receptive_fields_or_whole_image

    class DoubleShy(nn.Module):
        """Refuses float64, as some custom ops do: the probe cannot run it."""

        def __init__(self) -> None:
            super().__init__()
            self.conv, self.relu = conv(3, 2), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.dtype == torch.float64:
                raise RuntimeError("no float64 here")
            return self.relu(self.conv(x)).mean((2, 3))

    fields = receptive_fields_or_whole_image(DoubleShy(), ["relu"], (3, 8, 8))
    assert crop_box(fields["relu"], 7, 7, 8) == (0, 0, 8, 8)
    assert crop_box(fields["relu"], 0, 0, 8) == (0, 0, 8, 8)
    with pytest.raises(BuildError, match="unknown layer"):
        receptive_fields_or_whole_image(DoubleShy(), ["nope"], (3, 8, 8))


# So little data can give identical rows of A; the PCA embedding then divides by a zero
# variance (harmless here).
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_build_from_plain_batches_has_no_crops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from compute.build import build_atlas

    data = class_dataset(per_class=2)
    batches = [(data.tensors[0][i : i + 3], data.tensors[1][i : i + 3]) for i in range(0, 6, 3)]
    with caplog.at_level("WARNING", logger="compute.build"):
        path = build_atlas(
            tiny_cnn(), batches, layers=["1", "4"], classes=["r", "g", "b"],
            out=tmp_path / "plain", config=SummitConfig(selection="topk", top_k=1),
            progress=False,
        )  # fmt: skip
    assert "no example crops" in caplog.text
    atlas = Atlas.open(path, verify_hashes=True)
    assert atlas.example_crop("1", 0, 0) is None
    assert atlas.class_stats()["num_images"].tolist() == [2, 2, 2]
    assert atlas.examples("1").image_index.max() <= 5  # running count = dataset index
    assert atlas.manifest["preprocessing"]["mean"] is None  # unknown: the loader's own


class _Indexed(Dataset):
    """``(image, label, index)`` items, so a shuffled loader still names each image."""

    def __init__(self, base: TensorDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, label = self.base[i]
        return image, label, i


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_build_mapper_part_ignores_batch_size_and_order(tmp_path: Path) -> None:
    from compute.atlas import PART_MAPPER, mapper_paths

    common = {"mapper_capacity": 9, "mapper_crops": 4, "crops_per_channel": 0,
              "save_weights": False}  # fmt: skip
    a = Atlas.open(build_tiny(tmp_path / "a", **common), verify_hashes=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = tiny_cnn()
    shuffled = DataLoader(
        _Indexed(class_dataset()), batch_size=7, shuffle=True,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    from compute.build import build_atlas

    b = Atlas.open(
        build_atlas(
            model,
            shuffled,
            layers=["1", "4"],
            classes=["red", "green", "blue"],
            out=tmp_path / "b",
            config=SummitConfig(
                selection="topk", top_k=2, influence_top_k=2, examples_per_channel=4
            ),
            progress=False,
            **common,
        )
    )
    assert a.has(PART_MAPPER) and a.parameters["mapper"]["num_points"] == 9
    for layer in range(2):
        sa, sb = a.mapper_sample(layer), b.mapper_sample(layer)
        assert sa.vectors.shape == (9, a.layers[layer].channels)
        for field in ("image_index", "label", "vectors", "position"):
            np.testing.assert_array_equal(getattr(sa, field), getattr(sb, field))
        for relpath in mapper_paths(layer).values():
            assert a.files[relpath]["sha256"] == b.files[relpath]["sha256"], relpath
        crops = [r for r in range(9) if a.mapper_crop(layer, r)]
        assert len(crops) >= 4 and crops == [r for r in range(9) if b.mapper_crop(layer, r)]
    # labels are the true classes of the sampled images (5 per class, in dataset order)
    np.testing.assert_array_equal(a.mapper_sample(0).label, a.mapper_sample(0).image_index // 5)
    no_mapper = build_tiny(tmp_path / "c", mapper=False, crops_per_channel=0, save_weights=False)
    assert not Atlas.open(no_mapper).has(PART_MAPPER)


def test_cli_passes_the_mapper_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import compute.build.cli
    from compute.cli import main
    from tests.unit.test_cli import base_args, make_image_folder

    seen: dict[str, object] = {}

    def fake_build(_model: object, _loader: object, options: object) -> Path:
        seen.update(vars(options))
        return tmp_path / "out"

    monkeypatch.setattr(compute.build.cli, "build_atlas", fake_build)
    data = make_image_folder(tmp_path / "data")
    argv = base_args(data, tmp_path / "out")
    assert main([*argv, "--no-mapper", "--mapper-capacity", "50", "--mapper-mode", "mean",
                 "--mapper-crops", "0"]) == 0  # fmt: skip
    assert (seen["mapper"], seen["mapper_capacity"], seen["mapper_mode"]) == (False, 50, "mean")
    assert seen["mapper_crops"] == 0
    assert main(argv) == 0
    assert seen["mapper"] is True and seen["mapper_capacity"] == 100_000
    assert seen["mapper_mode"] == "position"


def test_layer_order_ranks_a_container_after_its_children() -> None:
    """A block chosen after one of its own children is in order (its output comes last);
    the other way round is refused, naming the order to use."""
    block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU())
    model = nn.Sequential(block, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 2))
    chosen = check_layers(model, ["0.1", "0"], (3, 12, 12))
    assert [row.name for row in chosen] == ["0.1", "0"]
    with pytest.raises(BuildError, match=r"'0' runs later; try --layers 0\.1,0"):
        check_layers(model, ["0", "0.1"], (3, 12, 12))


def test_a_reused_module_is_refused_before_its_order_is_judged() -> None:
    """A module called twice (a ResNet block's relu) has no one place in the order: it is
    refused as reused, not sent to an order that would be refused in turn."""

    class Reused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
            self.relu = nn.ReLU()
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.relu(self.conv2(self.relu(self.conv1(x)))))

    with pytest.raises(BuildError, match="'relu' is called 2 times"):
        check_layers(Reused(), ["conv2", "relu"], (3, 12, 12))


def test_build_atlas_takes_options_or_their_fields(tmp_path: Path) -> None:
    """The Python API: the fields as keywords (``model=`` and ``loader=`` included), a
    ``BuildOptions`` positionally or as ``options=``, or both (the keywords win); all give
    the same counts. Mistakes are refused as Python's or as one-line build errors."""
    from compute.build import BuildOptions, build_atlas

    def model() -> nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return tiny_cnn()

    def loader() -> DataLoader:
        return DataLoader(class_dataset(), batch_size=4)

    fields: dict[str, object] = {
        "layers": ["1", "4"],
        "classes": ["red", "green", "blue"],
        "config": SummitConfig(selection="topk", top_k=2, examples_per_channel=4),
        "crops_per_channel": 0,
        "mapper": False,
        "progress": False,
    }
    given = BuildOptions(out=tmp_path / "x", **fields)  # type: ignore[arg-type]
    paths = [
        build_atlas(model=model(), loader=loader(), out=tmp_path / "a", **fields),
        build_atlas(model(), loader(), BuildOptions(out=tmp_path / "b", **fields)),  # type: ignore[arg-type]
        build_atlas(model(), loader(), options=given, out=tmp_path / "c"),
    ]
    assert [p.name for p in paths] == ["a", "b", "c"] and not (tmp_path / "x").exists()
    counts = [Atlas.open(p).activation_counts(1) for p in paths]
    assert all(np.array_equal(counts[0], c) for c in counts[1:])
    with pytest.raises(TypeError, match="layer"):
        build_atlas(model(), loader(), layer=["1"], classes=["r", "g", "b"], out=tmp_path / "d")
    with pytest.raises(TypeError, match="BuildOptions"):
        build_atlas(model(), loader(), {"layers": ["1"]})  # type: ignore[arg-type]
    with pytest.raises(BuildError, match="list of names"):
        BuildOptions(layers="1", classes=["r", "g", "b"], out=tmp_path / "e")
    with pytest.raises(BuildError, match="unknown precision 'fp8'"):
        BuildOptions(layers=["1"], classes=["r"], out=tmp_path / "f", precision="fp8")
    with pytest.raises(BuildError, match="crops_per_channel must be >= 0, not -1"):
        BuildOptions(layers=["1"], classes=["r"], out=tmp_path / "g", crops_per_channel=-1)
