"""Hugging Face text classifiers: ``--model hf:DIR`` (a local directory, never the hub).

A model directory written by ``model.save_pretrained(DIR)`` and
``tokenizer.save_pretrained(DIR)`` is loaded with
``AutoModelForSequenceClassification.from_pretrained(DIR, local_files_only=True)`` and its
``AutoTokenizer`` (local only), and wrapped in :class:`HFClassifier`: called with one batch
dict (``input_ids``, ``attention_mask``, optional ``token_type_ids``) it returns the logits
``[N, C]``. Class names come from the config's ``id2label``.

Refused in one line (:class:`~compute.errors.BuildError`), before anything is loaded where
possible: a missing directory, one without ``config.json`` or without tokenizer files, an
encoder saved without a sequence-classification head (a bare ``BertModel``: its head
would be random), and ``transformers`` not installed (``pip install ".[compute,text]"``).

``transformers`` is imported lazily, inside the functions that need it: this module is
imported by :mod:`compute.models`, which every image build loads, and an image user need
not have (or pay the import time of) ``transformers``.

Examples:
    >>> model = load_hf_classifier("models/my-bert")            # doctest: +SKIP
    >>> model.classes                                           # doctest: +SKIP
    ['animal', 'plant', 'food']
    >>> model(model.text_input(8).example(torch.device("cpu"))).shape  # doctest: +SKIP
    torch.Size([1, 3])
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from compute.errors import BuildError

#: Batch keys the wrapper passes on to the model (those its ``forward`` accepts).
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")

#: Any one of these beside ``config.json`` holds a tokenizer's vocabulary. Without one,
#: ``AutoTokenizer`` would silently build a tokenizer that maps every word to ``[UNK]``.
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)

#: The sentence a probe input is tokenised from (truncated or padded to its length).
PROBE_TEXT = "the quick brown fox jumps over the lazy dog " * 8

_INSTALL = 'pip install ".[compute,text]" in the Network Atlas folder, as the README says'


def _transformers() -> Any:
    """The ``transformers`` module, or a one-line BuildError saying how to install it.

    Lazy on purpose: image builds import this module through :mod:`compute.models`.
    """
    try:
        import transformers
    except ImportError:
        raise BuildError(f"hf: models need the transformers package: {_INSTALL}") from None
    return transformers


@contextlib.contextmanager
def quiet(transformers: Any) -> Iterator[None]:
    """Silence transformers' load report and progress bars; restore them afterwards."""
    logging = transformers.utils.logging
    verbosity = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def check_hf_dir(path: str | Path) -> dict[str, Any]:
    """Check a Hugging Face model directory without loading it; return its config.

    Args:
        path: the directory of ``hf:DIR``.

    Returns:
        The parsed ``config.json``.

    Raises:
        BuildError: the directory is missing, has no (readable) ``config.json``, has no
            tokenizer files, or holds an encoder without a sequence-classification head.

    Examples:
        >>> check_hf_dir("no/such/dir")
        Traceback (most recent call last):
        ...
        compute.errors.BuildError: hf: model directory not found: no/such/dir
    """
    root = Path(path)
    if not root.is_dir():
        raise BuildError(f"hf: model directory not found: {path}")
    config_file = root / "config.json"
    if not config_file.is_file():
        raise BuildError(
            f"hf: {path} has no config.json: not a Hugging Face model directory "
            "(write one with model.save_pretrained(DIR))"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BuildError(f"hf: cannot read {config_file}: {exc}") from None
    if not isinstance(config, dict):
        raise BuildError(f"hf: {config_file} does not hold a JSON object")
    if not any((root / name).is_file() for name in TOKENIZER_FILES):
        raise BuildError(
            f"hf: {path} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...): "
            "save the model's tokenizer beside it with tokenizer.save_pretrained(DIR)"
        )
    architectures = config.get("architectures") or []
    if architectures and not any(
        str(name).endswith("ForSequenceClassification") for name in architectures
    ):
        raise BuildError(_headless(path, ", ".join(map(str, architectures))))
    return config


def _headless(path: str | Path, what: str) -> str:
    """The one-line refusal of an encoder without a classification head, naming the fix."""
    return (
        f"hf: {path} holds {what}, an encoder without a sequence-classification head: "
        "fine-tune it with one (AutoModelForSequenceClassification.from_pretrained(DIR, "
        "num_labels=K, id2label={0: 'name', ...}), train, then save_pretrained(OUT) the model "
        "and its tokenizer) and pass OUT"
    )


def load_hf_classifier(path: str | Path, num_classes: int | None = None) -> HFClassifier:
    """Load ``hf:DIR``: the sequence classifier and its tokenizer, local files only.

    Args:
        path: a directory written by ``save_pretrained`` (model and tokenizer).
        num_classes: when given, must equal the model's number of labels (``--num-classes``
            cannot resize a Hugging Face head).

    Returns:
        The wrapped model, in eval mode on CPU.

    Raises:
        BuildError: one line for each of: missing directory, no ``config.json``, no
            tokenizer files, no classification head (or its weights missing from the
            files), ``transformers`` not installed, a model or tokenizer that fails to load,
            ``num_classes`` not the model's.
    """
    check_hf_dir(path)
    transformers = _transformers()
    try:
        with quiet(transformers):
            model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
                str(path), local_files_only=True, output_loading_info=True
            )
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BuildError(f"hf: cannot load {path} as a sequence classifier: {first}") from None
    missing = sorted(info.get("missing_keys") or ())
    if missing:  # from_pretrained initialises them at random: the head was never trained
        raise BuildError(_headless(path, f"weights without {missing[0]!r}"))
    wrapped = HFClassifier(model, tokenizer, source=Path(path))
    if num_classes is not None and num_classes != len(wrapped.classes):
        raise BuildError(
            f"hf: {path} has {len(wrapped.classes)} classes (config id2label), "
            f"not --num-classes {num_classes}"
        )
    return wrapped.eval()


