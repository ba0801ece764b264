"""Exports: a class graph read back with networkx (from node-link JSON and from GraphML)
has the nodes, edges and weights of the atlas and of the dashboard's graph view; the class
table matches the class statistics; the command refuses bad input in one line."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import networkx as nx
import pytest

from compute.atlas import Atlas, AtlasError
from compute.cli import main
from compute.export import export_classes, export_graphs, export_mapper
from compute.topology.part import default_graph
from dashboard import data as atlas_data
from dashboard.config import DEMO_ATLAS_DIR
from dashboard.state import ViewState
from dashboard.views.common import ViewContext
from dashboard.views.summit.graph import graph_download, render_graph
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
        "demo_atlas-graph-0003-three.graphml",
        "demo_atlas-graph-0003-three.json",
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
    assert len(paths) == 1 and paths[0].name.startswith("demo_atlas-mapper-features.relu3-i")
    rows = list(csv.DictReader(paths[0].open()))
    graph = default_graph(demo, 2)
    sample = demo.mapper_sample(2)
    assert len(rows) == int(graph.node_sizes.sum())
    for node in (0, graph.num_nodes - 1):
        members = [int(r["sample_row"]) for r in rows if int(r["node"]) == node]
        assert members == graph.members(node).tolist()
    first = rows[0]
    row = int(first["sample_row"])
    assert int(first["image_index"]) == int(sample.image_index[row])
    assert first["class"] == demo.classes[int(sample.label[row])]
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
            f"demo_atlas-graph-0003-three-nodes{state.node_min}-edges{state.edge_min}.json"
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
    assert rows and rows[0].keys() == {"node", "sample_row", "image_index", "label", "class"}
    assert other["content"] != default["content"]
