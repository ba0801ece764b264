"""The Instance view's slice of the view state: fields, URL keys and parsing.

Inputs and the picker's filter are chosen by links (a fresh layout), so this slice has no
events and the browser's reducers need no rule for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dashboard.state_kit import QueryBounds, QueryGet, StateSlice, first, query_int

#: The picker's filters: every recorded input of the class, its misclassified ones, or its
#: misclassified or uncertain ones (the Training view's filters).
INSTANCE_FILTERS: tuple[str, ...] = ("all", "wrong", "uncertain")


@dataclass(frozen=True)
class InstanceState:
    """The Instance view's fields of :class:`dashboard.state.ViewState`.

    Attributes:
        inst_index: the input shown (its dataset index; ``None``: the picker's first).
            Checked against the atlas's records by the view.
        inst_filter: the picker lists ``all`` the class's recorded inputs, the ``wrong``
            ones, or the wrong or ``uncertain`` ones.
    """

    inst_index: int | None = None
    inst_filter: str = "all"


_KEYS: dict[str, str] = {"inst_index": "inst", "inst_filter": "ifl"}


def _parse(get: QueryGet, bounds: QueryBounds) -> dict[str, Any]:
    """The Instance fields of a query (the records are checked by the view)."""
    mode = first(get(_KEYS["inst_filter"]))
    return {
        "inst_index": query_int(get(_KEYS["inst_index"]), 0, None),
        "inst_filter": mode if mode in INSTANCE_FILTERS else InstanceState().inst_filter,
    }


#: The view draws nodes with the pictures the attribution graph's toggle chose, and its
#: picker follows the graph's "mistaken for" confusion; its input belongs to the class.
SLICE = StateSlice(
    name="instance",
    fields=InstanceState,
    keys=_KEYS,
    parse=_parse,
    reads=("pics", "subset", "mistaken_for"),
    per_class=("inst_index",),
)
