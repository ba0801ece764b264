"""Page URLs: the neuron page ``/neuron/<layer>/<channel>`` and the explorer's class links.

String functions (no Dash, no atlas), so links and their parsing are unit-testable.
A neuron URL names its layer by the manifest name (URL-quoted, so dots and slashes are
safe); a layer index is accepted too, so ``/neuron/3/17`` also works by hand.

In a deployment of several atlases a link stays on the atlas of the page it is built for:
the request's atlas (:func:`dashboard.atlases.current_key`) is added as ``?atlas=``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote

from dashboard.atlases import current_key
from dashboard.state import ViewState, node_id

#: Dash Pages ``path_template`` of the neuron page.
NEURON_TEMPLATE = "/neuron/<layer>/<channel>"

_CHANNEL_RE = re.compile(r"^\s*(\d{1,9})\s*$")


def explorer_href(prefix: str = "/") -> str:
    """The explorer page of the atlas shown (its ``?atlas=`` kept with several atlases)."""
    atlas = current_key()
    return prefix if atlas is None else f"{prefix}?atlas={quote(atlas, safe='@')}"


def neuron_href(layer_name: str, channel: int, prefix: str = "/") -> str:
    """The neuron page of ``channel`` of the layer called ``layer_name``."""
    atlas = current_key()
    query = "" if atlas is None else f"?atlas={quote(atlas, safe='@')}"
    return f"{prefix}neuron/{quote(layer_name, safe='')}/{int(channel)}{query}"


def query_changes(changes: Mapping[str, Any]) -> dict[str, str | None]:
    """The URL query changes that set ``changes`` (``ViewState`` fields): each field's key
    and its value as the URL writes it, ``None`` (remove the key) for a default.

    A link that a view builds from its group's copy of the state must change only what it
    means to: that copy may be older than the URL in fields other groups own, so the
    browser applies these changes to the current URL (``assets/links.js``).

    Examples:
        >>> query_changes({"cls": 6, "compare": 0, "subset": "all", "node": None})
        {'class': '6', 'compare': '0', 'sub': None, 'node': None}
    """
    default = ViewState()
    found: dict[str, str | None] = {}
    for field, value in changes.items():
        key = ViewState.url_key(field)
        keep = field == "cls" or (value is not None and value != getattr(default, field))
        found[key] = str(value) if keep else None
    return found


def class_href(class_index: int, prefix: str = "/", node: tuple[int, int] | None = None) -> str:
    """The explorer with ``class_index`` selected (and ``node``'s panel open, if given)."""
    state = ViewState(
        cls=int(class_index), node=None if node is None else node_id(*node), atlas=current_key()
    )
    return f"{prefix}{state.to_search()}"


def compare_href(state: ViewState, cls: int, other: int, prefix: str = "/") -> str:
    """The explorer as ``state`` shows it, with ``cls`` selected and compared with ``other``
    (the state carries the page's atlas, so the link stays on it)."""
    return f"{prefix}{state.with_(cls=int(cls), compare=int(other)).to_search()}"


def parse_neuron_path(
    layer: object, channel: object, layer_names: Sequence[str], channels: Sequence[int]
) -> tuple[int, int] | None:
    """``(layer index, channel)`` named by the neuron URL's two path variables, or ``None``.

    Args:
        layer: the URL's layer segment: a layer name (URL-quoted or not) or an index.
            A name wins over an index when a layer is literally called e.g. ``"3"``.
        channel: the URL's channel segment (a non-negative integer).
        layer_names: the atlas's layer names, input to output.
        channels: the number of channels of each layer.

    Returns:
        The layer index and channel, or ``None`` for anything unknown or malformed.
    """
    if not isinstance(layer, str) or not isinstance(channel, str):
        return None
    name = unquote(layer)
    if name in layer_names:
        index = layer_names.index(name)
    elif re.fullmatch(r"\d{1,4}", name) and int(name) < len(layer_names):
        index = int(name)
    else:
        return None
    match = _CHANNEL_RE.match(unquote(channel))
    if match is None or int(match.group(1)) >= channels[index]:
        return None
    return index, int(match.group(1))
