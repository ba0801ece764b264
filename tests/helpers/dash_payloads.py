"""Request bodies the Dash renderer sends, for tests that talk to the server directly."""

from __future__ import annotations

from typing import Any


def pages_callback_body(pathname: str, search: str) -> dict[str, Any]:
    """The renderer's body of the Dash Pages callback for ``pathname`` and ``search``."""
    return {
        "output": ".._pages_content.children..._pages_store.data..",
        "outputs": [
            {"id": "_pages_content", "property": "children"},
            {"id": "_pages_store", "property": "data"},
        ],
        "inputs": [
            {"id": "_pages_location", "property": "pathname", "value": pathname},
            {"id": "_pages_location", "property": "search", "value": search},
        ],
        "changedPropIds": ["_pages_location.pathname"],
    }
