"""Component ids of the Training view (plain strings).

The browser's reducer (``assets/state.js``) gets them from ``state_rules``, never by value.
"""

from __future__ import annotations

# -- (G) training trace -----------------------------------------------------------------
TRACE_NOTE = "trace-note"  # missing part / errors
TRACE_LAYER = "trace-layer"
TRACE_FILTER = "trace-filter"
TRACE_ALL = "trace-all"  # checklist: show every class, not only the selected one
TRACE_GRID = "trace-grid"  # thumbnails of the explained images (tiles carry data-row)
TRACE_GRID_NOTE = "trace-grid-note"
#: dcc.Store written by assets/training.js when a grid tile is clicked: {"row", "at"}.
TRACE_PICK = "trace-pick"
TRACE_HEADER = "trace-header"  # the picked image, its label and prediction
TRACE_PROPONENTS = "trace-proponents"
TRACE_OPPONENTS = "trace-opponents"
TRACE_SHARE = "trace-share"
TRACE_RIDGE = "trace-ridge"
TRACE_EPOCHS = "trace-epochs"
TRACE_NORMS = "trace-norms"
TRACE_BODY = "trace-body"  # everything below the controls (hidden without the part)
