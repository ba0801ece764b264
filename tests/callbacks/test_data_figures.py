"""data.py and figures.py: pure functions on a small hand-made atlas and hand-made graphs."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest

from compute.atlas import AtlasError
from dashboard import data as atlas_data
from dashboard.data import (
    LINE_NODES,
    LINE_PX,
    ROW_NODES,
    ROW_PX,
    SLOT_PX,
    STAGGER_PX,
    AtlasData,
    ClassGraph,
    DerivedCache,
    row_positions,
    sparkline_svg,
)
from dashboard.views.common import _SEARCH_JS
from dashboard.views.summit.figures import (
    INFLUENCE_ONLY,
    LABEL_ALL_CLASSES,
    base_stylesheet,
    compare_elements,
    embedding_figure,
    graph_elements,
    graph_masks,
    hover_stylesheet,
    neuron_bar_figure,
)


@pytest.fixture(scope="module")
def data(small_atlas: Path) -> AtlasData:
    return atlas_data.load(str(small_atlas), None)


def hand_graph(
    ids: list[str], count: list[float], edges: list[tuple[int, int, float]]
) -> ClassGraph:
    """A ClassGraph from node ids ``"layer-channel"``, counts and (source, target, weight)."""
    layer = np.array([int(i.split("-")[0]) for i in ids])
    channel = np.array([int(i.split("-")[1]) for i in ids])
    n = len(ids)
    source = np.array([e[0] for e in edges], dtype=np.int64)
    target = np.array([e[1] for e in edges], dtype=np.int64)
    weight = np.array([e[2] for e in edges], dtype=np.float32)
    return ClassGraph(
        ids=np.array(ids, dtype=object),
        layer=layer,
        channel=channel,
        count=np.array(count, dtype=np.float32),
        slot=np.arange(n, dtype=np.float32),
        x=np.arange(n, dtype=np.float32) * 80,
        y=(2 - layer).astype(np.float32) * 100,
        size=np.full(n, 30, dtype=np.float32),
        image=(None,) * n,
        source=source,
        target=target,
        weight=weight,
        width=np.ones(len(edges), dtype=np.float32),
    )


# -- loading --------------------------------------------------------------------------------


def test_load_refuses_a_missing_atlas(tmp_path: Path) -> None:
    with pytest.raises(AtlasError, match="not found"):
        atlas_data.load(str(tmp_path / "nope"), None)


def test_load_names_a_truncated_file(atlas_copy: Path) -> None:
    victim = atlas_copy / "classes" / "num_images.npy"
    victim.write_bytes(victim.read_bytes()[:-4])
    with pytest.raises(AtlasError, match=r"classes/num_images\.npy"):
        atlas_data.load(str(atlas_copy), None)


def test_header_reads_the_manifest(data: AtlasData) -> None:
    header = data.header()
    assert header["num_classes"] == 6 and header["num_images"] == 300
    assert header["train_accuracy"] == 0.91 and header["test_accuracy"] == 0.874
    assert header["model"] == "TinyNet"


def test_header_without_metrics_shows_the_atlas_accuracy_and_random_weights(
    atlas_copy: Path,
) -> None:
    """A user's own build records no train/test metrics: the header shows the top-1
    accuracy over the atlas's own inputs instead of nothing, and an untrained model says
    so."""
    from dashboard.views.common import ViewContext, percent
    from dashboard.views.shell import header as page_header

    path = atlas_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.pop("metrics", None)
    manifest["model"]["random_weights"] = True
    path.write_text(json.dumps(manifest))
    data = atlas_data.load(str(atlas_copy), None)
    stats = data.atlas.class_stats()
    want = stats["num_correct"].sum() / stats["num_images"].sum()
    info = data.header()
    assert info["train_accuracy"] is None and info["data_accuracy"] == pytest.approx(want)
    assert info["random_weights"] is True
    shown = json.dumps(page_header(ViewContext(data, "/atlas-file/")).to_plotly_json(), default=str)
    label = f"{info['split']} acc." if info.get("split") else "top-1 acc."  # over which inputs
    assert label in shown and percent(want) in shown and "random weights" in shown


# -- similarity and sidebar order ------------------------------------------------------------


def test_similarity_is_the_cosine_of_activation_rows(data: AtlasData) -> None:
    a = np.asarray(data.atlas.activation_counts(1), dtype=np.float64)
    expected = (a @ a[2]) / (np.linalg.norm(a, axis=1) * np.linalg.norm(a[2]))
    np.testing.assert_allclose(data.similarity(1, 2), expected, rtol=1e-5)
    matrix = data.similarity_matrix(1)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-6)
    np.testing.assert_allclose(np.diag(matrix), 1.0, rtol=1e-5)


def test_similarity_is_shared_through_the_disk_cache(small_atlas: Path, tmp_path: Path) -> None:
    first = AtlasData(data_atlas(small_atlas), DerivedCache(tmp_path / "cache"))
    matrix = first.similarity_matrix(0)
    second = AtlasData(data_atlas(small_atlas), DerivedCache(tmp_path / "cache"))
    second.counts = None  # type: ignore[assignment,method-assign]  # must not recompute
    np.testing.assert_array_equal(second.similarity_matrix(0), matrix)


def data_atlas(path: Path):
    from compute.atlas import Atlas

    return Atlas.open(path)


def test_unwritable_cache_runs_uncached_and_warns_once(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("dashboard.data")
    logger.addHandler(handler)
    try:
        cache = DerivedCache(blocker / "cache")
        assert cache.get_or_compute("a", lambda: {"x": np.arange(1)})["x"].tolist() == [0]
        assert cache.get_or_compute("b", lambda: {"x": np.arange(2)})["x"].tolist() == [0, 1]
    finally:
        logger.removeHandler(handler)
    assert sum("running without cache" in r.getMessage() for r in records) == 1


@pytest.mark.parametrize("sort", ["similarity", "acc-asc", "acc-desc"])
def test_sidebar_order_pins_the_selected_class(data: AtlasData, sort: str) -> None:
    order = data.sidebar_order(sort, 1, 3)
    assert order[0] == 3 and sorted(order.tolist()) == list(range(6))
    rest = order[1:]
    if sort == "similarity":
        sim = data.similarity(1, 3)[rest]
        assert np.all(np.diff(sim) <= 1e-6)
    else:
        acc = data.accuracy[rest]
        assert np.all(np.diff(acc) >= 0) if sort == "acc-asc" else np.all(np.diff(acc) <= 0)


def test_top_classes_of_a_channel(data: AtlasData) -> None:
    top, counts = data.top_classes(2, 4, k=3)
    column = np.asarray(data.atlas.activation_counts(2))[:, 4]
    assert counts.tolist() == sorted(column.tolist(), reverse=True)[:3]
    assert column[top].tolist() == counts.tolist()


# -- graphs ----------------------------------------------------------------------------------


def test_a_wide_row_folds_into_lines_that_keep_its_order() -> None:
    """A 30-node layer under a 5-node one: the wide row folds into 4 interleaved lines, no
    wider than LINE_NODES slots, its order by slot kept, and the rows do not overlap."""
    rng = np.random.default_rng(0)
    layer = np.array([0] * 30 + [1] * 5)
    slot = np.concatenate([np.arange(30) - 14.5, np.arange(5) - 2.0])
    shuffle = rng.permutation(35)
    x, y = row_positions(layer[shuffle], slot[shuffle])
    wide = layer[shuffle] == 0
    by_slot = np.argsort(slot[shuffle][wide])
    xs, ys = x[wide][by_slot], y[wide][by_slot]
    assert np.all(np.diff(xs) > 0)  # the row's order along x is the slot order
    assert xs.max() - xs.min() <= LINE_NODES * SLOT_PX
    lines = np.round((ys - ys.min()) / LINE_PX).astype(int)
    assert lines.tolist() == [k % 4 for k in range(30)]
    for line in range(4):  # neighbours on one line are a whole slot apart
        assert np.all(np.diff(xs[lines == line]) >= SLOT_PX - 1e-3)
    assert y[~wide].max() + ROW_PX / 2 < y[wide].min()  # the upper row stays above
    # Each node is nearer its own row's centre (where its label stands) than the other's,
    # by ROW_PX at least: a folded row's top line does not read as the row above's.
    centres = {k: (y[layer[shuffle] == k].min() + y[layer[shuffle] == k].max()) / 2 for k in (0, 1)}
    for row, other in ((0, 1), (1, 0)):
        own = y[layer[shuffle] == row]
        near = np.abs(own - centres[row]).max()
        assert near + ROW_PX - STAGGER_PX <= np.abs(own - centres[other]).min()
    # A row of ROW_NODES or fewer is one line, as before: x = slot * SLOT_PX.
    np.testing.assert_allclose(x[~wide], slot[shuffle][~wide] * SLOT_PX)
    x, y = row_positions(np.zeros(ROW_NODES, np.int64), np.arange(ROW_NODES) - 5.5)
    np.testing.assert_allclose(x, (np.arange(ROW_NODES) - 5.5) * SLOT_PX)
    assert np.ptp(y) == pytest.approx(5.0)  # the stagger only


def test_class_graph_layout(data: AtlasData) -> None:
    graph = data.graph(1)
    assert graph.num_nodes == 9 and graph.num_edges > 0
    # The top layer is drawn on top (smaller y), and rows are staggered by a few px.
    top_y = graph.y[graph.layer == graph.layer.max()]
    bottom_y = graph.y[graph.layer == 0]
    assert top_y.max() < bottom_y.min()
    assert len(set(np.round(bottom_y, 1).tolist())) == 2
    # Node size grows with the activation count of the class.
    order = np.argsort(graph.count)
    assert np.all(np.diff(graph.size[order]) >= 0)
    assert graph.count[0] == data.atlas.activation_counts(int(graph.layer[0]))[1, graph.channel[0]]
    # Edges go from a lower layer to the next one up.
    assert np.all(graph.layer[graph.target] == graph.layer[graph.source] + 1)
    assert all(graph.image)  # every node has its top crop


def test_neighbours() -> None:
    graph = hand_graph(["0-1", "0-2", "1-5"], [5, 5, 5], [(0, 2, 3), (1, 2, 4)])
    assert sorted(graph.neighbours("1-5")) == ["0-1", "0-2"]
    assert graph.neighbours("0-1") == ["1-5"]
    assert graph.neighbours("9-9") == []


def test_thresholds_hide_nodes_and_their_edges() -> None:
    graph = hand_graph(["0-1", "0-2", "1-5"], [10, 2, 8], [(0, 2, 10), (1, 2, 1)])
    nodes, edges = graph_masks(graph, 50, 0)
    assert nodes.tolist() == [True, False, True] and edges.tolist() == [True, False]
    nodes, edges = graph_masks(graph, 0, 50)
    assert nodes.all() and edges.tolist() == [True, False]
    elements = graph_elements(graph, node_min_pct=100, picked="0-1", layer_names=("a", "b"))
    kept = [e["data"]["id"] for e in elements if "size" in e["data"]]
    assert kept == ["0-1"]
    assert [e for e in elements if e.get("classes") == "picked"]
    assert not [e for e in elements if "source" in e["data"]]


def test_a_node_no_input_of_the_class_selects_is_drawn_apart() -> None:
    """A node with activation count 0 is on a class graph through influence alone; it
    must not look like a unit the class uses (and can still be the picked one)."""
    graph = hand_graph(["0-1", "0-2", "1-5"], [0, 4, 8], [(0, 2, 3), (1, 2, 4)])
    classes = {
        e["data"]["id"]: e["classes"].split() for e in graph_elements(graph, picked="0-1")
        if "size" in e["data"]
    }  # fmt: skip
    assert classes == {"0-1": ["picked", INFLUENCE_ONLY], "0-2": [], "1-5": []}
    selectors = [rule["selector"] for rule in base_stylesheet()]
    assert f"node.{INFLUENCE_ONLY}" in selectors
    # picked still wins the border colour: its rule comes after the dotted one
    assert selectors.index("node.picked") > selectors.index(f"node.{INFLUENCE_ONLY}")


def test_graph_elements_serve_crops_by_url(data: AtlasData) -> None:
    elements = graph_elements(
        data.graph(0), url_prefix="/p/atlas-file/", layer_names=data.layer_names
    )
    images = [e["data"]["img"] for e in elements if "img" in e["data"]]
    assert images and all(i.startswith("/p/atlas-file/images/") for i in images)
    labels = [e for e in elements if e.get("classes") == "rowlabel"]
    assert [e["data"]["label"] for e in labels] == ["layer0", "layer1", "layer2"]


def test_compare_marks_shared_and_unique_nodes() -> None:
    a = hand_graph(["0-1", "0-2", "1-5"], [5, 5, 5], [(0, 2, 3), (1, 2, 3)])
    b = hand_graph(["0-1", "0-3", "1-5"], [5, 5, 5], [(0, 2, 3), (1, 2, 3)])
    elements, counts = compare_elements(a, b)
    groups = {e["data"]["id"]: e["classes"] for e in elements if "group" in e["data"]}
    assert groups == {"0-1": "shared", "1-5": "shared", "0-2": "only-a", "0-3": "only-b"}
    assert counts == {"shared": 2, "a": 1, "b": 1}
    edge_groups = sorted(e["classes"] for e in elements if "source" in e["data"])
    assert edge_groups == ["only-a", "only-b", "shared"]
    # Within a row: only-A left of shared left of only-B.
    x = {e["data"]["id"]: e["position"]["x"] for e in elements if "group" in e["data"]}
    assert x["0-2"] < x["0-1"] < x["0-3"]
    _, same = compare_elements(a, a)
    assert same == {"shared": 3, "a": 0, "b": 0}


def test_hover_stylesheet_keeps_the_neighbourhood() -> None:
    base = base_stylesheet()
    sheet = hover_stylesheet(base, "1-5", ["0-1"])
    assert sheet[: len(base)] == base
    selectors = [rule["selector"] for rule in sheet[len(base) :]]
    assert 'node[id = "1-5"], node[id = "0-1"]' in selectors
    assert 'edge[source = "1-5"], edge[target = "1-5"]' in selectors


# -- figures ---------------------------------------------------------------------------------


def test_embedding_figure_is_valid_plotly(data: AtlasData) -> None:
    figure = embedding_figure(data.embedding(0), data.names, data.accuracy, 2, 4, "layer0")
    validated = go.Figure(figure)  # raises on any invalid property
    assert len(validated.data) == 4
    assert list(validated.data[1].text) == [data.names[2]]
    assert list(validated.data[2].text) == [data.names[4]]
    assert len(validated.data[3].x) == 0  # no confusion classes given
    without = go.Figure(embedding_figure(data.embedding(0), data.names, data.accuracy, 2))
    assert len(without.data) == 4 and len(without.data[2].x) == 0
    # The classes it is mistaken for: thin grey rings, the selected or compared class left out.
    mistaken = go.Figure(
        embedding_figure(
            data.embedding(0), data.names, data.accuracy, 2, 4, "layer0", mistaken=[4, 1, 3]
        )
    )
    assert list(mistaken.data[3].text) == [data.names[1], data.names[3]]
    assert list(mistaken.data[3].customdata) == [1, 3]
    # Every class is labelled: its name stands a ring's width from its point, on the side of
    # the point (a ringed class's name is not under its ring); the hover keeps the bare name.
    base = validated.data[0]
    assert list(base.text) == list(data.names)
    for side, template in zip(base.textposition, base.texttemplate, strict=True):
        gap = template.replace("%{text}", "")
        assert gap.strip() == "" and len(gap) >= 2
        assert template.startswith("%{text}") == (side == "middle left")


def test_embedding_figure_without_accuracy() -> None:
    xy = np.zeros((3, 2), dtype=np.float32)
    figure = go.Figure(embedding_figure(xy, ["a", "b", "c"], np.full(3, np.nan), 0))
    assert figure.data[0].marker.color is not None


def test_neuron_bars_are_valid_plotly(data: AtlasData) -> None:
    top, counts = data.top_classes(0, 1, k=4)
    figure = go.Figure(neuron_bar_figure(data.names, top, counts, data.num_images, int(top[0])))
    bars = figure.data[0]
    assert list(bars.customdata)[::-1] == top.tolist()  # best at the top
    assert bars.marker.color[-1] == "#f97316"


def test_sparkline_is_small_valid_svg() -> None:
    svg = sparkline_svg(np.array([0, 3, 10, 5, 0]))
    assert len(svg) < 400
    assert ET.fromstring(svg).tag.endswith("svg")
    assert "V0.0" in svg  # the tallest bin reaches the top
    assert ET.fromstring(sparkline_svg(np.zeros(4))).tag.endswith("svg")


def test_file_path_serves_only_listed_files(data: AtlasData) -> None:
    assert data.file_path("images/00/0-0.png") is not None
    for bad in (
        "manifest.json",
        "../manifest.json",
        "images/../manifest.json",
        "/etc/passwd",
        "images/00/999-0.png",
        "",
    ):
        assert data.file_path(bad) is None


def test_match_classes_prefers_word_prefixes(make_atlas: Any, tmp_path: Path) -> None:
    names = ("tabby cat", "cat shark", "bobcat", "dog", "Catamaran")
    data = AtlasData(data_atlas(make_atlas(tmp_path / "cats", num_classes=5, class_names=names)))
    assert data.match_classes("cat") == [0, 1, 4, 2]
    assert data.match_classes("  CAT ", limit=2) == [0, 1]
    assert data.match_classes("") == [] and data.match_classes("zebra") == []
    options = data.class_options("cat", [3], np.arange(5), limit=2)
    assert [o["value"] for o in options] == [3, 0, 1]  # the current value stays listed
    assert [o["label"] for o in data.class_options(None, [], np.array([4, 2]))] == [
        "Catamaran",
        "bobcat",
    ]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the JavaScript")
def test_browser_class_search_matches_the_server_rule(data: AtlasData) -> None:
    """The clientside search (views.common._SEARCH_JS) lists what AtlasData.class_options
    lists for the same text: word-prefix matches first, the current value pinned."""
    names = [*data.names, "Amber Badger", "big amber", "xamberx", "amber"]
    texts = ["amber", " AMB ", "b", "zzz", "", "class 00", "er"]
    suggestions = [{"label": names[2], "value": 2}]  # the server's, without the value 1
    script = (
        f"const search = {_SEARCH_JS};\n"
        f"const names = {json.dumps(names)};\n"
        f"const texts = {json.dumps(texts)};\n"
        "globalThis.window = {dash_clientside: {no_update: 'NO_UPDATE'}};\n"
        f"const suggestions = {json.dumps(suggestions)};\n"
        "console.log(JSON.stringify(texts.map(t => search(t, names, suggestions, 1))));"
    )
    result = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    browser = json.loads(result.stdout)
    fake = AtlasData.__new__(AtlasData)
    fake.__dict__.update(names=tuple(names), num_classes=len(names))
    for text, got in zip(texts, browser, strict=True):
        if not text.strip():  # the suggestions, with the current value kept first
            assert got == [{"label": names[1], "value": 1}, *suggestions]
            continue
        expected = AtlasData.class_options(fake, text.strip(), [1], np.array([], dtype=np.int64))
        assert got == expected, text


def test_every_missing_part_command_exists(small_atlas: Path, tmp_path: Path) -> None:
    """Each "missing part" note names a command the compute CLI really has, with the
    atlas's name (not its server path): notes once named `python -m compute embed`."""
    import shlex

    from compute.cli import make_parser
    from dashboard.data import HOW_TO_COMPUTE

    data = atlas_data.load(str(small_atlas), str(tmp_path / "cache"))
    parser = make_parser()
    for part in HOW_TO_COMPUTE:
        note = data.missing_note(part)
        command = note.split("`")[1]
        assert str(small_atlas.parent) not in note
        words = shlex.split(command.replace("...", "x"))
        assert words[:3] == ["python", "-m", "compute"], command
        args = parser.parse_args(words[3:])  # argparse exits on an unknown command or flag
        assert small_atlas.name in command, command
        assert args.command in ("build", "featurevis"), command


