"""The text demo's pipeline (issue 16) on a WordNet-format file written here and the tiny
BERT: glosses read and split, the model fine-tuned with the tracer, the text atlas built
over the test split with its training trace, and the Training and Instance views linked.

The real demo (MiniLM, Debian's WordNet) is built by ``python -m compute demo --text`` and
ships in ``dashboard/demos/wordnet``; ``test_shipped_text_demo`` checks what shipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compute.atlas import Atlas
from compute.errors import BuildError
from compute.hf import load_hf_classifier
from compute.text_demo import (
    LEXNAMES,
    TextDemoConfig,
    build_text_demo,
    parse_data_line,
    read_glosses,
    split_glosses,
)
from dashboard import data as atlas_data
from dashboard.state import ViewState
from dashboard.views.common import ViewContext
from dashboard.views.training.callbacks import render as render_training
from dashboard.views.training.data import trace_data
from tests.helpers.text_models import BERT_MLP_LAYERS, VOCAB, write_tiny_bert

TOPICS = ("noun.animal", "noun.plant", "noun.food")
WORDS = [w for w in VOCAB if w.isalpha()]


def write_wordnet(folder: Path, per_topic: int = 8) -> Path:
    """A ``data.noun`` in WordNet's format: a licence header, ``per_topic`` glosses of each
    of :data:`TOPICS` (words of the tiny vocabulary), one gloss shared by two topics, one
    of two words, and a gloss of another topic."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    lines = ["  1 This software and database is being provided to you, the LICENSEE, by  "]
    offset = 1000

    def line(topic: str, lemma: str, gloss: str) -> str:
        nonlocal offset
        offset += 97
        number = LEXNAMES.index(topic)
        return f'{offset:08d} {number:02d} n 01 {lemma} 0 000 | {gloss}; "an example"  '

    for topic in TOPICS:
        for k in range(per_topic):
            words = " ".join(rng.choice(WORDS, size=4 + k % 3))
            lines.append(line(topic, f"{topic[5:]}_{k}", f"{words} {topic[5:]} {k}"))
    lines.append(line("noun.animal", "twin", "the same gloss twice"))
    lines.append(line("noun.plant", "twin", "the same gloss twice"))
    lines.append(line("noun.food", "short", "two words"))
    lines.append(line("noun.person", "someone", "a person of some kind"))
    (folder / "data.noun").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_a_data_line_gives_the_synsets_topic_and_definition() -> None:
    parsed = parse_data_line(
        "01317541 05 n 01 pet 0 003 @ 00015388 n 0000 | a domesticated animal kept for "
        'companionship or amusement; "a pet dog"  '
    )
    assert parsed == (1317541, "noun.animal", "pet", "a domesticated animal kept for "
                      "companionship or amusement")  # fmt: skip
    assert parse_data_line("  1 This software and database is being provided") is None
    with pytest.raises(ValueError, match="not a WordNet data line"):
        parse_data_line("garbage | text")


def test_glosses_are_read_by_topic_without_ambiguous_or_short_ones(tmp_path: Path) -> None:
    glosses = read_glosses(write_wordnet(tmp_path / "wn"), TOPICS)
    assert {g.topic for g in glosses} == set(TOPICS)
    texts = [g.text for g in glosses]
    assert "the same gloss twice" not in texts  # two topics: no right answer
    assert "two words" not in texts and "a person of some kind" not in texts
    assert len(texts) == 3 * 8 and all(not t.endswith('"an example"') for t in texts)


def test_the_split_is_seeded_disjoint_and_balanced(tmp_path: Path) -> None:
    glosses = read_glosses(write_wordnet(tmp_path / "wn"), TOPICS)
    config = TextDemoConfig(topics=TOPICS, train_per_topic=5, test_per_topic=3)
    train, test = split_glosses(glosses, config)
    assert len(train) == 15 and len(test) == 9
    assert not set(train.texts) & set(test.texts)
    assert [train.labels.count(c) for c in range(3)] == [5, 5, 5]
    assert split_glosses(glosses, config) == (train, test)
    other, _ = split_glosses(glosses, TextDemoConfig(topics=TOPICS, train_per_topic=5,
                                                     test_per_topic=3, seed=1))  # fmt: skip
    assert other.texts != train.texts
    with pytest.raises(BuildError, match=r"usable glosses of noun\.animal, 9 asked"):
        split_glosses(glosses, TextDemoConfig(topics=TOPICS, train_per_topic=6, test_per_topic=3))


