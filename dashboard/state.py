"""The view state: one frozen dataclass that round-trips through the URL query.

A copied link reproduces the view: :meth:`ViewState.to_search` writes only ids and small
integers, and :meth:`ViewState.from_query` reads them back. Unknown or malformed
parameters fall back to defaults, never an error, so a hand-edited or stale link still
opens. ``v`` is the schema version of the query (bump it if a key changes meaning).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlencode

from compute.topology.params import (
    UI_MAX_EPS_SCALE,
    UI_MAX_INTERVALS,
    UI_MAX_OVERLAP,
    UI_MIN_EPS_SCALE,
    UI_MIN_INTERVALS,
    UI_MIN_OVERLAP,
)

STATE_VERSION = 1

SortOrder = Literal["similarity", "acc-asc", "acc-desc"]
SORT_ORDERS: tuple[str, ...] = ("similarity", "acc-asc", "acc-desc")
#: What graph nodes show: the feature visualization or the top dataset crop.
PICTURES: tuple[str, ...] = ("vis", "crop")

#: Topology (Mapper) view: limits of its parameters (docs/topology.md §6), the ones the
#: Mapper index is built for (``compute.topology.params``), in the view's units.
TOPO_INTERVALS = (UI_MIN_INTERVALS, UI_MAX_INTERVALS)
TOPO_OVERLAP = (round(100 * UI_MIN_OVERLAP), round(100 * UI_MAX_OVERLAP))  # percent
TOPO_EPS = (round(100 * UI_MIN_EPS_SCALE), round(100 * UI_MAX_EPS_SCALE))  # % of "auto" ε
TOPO_CLUSTERERS: tuple[str, ...] = ("dbscan", "hdbscan")
TOPO_METRICS: tuple[str, ...] = ("euclidean", "cosine")
TOPO_COLOURS: tuple[str, ...] = ("pie", "norm", "share")
#: The Topology view's number parameters, ``field -> ((lo, hi), label)``: the one table the
#: URL parser clamps with, the reducer clamps the controls' values with (its message names
#: the label) and the controls show.
TOPO_NUMBERS: dict[str, tuple[tuple[int, int], str]] = {
    "topo_intervals": (TOPO_INTERVALS, "intervals"),
    "topo_overlap": (TOPO_OVERLAP, "overlap"),
    "topo_eps": (TOPO_EPS, "ε"),
    "topo_jaccard": ((0, 100), "Jaccard threshold"),
}
#: Its choice parameters, ``field -> options``.
TOPO_CHOICES: dict[str, tuple[str, ...]] = {
    "topo_cluster": TOPO_CLUSTERERS,
    "topo_metric": TOPO_METRICS,
    "topo_colour": TOPO_COLOURS,
}
#: Training view: grid filters (``dashboard/trace.py`` TRACE_FILTERS).
TRACE_FILTERS: tuple[str, ...] = ("all", "wrong", "uncertain")

#: How a URL names an atlas of a deployment: ``NAME`` or ``NAME@FORMAT_VERSION``.
ATLAS_KEY_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63})(?:@(\d{1,6}))?$")

#: A graph node id: ``"{layer index}-{channel}"``, stable across classes (so two classes'
#: graphs can be merged by id).
_NODE_RE = re.compile(r"^(\d{1,3})-(\d{1,6})$")


def node_id(layer: int, channel: int) -> str:
    """The id of the node for ``channel`` of layer ``layer``."""
    return f"{layer}-{channel}"


def parse_node_id(value: str) -> tuple[int, int] | None:
    """``(layer, channel)`` of a node id, or ``None`` if it is malformed."""
    match = _NODE_RE.match(value or "")
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def _first(value: Any) -> Any:
    # Dash Pages passes a repeated key as a list; the first occurrence wins.
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def _int(value: Any, lo: int, hi: int | None) -> int | None:
    """``value`` as an int in ``[lo, hi)`` (``hi=None``: unbounded), else ``None``."""
    value = _first(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,9}\s*", value):
        number = int(value)
    else:
        return None
    if number < lo or (hi is not None and number >= hi):
        return None
    return number


def clamp(value: Any, lo: float, hi: float, *, integer: bool = True) -> float | None:
    """``value`` (a number or numeric string) clamped into ``[lo, hi]``; ``None`` if junk.

    Examples:
        >>> clamp("250", 10, 100), clamp(5, 10, 100), clamp("x", 10, 100)
        (100, 10, None)
    """
    value = _first(value)
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number != number or number in (float("inf"), float("-inf")):
        return None
    number = min(max(number, lo), hi)
    return round(number) if integer else number


@dataclass(frozen=True)
class StateBounds:
    """What an event may select in one atlas: the reducers ignore anything outside.

    Attributes:
        num_classes: classes of the atlas (``cls`` and ``compare`` are below it).
        num_layers: layers of the Summit part (``layer``, ``topo_layer``, a node's layer).
        channels: channels per layer (a node's channel is below its layer's).
        trace_images: explained images of the trace part (``None``: no trace part).
        trace_layers: traced layers (``None``: no trace part).
    """

    num_classes: int
    num_layers: int
    channels: tuple[int, ...]
    trace_images: int | None = None
    trace_layers: int | None = None

    def is_class(self, value: Any) -> bool:
        """Whether ``value`` is a class index of the atlas."""
        return is_index(value, self.num_classes)

    def is_layer(self, value: Any) -> bool:
        """Whether ``value`` is a layer index of the atlas."""
        return is_index(value, self.num_layers)

    def is_node(self, value: Any) -> bool:
        """Whether ``value`` is a node id (``"layer-channel"``) of the atlas."""
        parsed = parse_node_id(value) if isinstance(value, str) else None
        if parsed is None:
            return False
        layer, channel = parsed
        return layer < min(self.num_layers, len(self.channels)) and channel < self.channels[layer]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the browser's reducers read it)."""
        return {**asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StateBounds:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "channels": tuple(data["channels"])})


