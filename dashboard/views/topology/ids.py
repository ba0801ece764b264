"""Component ids of the Topology (Mapper) view (plain strings).

The browser's reducer (``assets/state.js``) gets them from ``state_rules``, never by value.
"""

from __future__ import annotations

# -- (F) topology (TopoAct Mapper) ------------------------------------------------------
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

# -- Topology view, added later -----------------------------------------------------------
TOPO_EXACT = "topo-exact"  # button: recompute the shown Mapper graph exactly (big samples)
TOPO_INVERSION = "topo-inversion"  # the opened node's activation-inversion image (or how-to)
