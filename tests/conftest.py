"""Shared fixtures: small hand-made atlases written with the real :class:`AtlasWriter`.

``write_test_atlas`` is deliberately generic (any number of classes and layers, any subset
of parts) so tests can build "an atlas lacking a part" in one line. Larger synthetic
atlases come from ``compute.synthetic`` when it is available.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest

from compute.atlas import (
    CLASS_PATHS,
    GRAPH_PATHS,
    PART_EMBEDDING,
    PART_EXAMPLES,
    PART_FEATUREVIS,
    PART_GRAPHS,
    PART_SUMMIT,
    Atlas,
    AtlasWriter,
    activation_counts_path,
    csr_parts,
    embedding_path,
    example_crop_path,
    examples_paths,
    featurevis_path,
    influence_paths,
    update_atlas,
)

ALL_PARTS = (PART_SUMMIT, PART_EXAMPLES, PART_EMBEDDING, PART_GRAPHS)


def _png(rgb: tuple[int, int, int], size: int = 16) -> bytes:
    """A tiny solid-colour PNG (Pillow is a test dependency through compute)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _pattern_png(seed: int, size: int = 32) -> bytes:
    """A small striped PNG (a stand-in for a feature visualization), distinct per seed."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 230, size=(2, 3))
    period = int(rng.integers(3, 9))
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = ((xx + int(rng.integers(0, 2)) * yy) // period) % 2
    pixels = np.where(stripes[..., None] == 1, colours[0], colours[1]).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def add_fake_featurevis(atlas: Path, layers: Iterable[int] | None = None) -> Path:
    """Add a featurevis part of fake striped PNGs (vis + 4 diversity images per channel)
    to an existing atlas with :func:`compute.atlas.update_atlas`, as the real command does."""
    info = Atlas.open(atlas).layers
    chosen = range(len(info)) if layers is None else layers
    with update_atlas(atlas, add_parts=(PART_FEATUREVIS,)) as sink:
        for i in chosen:
            for c in range(info[i].channels):
                for k, kind in enumerate(("vis", "div-0", "div-1", "div-2", "div-3")):
                    sink.add_bytes(featurevis_path(i, c, kind), _pattern_png(1000 * i + 10 * c + k))
    return atlas


def write_test_atlas(
    out: Path,
    *,
    num_classes: int = 6,
    layer_channels: tuple[int, ...] = (8, 12, 10),
    parts: Iterable[str] = ALL_PARTS,
    examples_per_channel: int = 4,
    bins: int = 10,
    nodes_per_layer: int = 3,
    seed: int = 0,
    class_names: tuple[str, ...] | None = None,
) -> Path:
    """Write a random but well-formed atlas at ``out`` and return its path.

    Graph nodes of class ``c`` are the ``nodes_per_layer`` channels with the largest counts
    in each layer; consecutive layers' nodes are joined by random edges.
    """
    parts = tuple(parts)
    rng = np.random.default_rng(seed)
    names = class_names or tuple(f"class {i:03d}" for i in range(num_classes))
    layers = [
        {
            "name": f"layer{i}",
            "channels": ch,
            "height": 4,
            "width": 4,
            "influence_from": None if i == 0 else f"layer{i - 1}",
        }
        for i, ch in enumerate(layer_channels)
    ]
    manifest = {
        "title": f"Test atlas ({num_classes} classes)",
        "model": {
            "name": "TinyNet",
            "spec": "tests:tiny",
            "num_parameters": 1234,
            "input_size": [3, 16, 16],
        },
        "dataset": {
            "name": "RandomSet",
            "split": "train",
            "num_images": 50 * num_classes,
            "description": "random",
        },
        "preprocessing": {
            "image_size": 16,
            "mean": [0.5] * 3,
            "std": [0.5] * 3,
            "grayscale": False,
        },
        "classes": list(names),
        "layers": layers,
        "parameters": {
            "selection": {"mode": "topk", "k": 3},
            "influence_top_k": 2,
            "examples_per_channel": examples_per_channel,
            "aggregate_by": "label",
            "confidence_bins": bins,
            "seed": seed,
        },
        "metrics": {"accuracy": {"train": 0.91, "test": 0.874}},
        "parts": list(parts),
    }
    counts = [rng.integers(0, 50, size=(num_classes, ch)).astype(np.int64) for ch in layer_channels]
    with AtlasWriter(out, manifest, overwrite=True) as writer:
        if PART_SUMMIT in parts:
            num_images = np.full(num_classes, 50, dtype=np.int64)
            writer.add_array(CLASS_PATHS["num_images"], num_images)
            writer.add_array(CLASS_PATHS["num_correct"], rng.integers(10, 51, num_classes))
            writer.add_array(
                CLASS_PATHS["confidence_hist"],
                rng.integers(0, 10, size=(num_classes, bins)).astype(np.int64),
            )
            for i, ch in enumerate(layer_channels):
                writer.add_array(activation_counts_path(i), counts[i])
                if i > 0:
                    rows = num_classes * ch
                    dense_rows = rng.integers(0, layer_channels[i - 1], size=rows)
                    import scipy.sparse as sp

                    matrix = sp.csr_array(
                        (np.ones(rows, dtype=np.int64), (np.arange(rows), dense_rows)),
                        shape=(rows, layer_channels[i - 1]),
                    )
                    for key, array in csr_parts(matrix).items():
                        writer.add_array(influence_paths(i)[key], array)
        if PART_EXAMPLES in parts:
            for i, ch in enumerate(layer_channels):
                paths = examples_paths(i)
                index = rng.integers(0, 50 * num_classes, size=(ch, examples_per_channel))
                index[:, -1] = -1  # fewer examples than slots, as real atlases can have
                writer.add_array(paths["image_index"], index.astype(np.int64))
                writer.add_array(
                    paths["activation"],
                    np.sort(rng.random((ch, examples_per_channel)))[:, ::-1].astype(np.float32),
                )
                writer.add_array(
                    paths["position"],
                    rng.integers(0, 4, size=(ch, examples_per_channel, 2)).astype(np.int32),
                )
                for c in range(ch):
                    for rank in range(min(2, examples_per_channel - 1)):
                        colour = tuple(int(v) for v in rng.integers(40, 230, size=3))
                        writer.add_bytes(example_crop_path(i, c, rank), _png(colour))
        if PART_EMBEDDING in parts:
            for i in range(len(layer_channels)):
                writer.add_array(
                    embedding_path(i), rng.normal(size=(num_classes, 2)).astype(np.float32)
                )
        if PART_GRAPHS in parts:
            _write_graphs(writer, rng, counts, num_classes, nodes_per_layer)
        writer.commit()
    return out


def _write_graphs(
    writer: AtlasWriter,
    rng: np.random.Generator,
    counts: list[np.ndarray],
    num_classes: int,
    nodes_per_layer: int,
) -> None:
    node_offsets, edge_offsets = [0], [0]
    n_layer, n_channel, n_pr, n_x = [], [], [], []
    e_src, e_tgt, e_w = [], [], []
    total = 0
    for c in range(num_classes):
        rows: list[list[int]] = []
        for li, a in enumerate(counts):
            k = min(nodes_per_layer, a.shape[1])
            top = np.argsort(-a[c], kind="stable")[:k]
            ids = []
            for slot, ch in enumerate(top):
                ids.append(total)
                n_layer.append(li)
                n_channel.append(int(ch))
                n_pr.append(float(rng.random()))
                n_x.append(slot - (k - 1) / 2)
                total += 1
            rows.append(ids)
        for lower, upper in itertools.pairwise(rows):
            for t in upper:
                for s in rng.choice(lower, size=min(2, len(lower)), replace=False):
                    e_src.append(int(s))
                    e_tgt.append(int(t))
                    e_w.append(int(rng.integers(1, 50)))
        node_offsets.append(total)
        edge_offsets.append(len(e_src))
    arrays = {
        "node_offsets": np.array(node_offsets, dtype=np.int64),
        "node_layer": np.array(n_layer, dtype=np.int16),
        "node_channel": np.array(n_channel, dtype=np.int32),
        "node_pagerank": np.array(n_pr, dtype=np.float32),
        "node_x": np.array(n_x, dtype=np.float32),
        "edge_offsets": np.array(edge_offsets, dtype=np.int64),
        "edge_source": np.array(e_src, dtype=np.int64),
        "edge_target": np.array(e_tgt, dtype=np.int64),
        "edge_weight": np.array(e_w, dtype=np.int64),
    }
    for name, path in GRAPH_PATHS.items():
        writer.add_array(path, arrays[name])


def synthetic_atlas(out: Path, num_classes: int = 1000) -> Path:
    """A large synthetic atlas: ``compute.synthetic`` when present, else a local stand-in."""
    try:
        from compute.synthetic import write_synthetic_atlas
    except ImportError:
        return write_test_atlas(
            out,
            num_classes=num_classes,
            layer_channels=(256, 480, 512, 512, 512, 528, 832, 832, 1024),
            examples_per_channel=3,
            bins=20,
            nodes_per_layer=6,
            class_names=tuple(f"synthetic class {i}" for i in range(num_classes)),
        )
    return write_synthetic_atlas(
        out, num_classes=num_classes, embedding="pca", seed=0, overwrite=True
    )


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run a test module with torch on one thread, restoring the previous count after: tiny
    float64 ops are far faster single-threaded (and immune to a busy machine). Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch  # here, so tests that never use torch do not import it

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def small_atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-class, 3-layer atlas with every part."""
    return write_test_atlas(tmp_path_factory.mktemp("atlas") / "small")


