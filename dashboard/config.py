"""Runtime settings of the dashboard, read once from the environment.

Environment variables (``docs/deploy.md`` explains each):
    NETWORK_ATLAS_DIR: an atlas directory, or a folder whose subfolders are atlases (default:
        the demo atlases shipped in the package, ``digits`` and ``wordnet``).
    NETWORK_ATLAS_DEFAULT: with a folder of atlases, the one a link without ``?atlas=``
        opens (default: the first by name; for the shipped demos, ``digits``).
    NETWORK_ATLAS_CACHE_DIR: directory for derived-result caches (default: a temp dir).
    NETWORK_ATLAS_AUTH: ``user:password,user2:password2`` turns on HTTP basic auth.
    NETWORK_ATLAS_AUTH_FILE: a file of ``user:password`` lines (passwords may be werkzeug
        hashes) turns on HTTP basic auth.
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
#: The demo atlases shipped in the package: a folder of atlases, served by default.
DEMOS_DIR = PACKAGE_DIR / "demos"
#: The default demo: a small CNN on handwritten digits (``python -m compute demo``).
DEMO_ATLAS_DIR = DEMOS_DIR / "digits"
#: The text demo: MiniLM fine-tuned on WordNet topics (``python -m compute demo --text``).
TEXT_DEMO_ATLAS_DIR = DEMOS_DIR / "wordnet"

ENV_ATLAS = "NETWORK_ATLAS_DIR"
ENV_CACHE = "NETWORK_ATLAS_CACHE_DIR"
ENV_DEBUG = "NETWORK_ATLAS_DEBUG"
ENV_DEFAULT = "NETWORK_ATLAS_DEFAULT"
ENV_AUTH = "NETWORK_ATLAS_AUTH"
ENV_AUTH_FILE = "NETWORK_ATLAS_AUTH_FILE"

_TRUE = frozenset({"1", "true", "yes", "on"})


def assets_dir() -> Path:
    """The Dash assets folder: ``dashboard/assets`` when installed, else ``<repo>/assets``."""
    packaged = PACKAGE_DIR / "assets"
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / "assets"


@dataclass(frozen=True)
class Settings:
    """Everything the dashboard needs to start.

    Attributes:
        atlas_dir: the atlas directory to serve, or a folder of atlas directories.
        cache_dir: where derived results are cached across workers.
        host: interface ``python -m dashboard`` binds.
        port: port ``python -m dashboard`` binds.
        debug: Dash debug mode (shows dev tools; off by default so no trace reaches users).
        default_atlas: with a folder of atlases, the name of the one opened by default.
        auth: ``user:password`` pairs separated by commas (``None``: no basic auth).
        auth_file: a file of ``user:password`` lines (``None``: none).
    """

    atlas_dir: Path
    cache_dir: Path
    host: str = "127.0.0.1"
    port: int = 8050
    debug: bool = False
    default_atlas: str | None = None
    auth: str | None = None
    auth_file: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables (see the module docstring)."""
        env = os.environ if environ is None else environ
        atlas = env.get(ENV_ATLAS) or str(DEMOS_DIR)
        # The shipped demos open on the digits, the first by name as in any folder.
        default = env.get(ENV_DEFAULT) or None
        # Per user: a cache folder is only used by the user who owns it (dashboard.data).
        user = os.getuid() if hasattr(os, "getuid") else "user"
        cache = env.get(ENV_CACHE) or str(
            Path(tempfile.gettempdir()) / f"network-atlas-cache-{user}"
        )
        try:
            port = int(env.get("PORT", "8050"))
        except ValueError:
            port = 8050
        # Paths are made absolute against the working directory now: Flask resolves a
        # relative path it is asked to send against the package folder, not the cwd.
        return cls(
            atlas_dir=Path(atlas).expanduser().absolute(),
            cache_dir=Path(cache).expanduser().absolute(),
            host=env.get("HOST", "127.0.0.1"),
            port=port,
            debug=env.get(ENV_DEBUG, "").strip().lower() in _TRUE,
            default_atlas=default,
            auth=env.get(ENV_AUTH) or None,
            auth_file=(
                Path(env[ENV_AUTH_FILE]).expanduser().absolute() if env.get(ENV_AUTH_FILE) else None
            ),
        )


class ConfigError(ValueError):
    """A setting that cannot be used (e.g. a malformed ``NETWORK_ATLAS_AUTH``): the
    dashboard refuses to start with this one-line message rather than run misconfigured."""
