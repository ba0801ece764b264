"""The Topology view's slice of the view state: fields, limits, URL keys, parsing, events.

A Topology control is added here (its field, its URL key and its row in ``TOPO_NUMBERS``
or ``TOPO_CHOICES`` and in ``NUMBER_CONTROLS`` or ``CHOICE_CONTROLS``), in ``ids.py`` (its
id) and in ``layout.py`` (the control); the URL parser, the reducer's clamping and its
inputs, the browser's reducer and the controls' limits all read the tables below (and
``data.py`` reads the value where it changes the graph).
:func:`apply_topology_event` is the reference of the browser's Topology reducer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from compute.topology.params import (
    UI_MAX_EPS_SCALE,
    UI_MAX_INTERVALS,
    UI_MAX_OVERLAP,
    UI_MIN_EPS_SCALE,
    UI_MIN_INTERVALS,
    UI_MIN_OVERLAP,
)
from dashboard.state_kit import (
    QueryBounds,
    QueryGet,
    StateBounds,
    StateSlice,
    clamp,
    first,
    is_index,
    query_int,
)
from dashboard.views.topology import ids

if TYPE_CHECKING:
    from dashboard.state import ViewState

#: Limits of the Mapper parameters (docs/topology.md §6), the ones the Mapper index is
#: built for (``compute.topology.params``), in the view's units.
TOPO_INTERVALS = (UI_MIN_INTERVALS, UI_MAX_INTERVALS)
TOPO_OVERLAP = (round(100 * UI_MIN_OVERLAP), round(100 * UI_MAX_OVERLAP))  # percent
TOPO_EPS = (round(100 * UI_MIN_EPS_SCALE), round(100 * UI_MAX_EPS_SCALE))  # % of "auto" ε
TOPO_JACCARD = (0, 100)  # percent
TOPO_CLUSTERERS: tuple[str, ...] = ("dbscan", "hdbscan")
TOPO_METRICS: tuple[str, ...] = ("euclidean", "cosine")
TOPO_COLOURS: tuple[str, ...] = ("pie", "norm", "share")
#: The number parameters, ``field -> ((lo, hi), label)``: the one table the URL parser
#: clamps with, the reducer clamps the controls' values with (its message names the
#: label) and the controls show.
TOPO_NUMBERS: dict[str, tuple[tuple[int, int], str]] = {
    "topo_intervals": (TOPO_INTERVALS, "intervals"),
    "topo_overlap": (TOPO_OVERLAP, "overlap"),
    "topo_eps": (TOPO_EPS, "ε"),
    "topo_jaccard": (TOPO_JACCARD, "Jaccard threshold"),
}
#: The choice parameters, ``field -> options``.
TOPO_CHOICES: dict[str, tuple[str, ...]] = {
    "topo_cluster": TOPO_CLUSTERERS,
    "topo_metric": TOPO_METRICS,
    "topo_colour": TOPO_COLOURS,
}


@dataclass(frozen=True)
class TopologyState:
    """The Topology view's fields of :class:`dashboard.state.ViewState`.

    Attributes:
        topo_layer: layer of the Mapper graph (``None``: the default layer).
        topo_intervals: Mapper cover intervals (``TOPO_INTERVALS``); ``None``: the atlas's
            default for the layer's sample size.
        topo_overlap: interval overlap in percent (``TOPO_OVERLAP``); ``None``: default.
        topo_eps: DBSCAN ε in percent of the "auto" ε (``TOPO_EPS``); ``None``: default.
        topo_cluster: ``dbscan`` or ``hdbscan``.
        topo_metric: ``euclidean`` or ``cosine`` (``None``: the stored index's metric).
        topo_jaccard: hide Mapper edges whose Jaccard index is below this percent.
        topo_colour: node colouring: class ``pie``, mean L2 ``norm``, or ``share`` of the
            selected class.
        topo_node: the Mapper node opened (its index in the graph of these parameters).
        topo_shape: the flare or loop selected in the shape list (its rank).
    """

    topo_layer: int | None = None
    topo_intervals: int | None = None
    topo_overlap: int | None = None
    topo_eps: int | None = None
    topo_cluster: str = "dbscan"
    topo_metric: str | None = None
    topo_jaccard: int = 0
    topo_colour: str = "pie"
    topo_node: int | None = None
    topo_shape: int | None = None


_KEYS: dict[str, str] = {
    "topo_layer": "tlayer",
    "topo_intervals": "ti",
    "topo_overlap": "to",
    "topo_eps": "te",
    "topo_cluster": "tc",
    "topo_metric": "tm",
    "topo_jaccard": "tj",
    "topo_colour": "tcol",
    "topo_node": "tnode",
    "topo_shape": "tshape",
}


def _parse(get: QueryGet, bounds: QueryBounds) -> dict[str, Any]:
    """The Topology fields of a query; numbers out of range are clamped, junk is dropped."""
    default = TopologyState()
    fields: dict[str, Any] = {
        "topo_layer": query_int(get(_KEYS["topo_layer"]), 0, bounds.num_layers),
        "topo_node": query_int(get(_KEYS["topo_node"]), 0, None),
        "topo_shape": query_int(get(_KEYS["topo_shape"]), 0, None),
    }
    for field, (limits, _) in TOPO_NUMBERS.items():
        number = clamp(get(_KEYS[field]), *limits)
        fields[field] = getattr(default, field) if number is None else int(number)
    for field, options in TOPO_CHOICES.items():
        value = first(get(_KEYS[field]))
        fields[field] = value if value in options else getattr(default, field)
    return fields


SLICE = StateSlice(name="topology", fields=TopologyState, keys=_KEYS, parse=_parse)


# -- events (the reference of the browser's Topology reducer) --------------------------------

#: Pattern-matching type of the shape list's buttons (``{"type": SHAPE_TYPE, "index": rank}``).
SHAPE_TYPE = "topo-shape"
#: Fields whose change makes a new graph (so the opened node and shape are dropped).
GRAPH_FIELDS: tuple[str, ...] = (
    "topo_layer",
    "topo_intervals",
    "topo_overlap",
    "topo_eps",
    "topo_cluster",
    "topo_metric",
)
#: Number controls: ``component -> (field, (lo, hi), label)``; values outside are clamped.
NUMBER_CONTROLS: dict[str, tuple[str, tuple[int, int], str]] = {
    component: (field, *TOPO_NUMBERS[field])
    for component, field in (
        (ids.TOPO_INTERVALS, "topo_intervals"),
        (ids.TOPO_OVERLAP, "topo_overlap"),
        (ids.TOPO_EPS, "topo_eps"),
        (ids.TOPO_JACCARD, "topo_jaccard"),
    )
}
#: Choice controls: ``component -> (field, options)``.
CHOICE_CONTROLS: dict[str, tuple[str, tuple[str, ...]]] = {
    component: (field, TOPO_CHOICES[field])
    for component, field in (
        (ids.TOPO_CLUSTER, "topo_cluster"),
        (ids.TOPO_METRIC, "topo_metric"),
        (ids.TOPO_COLOUR, "topo_colour"),
    )
}

#: Every ``(component, property)`` the reducer hears, besides the shape buttons (pattern
#: matched on :data:`SHAPE_TYPE`): a new control needs only its row in a table above.
EVENTS: tuple[tuple[str, str], ...] = (
    (ids.TOPO_LAYER, "value"),
    *((component, "value") for component in NUMBER_CONTROLS),
    *((component, "value") for component in CHOICE_CONTROLS),
    (ids.TOPO_GRAPH, "tapNodeData"),
)


def reducer_rules() -> dict[str, Any]:
    """This view's events for the browser's reducer (``assets/state.js``)."""
    return {
        "shape_type": SHAPE_TYPE,
        "graph": ids.TOPO_GRAPH,
        "layer": ids.TOPO_LAYER,
        "intervals": ids.TOPO_INTERVALS,
        "bounds": {
            k: [field, lo, hi, label] for k, (field, (lo, hi), label) in NUMBER_CONTROLS.items()
        },
        "choices": {k: [field, list(options)] for k, (field, options) in CHOICE_CONTROLS.items()},
        "graph_fields": list(GRAPH_FIELDS),
    }


def apply_topology_event(
    state: ViewState, trigger: Any, value: Any, bounds: StateBounds
) -> tuple[ViewState, str | None]:
    """The state after one Topology control event, and a message if a value was refused.

    The reference of the browser's reducer (``assets/state.js``). Numbers outside their
    range are clamped (the message says so); junk is refused and leaves the state
    unchanged. A new graph drops the opened node and shape.

    Args:
        state: the current state.
        trigger: the id of the component that fired.
        value: its new value.
        bounds: what the atlas holds.
    """
    if isinstance(trigger, dict):
        rank = trigger.get("index")
        if trigger.get("type") != SHAPE_TYPE or not is_index(rank, None) or not value:
            return state, None
        return state.with_(topo_shape=None if state.topo_shape == rank else rank), None
    if trigger == ids.TOPO_GRAPH:
        node = value.get("node") if isinstance(value, dict) else None
        return (state.with_(topo_node=node) if is_index(node, None) else state), None
    message: str | None = None
    new: Any
    if trigger == ids.TOPO_LAYER:
        if not bounds.is_layer(value):
            return state, "Unknown layer: ignored."
        field, new = "topo_layer", value
    elif trigger in NUMBER_CONTROLS:
        field, (lo, hi), label = NUMBER_CONTROLS[trigger]
        # (``clamp`` reads a list as its first item, as a repeated URL key: not here.)
        number = None if isinstance(value, (list, dict)) else clamp(value, lo, hi)
        if number is None:
            return state, f"{label} must be a number from {lo} to {hi}: value ignored."
        new = int(number)
        if float(value) != number:
            message = f"{label} {value} is outside {lo}–{hi}: using {new}."
    elif trigger in CHOICE_CONTROLS:
        field, options = CHOICE_CONTROLS[trigger]
        if value not in options:
            return state, "Unknown choice: ignored."
        new = value
    else:
        return state, None
    if getattr(state, field) == new:
        return state, message
    resets = {"topo_node": None, "topo_shape": None} if field in GRAPH_FIELDS else {}
    return state.with_(**{field: new}, **resets), message
