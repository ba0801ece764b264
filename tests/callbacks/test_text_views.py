"""The dashboard on a text atlas (issue 16): examples are snippets of the inputs' text with
the token of the unit's maximum marked, nodes are labelled by their top token, the
Instance view shows the input's text; nothing offers pictures a text model has not got."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from compute.atlas import Atlas
from dashboard import data as atlas_data
from dashboard.config import Settings
from dashboard.factory import create_app
from dashboard.state import ViewState
from dashboard.views.common import ViewContext
from dashboard.views.instance.callbacks import render as render_instance
from dashboard.views.summit.graph import example_strip, render_graph
from dashboard.views.summit.neuron_page import examples_card, top_tokens_card
from tests.helpers.components import components


@pytest.fixture
def context(text_atlas: Path, tmp_path: Path) -> ViewContext:
    return ViewContext(
        data=atlas_data.load(str(text_atlas), str(tmp_path / "cache")),
        file_prefix="/atlas-file/",
    )


def text_of(component: object) -> str:
    return json.dumps(component, default=lambda c: c.to_plotly_json(), ensure_ascii=False)


def marked(component: object) -> list[str]:
    """The marked tokens of the snippets in a component, in order."""
    return [str(c["props"]["children"]) for c in components(component) if c["type"] == "Mark"]


def test_a_units_examples_are_its_inputs_with_the_token_of_its_maximum_marked(
    text_atlas: Path, context: ViewContext
) -> None:
    atlas = Atlas.open(text_atlas)
    for layer in range(len(atlas.layers)):
        table = atlas.examples(layer)
        for channel in range(0, atlas.layers[layer].channels, 7):
            strip = example_strip(context, layer, channel)
            rows = [i for i in table.image_index[channel].tolist() if i >= 0]
            assert len(strip) == len(rows)
            positions = table.position[channel].tolist()[: len(rows)]
            for row, index, (_, token) in zip(strip, rows, positions, strict=True):
                text = atlas.text_input(index)
                assert text is not None
                start, end = text.spans[token]
                want = text.text[start:end] if end > start else text.tokens[token]
                assert marked(row) == [want], (layer, channel, index)
    card = examples_card(context, 0, 0)
    assert "maximum over the input's tokens" in text_of(card)


def test_nodes_are_labelled_by_their_top_token_and_no_pictures_are_offered(
    text_atlas: Path, context: ViewContext
) -> None:
    """A node's label is its unit and the token most often at its maximum over the
    dataset (the tokenizer's string, as the neuron page's table lists it first)."""
    atlas = Atlas.open(text_atlas)
    state = ViewState(cls=0).to_dict()
    rendered = render_graph(context, state)
    elements = next(part for part in rendered if isinstance(part, list))
    nodes = [e["data"] for e in elements if re.fullmatch(r"\d+-\d+", e["data"]["id"])]
    assert nodes
    for node in nodes:
        layer, channel = (int(v) for v in node["id"].split("-"))
        counted = atlas.top_tokens(layer, channel)
        assert "img" not in node
        tied = len(counted) > 1 and counted[0][1] == counted[1][1]
        if not counted or tied:
            # through influence only, or no token more frequent than the rest: the top
            # examples' word (ties: the best example's), not an arbitrary one of the tied
            assert node["label"] == f"{channel} {context.data.top_token(layer, channel)}"
            continue
        assert node["label"] == f"{channel} {counted[0][0]}"
        assert [n for _, n in counted] == sorted((n for _, n in counted), reverse=True)
        card = top_tokens_card(context, layer, channel)
        assert card is not None and counted[0][0] in text_of(card)
    assert any(atlas.top_tokens(*(int(v) for v in n["id"].split("-"))) for n in nodes)


def test_the_instance_view_shows_the_inputs_text(text_atlas: Path, context: ViewContext) -> None:
    atlas = Atlas.open(text_atlas)
    records = atlas.instances()
    row = int(np.flatnonzero(records.label == 1)[0])
    index = int(records.image_index[row])
    _, _, header, _, elements = render_instance(
        context, ViewState(cls=1, inst_index=index).to_dict()
    )
    assert f"“{atlas.text_input(index).text}" in text_of(header)
    assert elements and all("crops" not in e["data"].get("img", "") for e in elements)
    # The input's own units are labelled with the word each fired on in this input.
    text = atlas.text_input(index)
    labels = {e["data"]["id"]: e["data"].get("label") for e in elements}
    for layer in range(len(atlas.layers)):
        channels, _, positions = records.channels(row, layer)
        for channel, (_, token) in zip(channels.tolist(), positions.tolist(), strict=True):
            start, end = text.spans[token]
            word = text.text[start:end] if end > start else text.tokens[token]
            assert labels[f"{layer}-{channel}"] == f"{channel} {word}"


def test_the_page_serves_a_text_atlas(text_atlas: Path, tmp_path: Path) -> None:
    client = create_app(
        Settings(atlas_dir=text_atlas, cache_dir=tmp_path / "cache")
    ).server.test_client()
    page = client.get("/?class=1")
    assert page.status_code == 200
    assert client.get("/atlas-file/text/texts.json").status_code == 404  # data stays


def test_a_mapper_nodes_members_are_texts_with_their_sampled_token_marked(
    text_atlas: Path, context: ViewContext
) -> None:
    from dashboard.views.topology.callbacks import member_snippets
    from dashboard.views.topology.data import mapper_data

    atlas = Atlas.open(text_atlas)
    mapper = mapper_data(context.data)
    sample = atlas.mapper_sample(1)
    members = np.arange(min(5, sample.image_index.shape[0]))
    rows = member_snippets(context, mapper, 1, members)
    assert len(rows) == members.size
    for row, member in zip(rows, members.tolist(), strict=True):
        text = atlas.text_input(int(sample.image_index[member]))
        start, end = text.spans[int(sample.position[member][1])]
        want = text.text[start:end] if end > start else text.tokens[int(sample.position[member][1])]
        assert marked(row) == [want]


def test_a_text_atlases_examples_export_carries_the_token_and_the_text(
    text_atlas: Path, tmp_path: Path
) -> None:
    """`compute export --what examples` on a text atlas: each row adds the word at the
    unit's maximum and the text the model saw, so the file stands on its own."""
    import csv

    from compute.export import TEXT_EXAMPLE_COLUMNS, export_examples

    atlas = Atlas.open(text_atlas)
    path = export_examples(atlas, tmp_path, [0])[0]
    rows = list(csv.DictReader(path.open()))
    assert rows and tuple(rows[0]) == TEXT_EXAMPLE_COLUMNS
    for row in rows:
        text = atlas.text_input(int(row["image_index"]))
        token = int(row["col"])
        start, end = text.spans[token]
        assert row["token"] == (text.text[start:end] if end > start else text.tokens[token])
        assert text.text.startswith(row["text"]) and row["text"]