def _class_names(config: Any, path: str | Path | None) -> list[str]:
    """``id2label`` as a list indexed by output, checked to name each output once."""
    count = int(config.num_labels)
    id2label = {int(key): str(value) for key, value in dict(config.id2label or {}).items()}
    unnamed = [i for i in range(count) if i not in id2label]
    if unnamed:
        raise BuildError(f"hf: {path}: config id2label does not name output {unnamed[0]}")
    names = [id2label[i] for i in range(count)]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise BuildError(f"hf: {path}: config id2label names {duplicates[0]!r} twice")
    return names


class TextInput:
    """One dummy text input of a model: the probe of ``layers`` and the output checks.

    Implements :class:`compute.models.ModelInput`: ``example`` is the tokenizer's encoding
    of a fixed sentence, truncated or padded to exactly ``tokens`` tokens (so every token
    layer of the model has ``T == tokens``).

    Args:
        tokenizer: the model's tokenizer.
        tokens: the probe's sequence length (>= 2: room for the special tokens).
    """

    maps = False  # a 4-d output of a text model (attention weights) is not an image map

    def __init__(self, tokenizer: Any, tokens: int) -> None:
        if tokens < 2:
            raise BuildError(f"a text probe needs at least 2 tokens, not {tokens}")
        self.tokenizer = tokenizer
        self.tokens = tokens

    def example(self, device: torch.device) -> dict[str, Tensor]:
        """The probe batch (one input of ``tokens`` tokens) on ``device``."""
        encoded = self.tokenizer(
            [PROBE_TEXT],
            truncation=True,
            max_length=self.tokens,
            padding="max_length",
            return_tensors="pt",
        )
        return {key: value.to(device) for key, value in encoded.items()}

    def describe(self) -> str:
        """``input N tokens`` (the listing's header)."""
        return f"input {self.tokens} tokens"


