"""Compare two atlases file by file (arrays exactly, other files by content hash)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from compute.atlas import Atlas


def assert_same_atlas(left: Path, right: Path, close: Sequence[str] = ()) -> int:
    """Assert both atlases hold the same files, every ``.npy`` array equal exactly (those
    named in ``close``: within float32 rounding, ``rtol=1e-6``).

    Returns:
        How many arrays were compared.
    """
    a, b = Atlas.open(left), Atlas.open(right)
    assert sorted(a.files) == sorted(b.files)
    assert a.manifest["dataset"]["num_images"] == b.manifest["dataset"]["num_images"]
    assert a.parameters == b.parameters
    arrays = 0
    for relpath in sorted(a.files):
        if relpath.endswith(".npy"):
            x, y = a.load_array(relpath, mmap=False), b.load_array(relpath, mmap=False)
            assert x.dtype == y.dtype and x.shape == y.shape, relpath
            if relpath in close:
                np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7, err_msg=relpath)
            else:
                np.testing.assert_array_equal(x, y, err_msg=relpath)
            arrays += 1
        else:
            assert a.files[relpath].get("sha256") == b.files[relpath].get("sha256"), relpath
    return arrays
