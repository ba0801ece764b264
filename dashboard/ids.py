"""The ids of the page around the views (each view's own ids: ``dashboard/views/<group>/ids.py``).

Plain string ids; the JavaScript in ``assets/`` refers to ``ROW_CLICK`` by value.
"""

from __future__ import annotations

# -- page plumbing --------------------------------------------------------------------
STATE = "state"  # dcc.Store: the ViewState as a dict (ids and indices only)
#: Namespace of the browser's state reducers (``assets/state.js``).
REDUCERS = "network_atlas_state"
#: dcc.Store: what the browser's reducers need (``dashboard.views.shell.state_rules``)
STATE_RULES = "state-rules"
STATE_URL = "state-url"  # dcc.Location(refresh=False): the state written back to the URL
#: dcc.Stores: copies of STATE per group of views (``dashboard.state.view_groups``), written
#: in the browser only when a field that group reads changed, so a Topology control does not
#: re-render the Summit views and a class switch does not wait for views it leaves alone.
STATE_SUMMIT = "state-summit"
STATE_TOPOLOGY = "state-topology"
STATE_TRAINING = "state-training"
STATE_INSTANCE = "state-instance"
URL_NOTE = "url-note"  # which of the link's parameters could not be used (and were ignored)
#: dcc.Store written by assets/rows.js, topology.js and training.js when a class row (the
#: sidebar's, a Mapper node's class table) is clicked: {"cls": int, "at": ms}. (Rows carry
#: ``data-class``; an ALL pattern-matching input over hundreds of rows made
#: each click take seconds in the Dash renderer.)
ROW_CLICK = "row-click"

# -- header ------------------------------------------------------------------------------
COPY_LINK = "copy-link"
#: Header badge of an atlas built in mixed precision (``build.approximate``).
APPROXIMATE_BADGE = "approximate-badge"

# -- deployment: several atlases ----------------------------------------------------------
ATLAS_PICKER = "atlas-picker"  # header dropdown: the atlas served (only with several)
#: Alert under the header, hidden until the page's atlas stops being served (filled by the
#: app's callback error handler); its ``data-atlas`` names the page's atlas.
ATLAS_ALERT = "atlas-alert"
