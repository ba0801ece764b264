"""(E) The Instance view: one input's own attribution graph on its class's graph.

``state.py`` its slice of the URL state (the input, the picker's filter), ``ids.py`` its
component ids, ``data.py`` the input's graph ready to draw (no Dash), ``layout.py`` the
card, ``callbacks.py`` its rendering. Inputs are picked by links (no reducer). (This file
imports nothing: ``dashboard.state`` imports the slice, and the view modules import it.)
"""
