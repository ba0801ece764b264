"""Text data for a build: labelled texts read and checked up front, tokenised per input.

``--data`` for an ``hf:DIR`` model is one of:

- a ``.csv`` file with a header naming (at least) a ``text`` and a ``label`` column;
- a ``.jsonl`` file: one JSON object per line with ``text`` and ``label`` keys (blank
  lines are skipped);
- a Hugging Face ``datasets`` folder written by ``Dataset.save_to_disk`` with ``text`` and
  ``label`` columns (needs ``pip install datasets``; a ``DatasetDict`` is refused: name
  one split's folder). A ``ClassLabel`` label column is read as its class names.

A **label** is either a class name of the model (its config's ``id2label``) or an integer
output index (a JSON number, or a text of digits); a label equal to a class name counts
as that name. One file uses one kind: mixing names and indices is refused.

Every row is checked before any model work (:func:`read_text_rows`): a missing column,
an empty text or an unknown label is refused in one line naming the row, as
``FILE, line N`` (1-based physical lines, the CSV header being line 1) or, for a
``datasets`` folder, ``FOLDER, row I`` (``I`` the 0-based row, the input's index).

:class:`TextDataset` yields ``(encoded, label, index)`` with the index the row's order;
:class:`TextCollate` pads a batch to its longest input (right padding) and returns its
``attention_mask``, so statistics can leave padding out (:func:`compute.tokens.token_max`).

Examples:
    >>> rows = read_text_rows("reviews.csv", ["neg", "pos"])       # doctest: +SKIP
    >>> data = TextDataset(rows, tokenizer, max_length=128)         # doctest: +SKIP
    >>> loader = DataLoader(data, batch_size=32,
    ...                     collate_fn=TextCollate(tokenizer.pad_token_id))  # doctest: +SKIP
    >>> batch, labels, indices = next(iter(loader))                  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from compute.errors import BuildError

#: The columns a text data file must have.
TEXT_COLUMN = "text"
LABEL_COLUMN = "label"

#: File suffixes read as text data (a ``datasets`` folder is recognised by its files).
TEXT_SUFFIXES = (".csv", ".jsonl")

#: ``TextRows.label_kind`` values.
BY_NAME = "name"
BY_INDEX = "index"

#: One record of a source: where it is (``line 3``, ``row 2``) and its fields.
Record = tuple[str, Mapping[str, Any]]


@dataclass(frozen=True)
class TextRows:
    """Labelled texts, checked: ``texts[i]`` has output index ``labels[i]``.

    Attributes:
        texts: the texts, in the source's order (the dataset index is the position).
        labels: output indices of the model.
        label_kind: :data:`BY_NAME` or :data:`BY_INDEX`: how the source wrote labels.
        source: the file or folder read.
    """

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    label_kind: str
    source: str

    def __len__(self) -> int:
        return len(self.texts)


def is_datasets_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``datasets``' ``save_to_disk``.

    Examples:
        >>> is_datasets_folder("no/such/folder")
        False
    """
    root = Path(path)
    return (root / "dataset_dict.json").is_file() or (
        (root / "state.json").is_file() and (root / "dataset_info.json").is_file()
    )


def is_text_data(path: str | Path) -> bool:
    """Whether ``--data`` names text data (a ``.csv`` / ``.jsonl`` file or a ``datasets``
    folder) rather than an image folder.

    Examples:
        >>> is_text_data("reviews.jsonl"), is_text_data("imagenet/val")
        (True, False)
    """
    return Path(path).suffix.lower() in TEXT_SUFFIXES or is_datasets_folder(path)


