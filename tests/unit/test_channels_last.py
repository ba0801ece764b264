"""Channels-last maps (torchvision's Swin, the inside of ConvNeXt blocks): their modules
output ``[N, H, W, C]``. The layer listing names them channels last, and every pass reads
them as the ``[N, C, H, W]`` maps they stand for: a tiny Swin's pass equals a plain
reference that reads the raw ``[N, H, W, C]`` outputs one image at a time with loops."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from compute.atlas import PART_MAPPER, Atlas
from compute.build.checks import check_layers
from compute.capture import HookSet
from compute.cli import main
from compute.crops import receptive_fields
from compute.featurevis.render import LayerCapture
from compute.models import describe_layers, get_model
from compute.receptive_field import crop_box
from compute.summit.aggregate import SummitPass
from compute.summit.config import SummitConfig
from compute.summit.gradient import MAX_CHANNELS
from tests.helpers.atlas_models import write_image_folder
from tests.helpers.text_models import tiny_swin
from tests.reference import layer_outputs, output_with_scaled_channel, select_mass, select_topk

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The tiny Swin's MLP units (after the GELU) in its two stages: [N, 8, 8, 32], [N, 4, 4, 64].
SWIN_LAYERS = ["features.1.0.mlp.1", "features.3.0.mlp.1"]
CONFIG = SummitConfig(tau=0.2, influence_top_k=3, examples_per_channel=4)
CLASSES = 3


def test_swin_layers_are_described_channels_last_and_usable() -> None:
    model = get_model("torchvision:swin_t").eval()
    listed = describe_layers(model, (3, 224, 224))
    rows = {row.name: row for row in listed}
    names = [row.name for row in listed]  # in execution order: PatchMerging norms first
    assert names.index("features.2.norm") < names.index("features.2.reduction")
    block = rows["features.1"]  # [N, 56, 56, 96]
    assert block.channels_last and block.spatial
    assert (block.channels, block.height, block.width) == (96, 56, 56)
    assert rows["features.1.0.mlp.0"].channels == 384  # the MLP's hidden units
    assert rows["features.0.0"].spatial and not rows["features.0.0"].channels_last  # the conv
    assert rows["permute"].spatial and not rows["permute"].channels_last  # back at the end
    check_layers(model, ["features.0.0", "features.1"], (3, 224, 224))


def test_a_convnext_blocks_inside_is_channels_last_and_its_output_is_not() -> None:
    model = get_model("torchvision:convnext_tiny").eval()
    rows = {row.name: row for row in describe_layers(model, (3, 64, 64))}
    inner = rows["features.1.0.block.3"]  # Linear on [N, H, W, 96]
    assert inner.channels_last and inner.channels == 384
    assert not rows["features.1.0.block.0"].channels_last  # the depthwise conv before
    assert rows["features.1.0"].spatial and rows["features.1"].channels == 96
    check_layers(model, ["features.0", "features.1"], (3, 64, 64))


def test_hooks_with_the_model_see_channels_first_views_and_replace_in_the_modules_layout() -> None:
    model = tiny_swin().double().eval()
    x = torch.randn(2, 3, 32, 48, dtype=torch.float64)  # not square: no shape reads both ways
    module = dict(model.named_modules())["features.1"]
    raw: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: raw.append(out.detach()))
    seen: list[Tensor] = []
    with HookSet(model) as hooks:
        hooks.on_output(module, lambda t: seen.append(t.detach()))
        # A replacement given channels first goes back channels last: the same output.
        hooks.on_forward(
            module,
            lambda _m, _i, out: hooks.replace_layer_tensor(out, hooks.layer_tensor(out) * 2),
        )
        doubled = model(x)
    handle.remove()
    assert raw[0].shape == (2, 8, 12, 8) and seen[0].shape == (2, 8, 8, 12)
    torch.testing.assert_close(seen[0], raw[0].permute(0, 3, 1, 2), rtol=0, atol=0)
    with torch.no_grad():  # the same doubling done by hand on the raw layout
        again = module.register_forward_hook(lambda _m, _i, out: out * 2)
        want = model(x)
        again.remove()
    torch.testing.assert_close(doubled, want)
    with HookSet() as plain:  # without the model: outputs as they are
        plain.on_output(module, lambda t: seen.append(t.detach()))
        model(x)
    assert seen[-1].shape == (2, 8, 12, 8)  # [N, H, W, C]: not permuted


def test_a_forward_that_fails_halfway_leaves_no_stale_layout() -> None:
    """A forward stopped inside the channels-last region (as the receptive-field probe and
    feature visualization stop theirs) must not make the next forward's maps look channels
    last where they are not."""
    model = tiny_swin().double().eval()
    modules = dict(model.named_modules())
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    seen: list[Tensor] = []

    class Stop(Exception):
        pass

    def stop(_t: Tensor) -> None:
        raise Stop

    with HookSet(model) as hooks:
        hooks.on_output(modules["features.1"], stop)
        hooks.on_output(modules["permute"], lambda t: seen.append(t.detach()))  # channels first
        with pytest.raises(Stop):
            model(x)
    with HookSet(model) as hooks:
        hooks.on_output(modules["features.0.0"], lambda t: seen.append(t.detach()))  # the conv
        hooks.on_output(modules["permute"], lambda t: seen.append(t.detach()))
        model(x)
    raw = layer_outputs(model, ["features.0.0", "permute"], x)
    torch.testing.assert_close(seen[0], raw["features.0.0"])  # not permuted
    torch.testing.assert_close(seen[1], raw["permute"])


def test_window_attention_crops_are_centred_on_each_positions_grid_cell(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In a Swin stage two neighbouring positions of one window see the same window, so
    the measured stride is 0: each position's crop is then centred on its own 4 px cell
    (stride 4) with the window's size (7 x 4 px), and the build says it is approximate."""
    model = get_model("torchvision:swin_t").eval()
    with caplog.at_level(logging.WARNING, logger="compute.crops"):
        field = receptive_fields(model, ["features.1"], (3, 224, 224))["features.1"]
    assert field.stride == (4.0, 4.0) and field.size == (28, 28)  # one 7 x 7 window
    for row, col in ((0, 0), (17, 40), (55, 55)):
        top, left, bottom, right = crop_box(field, row, col, 224)
        assert top <= 4 * row and 4 * row + 3 < bottom  # the position's own cell inside
        assert left <= 4 * col and 4 * col + 3 < right
        assert bottom - top <= 28 and right - left <= 28
    assert "does not move with its position" in caplog.text
    # A convolution's field moves with its position: measured as before, no warning.
    caplog.clear()
    net = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2, padding=1), nn.Conv2d(1, 1, 3, padding=1))
    with caplog.at_level(logging.WARNING, logger="compute.crops"):
        conv = receptive_fields(net, ["1"], (1, 32, 32))["1"]
    assert conv.stride == (2.0, 2.0) and conv.size == (7, 7) and not caplog.text


