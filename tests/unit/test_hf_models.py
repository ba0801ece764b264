"""``--model hf:DIR``: loading a local Hugging Face text classifier, its refusals, and the
wrapper's names and outputs (a tiny random BERT written to a temporary folder)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compute.errors import BuildError
from compute.hf import HFClassifier, load_hf_classifier
from compute.models import count_outputs, get_model, model_input, model_name, parse_spec
from tests.helpers.text_models import CLASSES, write_tiny_bert


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert")


def copy_without(source: Path, target: Path, *names: str) -> Path:
    shutil.copytree(source, target)
    for name in names:
        (target / name).unlink()
    return target


def test_spec_kind_and_name(bert_dir: Path) -> None:
    assert parse_spec(f"hf:{bert_dir}") == ("hf", str(bert_dir))
    assert model_name(f"hf:{bert_dir}") == "tiny-bert"
    with pytest.raises(BuildError, match=r"name a model, e\.g\. hf:"):
        parse_spec("hf:")


def test_loads_a_classifier_with_its_classes_and_tokenizer(bert_dir: Path) -> None:
    model = get_model(f"hf:{bert_dir}")
    assert isinstance(model, HFClassifier)
    assert model.classes == list(CLASSES)
    assert model.architecture == "BertForSequenceClassification"
    assert not model.training and not model.hf_model.training
    assert model.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert count_outputs(model, model_input(model, tokens=6)) == 3
    ids = model.tokenizer("the cat eats fish")["input_ids"]
    assert model.tokenizer.unk_token_id not in ids  # the vocabulary was read


def test_the_wrapper_keeps_the_hugging_face_names(bert_dir: Path) -> None:
    """named_modules() and state_dict() keys are the Hugging Face model's own, no prefix."""
    model = load_hf_classifier(bert_dir)
    inner = model.hf_model
    assert [n for n, _ in model.named_modules()] == [n for n, _ in inner.named_modules()]
    assert list(model.state_dict()) == list(inner.state_dict())
    names = dict(model.named_modules())
    assert "bert.encoder.layer.0.intermediate" in names
    assert names["classifier"] is inner.classifier  # the same objects: hooks reach them
    model.train()
    assert inner.training and inner.bert.encoder.training
    model.eval()
    assert not inner.training and not inner.bert.encoder.training


def test_batch_dict_in_logits_out(bert_dir: Path) -> None:
    model = load_hf_classifier(bert_dir)
    batch = dict(
        model.tokenizer(["the cat", "a tall oak grows"], padding=True, return_tensors="pt")
    )
    logits = model(batch)
    assert logits.shape == (2, 3)
    with torch.no_grad():
        expected = model.hf_model(**batch).logits
    torch.testing.assert_close(logits.detach(), expected, rtol=0, atol=0)
    without_types = {k: v for k, v in batch.items() if k != "token_type_ids"}
    assert model(without_types).shape == (2, 3)  # token_type_ids are optional
    with pytest.raises(ValueError, match="input_ids"):
        model({"attention_mask": batch["attention_mask"]})


def test_weights_file_loads_strictly_with_hugging_face_keys(bert_dir: Path, tmp_path: Path) -> None:
    model = load_hf_classifier(bert_dir)
    state = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v
             for k, v in model.state_dict().items()}  # fmt: skip
    torch.save(state, tmp_path / "w.pt")
    loaded = get_model(f"hf:{bert_dir}", weights=tmp_path / "w.pt")
    assert torch.all(loaded.hf_model.classifier.weight == 0.5)


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda src, dst: dst, "hf: model directory not found"),
        (lambda src, dst: copy_without(src, dst, "config.json"), "has no config.json"),
        (
            lambda src, dst: copy_without(src, dst, "tokenizer.json", "vocab.txt"),
            r"has no tokenizer files .*tokenizer.save_pretrained",
        ),
    ],
    ids=["missing-dir", "no-config", "no-tokenizer"],
)
def test_one_line_refusals(bert_dir: Path, tmp_path: Path, prepare, message: str) -> None:  # type: ignore[no-untyped-def]
    path = prepare(bert_dir, tmp_path / "copy")
    with pytest.raises(BuildError, match=message) as info:
        get_model(f"hf:{path}")
    assert "\n" not in str(info.value)


def test_a_bare_encoder_is_refused_naming_the_fix(tmp_path: Path) -> None:
    bare = write_tiny_bert(tmp_path / "bare", head=False)
    with pytest.raises(BuildError, match=r"holds BertModel, an encoder without a seq") as info:
        get_model(f"hf:{bare}")
    assert "AutoModelForSequenceClassification" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_head_whose_weights_are_missing_is_refused(bert_dir: Path, tmp_path: Path) -> None:
    """A config claiming a classifier over files without its head: the head would be random."""
    bare = write_tiny_bert(tmp_path / "bare", head=False)
    config = json.loads((bare / "config.json").read_text())
    config["architectures"] = ["BertForSequenceClassification"]
    (bare / "config.json").write_text(json.dumps(config))
    with pytest.raises(BuildError, match="without 'classifier"):
        get_model(f"hf:{bare}")


def test_num_classes_must_be_the_models(bert_dir: Path) -> None:
    assert len(get_model(f"hf:{bert_dir}", num_classes=3).classes) == 3
    with pytest.raises(BuildError, match=r"has 3 classes .* not --num-classes 5"):
        get_model(f"hf:{bert_dir}", num_classes=5)


def test_without_transformers_the_error_names_the_install(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails
    with pytest.raises(BuildError, match=r"need the transformers package: pip install"):
        get_model(f"hf:{bert_dir}")


def test_image_modules_do_not_import_transformers() -> None:
    code = (
        "import sys, compute.models, compute.build.cli, compute.tokens, compute.text_data; "
        "print('transformers' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert result.stdout.strip() == "False"