def is_index(value: Any, size: int | None) -> bool:
    """Whether ``value`` is an ``int`` (not a ``bool``) in ``[0, size)`` (``size=None``:
    any ``int >= 0``).

    Examples:
        >>> is_index(2, 3), is_index(3, 3), is_index(True, 3), is_index(7, None)
        (True, False, False, True)
    """
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= 0
        and (size is None or value < size)
    )


@dataclass(frozen=True)
class ViewState:
    """Everything that defines what the dashboard shows.

    Attributes:
        cls: the selected class index.
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
        topo_layer: layer of the Topology (Mapper) view (``None``: the default layer).
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
        trace_row: Training view: the picked explained image (its row in the trace part;
            ``None``: the first image of the grid). Checked against the atlas by the view.
        trace_layer: the traced layer (``None``: the last one).
        trace_filter: grid filter, ``all``, ``wrong`` or ``uncertain``.
        trace_all: 1 shows every class in the grid; 0 only images of the selected class.
        atlas: the atlas shown, ``NAME@FORMAT_VERSION``, in a deployment of several atlases
            (``None``: the only or default atlas; the factory checks that it exists).
        v: the query schema version.
    """

    cls: int = 0
    compare: int | None = None
    layer: int | None = None
    node_min: int = 0
    edge_min: int = 0
    sort: str = "similarity"
    node: str | None = None
    pics: str | None = None
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
    trace_row: int | None = None
    trace_layer: int | None = None
    trace_filter: str = "all"
    trace_all: int = 0
    atlas: str | None = None
    v: int = STATE_VERSION

    # -- URL ---------------------------------------------------------------------------

    #: dataclass field -> query key
    _KEYS: ClassVar[dict[str, str]] = {
        "v": "v",
        "cls": "class",
        "compare": "compare",
        "layer": "layer",
        "node_min": "nodes",
        "edge_min": "edges",
        "sort": "sort",
        "node": "node",
        "pics": "pics",
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
        "trace_row": "trow",
        "trace_layer": "trlayer",
        "trace_filter": "tf",
        "trace_all": "tall",
        "atlas": "atlas",
    }
    #: Fields written to the URL after ``class`` (defaults are left out).
    _URL_FIELDS: ClassVar[tuple[str, ...]] = (
        "compare", "layer", "node_min", "edge_min", "sort", "node", "pics",
        "topo_layer", "topo_intervals", "topo_overlap", "topo_eps", "topo_cluster",
        "topo_metric", "topo_jaccard", "topo_colour", "topo_node", "topo_shape",
        "trace_row", "trace_layer", "trace_filter", "trace_all",
    )  # fmt: skip

    @classmethod
    def from_query(
        cls,
        query: Mapping[str, Any] | str | None,
        *,
        num_classes: int | None = None,
        num_layers: int | None = None,
        channels: tuple[int, ...] | None = None,
    ) -> ViewState:
        """Parse a query (``"?a=1&b=2"`` or a mapping, as Dash Pages passes it).

        Values outside the atlas (class or layer index out of range, a node whose
        channel does not exist) and malformed values are replaced by defaults.

        Args:
            query: the query string or its parsed mapping.
            num_classes: number of classes of the atlas (bounds ``class`` and ``compare``).
            num_layers: number of layers (bounds ``layer`` and the node's layer).
            channels: channels per layer (bounds the node's channel).
        """
        if query is None:
            query = {}
        if isinstance(query, str):
            query = dict(parse_qsl(query.lstrip("?"), keep_blank_values=True))
        get = query.get
        default = cls()
        klass = _int(get("class"), 0, num_classes)
        compare = _int(get("compare"), 0, num_classes)
        layer = _int(get("layer"), 0, num_layers)
        node_min = _int(get("nodes"), 0, 101)
        edge_min = _int(get("edges"), 0, 101)
        sort = _first(get("sort"))
        node = _first(get("node"))
        pics = _first(get("pics"))
        atlas = _first(get("atlas"))
        parsed_node = parse_node_id(node) if isinstance(node, str) else None
        if parsed_node is not None:
            node_layer, node_channel = parsed_node
            if (num_layers is not None and node_layer >= num_layers) or (
                channels is not None
                and (node_layer >= len(channels) or node_channel >= channels[node_layer])
            ):
                parsed_node = None
        state = cls(
            cls=default.cls if klass is None else klass,
            compare=compare,
            layer=layer,
            node_min=default.node_min if node_min is None else node_min,
            edge_min=default.edge_min if edge_min is None else edge_min,
            sort=sort if sort in SORT_ORDERS else default.sort,
            node=node if parsed_node is not None else None,
            pics=pics if pics in PICTURES else None,
            **_topology_fields(get, num_layers),
            **_trace_fields(get),
            atlas=atlas if isinstance(atlas, str) and ATLAS_KEY_RE.match(atlas) else None,
        )
        # Comparing a class with itself shows nothing new.
        return state if state.compare != state.cls else replace(state, compare=None)

    def to_search(self) -> str:
        """The query string (with ``?``) that reproduces this state; defaults are left out."""
        default = ViewState()
        params: list[tuple[str, str]] = [("v", str(self.v))]
        if self.atlas is not None:
            params.append(("atlas", self.atlas))
        params.append(("class", str(self.cls)))
        for field in self._URL_FIELDS:
            value = getattr(self, field)
            if value is not None and value != getattr(default, field):
                params.append((self._KEYS[field], str(value)))
        return "?" + urlencode(params, safe="@")

    @classmethod
    def url_rules(cls) -> dict[str, Any]:
        """How :meth:`to_search` writes a state, for the browser's reducers: the query key
        of each field, the fields after ``class`` and the defaults left out."""
        return {"keys": dict(cls._KEYS), "fields": list(cls._URL_FIELDS), "defaults": asdict(cls())}

    # -- dcc.Store ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for a ``dcc.Store``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, **bounds: Any) -> ViewState:
        """Inverse of :meth:`to_dict`; junk falls back to defaults (the store is client data).

        Args:
            data: the stored dict.
            **bounds: ``num_classes``, ``num_layers``, ``channels`` as in :meth:`from_query`.
        """
        if not isinstance(data, Mapping):
            return cls()
        query = {
            key: data.get(field) for field, key in cls._KEYS.items() if data.get(field) is not None
        }
        return cls.from_query({k: str(v) for k, v in query.items()}, **bounds)

    def with_(self, **changes: Any) -> ViewState:
        """A copy with ``changes`` applied (``compare`` equal to ``cls`` is dropped)."""
        state = replace(self, **changes)
        if state.compare is not None and state.compare == state.cls:
            state = replace(state, compare=None)
        return state