def spatial_max_plain(z: Tensor) -> tuple[list[float], list[tuple[int, int]]]:
    """Per channel of ``z [H, W, C]``: its maximum and the first ``(row, col)`` holding it
    (row-major), by loops."""
    values, where = [], []
    for channel in range(z.shape[2]):
        best, at = -math.inf, (0, 0)
        for row in range(z.shape[0]):
            for col in range(z.shape[1]):
                if float(z[row, col, channel]) > best:
                    best, at = float(z[row, col, channel]), (row, col)
        values.append(best)
        where.append(at)
    return values, where


def test_a_swin_pass_equals_a_plain_reference_on_the_raw_channels_last_outputs() -> None:
    model = tiny_swin().double().eval()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(8, 3, 32, 32, generator=generator, dtype=torch.float64)
    labels = torch.arange(8) % CLASSES
    counts = [np.zeros((CLASSES, 32), np.int64), np.zeros((CLASSES, 64), np.int64)]
    best: list[list[list[tuple[float, int, tuple[int, int]]]]] = [
        [[] for _ in range(32)],
        [[] for _ in range(64)],
    ]
    influence = np.zeros((CLASSES * 64, 32), np.int64)
    for index in range(len(images)):
        x, label = images[index : index + 1], int(labels[index])
        seen = layer_outputs(model, SWIN_LAYERS, x)
        per_layer = [spatial_max_plain(seen[name][0]) for name in SWIN_LAYERS]
        for k, (values, where) in enumerate(per_layer):
            for channel in select_mass(values, CONFIG.tau):
                counts[k][label, channel] += 1
            for channel, (value, at) in enumerate(zip(values, where, strict=True)):
                best[k][channel].append((value, index, at))
        values, where = per_layer[1]
        chosen = sorted(select_mass(values, CONFIG.tau), key=lambda i: (-values[i], i))
        for channel in chosen[:MAX_CHANNELS]:
            row, col = where[channel]
            g = []
            for j in range(32):
                h = 1e-6
                # channels last: the source's channels are its last axis
                up = output_with_scaled_channel(model, x, *SWIN_LAYERS, j, 1 + h, -1)
                down = output_with_scaled_channel(model, x, *SWIN_LAYERS, j, 1 - h, -1)
                g.append(float(up[row, col, channel] - down[row, col, channel]) / (2 * h))
            for j in select_topk(g, CONFIG.influence_top_k):
                influence[label * 64 + channel, j] += 1

    with SummitPass(model, SWIN_LAYERS, CLASSES, CONFIG) as summit:
        for k in range(0, len(images), 3):
            summit.update(images[k : k + 3], labels[k : k + 3], torch.arange(k, min(k + 3, 8)))
        result = summit.result()

    for k in range(2):
        np.testing.assert_array_equal(result.activation_counts[k], counts[k], err_msg=f"{k}")
        assert counts[k].sum() > 0
        for channel, entries in enumerate(best[k]):
            top = sorted(entries, key=lambda e: (-e[0], e[1]))[: CONFIG.examples_per_channel]
            assert result.example_index[k][channel].tolist() == [e[1] for e in top]
            np.testing.assert_allclose(result.example_value[k][channel], [e[0] for e in top])
            assert result.example_position[k][channel].tolist() == [list(e[2]) for e in top]
    assert [tuple(shape) for shape in result.layer_shapes] == [(32, 8, 8), (64, 4, 4)]
    got = result.influence_counts[1]
    assert got is not None and got.nnz > 0
    np.testing.assert_array_equal(got.toarray(), influence)


