"""Exports: a class graph read back with networkx (from node-link JSON and from GraphML)
has the nodes, edges and weights of the atlas and of the dashboard's graph view, and so
has the comparison of two classes those of the compare view; the class table matches the
class statistics, a channel's examples the stored ones; each download button gives the
file the command writes; the command refuses bad input in one line."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import networkx as nx
import numpy as np
import pytest

from compute.atlas import PART_GRAPHS, PART_SUMMIT, Atlas, AtlasError
from compute.cli import main
from compute.export import (
    EXAMPLE_COLUMNS,
    csv_text,
    example_rows,
    export_classes,
    export_compare,
    export_examples,
    export_graphs,
    export_mapper,
)
from compute.topology.part import default_graph
from dashboard import data as atlas_data
from dashboard.config import DEMO_ATLAS_DIR
from dashboard.state import ViewState
from dashboard.views.common import ViewContext
from dashboard.views.summit import ids as summit_ids
from dashboard.views.summit import neuron_page
from dashboard.views.summit.compare import compare_download
from dashboard.views.summit.compare import render as compare_render
from dashboard.views.summit.graph import graph_download, render_graph
from dashboard.views.summit.sidebar import classes_download
from dashboard.views.topology.callbacks import members_download


@pytest.fixture(scope="module")
def demo() -> Atlas:
    return Atlas.open(DEMO_ATLAS_DIR)


def edges_of(graph: nx.DiGraph) -> dict[tuple[str, str], int]:
    return {(s, t): int(w) for s, t, w in graph.edges(data="weight")}


def test_to_networkx_is_the_stored_graph(demo: Atlas) -> None:
    for c in (0, 3, 9):
        stored = demo.graph(c)
        graph = demo.to_networkx(c)
        assert graph.number_of_nodes() == stored.num_nodes > 0
        assert graph.number_of_edges() == stored.num_edges > 0
        for k in range(stored.num_nodes):
            layer, channel = int(stored.layer[k]), int(stored.channel[k])
            node = graph.nodes[f"{layer}-{channel}"]
            assert node["layer"] == demo.layer_names[layer] and node["channel"] == channel
            assert node["count"] == int(demo.activation_counts(layer)[c, channel])
            assert node["pagerank"] == pytest.approx(float(stored.pagerank[k]))
        ids = [f"{int(a)}-{int(b)}" for a, b in zip(stored.layer, stored.channel, strict=True)]
        want = {
            (ids[int(s)], ids[int(t)]): int(w)
            for s, t, w in zip(stored.source, stored.target, stored.weight, strict=True)
        }
        assert edges_of(graph) == want
        assert graph.graph["class"] == demo.classes[c]


def test_exported_files_read_back_as_the_view_draws(demo: Atlas, tmp_path: Path) -> None:
    written = export_graphs(demo, tmp_path, [3])
    assert sorted(p.name for p in written) == [
        "digits-graph-0003-three.graphml",
        "digits-graph-0003-three.json",
    ]
    from_json = nx.node_link_graph(json.loads(written[0].with_suffix(".json").read_text()))
    from_graphml = nx.read_graphml(written[0].with_suffix(".graphml"))
    reference = demo.to_networkx(3)
    for graph in (from_json, from_graphml):
        assert set(graph.nodes) == set(reference.nodes)
        assert edges_of(graph) == edges_of(reference)
        assert graph.nodes["2-24"]["count"] == reference.nodes["2-24"]["count"]
    # The dashboard's graph of the same class, thresholds at 0: the same nodes and edges.
    context = ViewContext(
        data=atlas_data.load(str(DEMO_ATLAS_DIR), str(tmp_path / "cache")),
        file_prefix="/atlas-file/",
    )
    elements, _, _ = render_graph(context, ViewState(cls=3).to_dict())
    drawn_edges = {
        (e["data"]["source"], e["data"]["target"]) for e in elements if "source" in e["data"]
    }
    # Channel nodes are "layer-channel"; each layer's row label is another element.
    drawn_nodes = {e["data"]["id"] for e in elements if re.fullmatch(r"\d+-\d+", e["data"]["id"])}
    assert drawn_nodes == set(reference.nodes)
    assert drawn_edges == set(edges_of(reference))


def test_class_table(demo: Atlas, tmp_path: Path) -> None:
    path = export_classes(demo, tmp_path)
    rows = list(csv.DictReader(path.open()))
    stats = demo.class_stats()
    assert [r["class"] for r in rows] == list(demo.classes)
    assert [int(r["images"]) for r in rows] == stats["num_images"].tolist()
    assert [int(r["correct"]) for r in rows] == stats["num_correct"].tolist()


def test_export_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["export", str(DEMO_ATLAS_DIR), "--classes", "1", "--out", str(out)]) == 0
    assert len(list(out.iterdir())) == 3  # the class table, one graph in two formats
    assert main(["export", str(DEMO_ATLAS_DIR), "--classes", "10", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "error: class index 10 is outside 0..9"
    assert main(["export", str(tmp_path / "none"), "--out", str(out)]) == 2
    with pytest.raises(AtlasError, match="out of range"):
        Atlas.open(DEMO_ATLAS_DIR).to_networkx(10)


def test_mapper_members_are_the_default_graphs_nodes(demo: Atlas, tmp_path: Path) -> None:
    """One row per member of every node of each layer's default graph (the Topology view
    with no parameter in its URL), with its image index and class."""
    paths = export_mapper(demo, tmp_path, [2])
    assert len(paths) == 1 and paths[0].name.startswith("digits-mapper-features.relu3-i")
    rows = list(csv.DictReader(paths[0].open()))
    graph = default_graph(demo, 2)
    sample = demo.mapper_sample(2)
    assert len(rows) == int(graph.node_sizes.sum())
    for node in (0, graph.num_nodes - 1):
        members = [int(r["sample_row"]) for r in rows if int(r["node"]) == node]
        assert members == graph.members(node).tolist()
        # the Topology panel's short name, so a user can find its node in the file
        names = {r["node_name"] for r in rows if int(r["node"]) == node}
        assert names == {f"{graph.node_interval[node]}/{graph.node_cluster[node]}"}
    first = rows[0]
    row = int(first["sample_row"])
    assert int(first["image_index"]) == int(sample.image_index[row])
    assert first["class"] == demo.classes[int(sample.label[row])]
    # node_classes: the node's composition, the same on each of its rows.
    node = int(first["node"])
    labels = sample.label[graph.members(node)]
    counts = {demo.classes[c]: int((labels == c).sum()) for c in set(labels.tolist())}
    listed = dict(part.split(":") for part in first["node_classes"].split(";"))
    assert {k: int(v) for k, v in listed.items()} == counts
    assert [int(v) for v in listed.values()] == sorted(counts.values(), reverse=True)
    with pytest.raises(AtlasError, match="layer index 9"):
        export_mapper(demo, tmp_path, [9])


def test_the_views_json_download_is_the_graph_as_shown(demo: Atlas, tmp_path: Path) -> None:
    """The attribution graph's JSON button: the nodes and edges the view draws at the
    state's thresholds, read back by networkx; at 0 % the whole stored graph, as
    ``compute export`` writes it."""
    context = ViewContext(
        data=atlas_data.load(str(DEMO_ATLAS_DIR), str(tmp_path / "cache")),
        file_prefix="/atlas-file/",
    )
    for state in (ViewState(cls=3), ViewState(cls=3, node_min=40, edge_min=25)):
        download = graph_download(context, state.to_dict())
        assert download is not None
        assert download["filename"] == (
            f"digits-graph-0003-three-nodes{state.node_min}-edges{state.edge_min}.json"
        )
        graph = nx.node_link_graph(json.loads(download["content"]))
        elements, _, _ = render_graph(context, state.to_dict())
        drawn = {e["data"]["id"] for e in elements if re.fullmatch(r"\d+-\d+", e["data"]["id"])}
        lines = {
            (e["data"]["source"], e["data"]["target"]) for e in elements if "source" in e["data"]
        }
        assert set(graph.nodes) == drawn and set(graph.edges) == lines
    whole = nx.node_link_graph(
        json.loads(graph_download(context, ViewState(cls=3).to_dict())["content"])
    )
    assert edges_of(whole) == edges_of(demo.to_networkx(3))
    assert graph.number_of_nodes() < whole.number_of_nodes()  # the thresholds hid some


def test_the_topology_csv_download_is_the_graph_shown(demo: Atlas, tmp_path: Path) -> None:
    """The Topology view's CSV button: the members of the graph the state shows; with no
    Mapper parameter in the state, the same file as ``compute export --what mapper``."""
    context = ViewContext(
        data=atlas_data.load(str(DEMO_ATLAS_DIR), str(tmp_path / "cache")),
        file_prefix="/atlas-file/",
    )
    default = members_download(context, ViewState(topo_layer=2).to_dict())
    assert default is not None
    exported = export_mapper(demo, tmp_path, [2])[0]
    assert default["filename"] == exported.name
    assert default["content"] == exported.read_text()
    other = members_download(context, ViewState(topo_layer=2, topo_intervals=20).to_dict())
    assert other is not None and "-i20-" in other["filename"]
    rows = list(csv.DictReader(io.StringIO(other["content"])))
    assert rows and list(rows[0]) == [
        "node", "node_name", "sample_row", "image_index", "label", "class", "node_classes"
    ]  # fmt: skip
    assert other["content"] != default["content"]


def find_component(root: Any, component_id: str) -> Any:
    """The component with ``component_id`` anywhere below ``root`` (``None``: absent)."""
    if getattr(root, "id", None) == component_id:
        return root
    children = getattr(root, "children", None)
    for child in children if isinstance(children, (list, tuple)) else [children]:
        found = (
            None if child is None or isinstance(child, str) else find_component(child, component_id)
        )
        if found is not None:
            return found
    return None


@pytest.fixture
def context(tmp_path: Path) -> ViewContext:
    return ViewContext(
        data=atlas_data.load(str(DEMO_ATLAS_DIR), str(tmp_path / "cache")),
        file_prefix="/atlas-file/",
    )


def test_the_class_cards_csv_is_the_exported_table(
    demo: Atlas, context: ViewContext, tmp_path: Path
) -> None:
    """The class sidebar's CSV button: the very file ``compute export --what classes``
    writes, under its name."""
    download = classes_download(context)
    assert download is not None and download["type"] == "text/csv"
    exported = export_classes(demo, tmp_path)
    assert download["filename"] == exported.name == "digits-classes.csv"
    assert download["content"] == exported.read_text()
    rows = list(csv.DictReader(io.StringIO(download["content"])))
    accuracy = demo.accuracy()
    assert [float(r["accuracy"]) for r in rows] == pytest.approx(accuracy.tolist(), abs=1e-6)


def test_a_channels_examples_are_the_atlas_examples(demo: Atlas) -> None:
    table = demo.examples(2)
    rows = example_rows(demo, 2, 5)
    assert len(rows) == int((table.image_index[5] >= 0).sum()) > 0
    for rank, row in enumerate(rows):
        record = dict(zip(EXAMPLE_COLUMNS, row, strict=True))
        assert (record["layer"], record["channel"], record["rank"]) == (
            "features.relu3",
            5,
            rank + 1,
        )
        assert record["image_index"] == int(table.image_index[5, rank])
        # The activation read back is the stored float32, exactly.
        assert np.float32(record["activation"]) == table.activation[5, rank]
        assert [record["row"], record["col"]] == table.position[5, rank].tolist()
    activations = [row[4] for row in rows]
    assert activations == sorted(activations, reverse=True)  # best first
    with pytest.raises(AtlasError, match="channel 64 is outside"):
        example_rows(demo, 2, 64)


def test_the_neuron_pages_csv_is_the_channels_rows_of_the_layer_export(
    demo: Atlas, context: ViewContext, tmp_path: Path
) -> None:
    """The neuron page's CSV link holds the channel's examples under a name with the atlas,
    the layer and the channel; ``compute export --what examples`` writes every channel's
    rows of a layer, the same rows."""
    page = neuron_page.page(context, layer="features.relu3", channel="5")
    link = find_component(page, summit_ids.NEURON_PAGE_EXAMPLES_CSV)
    assert link is not None
    assert link.download == "digits-examples-features.relu3-channel-0005.csv"
    prefix = "data:text/csv;charset=utf-8,"
    assert link.href.startswith(prefix)
    text = unquote(link.href[len(prefix) :])
    assert text == csv_text(EXAMPLE_COLUMNS, example_rows(demo, 2, 5))
    (exported,) = export_examples(demo, tmp_path, [2])
    assert exported.name == "digits-examples-features.relu3.csv"
    layer_rows = list(csv.DictReader(exported.open()))
    assert len(layer_rows) == sum(
        len(example_rows(demo, 2, channel)) for channel in range(demo.layers[2].channels)
    )
    channel_rows = list(csv.DictReader(io.StringIO(text)))
    assert [r for r in layer_rows if r["channel"] == "5"] == channel_rows


def test_no_examples_no_csv_link(make_atlas: Any, tmp_path: Path) -> None:
    atlas = make_atlas(tmp_path / "bare", parts=(PART_SUMMIT, PART_GRAPHS))
    context = ViewContext(
        data=atlas_data.load(str(atlas), str(tmp_path / "cache")), file_prefix="/atlas-file/"
    )
    page = neuron_page.page(context, layer="0", channel="1")
    assert find_component(page, summit_ids.NEURON_PAGE_EXAMPLES_CSV) is None
    assert find_component(page, summit_ids.NEURON_PAGE_EXAMPLES) is not None  # its note
    with pytest.raises(AtlasError, match="no dataset examples"):
        export_examples(Atlas.open(atlas), tmp_path)


def drawn_comparison(
    context: ViewContext, state: ViewState
) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """The compare view's nodes and edges, each with its group (its cytoscape class)."""
    elements, _, _ = compare_render(context, state.to_dict())
    nodes = {e["data"]["id"]: e["classes"] for e in elements if "group" in e["data"]}
    edges = {
        (e["data"]["source"], e["data"]["target"]): e["classes"]
        for e in elements
        if "source" in e["data"]
    }
    return nodes, edges


