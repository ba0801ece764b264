"""``python -m compute build`` of a Hugging Face text classifier over a CSV file, as a user
runs it: from another folder, with relative paths (issue 16).

The atlas holds what the pass gives over the same batches, records the modality and its
token layers, and keeps the text of every input it names (examples, instance records).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from compute.atlas import PART_TEXT, Atlas
from compute.cli import main
from compute.models import get_model
from compute.summit.aggregate import SummitPass
from compute.summit.config import SummitConfig
from compute.text_data import TextCollate, TextDataset, pad_token_id, read_text_rows
from tests.helpers.text_models import BERT_MLP_LAYERS, CLASSES, build_text_atlas

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LAYERS = list(BERT_MLP_LAYERS)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder: the model directory, a CSV file and the atlas built there."""
    return build_text_atlas(tmp_path_factory.mktemp("user") / "folder").parent


def test_the_atlas_is_the_pass_over_the_padded_batches(built: Path) -> None:
    atlas = Atlas.open(built / "atlas", verify_hashes=True)
    assert atlas.modality == "text" and PART_TEXT in atlas.parts
    assert atlas.classes == CLASSES
    model = get_model(f"hf:{built / 'my-bert'}")
    rows = read_text_rows(built / "texts.csv", list(CLASSES))
    dataset = TextDataset(rows, model.tokenizer, 12)
    loader = DataLoader(
        dataset, batch_size=4, collate_fn=TextCollate(pad_token_id(model.tokenizer))
    )
    with SummitPass(model, LAYERS, len(CLASSES), SummitConfig()) as summit:
        for batch in loader:
            summit.update(*batch)
        want = summit.result()
    longest = max(len(dataset[i][0]["input_ids"]) for i in range(len(dataset)))
    assert longest == 12, "truncation at --max-length"
    for k, layer in enumerate(atlas.layers):
        assert (layer.tokens, layer.channels, layer.height, layer.width) == (True, 64, 1, 12)
        np.testing.assert_array_equal(atlas.activation_counts(k), want.activation_counts[k])
    assert atlas.manifest["preprocessing"]["max_length"] == 12
    assert atlas.manifest["dataset"]["num_images"] == len(rows)


def test_every_named_input_keeps_its_text_and_tokens(built: Path) -> None:
    atlas = Atlas.open(built / "atlas")
    model = get_model(f"hf:{built / 'my-bert'}")
    rows = read_text_rows(built / "texts.csv", list(CLASSES))
    named = set(atlas.instances().image_index.tolist())
    for k in range(len(atlas.layers)):
        examples = atlas.examples(k)
        index, position = examples.image_index.ravel(), examples.position.reshape(-1, 2)
        for i, (row, col) in zip(index.tolist(), position.tolist(), strict=True):
            if i < 0:
                continue
            named.add(i)
            text = atlas.text_input(i)
            assert text is not None and row == 0 and 0 <= col < len(text.tokens)
    assert named, "no named input"
    for i in sorted(named):
        text = atlas.text_input(i)
        assert text is not None and text.text == rows.texts[i]
        ids = model.tokenizer(rows.texts[i], truncation=True, max_length=12)["input_ids"]
        assert text.tokens == tuple(model.tokenizer.convert_ids_to_tokens(ids))
        for token, (start, end) in zip(text.tokens, text.spans, strict=True):
            if end > start and not token.startswith("[") and token != "[UNK]":
                assert text.text[start:end].lower() == token.removeprefix("##")
    assert atlas.text_input(10**6) is None


def test_a_bad_row_is_refused_before_the_model_runs(
    built: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(built)
    (built / "bad.csv").write_text("text,label\nthe cat,animal\n,plant\n")
    argv = ["build", "--model", "hf:my-bert", "--data", "bad.csv", "--layers", LAYERS[0],
            "--out", "bad-atlas", "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and len(err.strip().splitlines()) == 1
    assert not (built / "bad-atlas").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--image-size", "64"), ("--normalize", "none"), ("--crops", "3"), ("--mapper-crops", "5"),
     ("--channels-last", None), ("--no-check-images", None), ("--featurevis", None)],
)  # fmt: skip
def test_an_image_option_is_refused_for_a_text_model(
    built: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    option: str,
    value: str | None,
) -> None:
    """An option a text build would ignore is refused in one line, before any work (an
    ignored option builds another atlas than the one asked for)."""
    monkeypatch.chdir(built)
    argv = ["build", "--model", "hf:my-bert", "--data", "texts.csv", "--layers", LAYERS[0],
            "--out", "refused", "--no-progress", option, *([value] if value else [])]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert option in err and len(err.splitlines()) == 1
    assert not (built / "refused").exists()


def test_max_length_is_refused_for_an_image_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["build", "--model", "torchvision:resnet18", "--data", str(tmp_path), "--layers",
            "layer1", "--out", str(tmp_path / "out"), "--max-length", "8"]  # fmt: skip
    assert main(argv) == 2
    assert "--max-length is an option of text models" in capsys.readouterr().err


def test_the_topoact_sample_holds_one_real_token_of_each_input(built: Path) -> None:
    """The Mapper sample of a token layer: per input, the unit vector at one real token
    (picked by the hash of (seed, index, layer)), equal to the layer's output there when
    the input runs alone, unpadded."""
    from compute.atlas import PART_MAPPER as MAPPER

    atlas = Atlas.open(built / "atlas")
    assert MAPPER in atlas.parts
    model = get_model(f"hf:{built / 'my-bert'}")
    rows = read_text_rows(built / "texts.csv", list(CLASSES))
    dataset = TextDataset(rows, model.tokenizer, 12)
    modules = dict(model.named_modules())
    for k, name in enumerate(LAYERS):
        sample = atlas.mapper_sample(k)
        assert sample.image_index.tolist() == list(range(len(rows)))  # all 18 sampled
        tokens = [int(t) for _, t in sample.position.tolist()]
        assert len(set(tokens)) > 1, "the same token everywhere"
        for row, index in enumerate(sample.image_index.tolist()):
            encoded, _, _ = dataset[index]
            assert 0 <= tokens[row] < len(encoded["input_ids"])
            seen: list[torch.Tensor] = []
            handle = modules[name].register_forward_hook(
                lambda _m, _i, o, seen=seen: seen.append(o)
            )
            try:
                with torch.no_grad():
                    model({key: value[None] for key, value in encoded.items()})
            finally:
                handle.remove()
            np.testing.assert_allclose(
                sample.vectors[row], seen[0][0, tokens[row]].numpy(), rtol=1e-4, atol=1e-5
            )


def test_the_default_length_fits_the_model_and_a_longer_one_is_refused() -> None:
    """Without --max-length, texts are cut at 128 tokens or the model's position
    embeddings, whichever is fewer; a longer --max-length is refused in one line (before,
    a long text failed inside the pass)."""
    from types import SimpleNamespace

    from compute.build.cli import DEFAULT_MAX_LENGTH, text_length
    from compute.errors import BuildError

    small, large, unknown = (SimpleNamespace(max_tokens=n) for n in (64, 512, None))
    assert text_length(None, small) == 64
    assert text_length(None, large) == DEFAULT_MAX_LENGTH == 128
    assert text_length(None, unknown) == 128
    assert text_length(32, small) == 32
    with pytest.raises(BuildError, match="--max-length 100 is beyond the model's 64"):
        text_length(100, small)
