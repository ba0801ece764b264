"""One module per view; each exposes ``layout(...)`` and ``register(app, ctx)``."""
