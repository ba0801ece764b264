"""The views: ``shell`` (the page, the reducers' wiring), ``common`` (shared helpers) and one
package per group of views (``summit``, ``topology``, ``training``), each owning its
layout, callbacks, component ids, data helpers and slice of the URL state."""
