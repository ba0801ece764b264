"""Take an atlas away: class graphs and comparisons of two classes as node-link JSON and
GraphML, the class table, the channels' top dataset examples and the default Mapper
graphs' node members as CSV.

Torch-free (the atlas reader, numpy, networkx and the standard library).
``python -m compute export ATLAS --what graphs classes examples mapper --compare 3,8``
writes the files; the dashboard's download buttons build theirs with the functions here,
so a table's rows, a graph's node-link data and every file name are defined once.
:meth:`compute.atlas.Atlas.to_networkx` gives one class's graph in a notebook, and
:meth:`~compute.atlas.Atlas.graph_data` its node-link data.

A node is one channel of one layer (id ``"{layer index}-{channel}"``, as in the
dashboard) with its layer's name, its channel, the class's activation count **A** and its
PageRank; an edge carries the class's influence count **I** (``weight``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from compute.atlas import (
    PART_EXAMPLES,
    PART_GRAPHS,
    PART_INSTANCES,
    PART_MAPPER,
    PART_SUBSETS,
    PART_SUMMIT,
    Atlas,
    AtlasError,
    MapperSampleArrays,
)
from compute.summit.instance_graph import instance_graph
from compute.topology.mapper import MapperGraph, MapperParams
from compute.topology.part import default_graph

#: What ``--what`` can export.
EXPORTS = ("graphs", "classes", "examples", "mapper")
#: Graph file formats.
GRAPH_FORMATS = ("json", "graphml")


def file_slug(text: str) -> str:
    """A file-name-safe form of a name (letters, digits, ``._-``; at most 60 characters).

    Examples:
        >>> file_slug("tabby cat / tiger?")
        'tabby_cat_tiger'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "class"


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A CSV file's text (RFC 4180 quoting)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def json_text(data: Any) -> str:
    """A JSON file's text (what every node-link file holds)."""
    return json.dumps(data, indent=1) + "\n"


def node_link_networkx(data: dict[str, Any]) -> nx.DiGraph:
    """Node-link data of this module (or :meth:`Atlas.graph_data`) as a ``networkx.DiGraph``:
    ``graph`` as the graph's attributes, every other key of a node or an edge as its
    attributes."""
    graph = nx.DiGraph(**data["graph"])
    for node in data["nodes"]:
        graph.add_node(node["id"], **{k: v for k, v in node.items() if k != "id"})
    for edge in data["edges"]:
        attributes = {k: v for k, v in edge.items() if k not in ("source", "target")}
        graph.add_edge(edge["source"], edge["target"], **attributes)
    return graph


def graphml_text(data: dict[str, Any]) -> str:
    """Node-link data as a GraphML file's text (``networkx.read_graphml`` reads it back)."""
    buffer = io.BytesIO()
    nx.write_graphml(node_link_networkx(data), buffer)
    return buffer.getvalue().decode("utf-8")


# -- the class table -----------------------------------------------------------------------

#: Columns of the class table.
CLASS_COLUMNS = ("class_index", "class", "images", "correct", "accuracy")


def class_rows(atlas: Atlas) -> list[dict[str, Any]]:
    """The class table (``CLASS_COLUMNS``): index, name, images, correct (top-1) and
    accuracy per class (empty for a class without images)."""
    if PART_SUMMIT not in atlas.parts:
        raise AtlasError(f"{atlas.path} has no class statistics (part 'summit')")
    stats = atlas.class_stats()
    rows = []
    for c, name in enumerate(atlas.classes):
        images, correct = int(stats["num_images"][c]), int(stats["num_correct"][c])
        rows.append(
            {
                "class_index": c,
                "class": name,
                "images": images,
                "correct": correct,
                "accuracy": round(correct / images, 6) if images else "",
            }
        )
    return rows


def class_table_csv(atlas: Atlas) -> str:
    """The class table as a CSV file's text (:func:`class_rows`)."""
    rows = class_rows(atlas)
    return csv_text(CLASS_COLUMNS, [[row[key] for key in CLASS_COLUMNS] for row in rows])