def _csv_records(path: Path) -> Iterator[Record]:
    """The rows of a CSV file as records, each at the line it starts on (header: line 1)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise BuildError(f"{path}: empty file (expected a header with text,label)")
        header = [name.strip() for name in header]
        missing = [c for c in (TEXT_COLUMN, LABEL_COLUMN) if c not in header]
        if missing:
            raise BuildError(
                f"{path}, line 1: no {missing[0]!r} column (the header has "
                f"{', '.join(map(repr, header))}; expected text and label)"
            )
        line = reader.line_num + 1
        for cells in reader:
            if cells:  # a blank line is no row
                yield f"line {line}", dict(zip(header, cells, strict=False))
            line = reader.line_num + 1


def _jsonl_records(path: Path) -> Iterator[Record]:
    """The objects of a JSON Lines file, each at its 1-based line; blank lines skipped."""
    with path.open(encoding="utf-8-sig") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BuildError(f"{path}, line {number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise BuildError(f"{path}, line {number}: not a JSON object with text, label")
            yield f"line {number}", record


def _datasets_records(path: Path) -> Iterator[Record]:
    """The rows of a ``datasets`` folder, each as ``row I`` (0-based); ``ClassLabel``
    labels as their names. ``datasets`` is imported here: it is an optional dependency."""
    try:
        import datasets
    except ImportError:
        raise BuildError(
            f"{path} is a Hugging Face datasets folder: reading it needs the datasets "
            "package (pip install datasets)"
        ) from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many kinds; report it in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BuildError(f"{path}: cannot load the datasets folder: {first}") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = ", ".join(loaded)
        raise BuildError(
            f"{path} holds several splits ({splits}): pass one split's folder, "
            f"e.g. {path / next(iter(loaded))}"
        )
    columns = list(loaded.column_names)
    missing = [c for c in (TEXT_COLUMN, LABEL_COLUMN) if c not in columns]
    if missing:
        raise BuildError(
            f"{path}: no {missing[0]!r} column (it has {', '.join(map(repr, columns))}; "
            "expected text and label)"
        )
    names = getattr(loaded.features[LABEL_COLUMN], "names", None)  # a ClassLabel's
    for index, (text, label) in enumerate(
        zip(loaded[TEXT_COLUMN], loaded[LABEL_COLUMN], strict=True)
    ):
        if names is not None and isinstance(label, int) and 0 <= label < len(names):
            label = names[label]
        yield f"row {index}", {TEXT_COLUMN: text, LABEL_COLUMN: label}


def _records(path: Path) -> Iterator[Record]:
    """The records of any supported source (see the module's docstring)."""
    if is_datasets_folder(path):
        return _datasets_records(path)
    readers = {".csv": _csv_records, ".jsonl": _jsonl_records}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise BuildError(
            f"{path}: text data must be a .csv or .jsonl file or a datasets folder (save_to_disk)"
        )
    if not path.is_file():
        raise BuildError(f"text data file not found: {path}")
    return reader(path)


def _label(value: Any, classes: Sequence[str], index_of: Mapping[str, int]) -> tuple[str, int]:
    """``(kind, output index)`` of one label, or a ValueError saying why it is none."""
    text = value.strip() if isinstance(value, str) else None
    if text is not None and text in index_of:
        return BY_NAME, index_of[text]
    if value is None or text == "":
        raise ValueError("missing label")
    digits = text is not None and text.isascii() and text.isdigit()
    if digits or (isinstance(value, int) and not isinstance(value, bool)):
        index = int(value)
        if not 0 <= index < len(classes):
            raise ValueError(
                f"label {value!r} is not an output index (the model has {len(classes)} "
                f"classes: 0..{len(classes) - 1})"
            )
        return BY_INDEX, index
    shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
    raise ValueError(f"unknown label {value!r} (the model's classes: {shown})")


def read_text_rows(path: str | Path, classes: Sequence[str]) -> TextRows:
    """Read and check every row of a text data source, before any model work.

    Args:
        path: a ``.csv`` / ``.jsonl`` file or a ``datasets`` folder (module docstring).
        classes: the model's class names, indexed by output (``HFClassifier.classes``).

    Returns:
        The checked rows, in the source's order.

    Raises:
        BuildError: one line naming the source, the row (``line N`` / ``row I``) and the
            value: a missing column, an empty or non-text ``text``, an unknown label or
            index, names and indices mixed, no rows at all; or the source cannot be read.

    Examples:
        >>> read_text_rows("reviews.csv", ["neg", "pos"]).labels    # doctest: +SKIP
        (1, 0, 0, 1)
    """
    source = Path(path)
    index_of = {name: i for i, name in enumerate(classes)}
    texts: list[str] = []
    labels: list[int] = []
    first: tuple[str, str, Any] | None = None  # (kind, where, value) of the first label
    try:
        for where, record in _records(source):
            text = record.get(TEXT_COLUMN)
            if not isinstance(text, str):
                shown = "missing text" if text is None else f"text {text!r} is not a string"
                raise BuildError(f"{source}, {where}: {shown}")
            if not text.strip():
                raise BuildError(f"{source}, {where}: empty text {text!r}")
            value = record.get(LABEL_COLUMN)
            try:
                kind, index = _label(value, classes, index_of)
            except ValueError as exc:
                raise BuildError(f"{source}, {where}: {exc}") from None
            if first is None:
                first = (kind, where, value)
            elif kind != first[0]:
                raise BuildError(
                    f"{source}, {where}: label {value!r} is a class {kind}, but {first[1]} "
                    f"has the class {first[0]} {first[2]!r}: use names or indices, not both"
                )
            texts.append(text)
            labels.append(index)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BuildError(f"{source}: cannot read it ({exc})") from None
    if first is None:
        raise BuildError(f"{source}: no rows")
    return TextRows(tuple(texts), tuple(labels), first[0], str(source))


class TextDataset(Dataset[tuple[dict[str, Tensor], int, int]]):
    """Checked texts, tokenised one by one with the model's tokenizer.

    Items are ``(encoded, label, index)``: ``encoded`` maps each of the tokenizer's
    ``model_input_names`` (``input_ids``, ``attention_mask``, maybe ``token_type_ids``)
    to a 1-d ``int64`` tensor, truncated to ``max_length`` tokens (special tokens
    included) and not padded (:class:`TextCollate` pads a batch); ``index`` is the row's
    position in the source. Deterministic: the same item for the same row, every time.

    Args:
        rows: :func:`read_text_rows`' result.
        tokenizer: the model's tokenizer (``HFClassifier.tokenizer``).
        max_length: tokens kept per input (>= 2), at most the tokenizer's own limit.

    Raises:
        BuildError: a ``max_length`` below 2 or beyond the tokenizer's limit.

    Examples:
        >>> encoded, label, index = TextDataset(rows, tokenizer, 64)[0]   # doctest: +SKIP
    """

    def __init__(self, rows: TextRows, tokenizer: Any, max_length: int) -> None:
        if max_length < 2:
            raise BuildError(f"--max-length must be >= 2 (special tokens), not {max_length}")
        limit = getattr(tokenizer, "model_max_length", None)
        if isinstance(limit, int) and limit < 10**6 and max_length > limit:
            raise BuildError(f"--max-length {max_length} is beyond the model's limit of {limit}")
        self.rows = rows
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.keys = tuple(getattr(tokenizer, "model_input_names", ("input_ids",)))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], int, int]:
        encoded = self.tokenizer(
            self.rows.texts[index], truncation=True, max_length=self.max_length
        )
        tensors = {
            key: torch.tensor(encoded[key], dtype=torch.int64)
            for key in self.keys
            if key in encoded
        }
        return tensors, self.rows.labels[index], index


