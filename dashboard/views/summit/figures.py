"""Pure builders: arrays in, Plotly figures and Cytoscape elements/stylesheets out.

Nothing here touches the atlas or Dash callbacks, so every function is unit-testable with
small hand-made arrays. Payloads are kept small on purpose (float32 coordinates, only the
fields the client draws).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from compute.export import COMPARE_GROUPS, compare_group, threshold_masks
from dashboard.data import SLOT_PX, ClassGraph, file_url, row_positions
from dashboard.theme import ACCENT, COMPARE, FONT, INK, MUTED

# A small, colour-blind-safe palette used across views and the CSS.
POINT = "#93c5fd"
SHARED = "#0f766e"  # nodes both classes use
# The comparison uses the classes' colours everywhere else: the selected class (A) orange,
# the compared one (B) purple.
ONLY_A = ACCENT
ONLY_B = COMPARE
EDGE = "#94a3b8"


# ---------------------------------------------------------------------------------------
# (A) class embedding
# ---------------------------------------------------------------------------------------


def typed_array(values: np.ndarray, dtype: str = "f4") -> dict[str, str]:
    """A numpy array as Plotly's base64 typed-array JSON (what ``go.Figure`` sends too).

    Builders here return plain figure dicts rather than ``go.Figure``: validating a
    1,000-point figure costs tens of milliseconds per callback for the same JSON.
    """
    array = np.ascontiguousarray(values, dtype=np.dtype(dtype))
    return {"dtype": dtype, "bdata": base64.b64encode(array.tobytes()).decode("ascii")}


#: Up to this many classes the embedding names every class beside its point.
LABEL_ALL_CLASSES = 30


def _label_sides(xy: np.ndarray) -> list[str]:
    """Each point's label beside it, on the side with room: left of the points in the
    rightmost third (the colour bar stands at the right edge), right of the others."""
    x = xy[:, 0].astype(np.float64)
    lo, hi = float(x.min()), float(x.max())
    cut = lo + (hi - lo) * 2 / 3
    return ["middle left" if value > cut else "middle right" for value in x.tolist()]


#: Space between a point and its label: two en spaces, about the radius of the selection
#: ring, so a ringed class's name starts beyond the ring instead of under it.
_LABEL_GAP = "\u2002\u2002"


def _label_templates(sides: Sequence[str]) -> list[str]:
    """Each label's ``texttemplate``: the class name with the gap on the point's side (the
    hover keeps the bare name, ``%{text}``)."""
    return [
        f"%{{text}}{_LABEL_GAP}" if side == "middle left" else f"{_LABEL_GAP}%{{text}}"
        for side in sides
    ]


def embedding_points(xy: np.ndarray, names: Sequence[str], accuracy: np.ndarray) -> dict[str, Any]:
    """The scatter trace of every class (depends on the layer only, so callers cache it).

    The class index is in ``customdata``, so a click maps straight to a class.
    """
    xy = np.asarray(xy, dtype=np.float32)
    acc = np.asarray(accuracy, dtype=np.float32)
    marker: dict[str, Any] = {"size": 6, "opacity": 0.85, "line": {"width": 0}}
    if not np.all(np.isnan(acc)):
        marker.update(
            color=typed_array(np.nan_to_num(acc, nan=0.0)),
            colorscale=[[0.0, "#fde68a"], [0.5, "#60a5fa"], [1.0, "#1e3a8a"]],
            cmin=0.0,
            cmax=1.0,
            colorbar={
                "title": {"text": "accuracy", "side": "right"},
                "thickness": 8,
                "len": 0.55,
                "tickformat": ".0%",
                "outlinewidth": 0,
                "x": 1.0,
            },
        )
    else:
        marker["color"] = POINT
    acc_text = [("n/a" if a != a else f"{100 * a:.1f}%") for a in acc.tolist()]
    # Few classes: every point names its class (beside it, small and grey; the selected and
    # compared classes' labels stand above theirs). Many classes: names on hover only.
    labelled = xy.shape[0] <= LABEL_ALL_CLASSES
    return {
        "type": "scattergl",
        "x": typed_array(xy[:, 0]),
        "y": typed_array(xy[:, 1]),
        "mode": "markers+text" if labelled else "markers",
        **(
            {
                "textposition": (sides := _label_sides(xy)),
                "texttemplate": _label_templates(sides),
                "textfont": {"color": MUTED, "size": 9},
            }
            if labelled
            else {}
        ),
        "marker": marker,
        "customdata": typed_array(np.arange(xy.shape[0]), "i4"),
        "text": list(names),
        "hovertext": acc_text,
        "hovertemplate": "<b>%{text}</b><br>accuracy %{hovertext}<extra></extra>",
        "name": "classes",
    }


def embedding_highlights(
    xy: np.ndarray,
    names: Sequence[str],
    selected: int,
    compare: int | None,
    mistaken: Sequence[int] = (),
) -> list[dict[str, Any]]:
    """Three small traces: rings around the selected (orange) and compared (purple) class,
    and thin grey rings around the classes the selected one is mistaken for.

    Always three (empty ones included) so a ``Patch`` can replace them. The rings carry the
    class's name only when the points do not: with every class labelled (at most
    ``LABEL_ALL_CLASSES``) a second name beside the first would half hide it.
    """
    named = len(names) > LABEL_ALL_CLASSES
    traces = []
    for points, colour, width in (
        ([selected], ACCENT, 3),
        ([] if compare is None else [compare], COMPARE, 3),
        ([c for c in mistaken if c not in (selected, compare)], MUTED, 2),
    ):
        traces.append(
            {
                # GL like the points, or the WebGL canvas would hide the label.
                "type": "scattergl",
                "x": [float(xy[c, 0]) for c in points],
                "y": [float(xy[c, 1]) for c in points],
                "mode": "markers+text" if named else "markers",
                "marker": {
                    "size": 15,
                    "color": "rgba(0,0,0,0)",
                    "line": {"width": width, "color": colour},
                },
                "text": [names[c] for c in points],
                "textposition": "top center",
                "textfont": {"color": colour, "size": 12 if width == 3 else 11},
                "customdata": points,
                "hovertemplate": "<b>%{text}</b><extra></extra>",
                "showlegend": False,
            }
        )
    return traces


def embedding_figure(
    xy: np.ndarray,
    names: Sequence[str],
    accuracy: np.ndarray,
    selected: int,
    compare: int | None = None,
    layer_name: str = "",
    points: dict[str, Any] | None = None,
    mistaken: Sequence[int] = (),
) -> dict[str, Any]:
    """Scatter of one point per class, coloured by accuracy, selected class ringed.

    Args:
        xy: ``float[classes, 2]`` embedding of the layer.
        names: class names (hover text).
        accuracy: ``float[classes]`` top-1 accuracy (NaN: unknown).
        selected: the selected class (orange ring, labelled).
        compare: the compared class, if any (purple ring, labelled).
        layer_name: keys ``uirevision``: zoom survives class switches, not layer switches.
        points: a cached :func:`embedding_points` trace for this layer.
        mistaken: classes the selected one is mistaken for (thin grey rings, labelled).

    Returns:
        A Plotly figure dict: trace 0 every class, traces 1-3 the highlights.
    """
    xy = np.asarray(xy, dtype=np.float32)
    base = points if points is not None else embedding_points(xy, names, accuracy)
    return {
        "data": [base, *embedding_highlights(xy, names, selected, compare, mistaken)],
        "layout": {
            "margin": {"l": 6, "r": 6, "t": 6, "b": 6},
            "paper_bgcolor": "white",
            "plot_bgcolor": "white",
            "font": {"family": FONT, "size": 11, "color": INK},
            "xaxis": {"visible": False},
            "yaxis": {"visible": False, "scaleanchor": "x"},
            "showlegend": False,
            "dragmode": "pan",
            "hovermode": "closest",
            "uirevision": f"layer-{layer_name}",
        },
    }


# ---------------------------------------------------------------------------------------
# (C) attribution graph
# ---------------------------------------------------------------------------------------


#: Cytoscape class of a class graph's node that no input of the class selects.
INFLUENCE_ONLY = "influence-only"


def base_stylesheet() -> list[dict[str, Any]]:
    """The graph's stylesheet: data-driven sizes, images in nodes, light edges."""
    return [
        {
            "selector": "node",
            "style": {
                "width": "data(size)",
                "height": "data(size)",
                "shape": "round-rectangle",
                "background-color": "#cbd5e1",
                "border-width": 1,
                "border-color": "#64748b",
                "label": "data(label)",
                "font-size": 13,
                "font-family": FONT,
                "color": "#475569",
                "text-valign": "bottom",
                "text-margin-y": 3,
                "min-zoomed-font-size": 6,
            },
        },
        {
            "selector": "node[img]",
            "style": {
                "background-image": "data(img)",
                "background-fit": "cover",
                "background-clip": "node",
            },
        },
        {"selector": "node.shared", "style": {"border-color": SHARED, "border-width": 3}},
        {"selector": "node.only-a", "style": {"border-color": ONLY_A, "border-width": 3}},
        {"selector": "node.only-b", "style": {"border-color": ONLY_B, "border-width": 3}},
        # a class graph's node no input of the class selects (there through influence)
        {
            "selector": f"node.{INFLUENCE_ONLY}",
            "style": {
                "border-style": "dotted",
                "border-width": 3,
                "background-opacity": 0.35,
                "background-image-opacity": 0.35,
            },
        },
        # an input's channel its class rarely uses (the Instance view)
        {"selector": "node.rare", "style": {"border-style": "dashed", "border-width": 4}},
        {
            "selector": "node.rowlabel",
            "style": {
                "width": 1,
                "height": 1,
                "background-opacity": 0,
                "border-width": 0,
                "label": "data(label)",
                "text-valign": "center",
                "text-halign": "left",
                "font-size": 18,
                "font-weight": "bold",
                "color": "#64748b",
                "events": "no",
            },
        },
        {
            "selector": "edge",
            "style": {
                "width": "data(w)",
                "line-color": EDGE,
                "opacity": 0.55,
                "curve-style": "straight",
                "target-arrow-shape": "triangle",
                "target-arrow-color": EDGE,
                "arrow-scale": 0.6,
            },
        },
        {"selector": "edge.shared", "style": {"line-color": SHARED, "target-arrow-color": SHARED}},
        {"selector": "edge.only-a", "style": {"line-color": ONLY_A, "target-arrow-color": ONLY_A}},
        {"selector": "edge.only-b", "style": {"line-color": ONLY_B, "target-arrow-color": ONLY_B}},
        {"selector": "node.picked", "style": {"border-color": ACCENT, "border-width": 4}},
        {"selector": ":selected", "style": {"border-color": ACCENT, "border-width": 4}},
    ]


