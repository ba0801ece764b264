"""``python -m compute build`` of a Vision Transformer's token layers over an image folder
(issue 16): the units are the MLP's hidden units, an example's position is its token, and
its crop is that token's patch (the whole image for the class token)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compute.atlas import PART_MAPPER, Atlas
from compute.cli import main
from compute.data import Preprocessing, open_image_folder
from compute.receptive_field import ReceptiveField, crop_box

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LAYERS = ["encoder.layers.encoder_layer_0.mlp.1", "encoder.layers.encoder_layer_1.mlp.1"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("vit")
    rng = np.random.default_rng(0)
    for k, name in enumerate(("red", "green", "blue")):
        (folder / "imgs" / name).mkdir(parents=True)
        for i in range(6):
            pixels = (rng.random((40, 40, 3)) * 120).astype(np.uint8)
            pixels[:, :, k] += 120
            Image.fromarray(pixels).save(folder / "imgs" / name / f"{i}.png")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        code = main(
            [
                "build", "--model", "tests.helpers.text_models:tiny_vit", "--data", "imgs",
                "--layers", ",".join(LAYERS), "--image-size", "32", "--out", "atlas",
                "--crops", "3", "--workers", "0", "--no-progress",
            ]
        )  # fmt: skip
    assert code == 0
    return folder


def test_examples_are_tokens_and_their_crops_are_their_patches(built: Path) -> None:
    atlas = Atlas.open(built / "atlas", verify_hashes=True)
    assert atlas.modality == "image" and PART_MAPPER in atlas.parts
    for layer in atlas.layers:
        assert (layer.tokens, layer.channels, layer.height, layer.width) == (True, 64, 1, 17)
    fields = atlas.parameters["receptive_fields"]
    assert fields[LAYERS[0]]["tokens"] == {"prefix": 1, "columns": 4}
    preprocessing = Preprocessing.from_arg("imagenet", image_size=32, grayscale=False)
    dataset, _ = open_image_folder(built / "imgs", preprocessing, num_outputs=3, progress=False)
    checked = 0
    for k in range(len(atlas.layers)):
        field = ReceptiveField.from_manifest(fields[LAYERS[k]])
        table = atlas.examples(k)
        for channel in range(0, 64, 9):
            for rank in range(3):
                index = int(table.image_index[channel, rank])
                row, token = (int(v) for v in table.position[channel, rank])
                relpath = atlas.example_crop(k, channel, rank)
                if index < 0 or relpath is None:
                    continue
                assert row == 0 and 0 <= token < 17
                image = preprocessing.unnormalize(dataset[index][0])
                pixels = (image.numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
                top, left, bottom, right = crop_box(field, 0, token, 32)
                want = (bottom - top, right - left)
                if token == 0:
                    assert want == (32, 32)  # the class token: the whole image
                else:
                    assert want == (8, 8)
                    patch_row, patch_col = divmod(token - 1, 4)
                    assert (top, left) == (8 * patch_row, 8 * patch_col)
                crop = np.asarray(Image.open(io.BytesIO(atlas.read_bytes(relpath))).convert("RGB"))
                reference = Image.fromarray(
                    pixels[:, top:bottom, left:right].transpose(1, 2, 0)
                ).resize(crop.shape[1::-1], Image.Resampling.NEAREST)
                assert np.abs(crop.astype(int) - np.asarray(reference).astype(int)).max() <= 1
                checked += 1
    assert checked > 10


def test_feature_visualization_optimises_a_unit_over_the_patch_tokens() -> None:
    """A ViT token layer ``[N, T, D]`` reaches the objectives as the grid of its patch
    tokens ``[N, D, rows, cols]`` (class token left out): the channel objective of unit
    ``d`` is the mean of unit ``d`` over the patches, and "center" is the middle patch."""
    from compute.featurevis import objectives
    from compute.featurevis.render import LayerCapture
    from tests.helpers.text_models import tiny_vit

    model = tiny_vit().eval()
    layer = "encoder.layers.encoder_layer_1.mlp.1"
    images = torch.rand(2, 3, 32, 32)
    raw: list[torch.Tensor] = []
    hook = dict(model.named_modules())[layer].register_forward_hook(
        lambda _m, _i, out: raw.append(out)
    )
    with torch.no_grad():
        model(images)
    hook.remove()
    tokens = raw[0]  # [N, 1 + P, D]
    with LayerCapture(model, layer) as capture, torch.no_grad():
        acts = capture(images)
    n, t, d = tokens.shape
    side = 32 // model.patch_size
    assert t == 1 + side * side and acts.shape == (n, d, side, side)  # the patch grid
    units = torch.tensor([5, d - 1])
    score = objectives.channel(acts, units)
    want = torch.stack([tokens[i, 1:, int(u)].mean() for i, u in enumerate(units)])
    torch.testing.assert_close(score, want)
    # The patch at row r, column c of the image is token 1 + r * side + c.
    r, c = side - 1, 0
    torch.testing.assert_close(acts[:, :, r, c], tokens[:, 1 + r * side + c, :])


def test_the_neuron_page_marks_the_examples_whose_crop_is_the_whole_image(
    built: Path, tmp_path: Path
) -> None:
    """An example whose maximum is at the class token shows the whole image: the page
    marks exactly those [CLS] (a newcomer took it for a patch), and says what crops are."""
    from dashboard import data as atlas_data
    from dashboard.views.common import ViewContext
    from dashboard.views.summit.neuron_page import examples_card
    from tests.helpers.components import components

    atlas = Atlas.open(built / "atlas")
    context = ViewContext(
        data=atlas_data.load(str(built / "atlas"), str(tmp_path / "cache")),
        file_prefix="/atlas-file/",
    )
    seen = set()
    for layer in range(len(atlas.layers)):
        table = atlas.examples(layer)
        for channel in range(64):
            card = examples_card(context, layer, channel)
            figures = [c for c in components(card) if c["type"] == "Figure"]
            marks = [
                any(
                    c["type"] == "Span" and c["props"].get("className") == "cls-token"
                    for c in components(figure)
                )
                for figure in figures
            ]
            tokens = table.position[channel, : len(figures), 1].tolist()
            assert marks == [token == 0 for token in tokens], (layer, channel)
            seen.update(marks)
    assert seen == {True, False}  # both kinds occur on this model
    assert "whole image where the maximum is at the class token" in str(card.to_plotly_json())
