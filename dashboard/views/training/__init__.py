"""(G) The Training view: what shaped a prediction (docs/trace.md).

``state.py`` its slice of the URL state (fields, keys, parsing, events), ``ids.py`` its
component ids, ``layout.py`` the card, ``callbacks.py`` rendering and callbacks, ``data.py``
the trace part's data and figures (no Dash). (This file imports nothing: ``dashboard.state``
imports the slice, and the view modules import it.)
"""