def test_the_comparison_download_is_the_comparison_as_shown(
    demo: Atlas, context: ViewContext
) -> None:
    """The compare card's JSON and GraphML buttons: read back by networkx, the nodes and
    edges the view draws, each in the group it is drawn in, with both classes' counts."""
    graph_a = {(s, t): w for s, t, w in demo.to_networkx(3).edges(data="weight")}
    sizes = []
    for state in (
        ViewState(cls=3, compare=8),
        ViewState(cls=3, compare=8, node_min=40, edge_min=25),
    ):
        files = [compare_download(context, state.to_dict(), fmt) for fmt in ("json", "graphml")]
        assert files[0] is not None and files[1] is not None
        thresholds = f"nodes{state.node_min}-edges{state.edge_min}"
        stem = f"digits-compare-0003-three-vs-0008-eight-{thresholds}"
        assert [f["filename"] for f in files] == [f"{stem}.json", f"{stem}.graphml"]
        from_json = nx.node_link_graph(json.loads(files[0]["content"]))
        from_graphml = nx.read_graphml(io.BytesIO(files[1]["content"].encode()))
        nodes, edges = drawn_comparison(context, state)
        assert {"only-a", "shared", "only-b"} <= set(nodes.values())
        for graph in (from_json, from_graphml):
            assert dict(graph.nodes(data="group")) == nodes
            assert {(s, t): g for s, t, g in graph.edges(data="group")} == edges
            for node, attributes in graph.nodes(data=True):
                layer, channel = (int(part) for part in node.split("-"))
                counts = demo.activation_counts(layer)[:, channel]
                assert (attributes["count_a"], attributes["count_b"]) == (counts[3], counts[8])
            for source, target, attributes in graph.edges(data=True):
                if (source, target) in graph_a:  # A's graph: its weight
                    assert attributes["weight_a"] == graph_a[(source, target)]
            assert graph.graph["class_b"] == "eight"
        sizes.append(from_json.number_of_nodes())
    assert sizes[1] < sizes[0]  # the thresholds hid some


