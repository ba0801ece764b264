"""The split between the two halves: the dashboard installs and runs without torch."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_base_install_needs_no_torch() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    assert "torch" not in base and "umap" not in base
    assert any(
        dep.startswith("torch==2.14.1") for dep in project["optional-dependencies"]["compute"]
    )


def test_graphml_downloads_need_only_the_base_install() -> None:
    """The dashboard's GraphML buttons write through networkx: a base dependency (pure
    Python, nothing of its own to install), not a test extra only."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("networkx") for dep in project["dependencies"])


def test_dashboard_imports_no_torch() -> None:
    code = (
        "import sys, dashboard.app; "
        "bad = [m for m in ('torch', 'torchvision', 'umap') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_compute_never_imports_dash() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "compute").rglob("*.py")
        if any(
            line.strip().startswith(("import dash", "from dash"))
            for line in path.read_text().splitlines()
        )
    ]
    assert offenders == []


def test_dashboard_source_never_imports_torch() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "dashboard").rglob("*.py")
        if any(
            line.strip().startswith(("import torch", "from torch"))
            for line in path.read_text().splitlines()
        )
    ]
    assert offenders == []


def test_every_package_is_listed_for_the_wheel() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for top in ("compute", "dashboard")
        for path in (ROOT / top).rglob("__init__.py")
    }
    assert found - listed == set(), "add these packages to [tool.setuptools] packages"
    assert "dashboard.assets" in listed and (ROOT / "assets" / "style.css").is_file()
