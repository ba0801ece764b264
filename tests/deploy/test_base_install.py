"""Every control of the dashboard works on the install a PaaS uses: ``pip install .`` alone.

A fresh virtual environment gets the project's base dependencies only (no torch, no test
extras), and outside the repository (so nothing of the source tree is imported) every
Topology option (clusterer × metric × colour, on every layer of the demo atlas) and every
other view renders without an error note, and every download button gives its file.
HDBSCAN once failed there with ``ModuleNotFoundError: sklearn`` while every test in the
full environment passed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Runs inside the fresh environment: import from the installed package, render everything.
SCRIPT = textwrap.dedent(
    """
    import itertools, sys, tempfile
    import dashboard, compute
    assert "site-packages" in dashboard.__file__, dashboard.__file__
    from dashboard import data as atlas_data
    from dashboard.config import DEMO_ATLAS_DIR
    from dashboard.state import ViewState
    from dashboard.views.topology.state import TOPO_CLUSTERERS, TOPO_COLOURS, TOPO_METRICS
    from dashboard.views.topology import callbacks as topology_callbacks
    from dashboard.views.common import ViewContext

    data = atlas_data.load(str(DEMO_ATLAS_DIR), tempfile.mkdtemp())
    context = ViewContext(data=data, file_prefix="/atlas-file/")
    combos = 0
    for layer, tc, tm, tcol in itertools.product(
        range(data.num_layers), TOPO_CLUSTERERS, TOPO_METRICS, TOPO_COLOURS
    ):
        query = {"v": "1", "tlayer": str(layer), "tc": tc, "tm": tm, "tcol": tcol}
        state = ViewState.from_query(
            query, num_classes=data.num_classes, num_layers=data.num_layers
        )
        elements, status, note = topology_callbacks.render(context, state.to_dict())[:3]
        nodes = [e for e in elements if "source" not in e["data"]]
        assert nodes, (query, note)
        assert "error" not in str(note).lower() and "could not" not in str(note).lower(), (
            query, note)
        combos += 1
    # Every download button's file (GraphML through networkx, a base dependency).
    from dashboard.views.summit import compare, graph, sidebar
    shown = ViewState(cls=3, compare=8).to_dict()
    files = [sidebar.classes_download(context)]
    for fmt in ("json", "graphml"):
        files += [graph.graph_download(context, shown, fmt), compare.compare_download(
            context, shown, fmt)]
    assert all(f and f["content"] for f in files), files
    bad = [m for m in ("torch", "torchvision", "umap") if m in sys.modules]
    assert not bad, bad
    print(f"rendered {combos} topology combinations, downloaded {len(files)} files")
    """
)


@pytest.fixture(scope="module")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with ``pip install .`` (base dependencies only)."""
    venv = tmp_path_factory.mktemp("base-install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return python


@pytest.mark.timeout(1200)
def test_every_topology_option_renders_on_the_base_install(base_env: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    result = subprocess.run(
        [str(base_env), "-c", SCRIPT],
        cwd=tmp_path,  # not the repository: only the installed package can be imported
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rendered 48 topology combinations, downloaded 5 files" in result.stdout