def hover_stylesheet(
    base: list[dict[str, Any]], node: str, neighbours: Sequence[str]
) -> list[dict[str, Any]]:
    """``base`` plus rules that fade everything except ``node``, its neighbours and edges."""
    keep = ", ".join(f'node[id = "{n}"]' for n in (node, *neighbours))
    return [
        *base,
        {"selector": "node", "style": {"opacity": 0.2, "background-image-opacity": 0.2}},
        {"selector": "edge", "style": {"opacity": 0.05}},
        {"selector": "node.rowlabel", "style": {"opacity": 1}},
        {"selector": keep, "style": {"opacity": 1, "background-image-opacity": 1}},
        {
            "selector": f'edge[source = "{node}"], edge[target = "{node}"]',
            "style": {"opacity": 0.95, "line-color": ACCENT, "target-arrow-color": ACCENT},
        },
        {"selector": f'node[id = "{node}"]', "style": {"border-color": ACCENT, "border-width": 4}},
    ]


def graph_masks(
    graph: ClassGraph, node_min_pct: int, edge_min_pct: int
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the nodes and edges kept by the two threshold sliders
    (:func:`compute.export.threshold_masks`, the rule the downloads and exports apply)."""
    return threshold_masks(
        graph.count, graph.weight, graph.source, graph.target, node_min_pct, edge_min_pct
    )


def _row_labels(
    layers: np.ndarray, y: np.ndarray, left: float, layer_names: Sequence[str]
) -> list[dict[str, Any]]:
    labels = []
    for li in np.unique(layers):
        row_y = float(np.round(np.mean(y[layers == li])))
        labels.append(
            {
                "data": {"id": f"row-{int(li)}", "label": layer_names[int(li)]},
                "position": {"x": left, "y": row_y},
                "classes": "rowlabel",
                "selectable": False,
                "grabbable": False,
            }
        )
    return labels


def edge_id(source: str, target: str) -> str:
    """The Cytoscape id of the edge ``source → target``: it names its endpoints.

    Cytoscape (through dash-cytoscape's element diff) patches an element whose id it has
    seen before and never moves an edge to new endpoints, so a positional id reused for a
    different edge after a class switch left stale or vanished edges on screen.

    >>> edge_id("2-17", "3-5")
    'e:2-17>3-5'
    """
    return f"e:{source}>{target}"


def graph_elements(
    graph: ClassGraph,
    *,
    node_min_pct: int = 0,
    edge_min_pct: int = 0,
    picked: str | None = None,
    url_prefix: str = "/atlas-file/",
    layer_names: Sequence[str] = (),
    pictures: str = "crop",
) -> list[dict[str, Any]]:
    """Cytoscape elements of one class's graph with preset positions.

    Args:
        graph: the class graph (positions, sizes and widths already computed).
        node_min_pct: node threshold, percent of the largest count.
        edge_min_pct: edge threshold, percent of the largest weight.
        picked: the node open in the neuron panel (drawn with an orange border).
        url_prefix: URL prefix of the atlas file route.
        layer_names: names for the row labels (none drawn if empty).
        pictures: ``"vis"``: nodes show their feature visualization where the graph has
            one (else their crop); ``"crop"``: their top dataset crop.
    """
    nodes, edges = graph_masks(graph, node_min_pct, edge_min_pct)
    use_vis = pictures == "vis" and bool(graph.vis)
    elements: list[dict[str, Any]] = []
    xs = graph.x.tolist()
    ys = graph.y.tolist()
    sizes = graph.size.tolist()
    counts = graph.count.tolist()
    channels = graph.channel.tolist()
    layers = graph.layer.tolist()
    for i in np.flatnonzero(nodes).tolist():
        node_id = graph.ids[i]
        data = {
            "id": node_id,
            "label": graph.labels[i] if graph.labels else str(channels[i]),
            "size": round(sizes[i], 1),
            "count": int(counts[i]),
            "layer": layer_names[layers[i]] if layer_names else str(layers[i]),
        }
        picture = (graph.vis[i] if use_vis else None) or graph.image[i]
        img = file_url(url_prefix, picture)
        if img is not None:
            data["img"] = img
        # Every element names all its classes, "" included: dash-cytoscape patches an
        # element it has drawn before, and a key left out would keep its old value.
        # A node no input of the class selects is on the graph through influence alone
        # (its PageRank came along edges): drawn apart, not as if the class used it.
        marks = ["picked"] if node_id == picked else []
        if counts[i] == 0:
            marks.append(INFLUENCE_ONLY)
        element: dict[str, Any] = {
            "data": data,
            "position": {"x": round(xs[i], 1), "y": round(ys[i], 1)},
            "classes": " ".join(marks),
        }
        elements.append(element)
    sources = graph.ids[graph.source].tolist()
    targets = graph.ids[graph.target].tolist()
    widths = graph.width.tolist()
    weights = graph.weight.tolist()
    for j in np.flatnonzero(edges).tolist():
        elements.append(
            {
                "data": {
                    "id": edge_id(sources[j], targets[j]),
                    "source": sources[j],
                    "target": targets[j],
                    "w": round(widths[j], 2),
                    "weight": int(weights[j]),
                },
                "classes": "",
            }
        )
    if layer_names and nodes.any():
        left = float(graph.x[nodes].min()) - 1.2 * SLOT_PX
        elements.extend(_row_labels(graph.layer[nodes], graph.y[nodes], left, layer_names))
    return elements


# ---------------------------------------------------------------------------------------
# (D) compare two classes
# ---------------------------------------------------------------------------------------


def compare_elements(
    graph_a: ClassGraph,
    graph_b: ClassGraph,
    *,
    node_min_pct: int = 0,
    edge_min_pct: int = 0,
    url_prefix: str = "/atlas-file/",
    layer_names: Sequence[str] = (),
    pictures: str = "crop",
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One merged graph of two classes: shared nodes/edges vs those unique to each.

    Within every layer row the nodes only class A uses are on the left, shared nodes in
    the middle and those only class B uses on the right, so the split reads at a glance.
    ``pictures`` is as in :func:`graph_elements`.

    Returns:
        The elements and the number of nodes in each group (``shared``, ``a``, ``b``).
    """
    keep_a, edges_a = graph_masks(graph_a, node_min_pct, edge_min_pct)
    keep_b, edges_b = graph_masks(graph_b, node_min_pct, edge_min_pct)
    info: dict[str, dict[str, Any]] = {}
    for graph, keep, side in ((graph_a, keep_a, "a"), (graph_b, keep_b, "b")):
        for i in np.flatnonzero(keep).tolist():
            node_id = graph.ids[i]
            entry = info.setdefault(
                node_id,
                {
                    "layer": int(graph.layer[i]),
                    "channel": int(graph.channel[i]),
                    "label": graph.labels[i] if graph.labels else str(int(graph.channel[i])),
                    "slot": float(graph.slot[i]),
                    "size": float(graph.size[i]),
                    "img": (
                        (graph.vis[i] if pictures == "vis" and graph.vis else None)
                        or graph.image[i]
                    ),
                    "sides": set(),
                },
            )
            entry["sides"].add(side)
            entry["size"] = max(entry["size"], float(graph.size[i]))
    group_of = {
        node_id: compare_group("a" in e["sides"], "b" in e["sides"]) for node_id, e in info.items()
    }
    rank = {group: k for k, group in enumerate(COMPARE_GROUPS)}  # left to right
    elements: list[dict[str, Any]] = []
    order: list[str] = []
    slots: list[float] = []
    for li in sorted({e["layer"] for e in info.values()}):
        row = sorted(
            (n for n, e in info.items() if e["layer"] == li),
            key=lambda n: (rank[group_of[n]], info[n]["slot"], info[n]["channel"]),
        )
        order += row
        slots += [k - (len(row) - 1) / 2 for k in range(len(row))]
    xs, ys = row_positions(
        np.array([info[n]["layer"] for n in order], dtype=np.int64), np.array(slots)
    )
    positions = {n: (float(x), float(y)) for n, x, y in zip(order, xs, ys, strict=True)}
    for node_id, entry in info.items():
        data = {
            "id": node_id,
            "label": entry["label"],
            "size": round(entry["size"], 1),
            "group": group_of[node_id],
            "layer": layer_names[entry["layer"]] if layer_names else str(entry["layer"]),
        }
        img = file_url(url_prefix, entry["img"])
        if img is not None:
            data["img"] = img
        x, y = positions[node_id]
        elements.append(
            {
                "data": data,
                "position": {"x": round(x, 1), "y": round(y, 1)},
                "classes": group_of[node_id],
            }
        )
    edge_sides: dict[tuple[str, str], dict[str, Any]] = {}
    for graph, mask, side in ((graph_a, edges_a, "a"), (graph_b, edges_b, "b")):
        for j in np.flatnonzero(mask).tolist():
            key = (graph.ids[graph.source[j]], graph.ids[graph.target[j]])
            entry = edge_sides.setdefault(key, {"sides": set(), "w": 0.0})
            entry["sides"].add(side)
            entry["w"] = max(entry["w"], float(graph.width[j]))
    for (source, target), entry in edge_sides.items():
        group = compare_group("a" in entry["sides"], "b" in entry["sides"])
        elements.append(
            {
                "data": {
                    "id": edge_id(source, target),
                    "source": source,
                    "target": target,
                    "w": round(entry["w"], 2),
                },
                "classes": group,
            }
        )
    if layer_names and positions:
        ids = list(positions)
        layers = np.array([info[n]["layer"] for n in ids])
        ys = np.array([positions[n][1] for n in ids])
        left = min(p[0] for p in positions.values()) - 1.2 * SLOT_PX
        elements.extend(_row_labels(layers, ys, left, layer_names))
    groups = list(group_of.values())
    counts = {
        "shared": groups.count("shared"),
        "a": groups.count("only-a"),
        "b": groups.count("only-b"),
    }
    return elements, counts


# ---------------------------------------------------------------------------------------
# neuron panel
# ---------------------------------------------------------------------------------------


def neuron_bar_figure(
    names: Sequence[str],
    classes: np.ndarray,
    counts: np.ndarray,
    num_images: np.ndarray,
    selected: int | None = None,
    words: tuple[str, str] = ("images", "channel"),
) -> dict[str, Any]:
    """Horizontal bars: the classes that use a channel most (top at the top).

    Args:
        names: all class names.
        classes: the top class indices, best first.
        counts: their activation counts for the channel.
        num_images: images per class (all classes), for the percentage in the hover.
        selected: the selected class, drawn in the accent colour.
        words: what the inputs and the neurons are called (a text atlas: texts, unit).
    """
    inputs, unit = words
    classes = np.asarray(classes)[::-1]
    counts = np.asarray(counts, dtype=np.float32)[::-1]
    totals = np.asarray(num_images, dtype=np.float64)[classes]
    share = np.divide(counts, totals, out=np.zeros_like(totals), where=totals > 0)
    colours = [ACCENT if int(c) == selected else ONLY_A for c in classes]
    return {
        "data": [
            {
                "type": "bar",
                "x": counts.tolist(),
                "y": [names[int(c)] for c in classes],
                "orientation": "h",
                "marker": {"color": colours},
                "customdata": [int(c) for c in classes],
                "text": [f"{s:.0%}" for s in share.tolist()],
                "textposition": "outside",
                "cliponaxis": False,
                "hovertemplate": f"<b>%{{y}}</b><br>%{{x:.0f}} {inputs} (%{{text}})<br>click to "
                "select<extra></extra>",
            }
        ],
        "layout": {
            "margin": {"l": 8, "r": 40, "t": 4, "b": 36},
            "height": max(160, 24 * len(classes) + 50),
            "paper_bgcolor": "white",
            "plot_bgcolor": "white",
            "font": {"family": FONT, "size": 11, "color": INK},
            "xaxis": {
                "title": {"text": f"{inputs} of the class that use this {unit}"},
                "gridcolor": "#e2e8f0",
            },
            "yaxis": {"automargin": True},
            "bargap": 0.25,
        },
    }
