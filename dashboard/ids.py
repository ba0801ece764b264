"""Every component id of the dashboard, in one place.

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
#: dcc.Stores: copies of STATE per group of views (``dashboard.state.VIEW_GROUPS``), written
#: in the browser only when a field that group reads changed, so a Topology control does not
#: re-render the Summit views and a class switch does not wait for views it leaves alone.
STATE_SUMMIT = "state-summit"
STATE_TOPOLOGY = "state-topology"
STATE_TRAINING = "state-training"
URL_NOTE = "url-note"  # which of the link's parameters could not be used (and were ignored)
ROWS_LIMIT = "rows-limit"  # dcc.Store: how many sidebar rows are shown

# -- header / controls ----------------------------------------------------------------
LAYER = "layer-select"
SEARCH = "class-search"
COMPARE = "compare-select"
SORT = "sort-select"
NODE_THRESHOLD = "node-threshold"
EDGE_THRESHOLD = "edge-threshold"
COPY_LINK = "copy-link"
#: Header badge of an atlas built in mixed precision (``build.approximate``).
APPROXIMATE_BADGE = "approximate-badge"

# -- (A) embedding ----------------------------------------------------------------------
EMBEDDING = "embedding-graph"
EMBEDDING_NOTE = "embedding-note"
EMBEDDING_LAYER = "embedding-layer"  # dcc.Store: the layer the figure currently shows

# -- (B) sidebar ------------------------------------------------------------------------
SIDEBAR_ROWS = "sidebar-rows"
SHOW_MORE = "sidebar-show-more"
#: dcc.Store written by assets/rows.js when a sidebar row is clicked: {"cls": int, "at": ms}.
#: (Rows carry ``data-class``; an ALL pattern-matching input over hundreds of rows made
#: each click take seconds in the Dash renderer.)
ROW_CLICK = "row-click"

# -- (C) attribution graph --------------------------------------------------------------
GRAPH = "attribution-graph"
GRAPH_PNG = "attribution-graph-png"  # button: download the graph as a PNG image
GRAPH_JSON = "attribution-graph-json"  # button: download the graph as shown, node-link JSON
GRAPH_DOWNLOAD = "attribution-graph-download"  # dcc.Download of that file
GRAPH_HEADER = "graph-header"
GRAPH_NOTE = "graph-note"
HOVER_PANEL = "hover-panel"
PICTURES = "graph-pictures"  # radio: feature visualization or dataset crop in the nodes
PICTURES_NOTE = "graph-pictures-note"
GRAPH_INFLUENCE_KINDS = "graph-influence-kinds"  # how each layer pair's edges were computed

# -- neuron panel -----------------------------------------------------------------------
NEURON_PANEL = "neuron-panel"
NEURON_TITLE = "neuron-panel-title"
NEURON_BODY = "neuron-panel-body"
NEURON_BARS = "neuron-bars"
NEURON_CLOSE = "neuron-close"
NEURON_OPEN = "neuron-open-page"  # link to the channel's own page

# -- neuron page (/neuron/<layer>/<channel>) ----------------------------------------------
NEURON_PAGE = "neuron-page"
NEURON_PAGE_VIS = "neuron-page-vis"
NEURON_PAGE_DIVERSITY = "neuron-page-diversity"
NEURON_PAGE_EXAMPLES = "neuron-page-examples"
NEURON_PAGE_CLASSES = "neuron-page-classes"
NEURON_PAGE_INCOMING = "neuron-page-incoming"
NEURON_PAGE_OUTGOING = "neuron-page-outgoing"
NEURON_PAGE_INCOMING_KINDS = "neuron-page-incoming-kinds"  # how those influences were made
NEURON_PAGE_OUTGOING_KINDS = "neuron-page-outgoing-kinds"
NEURON_NOT_FOUND = "neuron-not-found"
PAGE_NOT_FOUND = "page-not-found"  # any other unknown path (Dash Pages' not_found_404)

# -- (D) compare ------------------------------------------------------------------------
COMPARE_GRAPH = "compare-graph"
COMPARE_PNG = "compare-graph-png"
COMPARE_NOTE = "compare-note"
COMPARE_LEGEND = "compare-legend"

# -- (E) topology (TopoAct Mapper) ------------------------------------------------------
TOPO_GRAPH = "topo-graph"
TOPO_PNG = "topo-graph-png"
TOPO_CSV = "topo-graph-csv"  # button: download the members of every node as CSV
TOPO_DOWNLOAD = "topo-graph-download"  # dcc.Download of that file
TOPO_HOVER = "topo-hover"  # one line about the node under the pointer (drawn in the browser)
TOPO_NOTE = "topo-note"  # missing part / refused parameters / errors
TOPO_STATUS = "topo-status"  # nodes, edges, coverage, exact or approximate
TOPO_LAYER = "topo-layer"
TOPO_INTERVALS = "topo-intervals"
TOPO_OVERLAP = "topo-overlap"
TOPO_EPS = "topo-eps"
TOPO_CLUSTER = "topo-cluster"
TOPO_METRIC = "topo-metric"
TOPO_JACCARD = "topo-jaccard"
TOPO_COLOUR = "topo-colour"
TOPO_SHAPES = "topo-shapes"  # the ranked flare / loop list (buttons {"type": "topo-shape"})
TOPO_MESSAGE = "topo-message"  # a refused or clamped parameter
TOPO_PANEL = "topo-panel"  # the opened node: class table and member crops
TOPO_CLASSES = "topo-classes"  # dcc.Store: classes of the opened node (the embedding reads it)
TOPO_SHOWN = "topo-shown"  # dcc.Store: what the Mapper graph draws (a class switch patches it)

# -- (F) training trace -----------------------------------------------------------------
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

# -- deployment: several atlases ----------------------------------------------------------
ATLAS_PICKER = "atlas-picker"  # header dropdown: the atlas served (only with several)
#: Alert under the header, hidden until the page's atlas stops being served (filled by the
#: app's callback error handler); its ``data-atlas`` names the page's atlas.
ATLAS_ALERT = "atlas-alert"

# -- Topology view, added later -----------------------------------------------------------
TOPO_EXACT = "topo-exact"  # button: recompute the shown Mapper graph exactly (big samples)
TOPO_INVERSION = "topo-inversion"  # the opened node's activation-inversion image (or how-to)