def classes_file_name(atlas_name: str) -> str:
    """``{atlas}-classes.csv``."""
    return f"{file_slug(atlas_name)}-classes.csv"


def export_classes(atlas: Atlas, out: Path) -> Path:
    """Write the class table, :func:`classes_file_name`."""
    path = out / classes_file_name(atlas.path.name)
    path.write_text(class_table_csv(atlas))
    return path


# -- a channel's top dataset examples ------------------------------------------------------

#: Columns of an examples table: ``rank`` 1 is the image that excites the channel most;
#: ``activation`` is the channel's spatial maximum on it, at ``row``, ``col`` of the
#: layer's feature map.
EXAMPLE_COLUMNS = ("layer", "channel", "rank", "image_index", "activation", "row", "col")
#: A text atlas's examples add the token of the maximum and the text the model saw.
TEXT_EXAMPLE_COLUMNS = (*EXAMPLE_COLUMNS, "token", "text")


def example_columns(atlas: Atlas) -> tuple[str, ...]:
    """The columns of :func:`example_rows` for this atlas (a text atlas adds two)."""
    return TEXT_EXAMPLE_COLUMNS if atlas.modality == "text" else EXAMPLE_COLUMNS


def _token_and_text(atlas: Atlas, index: int, token: int) -> tuple[str, str]:
    """Token ``token`` of text input ``index`` as written (empty for no token, e.g. -1),
    and the text the model saw (both empty when the atlas does not keep the input)."""
    found = atlas.text_input(index)
    if found is None:
        return "", ""
    # No token (a Mapper sample of the mean over tokens): the text alone.
    return (found.word(token) if 0 <= token < len(found.tokens) else ""), found.seen


def example_rows(atlas: Atlas, layer: int, channel: int) -> list[tuple[Any, ...]]:
    """The top dataset examples of one channel, best first (:func:`example_columns`; a
    text atlas's rows add the token of the maximum and the text); the empty slots of a
    channel with fewer examples than the atlas keeps are left out."""
    if PART_EXAMPLES not in atlas.parts:
        raise AtlasError(f"{atlas.path} has no dataset examples (part 'examples')")
    table = atlas.examples(layer)
    if not 0 <= channel < table.image_index.shape[0]:
        raise AtlasError(f"channel {channel} is outside 0..{table.image_index.shape[0] - 1}")
    name = atlas.layer_names[layer]
    rows = []
    for rank, index in enumerate(np.asarray(table.image_index[channel]).tolist()):
        if index < 0:
            break
        row, col = (int(v) for v in table.position[channel, rank])
        # str() of a float32 is its shortest exact form (float() would add noise digits).
        value = float(str(np.float32(table.activation[channel, rank])))
        extra = _token_and_text(atlas, int(index), col) if atlas.modality == "text" else ()
        rows.append((name, channel, rank + 1, int(index), value, row, col, *extra))
    return rows


def examples_file_name(atlas_name: str, layer_name: str, channel: int | None = None) -> str:
    """``{atlas}-examples-{layer}-channel-{channel}.csv``, without the channel for a whole
    layer's table."""
    stem = f"{file_slug(atlas_name)}-examples-{file_slug(layer_name)}"
    return f"{stem}.csv" if channel is None else f"{stem}-channel-{channel:04d}.csv"


def export_examples(atlas: Atlas, out: Path, layers: Sequence[int] | None = None) -> list[Path]:
    """Write every channel's top examples, one CSV per layer (:func:`examples_file_name`,
    columns ``EXAMPLE_COLUMNS``)."""
    written = []
    for layer in _layers_or_all(atlas, layers):
        rows = [
            row
            for channel in range(atlas.layers[layer].channels)
            for row in example_rows(atlas, layer, channel)
        ]
        path = out / examples_file_name(atlas.path.name, atlas.layer_names[layer])
        path.write_text(csv_text(example_columns(atlas), rows))
        written.append(path)
    return written


def _layers_or_all(atlas: Atlas, layers: Sequence[int] | None) -> Sequence[int]:
    num_layers = len(atlas.layer_names)
    for layer in layers or ():
        if not 0 <= layer < num_layers:
            raise AtlasError(f"layer index {layer} is outside 0..{num_layers - 1}")
    return range(num_layers) if layers is None else layers


