"""``python -m compute layers`` on token models: an ``hf:DIR`` BERT and a torchvision ViT
list their token layers with ``T x D``, usable or not, the MLP units marked; ``build``
refuses text models and text data in one line for now."""

from __future__ import annotations

from pathlib import Path

import pytest

from compute.errors import BuildError
from tests.helpers.text_models import HIDDEN, INTERMEDIATE, write_tiny_bert

VIT = "tests.helpers.text_models:tiny_vit"
NATURAL = "MLP units: the natural Summit layer"
BEFORE = "MLP units before the activation"


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from compute.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table(out: str) -> dict[str, list[str]]:
    """Rows of the listing by layer name (comment lines left out)."""
    return {line.split()[0]: line.split() for line in out.splitlines() if line[:1] not in "#"}


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert")


def test_layers_of_a_hugging_face_text_classifier(
    bert_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["layers", "--model", f"hf:{bert_dir}", "--tokens", "6"], capsys)
    assert code == 0
    assert out.splitlines()[0] == (
        f"# hf:{bert_dir} (BertForSequenceClassification, 3 classes), input 6 tokens"
    )
    rows = table(out)
    assert rows["name"] == ["name", "type", "T", "x", "D", "usable", "note"]
    intermediate = rows["bert.encoder.layer.0.intermediate"]
    assert intermediate[1:4] == ["BertIntermediate", f"6x{INTERMEDIATE}", "yes"]
    assert " ".join(intermediate[4:]) == NATURAL
    # The activation inside ``intermediate`` is the same set of units under a second name.
    act = rows["bert.encoder.layer.1.intermediate.intermediate_act_fn"]
    assert act[2:4] == [f"6x{INTERMEDIATE}", "yes"]
    assert " ".join(act[4:]) == "the same units as bert.encoder.layer.1.intermediate"
    assert " ".join(rows["bert.encoder.layer.0.intermediate.dense"][4:]) == BEFORE
    attention = rows["bert.encoder.layer.0.attention.self"]
    assert attention[1:] == ["BertSelfAttention", f"6x{HIDDEN}", "yes"]
    assert rows["bert.embeddings"][2] == f"6x{HIDDEN}"
    assert "bert.pooler" not in rows and "classifier" not in rows  # not token layers
    assert "channels" not in out  # no image-map table for a text model
    code, out, _ = run_cli(["layers", "--model", f"hf:{bert_dir}", "--all"], capsys)
    assert "# other modules: bert.pooler (BertPooler)" in out
    assert "classifier (Linear)" in out


def test_layers_of_a_vision_transformer(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["layers", "--model", VIT, "--image-size", "32"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"# {VIT}, input 3x32x32"
    rows = table(out)
    assert rows["conv_proj"] == ["conv_proj", "Conv2d", "32", "4x4", "-"]  # the map table
    assert "# token layers" in lines
    block = "encoder.layers.encoder_layer_0"
    assert rows[f"{block}.mlp.1"][1:4] == ["GELU", "17x64", "yes"]
    assert " ".join(rows[f"{block}.mlp.1"][4:]) == NATURAL
    assert " ".join(rows[f"{block}.mlp.0"][4:]) == BEFORE
    assert rows[f"{block}.self_attention"][1:] == ["MultiheadAttention", "17x32", "yes"]
    assert rows["encoder.ln"][1:] == ["LayerNorm", "17x32", "yes"]
    assert "heads.head" not in rows


@pytest.mark.parametrize("model", ["hf", "data"])
def test_build_refuses_a_text_model_with_images_and_text_with_an_image_model(
    bert_dir: Path, tmp_path: Path, model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from compute.build.cli import check_text_inputs

    spec = f"hf:{bert_dir}" if model == "hf" else "simple_cnn"
    data = str(tmp_path / ("data.csv" if model == "data" else "images"))
    want = "an hf: text model needs a .csv" if model == "hf" else "is text: give a text classifier"
    with pytest.raises(BuildError, match=want):
        check_text_inputs(spec, data)
    argv = ["build", "--model", spec, "--data", data, "--layers", "x", "--out", str(tmp_path / "o")]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert err.startswith("error: --data") and len(err.strip().splitlines()) == 1
