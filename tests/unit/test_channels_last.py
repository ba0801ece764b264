"""Channels-last maps (torchvision's Swin, the inside of ConvNeXt blocks): their modules
output ``[N, H, W, C]``, which Summit's pass would read with rows as channels. The layer
listing names them channels last and a build refuses them in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from compute.build.checks import check_layers
from compute.errors import BuildError
from compute.models import describe_layers, get_model


def test_swin_layers_are_described_channels_last_and_refused(tmp_path: Path) -> None:
    model = get_model("torchvision:swin_t").eval()
    rows = {row.name: row for row in describe_layers(model, (3, 224, 224))}
    block = rows["features.1"]  # [N, 56, 56, 96]
    assert block.channels_last and not block.spatial
    assert (block.channels, block.height, block.width) == (96, 56, 56)
    assert rows["features.1.0.mlp.0"].channels == 384  # the MLP's hidden units
    assert rows["features.0.0"].spatial and not rows["features.0.0"].channels_last  # the conv
    assert rows["permute"].spatial  # back to [N, C, H, W] at the end
    with pytest.raises(BuildError, match=r"channels-last maps \[N, H, W, C\] \(e\.g\. Swin"):
        check_layers(model, ["features.0.0", "features.1"], (3, 224, 224))


def test_a_convnext_blocks_inside_is_channels_last_and_its_output_is_not() -> None:
    model = get_model("torchvision:convnext_tiny").eval()
    rows = {row.name: row for row in describe_layers(model, (3, 64, 64))}
    inner = rows["features.1.0.block.3"]  # Linear on [N, H, W, 96]
    assert inner.channels_last and inner.channels == 384
    assert not rows["features.1.0.block.0"].channels_last  # the depthwise conv before
    assert rows["features.1.0"].spatial and rows["features.1"].channels == 96
    check_layers(model, ["features.0", "features.1"], (3, 64, 64))  # usable, as before
