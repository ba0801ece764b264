"""The ``text`` part of a text atlas: the inputs its other parts name, tokenised as the
model saw them (the one writer; :meth:`compute.atlas.Atlas.text_input` reads it).

A text atlas's examples and instance records name an input by its dataset index and a
token by its position ``(0, t)``; the dashboard (without the tokenizer) shows the input's
text with token ``t`` marked. For each such input this part keeps the text, its tokens
(the tokenizer's strings, special tokens included) and each token's character span in
the text (``(0, 0)`` for a special token), so a view cuts a window of text around any
token. Only the inputs the atlas names are kept: a few per unit and per record, not the
whole dataset.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from compute.atlas import TEXT_PATHS, text_layer_paths
from compute.errors import BuildError


def text_part_files(
    dataset: Any,
    indices: Iterable[int],
    top_tokens: Sequence[tuple[np.ndarray, np.ndarray] | None] = (),
) -> dict[str, np.ndarray | bytes]:
    """The ``text`` part's files for the inputs ``indices`` of a text dataset.

    Args:
        dataset: a :class:`compute.text_data.TextDataset` (its rows, tokenizer and
            ``max_length``: the tokens are exactly the model's).
        indices: dataset indices (duplicates and order do not matter).
        top_tokens: per layer, its units' top token ids and counts
            (``SummitAggregates.top_tokens``; a layer without them gets empty ones).

    Returns:
        ``{relpath: array or bytes}`` (:data:`compute.atlas.TEXT_PATHS`).

    Raises:
        BuildError: a tokenizer without character offsets (a slow tokenizer).
    """
    order = sorted({int(i) for i in indices if int(i) >= 0})
    texts, tokens, spans, sizes = [], [], [], []
    for index in order:
        text = dataset.rows.texts[index]
        try:
            encoded = dataset.tokenizer(
                text,
                truncation=True,
                max_length=dataset.max_length,
                return_offsets_mapping=True,
            )
        except NotImplementedError:
            raise BuildError(
                "the model's tokenizer gives no character offsets (a slow tokenizer): save "
                "the model with a fast one (tokenizer.json)"
            ) from None
        ids = list(encoded["input_ids"])
        texts.append(text)
        tokens.extend(str(t) for t in dataset.tokenizer.convert_ids_to_tokens(ids))
        spans.extend((int(a), int(b)) for a, b in encoded["offset_mapping"])
        sizes.append(len(ids))
    indptr = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
    files: dict[str, np.ndarray | bytes] = {}
    used: set[int] = set()
    for layer, found in enumerate(top_tokens):
        ids, counts = found if found is not None else (np.full((0, 0), -1), np.zeros((0, 0)))
        paths = text_layer_paths(layer)
        files[paths["top_token_id"]] = np.asarray(ids, dtype=np.int64)
        files[paths["top_token_count"]] = np.asarray(counts, dtype=np.int64)
        used |= {int(i) for i in np.unique(ids) if i >= 0}
    order_ids = sorted(used)
    names = dataset.tokenizer.convert_ids_to_tokens(order_ids) if order_ids else []
    vocabulary = {str(i): str(name) for i, name in zip(order_ids, names, strict=True)}
    files[TEXT_PATHS["vocabulary"]] = json.dumps(vocabulary, ensure_ascii=False).encode()
    return files | {
        TEXT_PATHS["input_index"]: np.asarray(order, dtype=np.int64),
        TEXT_PATHS["token_indptr"]: indptr,
        TEXT_PATHS["token_span"]: np.asarray(spans, dtype=np.int32).reshape(-1, 2),
        TEXT_PATHS["tokens"]: json.dumps(tokens, ensure_ascii=False).encode(),
        TEXT_PATHS["texts"]: json.dumps(texts, ensure_ascii=False).encode(),
    }
