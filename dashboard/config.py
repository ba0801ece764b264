"""Runtime settings of the dashboard, read once from the environment.

Environment variables:
    NETWORK_ATLAS_DIR: the atlas directory (default: the demo atlas shipped in the package).
    NETWORK_ATLAS_CACHE_DIR: directory for derived-result caches (default: a temp dir).
    NETWORK_ATLAS_DEBUG: ``1`` turns on Dash debug mode (never in production).
    HOST / PORT: where ``python -m dashboard`` listens (gunicorn reads ``PORT`` itself).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DEMO_ATLAS_DIR = PACKAGE_DIR / "demo_atlas"

ENV_ATLAS = "NETWORK_ATLAS_DIR"
ENV_CACHE = "NETWORK_ATLAS_CACHE_DIR"
ENV_DEBUG = "NETWORK_ATLAS_DEBUG"

_TRUE = frozenset({"1", "true", "yes", "on"})


def assets_dir() -> Path:
    """The Dash assets folder: ``dashboard/assets`` when installed, else ``<repo>/assets``."""
    packaged = PACKAGE_DIR / "assets"
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / "assets"


@dataclass(frozen=True)
class Settings:
    """Everything the dashboard needs to start.

    Attributes:
        atlas_dir: the atlas directory to serve.
        cache_dir: where derived results are cached across workers.
        host: interface ``python -m dashboard`` binds.
        port: port ``python -m dashboard`` binds.
        debug: Dash debug mode (shows dev tools; off by default so no trace reaches users).
    """

    atlas_dir: Path
    cache_dir: Path
    host: str = "127.0.0.1"
    port: int = 8050
    debug: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables (see the module docstring)."""
        env = os.environ if environ is None else environ
        atlas = env.get(ENV_ATLAS) or str(DEMO_ATLAS_DIR)
        cache = env.get(ENV_CACHE) or str(Path(tempfile.gettempdir()) / "network-atlas-cache")
        try:
            port = int(env.get("PORT", "8050"))
        except ValueError:
            port = 8050
        return cls(
            atlas_dir=Path(atlas).expanduser(),
            cache_dir=Path(cache).expanduser(),
            host=env.get("HOST", "127.0.0.1"),
            port=port,
            debug=env.get(ENV_DEBUG, "").strip().lower() in _TRUE,
        )
