"""The Training view's slice of the view state: fields, URL keys, parsing and events.

:func:`apply_training_event` is the reference of the browser's Training reducer
(``assets/state.js``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dashboard.state_kit import (
    QueryBounds,
    QueryGet,
    StateBounds,
    StateSlice,
    first,
    is_index,
    query_int,
)
from dashboard.views.training import ids

if TYPE_CHECKING:
    from dashboard.state import ViewState

#: Grid filters: every explained image, the misclassified ones, or those misclassified or
#: uncertain (``dashboard.views.training.data.filter_rows``).
TRACE_FILTERS: tuple[str, ...] = ("all", "wrong", "uncertain")


@dataclass(frozen=True)
class TrainingState:
    """The Training view's fields of :class:`dashboard.state.ViewState`.

    Attributes:
        trace_row: the picked explained image (its row in the trace part; ``None``: the
            first image of the grid). Checked against the atlas by the view.
        trace_layer: the traced layer (``None``: the last one).
        trace_filter: grid filter, ``all``, ``wrong`` or ``uncertain``.
        trace_all: 1 shows every class in the grid; 0 only images of the selected class.
    """

    trace_row: int | None = None
    trace_layer: int | None = None
    trace_filter: str = "all"
    trace_all: int = 0


_KEYS: dict[str, str] = {
    "trace_row": "trow",
    "trace_layer": "trlayer",
    "trace_filter": "tf",
    "trace_all": "tall",
}


def _parse(get: QueryGet, bounds: QueryBounds) -> dict[str, Any]:
    """The Training fields of a query (the trace part's bounds are checked by the view)."""
    default = TrainingState()
    mode = first(get(_KEYS["trace_filter"]))
    every = query_int(get(_KEYS["trace_all"]), 0, 2)
    return {
        "trace_row": query_int(get(_KEYS["trace_row"]), 0, None),
        "trace_layer": query_int(get(_KEYS["trace_layer"]), 0, None),
        "trace_filter": mode if mode in TRACE_FILTERS else default.trace_filter,
        "trace_all": default.trace_all if every is None else every,
    }


SLICE = StateSlice(name="training", fields=TrainingState, keys=_KEYS, parse=_parse)


# -- events (the reference of the browser's Training reducer) --------------------------------

#: This view's events: ``(component, property, kind)`` (the browser's reducer is told the
#: kinds; :func:`apply_training_event` is the reference).
EVENTS: tuple[tuple[str, str, str], ...] = (
    (ids.TRACE_PICK, "data", "pick"),
    (ids.TRACE_LAYER, "value", "layer"),
    (ids.TRACE_FILTER, "value", "filter"),
    (ids.TRACE_ALL, "value", "all"),
)
EVENT_KINDS: dict[str, str] = {component: kind for component, _, kind in EVENTS}


def reducer_rules() -> dict[str, Any]:
    """This view's events for the browser's reducer (``assets/state.js``)."""
    return {"events": dict(EVENT_KINDS), "filters": list(TRACE_FILTERS)}


def apply_training_event(
    state: ViewState, trigger: Any, value: Any, bounds: StateBounds
) -> ViewState:
    """The state after one Training control event (junk, and any event on an atlas without
    a trace part, leaves the state unchanged). The reference of ``assets/state.js``."""
    kind = EVENT_KINDS.get(trigger) if isinstance(trigger, str) else None
    if bounds.trace_images is None:
        return state
    if kind == "pick":
        row = value.get("row") if isinstance(value, dict) else None
        return state.with_(trace_row=row) if is_index(row, bounds.trace_images) else state
    if kind == "layer":
        return state.with_(trace_layer=value) if is_index(value, bounds.trace_layers) else state
    if kind == "filter":
        return state.with_(trace_filter=value) if value in TRACE_FILTERS else state
    if kind == "all":
        return state.with_(trace_all=1 if value else 0)
    return state
