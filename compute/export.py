"""Take an atlas away: class graphs as node-link JSON and GraphML, the class table and the
default Mapper graphs' node members as CSV.

Torch-free (the atlas reader and the standard library; GraphML and
:func:`class_graph_networkx` need ``networkx``, an optional dependency named when it is
missing). ``python -m compute export ATLAS --what graphs classes mapper`` writes the files;
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

from compute.atlas import (
    PART_MAPPER,
    PART_SUBSETS,
    PART_SUMMIT,
    Atlas,
    AtlasError,
    MapperSampleArrays,
)
from compute.topology.mapper import MapperGraph, MapperParams
from compute.topology.part import default_graph

#: What ``--what`` can export.
EXPORTS = ("graphs", "classes", "mapper")
#: Graph file formats.
GRAPH_FORMATS = ("json", "graphml")


def _networkx() -> Any:
    try:
        import networkx  # optional dependency
    except ImportError:
        raise AtlasError("exporting GraphML needs networkx: pip install networkx") from None
    return networkx


def class_rows(atlas: Atlas) -> list[dict[str, Any]]:
    """The class table: index, name, images, correct (top-1) and accuracy per class."""
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


def file_slug(text: str) -> str:
    """A file-name-safe form of a name (letters, digits, ``._-``; at most 60 characters).

    Examples:
        >>> file_slug("tabby cat / tiger?")
        'tabby_cat_tiger'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "class"


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
        if not 0 <= c < atlas.num_classes:
            raise AtlasError(f"class index {c} is outside 0..{atlas.num_classes - 1}")
        wanted: list[tuple[str, int | None]] = [("all", None)]
        if subsets:
            pairs = atlas.subset_pairs()[0]
            others = [int(d) for d in pairs[pairs[:, 0] == c, 1]]
            wanted += [("correct", None), ("mistaken", None)]
            wanted += [("mistaken", d) for d in others]
        for subset, other in wanted:
            stem = out / graph_file_stem(atlas, c, subset, other)
            if "json" in formats:
                path = stem.with_suffix(".json")
                data = atlas.graph_data(c, subset, other)
                path.write_text(json.dumps(data, indent=1) + "\n")
                written.append(path)
            if "graphml" in formats:
                path = stem.with_suffix(".graphml")
                _networkx().write_graphml(atlas.to_networkx(c, subset, other), path)
                written.append(path)
    return written


def export_classes(atlas: Atlas, out: Path) -> Path:
    """Write the class table, ``{atlas}-classes.csv``."""
    path = out / f"{atlas.path.name}-classes.csv"
    rows = class_rows(atlas)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


#: Columns of a Mapper members table.
MAPPER_COLUMNS = ("node", "sample_row", "image_index", "label", "class")


def mapper_member_rows(
    graph: MapperGraph, sample: MapperSampleArrays, classes: Sequence[str]
) -> list[tuple[int, int, int, int, str]]:
    """One row per member of every node (``MAPPER_COLUMNS``): a sampled image in several
    overlapping nodes has a row in each."""
    rows = []
    for node in range(graph.num_nodes):
        for row in graph.members(node).tolist():
            label = int(sample.label[row])
            rows.append((node, row, int(sample.image_index[row]), label, classes[label]))
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


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A CSV file's text (RFC 4180 quoting)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def export_mapper(atlas: Atlas, out: Path, layers: Sequence[int] | None = None) -> list[Path]:
    """Write the members of every node of each layer's default Mapper graph (the graph the
    Topology view draws with no parameter in its URL), one CSV per layer named by
    :func:`mapper_file_name`, columns ``MAPPER_COLUMNS``."""
    if PART_MAPPER not in atlas.parts:
        raise AtlasError(f"{atlas.path} has no Mapper part (build it without --no-mapper)")
    num_layers = len(atlas.layer_names)
    chosen = range(num_layers) if layers is None else layers
    written = []
    for layer in chosen:
        if not 0 <= layer < num_layers:
            raise AtlasError(f"layer index {layer} is outside 0..{num_layers - 1}")
        graph = default_graph(atlas, layer)
        rows = mapper_member_rows(graph, atlas.mapper_sample(layer), atlas.classes)
        path = out / mapper_file_name(atlas.path.name, atlas.layer_names[layer], graph.params)
        path.write_text(csv_text(MAPPER_COLUMNS, rows))
        written.append(path)
    return written


def _class_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of class indices: {text!r}") from None


def _run(args: argparse.Namespace) -> int:
    atlas = Atlas.open(args.atlas)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise AtlasError(f"--out {out} exists and is not a folder")
    formats = GRAPH_FORMATS if args.format == "both" else (args.format,)
    if "graphml" in formats and "graphs" in args.what:
        _networkx()  # say it before any work
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "classes" in args.what:
        written.append(export_classes(atlas, out))
    if "mapper" in args.what:
        written += export_mapper(atlas, out)
    if "graphs" in args.what:
        classes = args.classes if args.classes is not None else list(range(atlas.num_classes))
        written += export_graphs(atlas, out, classes, formats, subsets=args.subsets)
    print(f"{len(written)} file(s) written to {out}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand to ``python -m compute``."""
    parser = subparsers.add_parser(
        "export",
        help="write an atlas's class graphs (node-link JSON, GraphML) or class table (CSV)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("atlas", help="atlas directory")
    parser.add_argument(
        "--what",
        nargs="+",
        choices=EXPORTS,
        default=["graphs", "classes"],
        help="what to export: class graphs, the class table, Mapper node members "
        "(default: graphs classes)",
    )
    parser.add_argument(
        "--classes", type=_class_list, default=None, help="class indices, e.g. 0,3 (default all)"
    )
    parser.add_argument(
        "--format",
        choices=(*GRAPH_FORMATS, "both"),
        default="both",
        help="graph file format (GraphML needs networkx)",
    )
    parser.add_argument(
        "--subsets",
        action="store_true",
        help="with graphs: also each class's correct and mistaken images' graphs and its "
        "stored confusion pairs' (class c mistaken for d)",
    )
    parser.add_argument("--out", default=".", help="folder to write into (default: here)")
    parser.set_defaults(run=_run)


__all__ = [
    "MAPPER_COLUMNS",
    "class_rows",
    "csv_text",
    "export_classes",
    "export_graphs",
    "export_mapper",
    "file_slug",
    "graph_file_stem",
    "mapper_file_name",
    "mapper_member_rows",
    "register_cli",
]
