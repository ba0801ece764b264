"""Walking a rendered Dash component tree (for tests that read what a view returns)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def components(root: Any) -> Iterator[dict[str, Any]]:
    """Every component below ``root`` (itself included) as its JSON form, depth first:
    ``{"type", "namespace", "props"}``."""
    if hasattr(root, "to_plotly_json"):
        root = root.to_plotly_json()
    if isinstance(root, dict):
        if "type" in root and "props" in root:
            yield root
        for value in root.values():
            yield from components(value)
    elif isinstance(root, (list, tuple)):
        for value in root:
            yield from components(value)