@pytest.fixture(scope="session")
def text_atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text atlas: the tiny random BERT over 18 labelled sentences, built by the CLI."""
    from tests.helpers.text_models import build_text_atlas

    return build_text_atlas(tmp_path_factory.mktemp("text") / "user")


@pytest.fixture(scope="session")
def large_atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 1,000-class, 9-layer synthetic atlas, generated once per session (about a
    minute on 2 cores); ``NETWORK_ATLAS_TEST_LARGE`` may name an existing one to reuse."""
    existing = os.environ.get("NETWORK_ATLAS_TEST_LARGE")
    if existing:
        return Path(existing)
    start = time.perf_counter()
    path = synthetic_atlas(tmp_path_factory.mktemp("atlas") / "large")
    print(f"\n[large_atlas] generated in {time.perf_counter() - start:.1f} s")
    return path


@pytest.fixture(scope="session")
def featurevis_atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small atlas plus a (fake) featurevis part for every layer."""
    return add_fake_featurevis(write_test_atlas(tmp_path_factory.mktemp("atlas") / "fv"))


@pytest.fixture(scope="session")
def make_atlas() -> Callable[..., Path]:
    """The atlas writer itself, for tests that need a particular atlas (e.g. lacking a part)."""
    return write_test_atlas


@pytest.fixture(scope="session")
def demo() -> Atlas:
    """The shipped demo atlas (every part; its model gets five training images wrong)."""
    from dashboard.config import DEMO_ATLAS_DIR

    return Atlas.open(DEMO_ATLAS_DIR)


@pytest.fixture
def demo_without(tmp_path: Path) -> Callable[[str], Path]:
    """A copy of the demo atlas whose manifest lacks a part (as a build that did not write
    it lists it): ``demo_without("subsets")``."""
    from dashboard.config import DEMO_ATLAS_DIR

    def copy(part: str) -> Path:
        path = Path(shutil.copytree(DEMO_ATLAS_DIR, tmp_path / f"without-{part}"))
        manifest = json.loads((path / "manifest.json").read_text())
        manifest["parts"].remove(part)
        manifest["files"] = {
            k: v for k, v in manifest["files"].items() if not k.startswith(f"{part}/")
        }
        (path / "manifest.json").write_text(json.dumps(manifest))
        return path

    return copy


@pytest.fixture
def atlas_copy(small_atlas: Path, tmp_path: Path) -> Path:
    """A private copy of the small atlas, for tests that damage it."""
    return Path(shutil.copytree(small_atlas, tmp_path / "copy"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In CI a missing browser must fail the run, never skip the browser tests silently."""
    required = os.environ.get("NETWORK_ATLAS_REQUIRE_BROWSER")
    needs_browser = any(item.get_closest_marker("e2e") for item in items)
    if required and needs_browser and shutil.which("chromedriver") is None:
        raise pytest.UsageError(
            "NETWORK_ATLAS_REQUIRE_BROWSER is set but chromedriver is not on PATH: "
            "apt-get install -y chromium chromium-driver"
        )