# -- class graphs --------------------------------------------------------------------------


def graph_file_stem(
    atlas: Atlas, class_index: int, subset: str = "all", other: int | None = None
) -> str:
    """``{atlas}-graph-{index}-{name}``, then ``-correct``, ``-mistaken`` or
    ``-mistaken-for-{index}-{name}`` for a subset's graph (the dashboard's downloads add
    the sliders' thresholds)."""
    stem = f"{atlas.path.name}-graph-{class_index:04d}-{file_slug(atlas.classes[class_index])}"
    if other is not None:
        return f"{stem}-mistaken-for-{other:04d}-{file_slug(atlas.classes[other])}"
    return stem if subset == "all" else f"{stem}-{subset}"


def _write_graph(data: dict[str, Any], stem: Path, formats: Sequence[str]) -> list[Path]:
    """Write node-link ``data`` as ``{stem}.json`` and/or ``{stem}.graphml``."""
    written = []
    if "json" in formats:
        written.append(stem.with_suffix(".json"))
        written[-1].write_text(json_text(data))
    if "graphml" in formats:
        written.append(stem.with_suffix(".graphml"))
        written[-1].write_text(graphml_text(data))
    return written


def export_graphs(
    atlas: Atlas,
    out: Path,
    classes: Sequence[int],
    formats: Sequence[str] = GRAPH_FORMATS,
    subsets: bool = False,
) -> list[Path]:
    """Write each class's graph (:func:`graph_file_stem` ``.json`` / ``.graphml``); with
    ``subsets``, also its correct and mistaken images' graphs and those of its stored
    confusion pairs (the ``subsets`` part)."""
    if subsets and PART_SUBSETS not in atlas.parts:
        raise AtlasError(f"{atlas.path} has no subsets part (build it without --no-subsets)")
    written = []
    for c in classes:
        _check_class(atlas, c)
        wanted: list[tuple[str, int | None]] = [("all", None)]
        if subsets:
            pairs = atlas.subset_pairs()[0]
            others = [int(d) for d in pairs[pairs[:, 0] == c, 1]]
            wanted += [("correct", None), ("mistaken", None)]
            wanted += [("mistaken", d) for d in others]
        for subset, other in wanted:
            data = atlas.graph_data(c, subset, other)
            written += _write_graph(data, out / graph_file_stem(atlas, c, subset, other), formats)
    return written


def _check_class(atlas: Atlas, class_index: int) -> None:
    if not 0 <= class_index < atlas.num_classes:
        raise AtlasError(f"class index {class_index} is outside 0..{atlas.num_classes - 1}")


