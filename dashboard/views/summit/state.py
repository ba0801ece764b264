"""The Summit views' slice of the view state: fields, URL keys, parsing and events.

The embedding, sidebar, attribution graph, neuron panel and comparison share this slice
(and the class, the atlas and the schema version every view reads, ``dashboard/state.py``).
:func:`apply_event` is the reference of the browser's Summit reducer (``assets/state.js``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from compute.atlas import SUBSETS
from dashboard import ids as page_ids
from dashboard.state_kit import (
    QueryBounds,
    QueryGet,
    StateBounds,
    StateSlice,
    first,
    query_int,
)
from dashboard.views.summit import ids

if TYPE_CHECKING:
    from dashboard.state import ViewState

SORT_ORDERS: tuple[str, ...] = ("similarity", "acc-asc", "acc-desc")
#: What graph nodes show: the feature visualization or the top dataset crop.
PICTURES: tuple[str, ...] = ("vis", "crop")
#: Whose graph the attribution graph view shows: all the class's images, the correctly or
#: the wrongly classified ones (the ``subsets`` part).
GRAPH_SUBSETS: tuple[str, ...] = ("all", *SUBSETS)


@dataclass(frozen=True)
class SummitState:
    """The Summit views' fields of :class:`dashboard.state.ViewState`.

    Attributes:
        compare: the class compared with ``cls`` (``None``: no comparison).
        layer: the layer index of the embedding and of the sidebar's similarity
            (``None``: the atlas's default layer).
        node_min: hide graph nodes whose activation count is below this percent of the
            class's largest count (0-100).
        edge_min: hide edges whose influence is below this percent of the class's largest
            edge weight (0-100).
        sort: sidebar order: ``similarity`` to the selected class, or accuracy
            ascending / descending.
        node: the node opened in the neuron panel (``"layer-channel"``), or ``None``.
        pics: what graph nodes show, ``"vis"`` (feature visualization) or ``"crop"``
            (top dataset crop); ``None``: the visualization if the atlas has it.
        subset: the attribution graph of the class's ``all``, ``correct`` or ``mistaken``
            images.
        mistaken_for: with ``subset="mistaken"``: only the images mistaken for this class
            (a confusion pair's graph); ``None``: all the mistaken images.
    """

    compare: int | None = None
    layer: int | None = None
    node_min: int = 0
    edge_min: int = 0
    sort: str = "similarity"
    node: str | None = None
    pics: str | None = None
    subset: str = "all"
    mistaken_for: int | None = None


_KEYS: dict[str, str] = {
    "compare": "compare",
    "layer": "layer",
    "node_min": "nodes",
    "edge_min": "edges",
    "sort": "sort",
    "node": "node",
    "pics": "pics",
    "subset": "sub",
    "mistaken_for": "for",
}


def _parse(get: QueryGet, bounds: QueryBounds) -> dict[str, Any]:
    """The Summit fields of a query; anything outside the atlas falls back to its default
    (``compare`` equal to the class is dropped by the composed state)."""
    default = SummitState()
    value = {field: get(key) for field, key in _KEYS.items()}
    node_min = query_int(value["node_min"], 0, 101)
    edge_min = query_int(value["edge_min"], 0, 101)
    sort, node, pics = first(value["sort"]), first(value["node"]), first(value["pics"])
    subset = first(value["subset"])
    subset = subset if subset in GRAPH_SUBSETS else default.subset
    mistaken_for = query_int(value["mistaken_for"], 0, bounds.num_classes)
    return {
        "compare": query_int(value["compare"], 0, bounds.num_classes),
        "layer": query_int(value["layer"], 0, bounds.num_layers),
        "node_min": default.node_min if node_min is None else node_min,
        "edge_min": default.edge_min if edge_min is None else edge_min,
        "sort": sort if sort in SORT_ORDERS else default.sort,
        "node": node if bounds.is_node(node) else None,
        "pics": pics if pics in PICTURES else None,
        # "mistaken for d" is a subset of the mistaken images: it implies them.
        "subset": "mistaken" if mistaken_for is not None else subset,
        "mistaken_for": mistaken_for,
    }


#: The "mistaken for" confusion is the selected class's.
SLICE = StateSlice(
    name="summit", fields=SummitState, keys=_KEYS, parse=_parse, per_class=("mistaken_for",)
)


# -- events (the reference of the browser's Summit reducer) ----------------------------------

#: The events of the Summit views: ``(component, property, kind)``. The browser's reducer
#: (``assets/state.js``) is told each component's kind; :func:`apply_event` is the reference.
EVENTS: tuple[tuple[str, str, str], ...] = (
    (ids.EMBEDDING, "clickData", "plot-class"),
    (page_ids.ROW_CLICK, "data", "row"),  # any class row of the page
    (ids.SEARCH, "value", "class"),
    (ids.NEURON_BARS, "clickData", "plot-class"),
    (ids.COMPARE, "value", "compare"),
    (ids.LAYER, "value", "layer"),
    (ids.NODE_THRESHOLD, "value", "node-min"),
    (ids.EDGE_THRESHOLD, "value", "edge-min"),
    (ids.SORT, "value", "sort"),
    (ids.GRAPH, "tapNodeData", "node"),
    (ids.COMPARE_GRAPH, "tapNodeData", "node"),
    (ids.NEURON_CLOSE, "n_clicks", "close"),
    (ids.PICTURES, "value", "pictures"),
    (ids.SUBSET, "value", "subset"),
)
EVENT_KINDS: dict[str, str] = {component: kind for component, _, kind in EVENTS}


def _class_from_click(value: Any) -> int | None:
    """The class index carried in ``customdata`` of a Plotly click, if any."""
    try:
        custom = value["points"][0]["customdata"]
    except (KeyError, IndexError, TypeError):
        return None
    if isinstance(custom, list):
        custom = custom[0] if custom else None
    return as_int(custom)


def as_int(value: Any) -> int | None:
    """``value`` as an int: an int, an integral float or a string of digits; else ``None``
    (booleans, fractions, NaN, Infinity, anything else a hostile payload may hold).

    Examples:
        >>> as_int(3.0), as_int(" 7"), as_int(2.5), as_int(True)
        (3, 7, None, None)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,9}\s*", value):
        return int(value)
    return None


def apply_event(state: ViewState, trigger: Any, value: Any, bounds: StateBounds) -> ViewState:
    """The state after one event of the Summit views (pure).

    The reference of the browser's reducer (``assets/state.js``, which must agree with it
    on every event: ``tests/e2e/test_reducers_e2e.py``). A value that is not what the
    control sends (a string, NaN, Infinity, a list) or that is outside the atlas leaves
    the state as it was.

    Args:
        state: the current state.
        trigger: the id of the component that fired.
        value: the new value of its property.
        bounds: what the atlas holds.
    """
    kind = EVENT_KINDS.get(trigger) if isinstance(trigger, str) else None
    if kind in ("row", "plot-class"):
        if kind == "row":
            picked = as_int(value.get("cls")) if isinstance(value, dict) else None
        else:
            picked = _class_from_click(value)
        return state.with_(cls=picked) if bounds.is_class(picked) else state
    if kind == "compare" and value is None:
        return state.with_(compare=None)
    if kind in ("class", "compare"):
        number = as_int(value)
        field = "cls" if kind == "class" else "compare"
        return state.with_(**{field: number}) if bounds.is_class(number) else state
    if kind == "layer":
        number = as_int(value)
        return state.with_(layer=number) if bounds.is_layer(number) else state
    if kind in ("node-min", "edge-min"):
        number = as_int(value)
        field = "node_min" if kind == "node-min" else "edge_min"
        valid = number is not None and 0 <= number <= 100
        return state.with_(**{field: number}) if valid else state
    if kind == "sort":
        return state.with_(sort=value) if value in SORT_ORDERS else state
    if kind == "node":
        node = value.get("id") if isinstance(value, dict) else None
        return state.with_(node=node) if bounds.is_node(node) else state
    if kind == "close":
        return state.with_(node=None)
    if kind == "pictures":
        return state.with_(pics=value) if value in PICTURES else state
    if kind == "subset":  # the radio: a whole subset (a confusion pair comes by link)
        valid = value in GRAPH_SUBSETS
        return state.with_(subset=value, mistaken_for=None) if valid else state
    return state


def reducer_rules() -> dict[str, Any]:
    """The Summit events and choices for the browser's reducer (``assets/state.js``)."""
    return {
        "events": dict(EVENT_KINDS),
        "sort": list(SORT_ORDERS),
        "pictures": list(PICTURES),
        "subsets": list(GRAPH_SUBSETS),
    }
