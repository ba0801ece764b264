"""The attribution graph of a class's correct or mistaken images, and of the images mistaken
for one other class: URL state, rendering, header, links, notes and the JSON download, on
the demo atlas (its model gets classes five and six wrong a few times) and on an atlas
without the ``subsets`` part."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import networkx as nx
import pytest

from compute.atlas import Atlas
from compute.export import export_graphs
from dashboard import data as atlas_data
from dashboard.config import DEMO_ATLAS_DIR
from dashboard.state import StateBounds, ViewState, ignored_parameters
from dashboard.views.common import ViewContext
from dashboard.views.summit import ids as summit_ids
from dashboard.views.summit.graph import class_header, graph_download, render_graph
from dashboard.views.summit.state import apply_event


@pytest.fixture
def context(tmp_path: Path) -> ViewContext:
    return ViewContext(
        data=atlas_data.load(str(DEMO_ATLAS_DIR), str(tmp_path / "cache")),
        file_prefix="/atlas-file/",
    )


def node_ids(elements: list) -> set[str]:
    return {e["data"]["id"] for e in elements if re.fullmatch(r"\d+-\d+", e["data"]["id"])}


def queries_of(component: object) -> list[str]:
    """The ``data-query`` of every link in a component tree."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, (list, tuple)):
            for child in node:
                walk(child)
        elif hasattr(node, "to_plotly_json"):
            props = node.to_plotly_json()["props"]
            if "data-query" in props:
                found.append(props["data-query"])
            walk(props.get("children"))

    walk(component)
    return found


def text_of(component: object) -> str:
    return json.dumps(component, default=lambda c: c.to_plotly_json())


def test_the_url_holds_the_subset_and_a_pair_implies_the_mistaken_images() -> None:
    bounds = {"num_classes": 10, "num_layers": 4}
    state = ViewState.from_query("?class=6&for=0", **bounds)
    assert (state.subset, state.mistaken_for) == ("mistaken", 0)
    assert ViewState.from_query(state.to_search(), **bounds) == state
    assert state.to_search() == "?v=1&class=6&sub=mistaken&for=0"
    junk = {"class": "6", "sub": "wrong", "for": "10"}
    parsed = ViewState.from_query(junk, **bounds)
    assert (parsed.subset, parsed.mistaken_for) == ("all", None)
    assert ignored_parameters(junk, parsed) == ["sub=wrong", "for=10"]


def test_the_radio_sets_a_whole_subset_and_drops_the_pair() -> None:
    bounds = StateBounds(num_classes=10, num_layers=4, channels=(16, 32, 32, 64))
    state = ViewState(cls=6, subset="mistaken", mistaken_for=0)
    assert apply_event(state, summit_ids.SUBSET, "correct", bounds) == ViewState(
        cls=6, subset="correct"
    )
    assert apply_event(state, summit_ids.SUBSET, "mistaken", bounds).mistaken_for is None
    for junk in ("wrong", None, 1, ["all"]):
        assert apply_event(state, summit_ids.SUBSET, junk, bounds) == state


@pytest.mark.parametrize(
    ("state", "subset", "other"),
    [
        (ViewState(cls=6, subset="mistaken"), "mistaken", None),
        (ViewState(cls=6, subset="correct"), "correct", None),
        (ViewState(cls=6, subset="mistaken", mistaken_for=0), "mistaken", 0),
        (ViewState(cls=5, subset="mistaken", mistaken_for=9), "mistaken", 9),
    ],
)
def test_the_view_draws_the_subsets_stored_graph(
    demo: Atlas, context: ViewContext, state: ViewState, subset: str, other: int | None
) -> None:
    elements, header, message = render_graph(context, state.to_dict())
    stored = demo.graph(state.cls, subset, other)
    drawn = node_ids(elements)
    assert drawn == {f"{a}-{b}" for a, b in zip(stored.layer, stored.channel, strict=True)}
    assert drawn and message is None
    # Node sizes follow the subset's own counts (the largest node: its largest count).
    data = demo.graph_data(state.cls, subset, other)
    biggest = max(data["nodes"], key=lambda n: n["count"])["id"]
    sizes = {e["data"]["id"]: e["data"].get("size") for e in elements}
    assert sizes[biggest] == max(v for k, v in sizes.items() if k in drawn)
    words = text_of(header)
    images = context.data.subset_images(state.cls, subset, other)
    assert images is not None and images > 0
    if other is None:
        assert f"{subset} only: {images:,} image" in words
    else:
        assert f"mistaken for {context.data.names[other]}: {images} image" in words