def ignored_parameters(query: Mapping[str, Any] | None, state: ViewState) -> list[str]:
    """The query's parameters that ``state`` does not show as given, for a note on the page.

    Unknown names and values that were malformed, out of range for the atlas or clamped
    (so replaced by a default or a bound) are listed as ``name=value`` (cut to 40
    characters), in the query's order; ``atlas`` is the atlas picker's business.

    Examples:
        >>> q = {"class": "3", "layer": "99", "colour": "red"}
        >>> ignored_parameters(q, ViewState.from_query(q, num_classes=10, num_layers=4))
        ['layer=99', 'colour=red']
    """
    fields_of = {key: field for field, key in ViewState._KEYS.items()}
    ignored: list[str] = []
    for key, raw in (query or {}).items():
        if key == "atlas":
            continue
        given = _first(raw)
        field = fields_of.get(key)
        if field is not None:
            used = getattr(state, field)
            if isinstance(used, int) and not isinstance(used, bool):
                if _int(given, used, used + 1) == used:
                    continue
            elif used is not None and str(given) == str(used):
                continue
        ignored.append(f"{key}={str(given)[:40]}" if given not in (None, "") else str(key)[:40])
    return ignored


def _topology_fields(get: Any, num_layers: int | None) -> dict[str, Any]:
    """The Topology view's fields from a query; numbers out of range are clamped."""
    default = ViewState()

    def number(key: str, bounds: tuple[int, int], fallback: int | None) -> int | None:
        value = clamp(get(key), *bounds)
        return fallback if value is None else int(value)

    def choice(key: str, options: tuple[str, ...], fallback: Any) -> Any:
        value = _first(get(key))
        return value if value in options else fallback

    keys = ViewState._KEYS
    fields: dict[str, Any] = {
        "topo_layer": _int(get(keys["topo_layer"]), 0, num_layers),
        "topo_node": _int(get(keys["topo_node"]), 0, None),
        "topo_shape": _int(get(keys["topo_shape"]), 0, None),
    }
    for field, (bounds, _) in TOPO_NUMBERS.items():
        fields[field] = number(keys[field], bounds, getattr(default, field))
    for field, options in TOPO_CHOICES.items():
        fields[field] = choice(keys[field], options, getattr(default, field))
    return fields