def threshold_masks(
    count: Sequence[float] | np.ndarray,
    weight: Sequence[float] | np.ndarray,
    source: Sequence[int] | np.ndarray,
    target: Sequence[int] | np.ndarray,
    node_min_pct: float,
    edge_min_pct: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The nodes and edges of one graph kept by the dashboard's two threshold sliders.

    A node is kept if its count is at least ``node_min_pct`` % of the graph's largest
    count; an edge if its weight is at least ``edge_min_pct`` % of the largest weight and
    both its ends are kept.

    Args:
        count: each node's activation count.
        weight: each edge's influence count.
        source: each edge's lower node (an index into ``count``).
        target: each edge's upper node.
        node_min_pct: the node slider (0-100).
        edge_min_pct: the edge slider (0-100).

    Returns:
        Boolean masks of the nodes and of the edges kept.

    Examples:
        >>> nodes, edges = threshold_masks([10, 4, 6], [5, 1], [1, 1], [0, 2], 50, 0)
        >>> nodes.tolist(), edges.tolist()
        ([True, False, True], [False, False])
    """
    # float64 for every count: the cut must not depend on the array's dtype.
    counts = np.asarray(count, dtype=np.float64)
    weights = np.asarray(weight, dtype=np.float64)
    nodes = counts >= (node_min_pct / 100.0) * (float(counts.max()) if counts.size else 0.0)
    top_weight = float(weights.max()) if weights.size else 0.0
    ends = np.asarray(source, dtype=np.int64), np.asarray(target, dtype=np.int64)
    edges = (weights >= (edge_min_pct / 100.0) * top_weight) & nodes[ends[0]] & nodes[ends[1]]
    return nodes, edges


# -- two classes compared ------------------------------------------------------------------

#: The groups of a comparison's nodes and edges (the compare view's legend and colours):
#: in the selected class's graph only, in both, in the compared class's only.
COMPARE_GROUPS = ("only-a", "shared", "only-b")


def compare_group(in_a: bool, in_b: bool) -> str:
    """The group (``COMPARE_GROUPS``) of a node or edge shown for class A, class B or both."""
    if in_a and in_b:
        return "shared"
    return "only-a" if in_a else "only-b"


def _kept(
    data: dict[str, Any], node_min_pct: float, edge_min_pct: float
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The nodes and ``(source, target)`` edges of node-link ``data`` the sliders keep."""
    nodes, edges = data["nodes"], data["edges"]
    row = {node["id"]: k for k, node in enumerate(nodes)}
    node_mask, edge_mask = threshold_masks(
        [node["count"] for node in nodes],
        [edge["weight"] for edge in edges],
        [row[edge["source"]] for edge in edges],
        [row[edge["target"]] for edge in edges],
        node_min_pct,
        edge_min_pct,
    )
    kept_nodes = [node for node, keep in zip(nodes, node_mask, strict=True) if keep]
    kept_edges = [
        (edge["source"], edge["target"])
        for edge, keep in zip(edges, edge_mask, strict=True)
        if keep
    ]
    return kept_nodes, kept_edges


def compare_data(
    atlas: Atlas,
    class_a: int,
    class_b: int,
    node_min_pct: float = 0,
    edge_min_pct: float = 0,
) -> dict[str, Any]:
    """Two classes' attribution graphs merged as the compare view draws them, as node-link
    data (``networkx.node_link_graph`` reads it).

    Each class's graph keeps the nodes and edges its thresholds keep
    (:func:`threshold_masks`); the union is returned. A node (id, ``layer``,
    ``layer_index``, ``channel``) has its ``group`` (``COMPARE_GROUPS``) and both classes'
    activation counts ``count_a`` and ``count_b``; an edge its ``group`` and both classes'
    influence counts ``weight_a`` and ``weight_b`` (of every image, also for a class whose
    graph does not hold the edge). Nodes and edges of A's graph come first, in its order.

    Args:
        atlas: an atlas with the ``graphs`` and ``summit`` parts.
        class_a: the selected class (A).
        class_b: the compared class (B).
        node_min_pct: the node slider (0: every node of both graphs).
        edge_min_pct: the edge slider.
    """
    _check_class(atlas, class_a)
    _check_class(atlas, class_b)
    kept = [_kept(atlas.graph_data(c), node_min_pct, edge_min_pct) for c in (class_a, class_b)]
    in_b = {node["id"] for node in kept[1][0]}
    in_a = {node["id"] for node in kept[0][0]}
    nodes = []
    for node in [*kept[0][0], *(n for n in kept[1][0] if n["id"] not in in_a)]:
        counts = atlas.activation_counts(node["layer_index"])[:, node["channel"]]
        nodes.append(
            {
                "id": node["id"],
                "layer": node["layer"],
                "layer_index": node["layer_index"],
                "channel": node["channel"],
                "group": compare_group(node["id"] in in_a, node["id"] in in_b),
                "count_a": int(counts[class_a]),
                "count_b": int(counts[class_b]),
            }
        )
    edges_b = set(kept[1][1])
    edges_a = set(kept[0][1])
    layer_of = {node["id"]: node["layer_index"] for node in nodes}
    edges = []
    for source, target in [*kept[0][1], *(e for e in kept[1][1] if e not in edges_a)]:
        influence = atlas.influence_counts(layer_of[target])
        upper = atlas.layers[layer_of[target]].channels
        t, s = int(target.split("-")[1]), int(source.split("-")[1])
        # The graphs' weights are the stored counts rounded to integers, as here.
        weight_a = int(np.rint(influence[class_a * upper + t, s]))
        weight_b = int(np.rint(influence[class_b * upper + t, s]))
        edges.append(
            {
                "source": source,
                "target": target,
                "group": compare_group((source, target) in edges_a, (source, target) in edges_b),
                "weight_a": weight_a,
                "weight_b": weight_b,
            }
        )
    return {
        "directed": True,
        "multigraph": False,
        "graph": {
            "atlas": atlas.path.name,
            "class_a_index": class_a,
            "class_a": atlas.classes[class_a],
            "class_b_index": class_b,
            "class_b": atlas.classes[class_b],
            "node_min_pct": node_min_pct,
            "edge_min_pct": edge_min_pct,
        },
        "nodes": nodes,
        "edges": edges,
    }


def compare_file_stem(atlas: Atlas, class_a: int, class_b: int) -> str:
    """``{atlas}-compare-{index}-{name}-vs-{index}-{name}`` (the dashboard's downloads add
    the sliders' thresholds)."""
    names = [f"{c:04d}-{file_slug(atlas.classes[c])}" for c in (class_a, class_b)]
    return f"{atlas.path.name}-compare-{names[0]}-vs-{names[1]}"


def export_compare(
    atlas: Atlas,
    out: Path,
    pairs: Sequence[tuple[int, int]],
    formats: Sequence[str] = GRAPH_FORMATS,
) -> list[Path]:
    """Write each pair's whole comparison (:func:`compare_data`, thresholds 0) as
    :func:`compare_file_stem` ``.json`` / ``.graphml``."""
    if PART_GRAPHS not in atlas.parts:
        raise AtlasError(f"{atlas.path} has no attribution graphs (part 'graphs')")
    written = []
    for a, b in pairs:
        data = compare_data(atlas, a, b)
        written += _write_graph(data, out / compare_file_stem(atlas, a, b), formats)
    return written


# -- Mapper graphs -------------------------------------------------------------------------

#: Columns of a Mapper members table.
#: ``node_name`` is the Topology panel's ``interval/cluster`` (both counted from 0).
MAPPER_COLUMNS = (
    "node", "node_name", "sample_row", "image_index", "label", "class", "node_classes",
)  # fmt: skip
#: A text atlas's Mapper members add the sampled token (empty in mean mode) and the text,
#: as the Topology view lists them.
TEXT_MAPPER_COLUMNS = (*MAPPER_COLUMNS, "token", "text")


def mapper_table(
    atlas: Atlas, graph: MapperGraph, sample: MapperSampleArrays, classes: Sequence[str]
) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """The columns and rows of a Mapper members table (:func:`mapper_member_rows`; a text
    atlas's rows add the sampled token and the text: ``TEXT_MAPPER_COLUMNS``)."""
    rows = mapper_member_rows(graph, sample, classes)
    if atlas.modality != "text":
        return MAPPER_COLUMNS, list(rows)
    tokens = np.asarray(sample.position)[:, 1]
    return TEXT_MAPPER_COLUMNS, [
        (*row, *_token_and_text(atlas, row[3], int(tokens[row[2]]))) for row in rows
    ]


def instance_data(atlas: Atlas, row: int) -> dict[str, Any]:
    """One input's own graph (instance record ``row``) as node-link data, laid on its
    class's graph (:func:`compute.summit.instance_graph.instance_graph`).

    The nodes and edges are those the Instance view draws: the input's own and its class
    graph's, each with its ``group`` (``"shared"``, ``"only-a"``: only on the class's
    graph, ``"only-b"``: only the input's). A channel the input selects (id ``"{layer
    index}-{channel}"``) has its ``value`` (spatial maximum), ``mass`` (share of the
    layer's), ``row``/``col`` of the maximum, ``on_class_graph`` and ``class_share`` (share
    of the class's images that select it); every node its ``class_count`` (the class's
    activation count). An edge is one of the input's own top-k influences or of the class
    graph, with ``class_weight``, the class graph's influence count (0 when the class graph
    lacks it). ``graph`` names the input, its label, prediction and overlap.
    """
    graph = instance_graph(atlas, row)
    names = atlas.layer_names
    ids = [f"{int(a)}-{int(b)}" for a, b in zip(graph.layer, graph.channel, strict=True)]
    nodes = [
        {
            "id": ids[k],
            "layer": names[int(graph.layer[k])],
            "layer_index": int(graph.layer[k]),
            "channel": int(graph.channel[k]),
            "value": float(graph.value[k]),
            "mass": float(graph.mass[k]),
            "row": int(graph.position[k, 0]),
            "col": int(graph.position[k, 1]),
            "on_class_graph": bool(graph.on_class_graph[k]),
            "class_share": float(graph.class_share[k]),
        }
        for k in range(graph.num_nodes)
    ]
    own_edges = [
        (ids[int(s)], ids[int(t)]) for s, t in zip(graph.source, graph.target, strict=True)
    ]
    nodes, edges = _on_class_graph(atlas, graph.label, nodes, own_edges)
    prediction = graph.prediction
    return {
        "directed": True,
        "multigraph": False,
        "graph": {
            "atlas": atlas.path.name,
            "image_index": graph.image_index,
            "label_index": graph.label,
            "label": atlas.classes[graph.label],
            "prediction_index": prediction,
            "prediction": atlas.classes[prediction] if 0 <= prediction < atlas.num_classes else "",
            "overlap": graph.overlap,
        },
        "nodes": nodes,
        "edges": edges,
    }


def _on_class_graph(
    atlas: Atlas,
    label: int,
    own_nodes: list[dict[str, Any]],
    own_edges: list[tuple[str, str]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """An input's nodes and edges merged with its class graph's (the Instance view's
    drawing): the input's first, then the class graph's others, each with its ``group``."""
    data = atlas.graph_data(label)
    class_nodes = {node["id"]: node for node in data["nodes"]}
    class_edges = {(e["source"], e["target"]): int(e["weight"]) for e in data["edges"]}
    mine = {node["id"] for node in own_nodes}
    nodes = [
        {
            **node,
            "group": compare_group(node["id"] in class_nodes, True),
            "class_count": int(
                atlas.activation_counts(node["layer_index"])[label, node["channel"]]
            ),
        }
        for node in own_nodes
    ]
    for node_id, node in class_nodes.items():
        if node_id not in mine:
            nodes.append(
                {
                    "id": node_id,
                    "layer": node["layer"],
                    "layer_index": node["layer_index"],
                    "channel": node["channel"],
                    "group": compare_group(True, False),
                    "class_count": int(node["count"]),
                }
            )
    own = set(own_edges)
    edges = [
        {
            "source": source,
            "target": target,
            "group": compare_group((source, target) in class_edges, True),
            "class_weight": class_edges.get((source, target), 0),
        }
        for source, target in own_edges
    ]
    edges += [
        {"source": s, "target": t, "group": compare_group(True, False), "class_weight": w}
        for (s, t), w in class_edges.items()
        if (s, t) not in own
    ]
    return nodes, edges


def instance_file_stem(atlas: Atlas, row: int) -> str:
    """``{atlas}-instance-{input index}-{label}``."""
    records = atlas.instances()
    label = int(records.label[row])
    index = int(records.image_index[row])
    return f"{file_slug(atlas.path.name)}-instance-{index:07d}-{file_slug(atlas.classes[label])}"


def export_instances(
    atlas: Atlas, out: Path, indices: Sequence[int], formats: Sequence[str] = GRAPH_FORMATS
) -> list[Path]:
    """Write the graph of each recorded input of ``indices`` (input indices)."""
    if PART_INSTANCES not in atlas.parts:
        raise AtlasError(f"{atlas.path} has no instances part (build it with --instances)")
    written: list[Path] = []
    for index in indices:
        row = atlas.instance_row(index)
        if row is None:
            raise AtlasError(f"input {index} has no instance record in {atlas.path.name}")
        written += _write_graph(
            instance_data(atlas, row), out / instance_file_stem(atlas, row), formats
        )
    return written


def mapper_member_rows(
    graph: MapperGraph, sample: MapperSampleArrays, classes: Sequence[str]
) -> list[tuple[int, str, int, int, int, str, str]]:
    """One row per member of every node (``MAPPER_COLUMNS``): a sampled image in several
    overlapping nodes has a row in each; ``node_classes`` is the node's class composition,
    ``"name:count"`` by count (ties: class index), ``;``-separated.

    Examples:
        >>> from types import SimpleNamespace
        >>> graph = SimpleNamespace(num_nodes=1, members=lambda node: np.array([0, 1, 2]),
        ...                         node_interval=np.array([3]), node_cluster=np.array([0]))
        >>> sample = SimpleNamespace(label=np.array([1, 0, 1]), image_index=np.array([5, 6, 7]))
        >>> mapper_member_rows(graph, sample, ["cat", "dog"])[0]
        (0, '3/0', 0, 5, 1, 'dog', 'dog:2;cat:1')
    """
    rows = []
    for node in range(graph.num_nodes):
        members = graph.members(node)
        labels = np.asarray(sample.label)[members]
        counts = np.bincount(labels, minlength=len(classes))
        order = np.lexsort((np.arange(len(counts)), -counts))
        composition = ";".join(f"{classes[c]}:{counts[c]}" for c in order if counts[c])
        name = f"{int(graph.node_interval[node])}/{int(graph.node_cluster[node])}"
        for row in members.tolist():
            label = int(sample.label[row])
            index = int(sample.image_index[row])
            rows.append((node, name, row, index, label, classes[label], composition))
    return rows


def mapper_file_name(atlas_name: str, layer_name: str, params: MapperParams) -> str:
    """``{atlas}-mapper-{layer}-i{intervals}-o{overlap %}-e{ε %}.csv``; ``-hdbscan`` or the
    metric are added when they are not the defaults."""
    extra = "" if params.clusterer == "dbscan" else f"-{params.clusterer}"
    extra += "" if params.metric == "euclidean" else f"-{params.metric}"
    return (
        f"{file_slug(atlas_name)}-mapper-{file_slug(layer_name)}-i{params.intervals}"
        f"-o{round(100 * params.overlap)}-e{round(100 * params.eps_scale)}{extra}.csv"
    )


def export_mapper(atlas: Atlas, out: Path, layers: Sequence[int] | None = None) -> list[Path]:
    """Write the members of every node of each layer's default Mapper graph (the graph the
    Topology view draws with no parameter in its URL), one CSV per layer named by
    :func:`mapper_file_name`, columns ``MAPPER_COLUMNS`` (a text atlas's
    ``TEXT_MAPPER_COLUMNS``)."""
    if PART_MAPPER not in atlas.parts:
        raise AtlasError(f"{atlas.path} has no Mapper part (build it without --no-mapper)")
    written = []
    for layer in _layers_or_all(atlas, layers):
        graph = default_graph(atlas, layer)
        columns, rows = mapper_table(atlas, graph, atlas.mapper_sample(layer), atlas.classes)
        path = out / mapper_file_name(atlas.path.name, atlas.layer_names[layer], graph.params)
        path.write_text(csv_text(columns, rows))
        written.append(path)
    return written


# -- the command ---------------------------------------------------------------------------


def _class_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of class indices: {text!r}") from None


def _input_list(text: str) -> list[int]:
    """Input indices, as the Instance view writes them too (``#401,#646``)."""
    try:
        return [int(part.strip().lstrip("#")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of input indices: {text!r}") from None


def _class_pair(text: str) -> tuple[int, int]:
    pair = _class_list(text)
    if len(pair) != 2:
        raise argparse.ArgumentTypeError(f"not two class indices A,B: {text!r}")
    return pair[0], pair[1]


def layer_indices(atlas: Atlas, given: Sequence[str]) -> list[int]:
    """The layers named by names or indices (a name wins over an index when a layer is
    literally called e.g. ``"3"``)."""
    found = []
    for text in given:
        if text in atlas.layer_names:
            found.append(atlas.layer_names.index(text))
        elif text.isdigit():
            found.append(atlas.layer_index(int(text)))
        else:
            found.append(atlas.layer_index(text))  # raises, listing the layers
    return found


def _what(args: argparse.Namespace) -> list[str]:
    """``--what``; unset, the graphs and the class table, or nothing besides ``--compare``
    or ``--instances`` (but the graphs with ``--subsets``).

    Raises:
        AtlasError: ``--subsets`` with a ``--what`` that leaves the graphs out.
    """
    if args.what is not None:
        if args.subsets and "graphs" not in args.what:
            raise AtlasError("--subsets adds to the class graphs: add graphs to --what")
        return list(args.what)
    if args.compare or args.instances:
        return ["graphs"] if args.subsets else []
    return ["graphs", "classes"]


def _run(args: argparse.Namespace) -> int:
    atlas = Atlas.open(args.atlas)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise AtlasError(f"--out {out} exists and is not a folder")
    formats = GRAPH_FORMATS if args.format == "both" else (args.format,)
    what = _what(args)
    layers = None if args.layers is None else layer_indices(atlas, args.layers)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "classes" in what:
        written.append(export_classes(atlas, out))
    if "examples" in what:
        written += export_examples(atlas, out, layers)
    if "mapper" in what:
        written += export_mapper(atlas, out, layers)
    if "graphs" in what:
        classes = args.classes if args.classes is not None else list(range(atlas.num_classes))
        written += export_graphs(atlas, out, classes, formats, subsets=args.subsets)
    if args.compare:
        written += export_compare(atlas, out, args.compare, formats)
    if args.instances:
        written += export_instances(atlas, out, args.instances, formats)
    print(f"{len(written)} file(s) written to {out}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``export`` subcommand to ``python -m compute``."""
    parser = subparsers.add_parser(
        "export",
        help="write an atlas's class graphs and comparisons (node-link JSON, GraphML), its "
        "class table, top examples or Mapper node members (CSV)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("atlas", help="atlas directory")
    parser.add_argument(
        "--what",
        nargs="+",
        choices=EXPORTS,
        default=None,
        help="what to export: class graphs, the class table, every channel's top examples "
        "(one CSV per layer), Mapper node members (default: graphs classes; with "
        "--compare alone, only the comparisons)",
    )
    parser.add_argument(
        "--classes", type=_class_list, default=None, help="class indices, e.g. 0,3 (default all)"
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        default=None,
        metavar="LAYER",
        help="with examples or mapper: layer names or indices (default all)",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        type=_class_pair,
        default=None,
        metavar="A,B",
        help="also write the comparison of classes A and B (both graphs merged, as the "
        "dashboard's compare view draws them), e.g. 3,8",
    )
    parser.add_argument(
        "--format",
        choices=(*GRAPH_FORMATS, "both"),
        default="both",
        help="graph file format (default: both)",
    )
    parser.add_argument(
        "--subsets",
        action="store_true",
        help="with graphs: also each class's correct and mistaken images' graphs and its "
        "stored confusion pairs' (class c mistaken for d)",
    )
    parser.add_argument(
        "--instances",
        type=_input_list,
        default=None,
        metavar="INDICES",
        help="also write the own graph of these recorded inputs (input indices, e.g. 401,646); "
        "like --compare, it replaces the default --what",
    )
    parser.add_argument("--out", default=".", help="folder to write into (default: here)")
    parser.set_defaults(run=_run)


__all__ = [
    "CLASS_COLUMNS",
    "COMPARE_GROUPS",
    "EXAMPLE_COLUMNS",
    "MAPPER_COLUMNS",
    "TEXT_EXAMPLE_COLUMNS",
    "class_rows",
    "class_table_csv",
    "classes_file_name",
    "compare_data",
    "compare_file_stem",
    "compare_group",
    "csv_text",
    "example_columns",
    "example_rows",
    "examples_file_name",
    "export_classes",
    "export_compare",
    "export_examples",
    "export_graphs",
    "export_instances",
    "export_mapper",
    "file_slug",
    "graph_file_stem",
    "graphml_text",
    "instance_data",
    "instance_file_stem",
    "json_text",
    "layer_indices",
    "mapper_file_name",
    "mapper_member_rows",
    "node_link_networkx",
    "register_cli",
    "threshold_masks",
]
