"""``dashboard.show``: the dashboard inside a Jupyter notebook (torch-free).

Dash runs the app in a background thread of the kernel and shows it in the cell's output
(``jupyter_mode``); running the cell again on the same port replaces the app.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Literal, get_args

from dashboard.config import Settings
from dashboard.factory import create_app

#: How :func:`show` displays the app (Dash's ``jupyter_mode``): in the cell's output, as a
#: link printed in the cell, in a new browser tab, or in a JupyterLab tab (that needs
#: Dash's JupyterLab extension).
ShowMode = Literal["inline", "external", "tab", "jupyterlab"]


def show(
    atlas: str | os.PathLike[str] | None = None,
    *,
    mode: ShowMode = "inline",
    port: int = 8050,
    host: str = "127.0.0.1",
    height: int = 900,
    default_atlas: str | None = None,
) -> None:
    """Show the dashboard of an atlas in a notebook.

    In a notebook (an IPython kernel) the app is served by a thread of the kernel and the
    call returns once it answers; calling it again with the same port replaces the app.
    Outside IPython it serves until interrupted, as ``python -m dashboard`` does.

    Args:
        atlas: an atlas directory or a folder of atlases (default: ``NETWORK_ATLAS_DIR``,
            else the demo atlas); the other settings come from the environment, as for
            ``python -m dashboard`` (``docs/deploy.md``).
        mode: ``"inline"`` in the cell's output, ``"external"`` a link to open, ``"tab"``
            a new browser tab, ``"jupyterlab"`` a JupyterLab tab.
        port: the port the app listens on (one app per port).
        host: the interface it listens on.
        height: the height of the inline frame, in pixels.
        default_atlas: with a folder of atlases, the one opened first.

    Raises:
        ValueError: an unknown ``mode``.
        compute.atlas.AtlasError: a missing or damaged atlas (the message names the file).

    In a notebook's cell (a literal block: it serves, so it is not a doctest)::

        import dashboard
        dashboard.show("atlases/vgg11")
    """
    if mode not in get_args(ShowMode):
        raise ValueError(f"mode must be one of {', '.join(get_args(ShowMode))}, not {mode!r}")
    settings = Settings.from_env()
    if atlas is not None:
        # Absolute now: the kernel's working directory may change before a file is served.
        settings = replace(settings, atlas_dir=Path(atlas).expanduser().absolute())
    if default_atlas is not None:
        settings = replace(settings, default_atlas=default_atlas)
    app = create_app(settings)
    app.run(host=host, port=port, jupyter_mode=mode, jupyter_height=height)