def _trace_fields(get: Any) -> dict[str, Any]:
    """The Training view's fields from a query (the atlas bounds are checked by the view)."""
    default = ViewState()
    mode = _first(get("tf"))
    every = _int(get("tall"), 0, 2)
    return {
        "trace_row": _int(get("trow"), 0, None),
        "trace_layer": _int(get("trlayer"), 0, None),
        "trace_filter": mode if mode in TRACE_FILTERS else default.trace_filter,
        "trace_all": default.trace_all if every is None else every,
    }


#: Fields every group of views reads: the class (all views are linked through it), the
#: atlas and the schema version.
SHARED_FIELDS: tuple[str, ...] = ("cls", "atlas", "v")


def view_groups() -> dict[str, tuple[str, ...]]:
    """The :class:`ViewState` fields each group of views reads, by group name.

    ``summit`` (embedding, sidebar, attribution graph, neuron panel, comparison, class
    dropdowns): every field that is not the Topology's (``topo_*``) or the Training
    view's (``trace_*``); ``topology`` and ``training``: their own fields and
    :data:`SHARED_FIELDS`. Each group listens to its own copy of the state (``STATE_*``
    ids), which the browser rewrites only when one of its fields changed.
    """
    names = [f.name for f in fields(ViewState)]
    topology = tuple(n for n in names if n.startswith("topo_"))
    training = tuple(n for n in names if n.startswith("trace_"))
    return {
        "summit": tuple(n for n in names if n not in topology and n not in training),
        "topology": SHARED_FIELDS + topology,
        "training": SHARED_FIELDS + training,
    }
