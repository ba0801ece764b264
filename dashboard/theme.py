"""The dashboard's colours and font: one definition for every figure and graph.

``assets/style.css`` has the same accent, comparison colour and font as CSS variables
(``--accent``, ``--compare``, ``--font``); ``tests/callbacks/test_theme.py`` checks that
they agree.
"""

from __future__ import annotations

#: Dark text.
INK = "#1f2937"
#: Secondary text and quiet marks.
MUTED = "#94a3b8"
#: The selected class, node or predicted class, in every view (orange).
ACCENT = "#f97316"
#: The compared class (purple).
COMPARE = "#7c3aed"
#: The UI font stack.
FONT = "Inter, system-ui, -apple-system, Segoe UI, Roboto, sans-serif"
