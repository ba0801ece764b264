"""The code's health checks run with the tests (CI runs only the README's test command):
ruff (lint, format and a McCabe complexity ceiling of 25), mypy strict on the contract
between the halves and the other strictly typed modules, no import circle and no private
name imported across modules (``bench/code_shape.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from code_shape import circles, imports, modules  # noqa: E402

#: Checked with ``mypy --strict`` (grow this list; never shrink it).
STRICT = (
    "compute/atlas.py",
    "compute/png.py",
    "compute/build/options.py",
    "compute/summit/part.py",
    "compute/summit/conv_geometry.py",
    "compute/topology/params.py",
    "dashboard/state.py",
    "dashboard/state_kit.py",
    "dashboard/views/summit/state.py",
    "dashboard/views/topology/state.py",
    "dashboard/views/training/state.py",
)
CODE = ("compute", "dashboard", "tests", "bench")


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_lint_and_complexity_ceiling() -> None:
    result = run("ruff", "check", *CODE)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_format() -> None:
    result = run("ruff", "format", "--check", *CODE)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_mypy_strict_on_the_contract() -> None:
    result = run("mypy", "--strict", *STRICT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_no_import_circle_and_no_private_import() -> None:
    """Lazy imports inside functions count: they hide a circle, they do not remove it."""
    import ast

    found = modules(ROOT)
    known = set(found)
    graph: dict[str, set[str]] = {name: set() for name in found}
    private = []
    for name, path in found.items():
        for target, names, line in imports(name, ast.parse(path.read_text()), known):
            if target != name:
                graph[name].add(target)
                private += [
                    f"{path}:{line} {n}"
                    for n in names
                    if n.startswith("_") and not n.startswith("__")
                ]
    assert circles(graph) == []
    assert private == [], private