#: Words of an image atlas that a text atlas's pages must not show: its neurons are units,
#: its inputs texts, and it has no crops, pixels or pictures.
IMAGE_WORDS = re.compile(r"\b(channels?|images?|crops?|pixels?|pictures?)\b", re.IGNORECASE)


def visible_strings(component: object) -> list[str]:
    """Every string a page shows: children, titles, labels, placeholders (not ids,
    classes, styles or data)."""
    shown: list[str] = []

    def walk(value: object, key: str | None) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k not in (
                    "id",
                    "className",
                    "style",
                    "type",
                    "namespace",
                    "href",
                    "data",
                    "stylesheet",
                    "elements",
                    "src",
                    "download",
                    "figure",
                    "value",
                ):
                    walk(v, k)  # fmt: skip
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and key in (None, "children", "title", "label", "placeholder"):
            shown.append(value)

    walk(json.loads(text_of(component)), None)
    return shown


def test_a_text_atlas_page_speaks_of_units_and_texts(context: ViewContext, tmp_path: Path) -> None:
    """The explorer and a neuron page of a text atlas, every view's layout and help: no
    image words (a text atlas's reader would look for pictures that are not there)."""
    from dashboard.views import shell
    from dashboard.views.summit.neuron_page import page as neuron_page

    state = ViewState(cls=0, node="0-3")
    pages = {
        "explorer": shell.page_layout(context, state),
        "neuron": neuron_page(context, "0", "3"),
        "unknown neuron": neuron_page(context, "0", "100000"),
    }
    assert "Top tokens" in text_of(pages["neuron"])  # the neuron page itself, not a 404
    # The shipped text demo has the parts this atlas lacks (a training trace): its page and
    # its Training view's render too.
    from dashboard.config import TEXT_DEMO_ATLAS_DIR
    from dashboard.views.training.callbacks import render as render_training

    demo = ViewContext(
        data=atlas_data.load(str(TEXT_DEMO_ATLAS_DIR), str(tmp_path / "demo-cache")),
        file_prefix="/atlas-file/",
    )
    pages["text demo"] = shell.page_layout(demo, ViewState(cls=0))
    pages["text demo training"] = list(render_training(demo, ViewState(cls=0).to_dict())[:6])
    for name, component in pages.items():
        wrong = [
            s
            for s in visible_strings(component)
            if IMAGE_WORDS.search(
                # What is right as written: a PNG is an image, the class table's CSV columns
                # are named once for every atlas, and the graph's note says there are no
                # pictures.
                s.replace("PNG image", "")
                .replace("(index, name, images,", "")
                .replace("have no pictures", "")
            )
        ]
        assert wrong == [], (name, wrong)