def test_compare_export_writes_the_whole_comparison(
    demo: Atlas, context: ViewContext, tmp_path: Path
) -> None:
    """``compute export --compare 3,8``: the buttons' files at thresholds 0, by the same
    name without the thresholds; the graph card's GraphML holds its JSON's graph."""
    written = export_compare(demo, tmp_path, [(3, 8)])
    assert [p.name for p in written] == [
        "digits-compare-0003-three-vs-0008-eight.json",
        "digits-compare-0003-three-vs-0008-eight.graphml",
    ]
    state = ViewState(cls=3, compare=8).to_dict()
    for path, fmt in zip(written, ("json", "graphml"), strict=True):
        download = compare_download(context, state, fmt)
        assert download is not None
        assert download["content"] == path.read_text()
        assert download["filename"] == f"{path.stem}-nodes0-edges0{path.suffix}"
    assert compare_download(context, ViewState(cls=3).to_dict()) is None  # nothing compared
    shown = ViewState(cls=3, node_min=40).to_dict()
    as_json = nx.node_link_graph(json.loads(graph_download(context, shown, "json")["content"]))
    as_graphml = nx.read_graphml(
        io.BytesIO(graph_download(context, shown, "graphml")["content"].encode())
    )
    assert dict(as_graphml.nodes(data=True)) == dict(as_json.nodes(data=True))
    assert edges_of(as_graphml) == edges_of(as_json)
    # read_graphml adds the file's default attribute values (none) to the graph's.
    read = {k: v for k, v in as_graphml.graph.items() if k not in ("node_default", "edge_default")}
    assert read == as_json.graph