class _Payload:
    """Unpickling this runs a command: what someone who can write the cache would plant."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_planted_pickle_in_the_cache_is_never_executed(small_atlas: Path, tmp_path: Path) -> None:
    """diskcache's default disk unpickles what it reads: a row planted by whoever can write
    the cache folder ran code as the server. Rows are read as bytes only now; a planted
    row is refused and the view is computed (and the page renders)."""
    import diskcache

    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    matrix = AtlasData(data_atlas(small_atlas), DerivedCache(directory)).similarity_matrix(0)
    marker = tmp_path / "pwned"
    planted = diskcache.Cache(str(directory))  # the default (pickling) disk, as an attacker
    keys = list(planted.iterkeys())
    assert keys  # the similarity was cached
    for key in keys:  # every entry the dashboard will read replaced by the payload
        planted.set(key, _Payload(marker))
    planted.close()
    fresh = AtlasData(data_atlas(small_atlas), DerivedCache(directory))
    np.testing.assert_array_equal(fresh.similarity_matrix(0), matrix)  # recomputed
    assert not marker.exists()
    again = AtlasData(data_atlas(small_atlas), DerivedCache(directory))
    np.testing.assert_array_equal(again.similarity_matrix(0), matrix)  # stored safely now
    assert not marker.exists()


def test_a_cache_folder_others_can_write_is_not_used(tmp_path: Path) -> None:
    import os

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    cache = DerivedCache(shared)
    cache.get_or_compute("k", lambda: {"x": np.arange(3)})
    assert list(shared.iterdir()) == []  # nothing written into the open folder
    if os.getuid() == 0:  # root can give a folder to another user: not used either
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o700)
        os.chown(foreign, 65534, 65534)
        DerivedCache(foreign).get_or_compute("k", lambda: {"x": np.arange(3)})
        assert list(foreign.iterdir()) == []
    own = tmp_path / "own"
    DerivedCache(own).get_or_compute("k", lambda: {"x": np.arange(3)})
    assert own.stat().st_mode & 0o077 == 0 and any(own.iterdir())


def test_the_comparison_keeps_each_class_s_colour() -> None:
    """Orange is the selected class everywhere (header, embedding ring, pies): in the
    comparison too, and the compared class is the embedding's purple (a newcomer read the
    orange edges as the selected class's while they were the other's)."""
    from dashboard.views.summit import figures

    assert figures.ONLY_A == figures.ACCENT
    assert figures.ONLY_B == figures.COMPARE
    styles = {rule["selector"]: rule["style"] for rule in figures.base_stylesheet()}
    assert styles["edge.only-a"]["line-color"] == figures.ACCENT
    assert styles["edge.only-b"]["line-color"] == figures.COMPARE


def test_embedding_names_every_class_only_when_there_are_few() -> None:
    """A newcomer sees which dot is which class on a small atlas; on a large one the names
    would cover the plot, so they are on hover only."""
    few = np.random.default_rng(0).random((10, 2)).astype(np.float32)
    names = [f"class {i}" for i in range(10)]
    points = go.Figure(embedding_figure(few, names, np.full(10, 0.5), 0)).data[0]
    assert points.mode == "markers+text" and list(points.text) == names
    many = np.random.default_rng(0).random((LABEL_ALL_CLASSES + 1, 2)).astype(np.float32)
    names = [f"c{i}" for i in range(LABEL_ALL_CLASSES + 1)]
    points = go.Figure(embedding_figure(many, names, np.full(len(names), 0.5), 0)).data[0]
    assert points.mode == "markers"
