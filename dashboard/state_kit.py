"""What every view's slice of the URL state is built from (no Dash, no view imports).

Each group of views owns a slice of :class:`dashboard.state.ViewState`: its fields with
their defaults, their URL keys and how a query value is parsed and clamped
(:class:`StateSlice`; the slices are ``dashboard/views/<group>/state.py``).
``dashboard/state.py`` composes them. This module holds the parsers they share, the
node ids and :class:`StateBounds`, so that a slice never imports the composed state (which
imports the slices).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

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


def first(value: Any) -> Any:
    """The first value of a repeated query key (Dash Pages passes one as a list)."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def query_int(value: Any, lo: int, hi: int | None) -> int | None:
    """``value`` as an int in ``[lo, hi)`` (``hi=None``: unbounded), else ``None``.

    Only ASCII digits with spaces or tabs around them are a number: ``\\s`` would also
    admit characters ``int`` refuses (e.g. ``"0\\x1f"``, found by the URL fuzz test).

    Examples:
        >>> query_int("3", 0, 10), query_int("10", 0, 10), query_int("1.5", 0, None)
        (3, None, None)
        >>> query_int(" 4 ", 0, 10), query_int("0\x1f", 0, 10), query_int("٣", 0, 10)
        (4, None, None)
    """
    value = first(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[ \t]*-?[0-9]{1,9}[ \t]*", value):
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
    value = first(value)
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
class QueryBounds:
    """What a link's values are checked against while parsing (``None``: not checked).

    Attributes:
        num_classes: classes of the atlas.
        num_layers: layers of its Summit part.
        channels: channels per layer.
    """

    num_classes: int | None = None
    num_layers: int | None = None
    channels: tuple[int, ...] | None = None

    def is_node(self, node: Any) -> bool:
        """Whether ``node`` is a well-formed node id within these bounds."""
        parsed = parse_node_id(node) if isinstance(node, str) else None
        if parsed is None:
            return False
        layer, channel = parsed
        if self.num_layers is not None and layer >= self.num_layers:
            return False
        channels = self.channels
        return channels is None or (layer < len(channels) and channel < channels[layer])


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


#: How a slice reads a query: ``get(url_key)`` gives the raw value (or ``None``).
QueryGet = Callable[[str], Any]


@dataclass(frozen=True)
class StateSlice:
    """One group of views' part of the view state.

    Attributes:
        name: the group (``summit``, ``topology``, ``training``): its views listen to the
            group's copy of the state (``dashboard.views.shell.GROUP_STORES``).
        fields: the frozen dataclass declaring the slice's fields and their defaults
            (``ViewState`` inherits it).
        keys: ``field -> URL key``, in the order the URL writes them.
        parse: the slice's fields from a query, every value checked, clamped or replaced
            by its default (never an error: a hand-edited link still opens).
        reads: other slices' fields the group's views also read (their change re-renders
            them too).
        per_class: fields that name something of the selected class (an input, a
            confusion): reset to their defaults when another class is selected, unless the
            same change sets them.
    """

    name: str
    fields: type[Any]
    keys: Mapping[str, str]
    parse: Callable[[QueryGet, QueryBounds], dict[str, Any]]
    reads: tuple[str, ...] = ()
    per_class: tuple[str, ...] = ()
