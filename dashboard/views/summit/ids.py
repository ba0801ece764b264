"""Component ids of the Summit views (plain strings): embedding, sidebar, attribution
graph, neuron panel and page, comparison.

The browser's reducer (``assets/state.js``) gets them from ``state_rules``, never by value.
"""

from __future__ import annotations

# -- controls of the Summit views ----------------------------------------------------------------
LAYER = "layer-select"
SEARCH = "class-search"
COMPARE = "compare-select"
SORT = "sort-select"
NODE_THRESHOLD = "node-threshold"
EDGE_THRESHOLD = "edge-threshold"

# -- (A) embedding ----------------------------------------------------------------------
EMBEDDING = "embedding-graph"
EMBEDDING_NOTE = "embedding-note"
EMBEDDING_LAYER = "embedding-layer"  # dcc.Store: the layer the figure currently shows

# -- (B) sidebar ------------------------------------------------------------------------
SIDEBAR_ROWS = "sidebar-rows"
SHOW_MORE = "sidebar-show-more"
ROWS_LIMIT = "rows-limit"  # dcc.Store: how many sidebar rows are shown
CLASSES_CSV = "classes-csv"  # button: download the class table as CSV
CLASSES_DOWNLOAD = "classes-download"  # dcc.Download of that file

# -- (C) attribution graph --------------------------------------------------------------
GRAPH = "attribution-graph"
GRAPH_PNG = "attribution-graph-png"  # button: download the graph as a PNG image
GRAPH_JSON = "attribution-graph-json"  # button: download the graph as shown, node-link JSON
GRAPH_GRAPHML = "attribution-graph-graphml"  # button: the same graph as GraphML
GRAPH_DOWNLOAD = "attribution-graph-download"  # dcc.Download of those files
GRAPH_HEADER = "graph-header"
GRAPH_NOTE = "graph-note"
HOVER_PANEL = "hover-panel"
PICTURES = "graph-pictures"  # radio: feature visualization or dataset crop in the nodes
PICTURES_NOTE = "graph-pictures-note"
SUBSET = "graph-subset"  # radio: the graph of all, the correctly or the wrongly classified images
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
NEURON_PAGE_EXAMPLES_CSV = "neuron-page-examples-csv"  # link: the examples as a CSV file
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
COMPARE_JSON = "compare-graph-json"  # button: the comparison as shown, node-link JSON
COMPARE_GRAPHML = "compare-graph-graphml"  # button: the same as GraphML
COMPARE_DOWNLOAD = "compare-graph-download"  # dcc.Download of those files
COMPARE_NOTE = "compare-note"
COMPARE_LEGEND = "compare-legend"
