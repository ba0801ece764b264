"""The Summit views: class embedding, class sidebar, attribution graph, neuron panel and
page, and the comparison of two classes' graphs.

``state.py`` is the views' slice of the URL state (fields, keys, parsing and events),
``ids.py`` their component ids; one module per view holds its layout and callbacks. (This
file imports nothing: ``dashboard.state`` imports the slice, and the views import it.)
"""