def test_export_command_writes_examples_and_comparisons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    atlas = str(DEMO_ATLAS_DIR)
    argv = ["export", atlas, "--what", "examples", "--layers", "features.relu2", "3"]
    assert main([*argv, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "digits-examples-features.relu2.csv",
        "digits-examples-features.relu4.csv",
    ]
    # --compare alone writes only the comparisons.
    assert (
        main(
            [
                "export",
                atlas,
                "--compare",
                "3,8",
                "0,1",
                "--format",
                "json",
                "--out",
                str(out / "c"),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (out / "c").iterdir()) == [
        "digits-compare-0000-zero-vs-0001-one.json",
        "digits-compare-0003-three-vs-0008-eight.json",
    ]
    assert (
        main(["export", atlas, "--what", "examples", "--layers", "conv9", "--out", str(out)]) == 2
    )
    assert "unknown layer 'conv9'" in capsys.readouterr().err
    assert main(["export", atlas, "--compare", "3,10", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "error: class index 10 is outside 0..9"
    with pytest.raises(SystemExit):
        main(["export", atlas, "--compare", "3", "--out", str(out)])


def test_a_text_atlas_mapper_csv_lists_each_members_token_and_text(
    text_atlas: Path, tmp_path: Path
) -> None:
    """The Topology view lists a node's members as texts with the sampled token marked:
    its CSV (button and ``export``, the same file) carries both, read back from the atlas
    independently here."""
    atlas = Atlas.open(text_atlas)
    context = ViewContext(
        data=atlas_data.load(str(text_atlas), str(tmp_path / "cache")), file_prefix="/f/"
    )
    layer = len(atlas.layers) - 1
    exported = export_mapper(atlas, tmp_path, [layer])[0]
    download = members_download(context, ViewState(topo_layer=layer).to_dict())
    assert download is not None and download["content"] == exported.read_text()
    rows = list(csv.DictReader(io.StringIO(exported.read_text())))
    assert rows and list(rows[0])[-2:] == ["token", "text"]
    sample = atlas.mapper_sample(layer)
    for row in rows:
        index = int(row["image_index"])
        assert index == int(sample.image_index[int(row["sample_row"])])
        text = atlas.text_input(index)
        assert text is not None and row["text"] == text.seen
        token = int(sample.position[int(row["sample_row"]), 1])
        assert row["token"] == text.word(token) and row["token"]
