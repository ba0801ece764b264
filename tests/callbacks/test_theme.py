"""The stylesheet's accent and font are the ones the figures use (dashboard/theme.py)."""

from __future__ import annotations

import re
from pathlib import Path

from dashboard import theme

CSS = (Path(__file__).resolve().parents[2] / "assets" / "style.css").read_text()


def variable(name: str) -> str:
    match = re.search(rf"--{name}:\s*([^;]+);", CSS)
    assert match, f"--{name} is not defined in assets/style.css"
    return " ".join(match.group(1).replace('"', "").split())


def test_css_accent_and_font_match_the_theme() -> None:
    assert variable("accent").lower() == theme.ACCENT
    assert variable("compare").lower() == theme.COMPARE
    assert variable("font").replace(", ", ",") == theme.FONT.replace(", ", ",")
