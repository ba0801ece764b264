"""Errors the compute side reports to users as one line, before any long work starts."""

from __future__ import annotations


class BuildError(ValueError):
    """Bad input to a build (unknown layer, unmapped class folder, unreadable image, ...).

    The message is one line that names what is wrong; the CLI prints it and exits non-zero.
    """
