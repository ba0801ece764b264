"""(F) The Topology view: TopoAct's Mapper graph of a layer, recomputed live.

``state.py`` its slice of the URL state (fields, limits, keys, parsing, events), ``ids.py``
its component ids, ``layout.py`` the card, ``callbacks.py`` rendering and callbacks,
``data.py`` the live Mapper graphs and drawing helpers (no Dash). (This file imports
nothing: ``dashboard.state`` imports the slice, and the view modules import it.)
"""
