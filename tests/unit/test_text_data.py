"""Text data: CSV / JSONL / ``datasets`` folders read and checked up front (one line naming
the row), tokenised per input, padded per batch with an attention mask."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from compute.errors import BuildError
from compute.hf import load_hf_classifier
from compute.text_data import (
    BY_INDEX,
    BY_NAME,
    TextCollate,
    TextDataset,
    TextRows,
    is_datasets_folder,
    is_text_data,
    pad_token_id,
    read_text_rows,
)
from tests.helpers.text_models import CLASSES, SENTENCES, write_tiny_bert


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert")


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def test_csv_with_class_names(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "d.csv",
        [
            "id,text,label",
            '1,"the cat, the dog",animal',
            "2,a tall oak grows,plant",
            "",
            "3,rice,food",
        ],
    )
    rows = read_text_rows(path, CLASSES)
    assert rows.texts == ("the cat, the dog", "a tall oak grows", "rice")
    assert rows.labels == (0, 1, 2)
    assert rows.label_kind == BY_NAME and len(rows) == 3


def test_jsonl_with_indices(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "sweet apple", "label": 2},
                                              {"text": "a small dog", "label": "0"}])  # fmt: skip
    rows = read_text_rows(path, CLASSES)
    assert rows.labels == (2, 0) and rows.label_kind == BY_INDEX


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["text,label", "the cat,animal", "  ,plant"], r"d\.csv, line 3: empty text '  '"),
        (["text,label", "the cat,fish"], r"line 2: unknown label 'fish' \(the model's classes"),
        (["text,label", "the cat,7"], r"line 2: label '7' is not an output index .*0\.\.2"),
        (["text,label", "the cat,"], "line 2: missing label"),
        (["text,label", "the cat"], "line 2: missing label"),
        (["text,class", "the cat,animal"], r"line 1: no 'label' column \(the header has"),
        (["label", "animal"], r"line 1: no 'text' column"),
        (
            ["text,label", "the cat,animal", "", "rice,2"],
            r"line 4: label '2' is a class index, but line 2 has the class name 'animal'",
        ),
        (['text,label', '"two\nlines",animal', "x,fish"], r"line 4: unknown label 'fish'"),
        ([], "empty file"),
        (["text,label"], "no rows"),
    ],
    ids=["empty-text", "unknown", "index-range", "empty-label", "short-row", "no-label-col",
         "no-text-col", "mixed", "multiline-cell", "empty-file", "header-only"],
)  # fmt: skip
def test_csv_refusals_name_the_line(tmp_path: Path, lines: list[str], message: str) -> None:
    path = write_csv(tmp_path / "d.csv", lines)
    with pytest.raises(BuildError, match=message) as info:
        read_text_rows(path, CLASSES)
    assert "\n" not in str(info.value).replace("two\nlines", "")


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"text": "a", "label": "animal"}, {"text": "", "label": "food"}], "line 2: empty text"),
        ([{"label": "food"}], "line 1: missing text"),
        ([{"text": 3, "label": "food"}], "line 1: text 3 is not a string"),
        ([{"text": "a", "label": True}], "line 1: unknown label True"),
        ([{"text": "a", "label": 1.5}], "line 1: unknown label 1.5"),
        ([{"text": "a", "label": 1}, {"text": "b", "label": "plant"}], "line 2: .* not both"),
        ([["a", "animal"]], "line 1: not a JSON object"),
    ],
    ids=["empty", "no-text", "not-str", "bool", "float", "mixed", "array"],
)
def test_jsonl_refusals_name_the_line(tmp_path: Path, records: list[object], message: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", records)
    with pytest.raises(BuildError, match=message):
        read_text_rows(path, CLASSES)


def test_jsonl_line_numbers_count_blank_lines_and_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 0}\n\n{"text": "b", "label": 9}\n')
    with pytest.raises(BuildError, match=r"d\.jsonl, line 3: label 9 is not an output index"):
        read_text_rows(path, CLASSES)
    path.write_text('{"text": "a", "label": 0}\n{"text": \n')
    with pytest.raises(BuildError, match=r"line 2: not JSON"):
        read_text_rows(path, CLASSES)


def test_sources_that_are_not_text_data(tmp_path: Path) -> None:
    assert is_text_data("a.csv") and is_text_data("b.JSONL") and not is_text_data(tmp_path)
    with pytest.raises(BuildError, match="text data file not found"):
        read_text_rows(tmp_path / "missing.csv", CLASSES)
    with pytest.raises(BuildError, match=r"must be a \.csv or \.jsonl file"):
        read_text_rows(tmp_path / "data.txt", CLASSES)
    (tmp_path / "bad.csv").write_bytes(b"text,label\n\xff\xfe,animal\n")
    with pytest.raises(BuildError, match="cannot read it"):
        read_text_rows(tmp_path / "bad.csv", CLASSES)


def test_a_datasets_folder_without_the_package_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "state.json").write_text("{}")
    (folder / "dataset_info.json").write_text("{}")
    assert is_datasets_folder(folder) and is_text_data(folder)
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(BuildError, match=r"needs the datasets package \(pip install datasets\)"):
        read_text_rows(folder, CLASSES)


def test_a_datasets_folder(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    names = datasets.ClassLabel(names=["food", "animal"])  # not the model's order
    features = datasets.Features({"text": datasets.Value("string"), "label": names})
    data = datasets.Dataset.from_dict(
        {"text": ["rice", "a small dog", "hot soup"], "label": [0, 1, 0]}, features=features
    )
    data.save_to_disk(str(tmp_path / "train"))
    rows = read_text_rows(tmp_path / "train", CLASSES)
    assert rows.labels == (2, 0, 2) and rows.label_kind == BY_NAME  # by the ClassLabel names
    plain = datasets.Dataset.from_dict({"text": ["rice", " "], "label": [2, 0]})
    plain.save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(BuildError, match=r"plain, row 1: empty text"):
        read_text_rows(tmp_path / "plain", CLASSES)
    datasets.DatasetDict({"train": data, "test": data}).save_to_disk(str(tmp_path / "both"))
    with pytest.raises(BuildError, match=r"several splits \(train, test\): pass one split"):
        read_text_rows(tmp_path / "both", CLASSES)


def test_dataset_items_are_deterministic_and_truncated(bert_dir: Path) -> None:
    tokenizer = load_hf_classifier(bert_dir).tokenizer
    rows = TextRows(("the big bird in the tree", "rice"), (0, 2), BY_NAME, "test")
    data = TextDataset(rows, tokenizer, max_length=5)
    encoded, label, index = data[0]
    assert (label, index) == (0, 0)
    assert set(encoded) == {"input_ids", "token_type_ids", "attention_mask"}
    assert encoded["input_ids"].tolist()[0] == tokenizer.cls_token_id
    assert encoded["input_ids"].tolist()[-1] == tokenizer.sep_token_id
    assert len(encoded["input_ids"]) == 5  # truncated, special tokens kept
    assert torch.equal(data[0][0]["input_ids"], encoded["input_ids"])
    assert len(data[1][0]["input_ids"]) == 3  # [CLS] rice [SEP]: no padding per item
    with pytest.raises(BuildError, match="must be >= 2"):
        TextDataset(rows, tokenizer, max_length=1)
    with pytest.raises(BuildError, match="beyond the model's limit of 64"):
        TextDataset(rows, tokenizer, max_length=65)


def test_collate_pads_to_the_longest_and_masks(bert_dir: Path) -> None:
    tokenizer = load_hf_classifier(bert_dir).tokenizer
    texts = tuple(text for group in SENTENCES.values() for text in group)
    rows = TextRows(texts, tuple(range(len(texts))), BY_INDEX, "test")
    data = TextDataset(rows, tokenizer, max_length=16)
    loader = DataLoader(data, batch_size=4, collate_fn=TextCollate(pad_token_id(tokenizer)))
    seen = []
    for batch, labels, indices in loader:
        lengths = [len(data[int(i)][0]["input_ids"]) for i in indices]
        assert batch["input_ids"].shape == (len(indices), max(lengths))
        for row, length in enumerate(lengths):
            assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (
                max(lengths) - length
            )
            assert set(batch["input_ids"][row, length:].tolist()) <= {tokenizer.pad_token_id}
        assert labels.tolist() == indices.tolist()
        seen += indices.tolist()
    assert seen == list(range(len(texts)))