def test_the_class_graph_is_the_union_of_nothing_new(demo: Atlas, context: ViewContext) -> None:
    """The mistaken graph is not the class graph (the demo's five and six differ), and the
    header of the whole class says nothing about subsets."""
    mistaken = node_ids(render_graph(context, ViewState(cls=6, subset="mistaken").to_dict())[0])
    whole = node_ids(render_graph(context, ViewState(cls=6).to_dict())[0])
    assert mistaken != whole
    assert "only:" not in text_of(class_header(context, ViewState(cls=6)))


def test_notes_say_why_no_graph_is_drawn(context: ViewContext) -> None:
    # Class zero has no mistakes on the demo's training split.
    elements, _, message = render_graph(context, ViewState(cls=0, subset="mistaken").to_dict())
    assert not node_ids(elements) and "every image of this class correctly" in text_of(message)
    # Six mistaken for five: no such image, so no stored pair (and the note says why).
    state = ViewState(cls=6, subset="mistaken", mistaken_for=5)
    elements, _, message = render_graph(context, state.to_dict())
    assert not elements and "never mistook an image of six for five" in text_of(message)
    assert graph_download(context, state.to_dict()) is None


def test_mistaken_for_links_open_the_pairs_graph_next_to_the_comparison(
    context: ViewContext,
) -> None:
    words = text_of(class_header(context, ViewState(cls=6)))
    hrefs = re.findall(r'"href": "([^"]+)"', words)
    assert "/?v=1&class=6&compare=0&sub=mistaken&for=0" in hrefs
    assert "/?v=1&class=6&compare=8&sub=mistaken&for=8" in hrefs
    # A click applies only these changes to the current address (assets/links.js): the
    # other views' fields (a Topology parameter, the node) are kept.
    changes = [json.loads(q) for q in queries_of(class_header(context, ViewState(cls=6)))]
    assert {"class": "6", "compare": "0", "sub": "mistaken", "for": "0"} in changes


def test_the_download_is_the_subset_graph_as_shown(demo: Atlas, context: ViewContext) -> None:
    state = ViewState(cls=6, subset="mistaken", mistaken_for=8)
    download = graph_download(context, state.to_dict())
    assert download is not None
    assert download["filename"] == (
        "digits-graph-0006-six-mistaken-for-0008-eight-nodes0-edges0.json"
    )
    content = json.loads(download["content"])
    assert content["graph"]["other"] == "eight" and content["graph"]["subset"] == "mistaken"
    graph = nx.node_link_graph(content)
    reference = demo.to_networkx(6, "mistaken", other=8)
    assert set(graph.nodes) == set(reference.nodes)
    assert {(s, t): w for s, t, w in graph.edges(data="weight")} == {
        (s, t): w for s, t, w in reference.edges(data="weight")
    }


def test_export_writes_the_subset_graphs(demo: Atlas, tmp_path: Path) -> None:
    written = export_graphs(demo, tmp_path, [6], ("json",), subsets=True)
    names = sorted(path.name for path in written)
    assert names == [
        "digits-graph-0006-six-correct.json",
        "digits-graph-0006-six-mistaken-for-0000-zero.json",
        "digits-graph-0006-six-mistaken-for-0008-eight.json",
        "digits-graph-0006-six-mistaken.json",
        "digits-graph-0006-six.json",
    ]
    back = json.loads((tmp_path / names[3]).read_text())
    assert back == demo.graph_data(6, "mistaken")


def test_an_atlas_without_subsets_says_how_to_add_them(
    tmp_path: Path, demo_without: Callable[[str], Path]
) -> None:
    copy = demo_without("subsets")  # as an atlas built with --no-subsets lists it
    context = ViewContext(
        data=atlas_data.load(str(copy), str(tmp_path / "cache")), file_prefix="/atlas-file/"
    )
    elements, _, message = render_graph(context, ViewState(cls=6, subset="mistaken").to_dict())
    assert not elements
    assert "no 'subsets' part" in text_of(message) and "python -m compute build" in text_of(message)
    assert node_ids(render_graph(context, ViewState(cls=6).to_dict())[0])
    with pytest.raises(Exception, match="subsets"):
        export_graphs(Atlas.open(copy), tmp_path, [6], ("json",), subsets=True)


def test_the_comparison_says_it_compares_whole_classes_beside_a_subset(
    context: ViewContext,
) -> None:
    from dashboard.views.summit import compare

    beside = ViewState(cls=6, compare=8, subset="mistaken", mistaken_for=8)
    assert "all images of both classes" in text_of(compare.render(context, beside.to_dict())[1])
    plain = ViewState(cls=6, compare=8)
    assert "all images of both" not in text_of(compare.render(context, plain.to_dict())[1])
