"""``python -m dashboard [--atlas DIR] [--host H] [--port P] [--debug]``."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from dashboard.config import DEMOS_DIR, ENV_ATLAS, ENV_CACHE, ENV_DEBUG, ENV_DEFAULT


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m dashboard",
        description="Serve the Network Atlas dashboard for an atlas or a folder of atlases "
        "(basic auth: NETWORK_ATLAS_AUTH or NETWORK_ATLAS_AUTH_FILE; see docs/deploy.md).",
    )
    parser.add_argument(
        "--atlas",
        type=Path,
        default=None,
        help=f"atlas directory, or a folder of atlas directories chosen in the page "
        f"(default: ${ENV_ATLAS}, else the shipped demos in {DEMOS_DIR}: digits and wordnet)",
    )
    parser.add_argument(
        "--default-atlas",
        default=None,
        metavar="NAME",
        help=f"with a folder of atlases, the one opened without ?atlas= (default: "
        f"${ENV_DEFAULT}, else the first by name; digits for the shipped demos)",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("HOST", "127.0.0.1"),
        help="interface to listen on (default: %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "8050")),
        help="port to listen on (default: %(default)s)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"cache directory for derived results (default: ${ENV_CACHE} "
        "or a temporary directory)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="Dash debug mode: dev tools and reloading (never in production)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, open the atlas and serve until interrupted."""
    args = parse_args(argv)
    # The app reads its settings from the environment (as under gunicorn), so the
    # command line simply sets them before importing it.
    if args.atlas is not None:
        os.environ[ENV_ATLAS] = str(args.atlas)
    if args.default_atlas is not None:
        os.environ[ENV_DEFAULT] = args.default_atlas
    if args.cache_dir is not None:
        os.environ[ENV_CACHE] = str(args.cache_dir)
    if args.debug:
        os.environ[ENV_DEBUG] = "1"
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from dashboard.app import app  # raises SystemExit with one line for a bad atlas/setting

    app.run(host=args.host, port=args.port, debug=args.debug)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
