"""Component ids of the Instance view (plain strings)."""

from __future__ import annotations

INSTANCE_NOTE = "instance-note"  # missing part / no record / errors
INSTANCE_PICKER = "instance-picker"  # links to the selected class's recorded inputs
INSTANCE_HEADER = "instance-header"  # the input, its label, prediction and overlap
INSTANCE_LEGEND = "instance-legend"
INSTANCE_GRAPH = "instance-graph"
INSTANCE_BODY = "instance-body"  # everything below the picker (hidden without the part)
INSTANCE_JSON = "instance-graph-json"  # button: the input's graph as node-link JSON
INSTANCE_GRAPHML = "instance-graph-graphml"
INSTANCE_DOWNLOAD = "instance-graph-download"
INSTANCE_PNG = "instance-graph-png"