class HFClassifier(nn.Module):
    """A Hugging Face sequence classifier called with one batch dict, returning logits.

    Module names: the wrapper adopts the Hugging Face model's children as its own, so
    ``named_modules()`` and ``state_dict()`` keys are exactly the Hugging Face model's
    (``bert.encoder.layer.0.intermediate``, ``classifier.weight``: the names its
    documentation and ``print(model)`` show, with no prefix). The Hugging Face model
    itself is kept as the plain attribute ``hf_model`` (not a registered submodule, so
    nothing is listed twice); its children are the same objects as the wrapper's, so
    hooks, ``.to()``, ``.eval()`` and ``load_state_dict`` on the wrapper reach it.

    Args:
        model: a ``*ForSequenceClassification`` model (parameters only in submodules).
        tokenizer: its tokenizer.
        source: the directory it was loaded from (for messages).

    Attributes:
        hf_model: the Hugging Face model.
        tokenizer: its tokenizer.
        classes: class names from ``config.id2label``, indexed by output.
        input_names: the batch keys passed on (those of :data:`INPUT_KEYS` that the
            model's ``forward`` takes).

    Examples:
        >>> model = load_hf_classifier("models/my-bert")            # doctest: +SKIP
        >>> batch = tokenizer(["a text"], return_tensors="pt")      # doctest: +SKIP
        >>> model(dict(batch)).shape                                # doctest: +SKIP
        torch.Size([1, 3])
    """

    hf_model: nn.Module
    #: torch.fx cannot trace Hugging Face models (``compute.connect``): every pair of chosen
    #: layers is joined by gradient × activation attribution, which needs only autograd (a
    #: later layer that does not depend on the earlier one is refused by the pass).
    gradient_connections_only = True

    def __init__(self, model: nn.Module, tokenizer: Any, source: Path | None = None) -> None:
        super().__init__()
        own = [n for n, _ in model.named_parameters(recurse=False)]
        own += [n for n, _ in model.named_buffers(recurse=False)]
        if own:
            raise BuildError(
                f"hf: {source}: {type(model).__name__} holds tensors outside its submodules "
                f"({own[0]!r}); it cannot be wrapped"
            )
        for name, child in model.named_children():
            self.add_module(name, child)
        # A plain attribute, not a submodule: its children are registered above.
        object.__setattr__(self, "hf_model", model)
        self.tokenizer = tokenizer
        self.classes = _class_names(model.config, source)
        accepted = inspect.signature(model.forward).parameters
        self.input_names = tuple(key for key in INPUT_KEYS if key in accepted)
        self.train(model.training)

    @property
    def architecture(self) -> str:
        """The Hugging Face class name, e.g. ``BertForSequenceClassification``."""
        return type(self.hf_model).__name__

    def train(self, mode: bool = True) -> HFClassifier:
        """Set train/eval mode on the wrapper, its children and the Hugging Face model."""
        super().train(mode)
        self.hf_model.training = mode
        return self

    @property
    def max_tokens(self) -> int | None:
        """The longest input the model takes: its position embeddings (``None``: no limit
        the config states)."""
        limit = getattr(getattr(self.hf_model, "config", None), "max_position_embeddings", None)
        return int(limit) if isinstance(limit, int) and limit > 0 else None

    def text_input(self, tokens: int) -> TextInput:
        """A probe input of ``tokens`` tokens for this model (see :class:`TextInput`)."""
        return TextInput(self.tokenizer, tokens)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Logits ``[N, C]`` of a batch dict (``input_ids``, ``attention_mask``, ...)."""
        if "input_ids" not in batch:
            raise ValueError(f"a text batch needs 'input_ids' (got {sorted(batch)})")
        kwargs = {key: batch[key] for key in self.input_names if key in batch}
        output = self.hf_model(**kwargs)
        logits: Tensor = output.logits if hasattr(output, "logits") else output[0]
        return logits