def test_missing_wordnet_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="apt-get install wordnet-base"):
        read_glosses(tmp_path, TOPICS)
    with pytest.raises(BuildError, match=r"unknown WordNet topic .noun\.animals."):
        TextDemoConfig(topics=("noun.animals", "noun.plant"))


@pytest.fixture(scope="module")
def demo_atlas(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TextDemoConfig]:
    folder = tmp_path_factory.mktemp("text-demo")
    config = TextDemoConfig(
        topics=TOPICS,
        train_per_topic=5,
        test_per_topic=3,
        epochs=2,
        batch_size=4,
        max_length=16,
        tuned_blocks=1,
        layers=BERT_MLP_LAYERS,
        traced=("bert.encoder.layer.1.output.dense", "classifier"),
    )
    model = load_hf_classifier(write_tiny_bert(folder / "bert"))
    path = build_text_demo(
        folder / "atlas", config=config, wordnet=write_wordnet(folder / "wn"), model=model
    )
    return path, config


def test_the_demo_atlas_traces_the_texts_it_explains(
    demo_atlas: tuple[Path, TextDemoConfig],
) -> None:
    path, config = demo_atlas
    atlas = Atlas.open(path)
    assert atlas.modality == "text" and {"trace", "text", "mapper", "instances"} <= atlas.parts
    meta, arrays = atlas.trace()
    # The same split and numbering: the Training and Instance views link.
    assert meta["split"] == atlas.manifest["dataset"]["split"] == "test"
    glosses = read_glosses(path.parent / "wn", TOPICS)
    train, test = split_glosses(glosses, config)
    assert arrays["image_index"].tolist() == list(range(len(test)))
    assert arrays["image_label"].tolist() == list(test.labels)
    for row, text in enumerate(test.texts):
        assert atlas.trace_text("test", row) == text
        assert atlas.text_input(row) is not None and atlas.text_input(row).text == text
    named = set(arrays["proponent_index"].ravel().tolist()) | set(
        arrays["opponent_index"].ravel().tolist()
    )
    for index in named:
        assert atlas.trace_text("train", index) == train.texts[index]
    stored = json.loads((path / "trace" / "texts.json").read_text(encoding="utf-8"))
    assert set(map(int, stored["train"])) == named  # only the named training texts
    accuracy = atlas.manifest["metrics"]["accuracy"]
    assert set(accuracy) == {"train", "test"} and 0 <= accuracy["test"] <= 1


def test_the_training_view_shows_texts_and_links_the_instance_view(
    demo_atlas: tuple[Path, TextDemoConfig], tmp_path: Path
) -> None:
    path, _ = demo_atlas
    context = ViewContext(
        data=atlas_data.load(str(path), str(tmp_path / "cache")), file_prefix="/atlas-file/"
    )
    trace = trace_data(context.data)
    assert trace is not None
    row = next(r for r in range(trace.num_images) if trace.record_row(r) is not None)
    state = ViewState(cls=int(trace.label[row]), trace_row=row, trace_all=True)
    rendered = render_training(context, state.to_dict())
    text = json.dumps(rendered, default=lambda c: c.to_plotly_json(), ensure_ascii=False)
    assert trace.text("test", row) in text
    assert "Test text #" in text and "test image" not in text.lower()
    assert "its own attribution graph" in text
    example = trace.examples(row, 0, "proponent")[0]
    assert example.text is not None and example.text in text


