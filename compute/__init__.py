"""Network Atlas compute side: model + data -> one streaming pass -> an atlas.

``compute.atlas`` is torch-free (the dashboard imports it); everything that needs torch
is imported lazily, so ``import compute.atlas`` stays cheap.

Examples:
    >>> from compute import build_atlas                   # doctest: +SKIP
    >>> build_atlas(model, loader, layers=["features.3", "features.6"],  # doctest: +SKIP
    ...             classes=names, out="my-atlas")
"""

from __future__ import annotations

from typing import Any

__all__ = ["Atlas", "AtlasError", "BuildError", "BuildOptions", "build_atlas"]


def __getattr__(name: str) -> Any:
    if name in ("Atlas", "AtlasError"):
        from compute import atlas

        return getattr(atlas, name)
    if name == "BuildError":
        from compute.errors import BuildError

        return BuildError
    if name in ("build_atlas", "BuildOptions"):
        from compute import build

        return getattr(build, name)
    raise AttributeError(f"module 'compute' has no attribute {name!r}")
