"""The view state: one frozen dataclass that round-trips through the URL query.

A copied link reproduces the view: :meth:`ViewState.to_search` writes only ids and small
integers, and :meth:`ViewState.from_query` reads them back. Unknown or malformed
parameters fall back to defaults, never an error, so a hand-edited or stale link still
opens. ``v`` is the schema version of the query (bump it if a key changes meaning).

Each group of views owns its slice of the state (``dashboard/views/<group>/state.py``:
fields, URL keys, parsing, clamping and events); this module composes the slices with the
fields every view reads (the class, the atlas, the schema version).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode

from dashboard.state_kit import (
    QueryBounds,
    StateBounds,
    StateSlice,
    clamp,
    first,
    is_index,
    node_id,
    parse_node_id,
    query_int,
)
from dashboard.views.instance.state import SLICE as INSTANCE_SLICE
from dashboard.views.instance.state import InstanceState
from dashboard.views.summit.state import SLICE as SUMMIT_SLICE
from dashboard.views.summit.state import SummitState
from dashboard.views.topology.state import SLICE as TOPOLOGY_SLICE
from dashboard.views.topology.state import TopologyState
from dashboard.views.training.state import SLICE as TRAINING_SLICE
from dashboard.views.training.state import TrainingState

__all__ = [
    "ATLAS_KEY_RE",
    "SHARED_FIELDS",
    "SLICES",
    "STATE_VERSION",
    "StateBounds",
    "ViewState",
    "clamp",
    "ignored_parameters",
    "is_index",
    "node_id",
    "parse_node_id",
    "view_groups",
]

STATE_VERSION = 1

#: How a URL names an atlas of a deployment: ``NAME`` or ``NAME@FORMAT_VERSION``.
ATLAS_KEY_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63})(?:@(\d{1,6}))?$")

#: The views' slices, in the order the URL writes their fields.
SLICES: tuple[StateSlice, ...] = (SUMMIT_SLICE, TOPOLOGY_SLICE, TRAINING_SLICE, INSTANCE_SLICE)


@dataclass(frozen=True)
class SharedState:
    """The fields every view reads.

    Attributes:
        cls: the selected class index (all views are linked through it).
        atlas: the atlas shown, ``NAME@FORMAT_VERSION``, in a deployment of several atlases
            (``None``: the only or default atlas; the factory checks that it exists).
        v: the query schema version.
    """

    cls: int = 0
    atlas: str | None = None
    v: int = STATE_VERSION


@dataclass(frozen=True)
class ViewState(InstanceState, TrainingState, TopologyState, SummitState, SharedState):
    """Everything that defines what the dashboard shows: the shared fields
    (:class:`SharedState`) and every view's slice (:class:`SummitState`,
    :class:`TopologyState`, :class:`TrainingState`, :class:`InstanceState`; their
    attributes are documented there).
    """

    # -- URL ---------------------------------------------------------------------------

    #: dataclass field -> query key
    _KEYS: ClassVar[dict[str, str]] = {
        "v": "v",
        "cls": "class",
        **{field: key for part in SLICES for field, key in part.keys.items()},
        "atlas": "atlas",
    }
    #: Fields written to the URL after ``class`` (defaults are left out).
    _URL_FIELDS: ClassVar[tuple[str, ...]] = tuple(field for part in SLICES for field in part.keys)
    #: Fields of the selected class (``StateSlice.per_class``): reset when it changes.
    _PER_CLASS: ClassVar[tuple[str, ...]] = tuple(f for part in SLICES for f in part.per_class)

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
        limits = QueryBounds(num_classes, num_layers, channels)
        klass = query_int(get("class"), 0, num_classes)
        atlas = first(get("atlas"))
        parsed: dict[str, Any] = {}
        for part in SLICES:
            parsed.update(part.parse(get, limits))
        state = cls(
            cls=SharedState().cls if klass is None else klass,
            atlas=atlas if isinstance(atlas, str) and ATLAS_KEY_RE.match(atlas) else None,
            **parsed,
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
    def url_key(cls, field: str) -> str:
        """The query key of ``field``."""
        return cls._KEYS[field]

    @classmethod
    def url_rules(cls) -> dict[str, Any]:
        """How :meth:`to_search` writes a state, for the browser's reducers: the query key
        of each field, the fields after ``class`` and the defaults left out."""
        return {
            "keys": dict(cls._KEYS),
            "fields": list(cls._URL_FIELDS),
            "defaults": asdict(cls()),
            "per_class": list(cls._PER_CLASS),
        }

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
        """A copy with ``changes`` applied (``compare`` equal to ``cls`` is dropped; another
        class resets the fields of the previous one, ``StateSlice.per_class``, unless
        ``changes`` sets them)."""
        changes = self.class_changes(changes)
        state = replace(self, **changes)
        if state.compare is not None and state.compare == state.cls:
            state = replace(state, compare=None)
        return state

    def class_changes(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """``changes`` plus the resets another class brings: the previous class's fields
        (``StateSlice.per_class``) back to their defaults where ``changes`` leaves them."""
        out = dict(changes)
        if "cls" in out and out["cls"] != self.cls:
            defaults = ViewState()
            for field in self._PER_CLASS:
                out.setdefault(field, getattr(defaults, field))
        return out


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
        given = first(raw)
        field = fields_of.get(key)
        if field is not None:
            used = getattr(state, field)
            if isinstance(used, int) and not isinstance(used, bool):
                if query_int(given, used, used + 1) == used:
                    continue
            elif used is not None and str(given) == str(used):
                continue
        ignored.append(f"{key}={str(given)[:40]}" if given not in (None, "") else str(key)[:40])
    return ignored


#: Fields every group of views reads: the class (all views are linked through it), the
#: atlas and the schema version.
SHARED_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SharedState))


def view_groups() -> dict[str, tuple[str, ...]]:
    """The :class:`ViewState` fields each group of views reads, by group name.

    Each group reads its slice's fields, :data:`SHARED_FIELDS` and the other fields its
    slice names in ``reads``. Each group listens to
    its own copy of the state (``STATE_*`` ids), which the browser rewrites only when one
    of its fields changed.
    """
    return {
        part.name: SHARED_FIELDS + tuple(f.name for f in fields(part.fields)) + part.reads
        for part in SLICES
    }