def test_a_rewritten_trace_keeps_no_text_of_the_previous_one(
    demo_atlas: tuple[Path, TextDemoConfig], tmp_path: Path
) -> None:
    """Writing the trace part again replaces it whole: a row's text is the new trace's,
    never the previous trace's text of the same row; a text atlas's trace without texts
    is refused (its Training view would show bare indices)."""
    import shutil

    from compute.trace import trace_texts, write_trace_part
    from compute.trace.explain import TraceExplanation

    path = Path(shutil.copytree(demo_atlas[0], tmp_path / "copy"))
    atlas = Atlas.open(path)
    meta, arrays = atlas.trace()
    rows = np.arange(3, meta["num_images"])  # a later subset: row 0 is now input 3
    old = {name: np.asarray(arrays[name]) for name in arrays}
    explanations = TraceExplanation(
        layers=tuple(layer["name"] for layer in meta["layers"]),
        per_example=tuple(layer["per_example"] for layer in meta["layers"]),
        ridge_unit=tuple(layer["ridge_unit"] for layer in meta["layers"]),
        predictions=old["prediction"][rows],
        norms=old["norms"][rows],
        class_share=old["class_share"][rows],
        epoch_share=old["epoch_share"][rows],
        epoch_cosine=old["epoch_cosine"][rows],
        ridge_hist=old["ridge_hist"][rows],
        ridge_edges=old["ridge_edges"],
        proponent_index=old["proponent_index"][rows],
        proponent_score=old["proponent_score"][rows],
        opponent_index=old["opponent_index"][rows],
        opponent_score=old["opponent_score"][rows],
        sum_error=np.zeros((len(rows), len(meta["layers"]))),
    )
    labels, index = old["image_label"][rows], old["image_index"][rows]
    before = atlas.trace_text("test", 0)
    with pytest.raises(ValueError, match="needs the texts it shows"):
        write_trace_part(path, explanations, image_index=index, image_label=labels,
                         train_label=old["train_label"])  # fmt: skip
    texts = [atlas.text_input(int(i)).text for i in index]
    train = [f"training text {i}" for i in range(len(old["train_label"]))]
    with pytest.raises(ValueError, match="texts of the"):  # the whole test list, not the rows
        trace_texts(explanations, [atlas.text_input(i).text for i in range(len(index) + 3)],
                    train)  # fmt: skip
    shifted = trace_texts(explanations, texts, train)
    shifted["test"] = {row + 3: text for row, text in shifted["test"].items()}
    stamp = (path / "manifest.json").read_bytes()
    with pytest.raises(ValueError, match=r"rows 0\.\."):
        write_trace_part(path, explanations, image_index=index, image_label=labels,
                         train_label=old["train_label"], texts=shifted)  # fmt: skip
    assert (path / "manifest.json").read_bytes() == stamp  # refused before any write
    shown = trace_texts(explanations, texts, train)
    write_trace_part(path, explanations, image_index=index, image_label=labels,
                     train_label=old["train_label"], texts=shown)  # fmt: skip
    fresh = Atlas.open(path)
    assert fresh.trace_text("test", 0) == atlas.text_input(3).text != before
    assert fresh.trace_text("test", len(rows)) is None  # beyond the new rows: nothing stale
    named = set(explanations.proponent_index.ravel()) | set(explanations.opponent_index.ravel())
    for i in range(len(train)):
        assert fresh.trace_text("train", i) == (train[i] if i in named else None)


def test_a_single_step_of_fine_tuning_keeps_its_schedule_finite(tmp_path: Path) -> None:
    """One step (15 texts, batch 32, one epoch): warm-up and decay both end at step 1."""
    from compute.text_demo import fine_tune

    glosses = read_glosses(write_wordnet(tmp_path / "wn"), TOPICS)
    config = TextDemoConfig(
        topics=TOPICS,
        train_per_topic=5,
        test_per_topic=3,
        epochs=1,
        layers=BERT_MLP_LAYERS,
        traced=("classifier",),
        tuned_blocks=1,
    )
    train, _ = split_glosses(glosses, config)
    model = load_hf_classifier(write_tiny_bert(tmp_path / "bert"))
    result = fine_tune(model, train, config)
    assert max(result.reconstruction_error().values()) < 1e-6


def test_an_existing_output_is_refused_before_fine_tuning(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("a user's file")
    with pytest.raises(BuildError, match="out"):
        build_text_demo(tmp_path / "out", wordnet=tmp_path / "no-wordnet")
    assert (tmp_path / "out" / "mine.txt").exists()


SHIPPED = Path(__file__).resolve().parents[2] / "dashboard" / "demos"


def test_shipped_text_demo() -> None:
    """The shipped text demo: complete, traced over the split it maps, and small enough to
    ship with the digits (issue 16: both together at most 25 MB)."""
    atlas = Atlas.open(SHIPPED / "wordnet")
    assert atlas.modality == "text"
    assert {"summit", "mapper", "instances", "subsets", "text", "trace"} <= atlas.parts
    assert atlas.classes == ("animal", "plant", "food", "artifact", "body", "motion")
    meta, arrays = atlas.trace()
    assert meta["split"] == atlas.manifest["dataset"]["split"] == "test"
    assert atlas.manifest["metrics"]["accuracy"]["test"] >= 0.85
    for row in range(0, meta["num_images"], 37):
        assert atlas.trace_text("test", row) == atlas.text_input(row).text
    for index in arrays["proponent_index"][:, -1].ravel().tolist()[:50]:
        assert atlas.trace_text("train", index)
    size = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file())
    assert size <= 25 * 2**20, f"the shipped demos hold {size / 2**20:.1f} MB"
