"""The Dash app: ``app`` and ``server`` (for ``gunicorn dashboard.app:server``).

The atlas (or folder of atlases) is chosen by ``NETWORK_ATLAS_DIR`` (default: the demo
atlas shipped in the package) and checked at import: a missing or corrupt atlas, or a
malformed setting (e.g. ``NETWORK_ATLAS_AUTH``), stops the process with a one-line message
naming the file or the setting, never a traceback.
"""

from __future__ import annotations

from compute.atlas import AtlasError
from dashboard.config import ConfigError, Settings
from dashboard.factory import create_app

SETTINGS = Settings.from_env()
try:
    app = create_app(SETTINGS)
except AtlasError as exc:
    # One line naming the file; gunicorn and `python -m dashboard` both print it and stop.
    raise SystemExit(f"network-atlas: cannot open the atlas: {exc}") from None
except ConfigError as exc:
    raise SystemExit(f"network-atlas: bad setting: {exc}") from None
server = app.server