@dataclass(frozen=True)
class TextCollate:
    """Collate :class:`TextDataset` items into ``(batch, labels, indices)``.

    ``batch`` maps each key to an ``int64 [N, L]`` tensor, ``L`` the batch's longest
    input; shorter inputs are padded on the right (``input_ids`` with ``pad_token_id``,
    other keys with 0), and ``attention_mask`` (built from the lengths when the tokenizer
    gave none) is 1 at real tokens and 0 at padding. Picklable, for loader workers.

    Args:
        pad_token_id: the tokenizer's padding id.

    Examples:
        >>> items = [({"input_ids": torch.tensor([2, 7, 3])}, 0, 0),
        ...          ({"input_ids": torch.tensor([2, 3])}, 1, 1)]
        >>> batch, labels, indices = TextCollate(pad_token_id=0)(items)
        >>> batch["input_ids"].tolist(), batch["attention_mask"].tolist()
        ([[2, 7, 3], [2, 3, 0]], [[1, 1, 1], [1, 1, 0]])
    """

    pad_token_id: int

    def __call__(
        self, items: Sequence[tuple[Mapping[str, Tensor], int, int]]
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        lengths = [int(encoded["input_ids"].shape[0]) for encoded, _, _ in items]
        longest = max(lengths)
        batch: dict[str, Tensor] = {}
        for key in items[0][0]:
            fill = self.pad_token_id if key == "input_ids" else 0
            padded = torch.full((len(items), longest), fill, dtype=torch.int64)
            for row, (encoded, _, _) in enumerate(items):
                padded[row, : lengths[row]] = encoded[key]
            batch[key] = padded
        if "attention_mask" not in batch:
            positions = torch.arange(longest).unsqueeze(0)
            batch["attention_mask"] = (positions < torch.tensor(lengths).unsqueeze(1)).long()
        labels = torch.tensor([label for _, label, _ in items], dtype=torch.int64)
        indices = torch.tensor([index for _, _, index in items], dtype=torch.int64)
        return batch, labels, indices


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's padding id, for :class:`TextCollate`.

    Raises:
        BuildError: the tokenizer has no padding token.
    """
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        raise BuildError(
            "the model's tokenizer has no padding token (set tokenizer.pad_token and "
            "save_pretrained it)"
        )
    return int(pad)


def text_loader(
    tokenizer: Any, rows: TextRows, max_length: int, batch_size: int, **kwargs: Any
) -> DataLoader[tuple[dict[str, Tensor], int, int]]:
    """Batches ``(batch dict, labels, indices)`` of ``rows``, tokenised by ``tokenizer``
    (:class:`TextDataset`) and right-padded per batch (:class:`TextCollate`): the loader of
    a text build, of the text demo's fine-tuning and of its evaluation.

    Args:
        tokenizer: the model's tokenizer (``HFClassifier.tokenizer``).
        rows: the checked texts.
        max_length: tokens kept per input.
        batch_size: inputs per batch.
        **kwargs: further ``DataLoader`` arguments (``shuffle``, ``generator``,
            ``num_workers``).
    """
    return DataLoader(
        TextDataset(rows, tokenizer, max_length),
        batch_size=batch_size,
        collate_fn=TextCollate(pad_token_id(tokenizer)),
        **kwargs,
    )