def test_feature_visualization_reads_a_swin_unit_channels_first() -> None:
    model = tiny_swin().eval()
    x = torch.randn(2, 3, 32, 32)
    with LayerCapture(model, "features.1") as capture:
        out = capture(x)
    raw = layer_outputs(model, ["features.1"], x)["features.1"]
    torch.testing.assert_close(out, raw.permute(0, 3, 1, 2))


def test_build_of_a_swin_from_another_folder_has_crops_and_a_mapper_part(
    tmp_path: Path,
) -> None:
    write_image_folder(tmp_path / "imgs", classes=3, per_class=5, size=40)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        code = main(
            [
                "build", "--model", "tests.helpers.text_models:tiny_swin", "--data", "imgs",
                "--layers", "features.1,features.3", "--image-size", "32", "--out", "atlas",
                "--crops", "2", "--workers", "0", "--no-progress",
            ]
        )  # fmt: skip
    assert code == 0
    atlas = Atlas.open(tmp_path / "atlas", verify_hashes=True)
    assert PART_MAPPER in atlas.parts
    shapes = [(layer.channels, layer.height, layer.width) for layer in atlas.layers]
    assert shapes == [(8, 8, 8), (16, 4, 4)]  # read channels first
    fields = atlas.parameters["receptive_fields"]
    # A stage-1 position is a 4 px patch; a stage-2 position (after merging 2x2) 8 px.
    assert [fields[name]["stride"] for name in ("features.1", "features.3")] == [[4, 4], [8, 8]]
    crops = [
        atlas.example_crop(k, channel, 0)
        for k in range(2)
        for channel in range(atlas.layers[k].channels)
    ]
    assert all(crop is not None for crop in crops)
