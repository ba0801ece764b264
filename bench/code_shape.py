"""Print the shape of the code: the largest and most complex functions, import circles and
private names imported across modules (issue 15's before/after figures).

Usage:
    python bench/code_shape.py [--top 10] [--root .]

Function length counts every line from ``def`` to the end of its body (docstring
included); complexity is ruff's McCabe count (``C901``). Import circles count imports
anywhere in a module (inside functions too: a lazy import hides a circle, it does not
remove it); ``TYPE_CHECKING`` imports are left out (they never run).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGES = ("compute", "dashboard")


def modules(root: Path) -> dict[str, Path]:
    """Every module of the packages, by dotted name."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def functions(tree: ast.AST) -> Iterator[tuple[str, int, int]]:
    """``(qualified name, first line, lines)`` of every function."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                yield name, child.lineno, (child.end_lineno or child.lineno) - child.lineno + 1
                yield from walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")

    yield from walk(tree, "")


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def imports(name: str, tree: ast.AST, known: set[str]) -> Iterator[tuple[str, list[str], int]]:
    """``(imported module, names, line)`` of every internal import that runs."""
    skip = _type_checking_lines(tree)
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    yield _owner(alias.name, known), [], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in PACKAGES:
                continue
            names = [a.name for a in node.names]
            # "from package import module" imports the module.
            subs = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in known]
            for sub in subs:
                yield sub, [], node.lineno
            rest = [n for n in names if f"{node.module}.{n}" not in known]
            if rest:
                yield _owner(node.module, known), rest, node.lineno


def _owner(module: str, known: set[str]) -> str:
    while module not in known and "." in module:
        module = module.rsplit(".", 1)[0]
    return module


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def complexities(root: Path) -> dict[tuple[str, int], int]:
    """McCabe complexity of every function, from ruff (``C901`` with a ceiling of 0)."""
    result = subprocess.run(
        [
            sys.executable, "-m", "ruff", "check", "--select", "C901", "--output-format",
            "json", "--config", "lint.mccabe.max-complexity = 0", "--exit-zero", *PACKAGES,
        ],
        cwd=root, capture_output=True, text=True, check=True,
    )  # fmt: skip
    out: dict[tuple[str, int], int] = {}
    for item in json.loads(result.stdout or "[]"):
        match = re.search(r"is too complex \((\d+) >", item["message"])
        if match:
            path = str(Path(item["filename"]).resolve().relative_to(root.resolve()))
            out[(path, item["location"]["row"])] = int(match.group(1))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--top", type=int, default=10, help="largest functions listed")
    args = parser.parse_args()
    root: Path = args.root
    found = modules(root)
    known = set(found)
    rows: list[tuple[int, int, str]] = []
    graph: dict[str, set[str]] = {name: set() for name in found}
    private: list[str] = []
    score = complexities(root)
    for name, path in found.items():
        tree = ast.parse(path.read_text(), str(path))
        rel = str(path.relative_to(root))
        for qualified, line, length in functions(tree):
            rows.append((length, score.get((rel, line), 0), f"{rel}:{line} {qualified}"))
        for target, names, line in imports(name, tree, known):
            if target != name and target in known:
                graph[name].add(target)
            for imported in names:
                if imported.startswith("_") and not imported.startswith("__") and target != name:
                    private.append(f"{rel}:{line} imports {target}.{imported}")
    rows.sort(reverse=True)
    print(f"{len(rows)} functions in {', '.join(PACKAGES)}")
    print(f"  over 50 lines: {sum(r[0] > 50 for r in rows)}")
    print(f"  over 120 lines: {sum(r[0] > 120 for r in rows)}")
    print(f"  complexity over 25: {sum(r[1] > 25 for r in rows)}")
    print(f"largest {args.top} (lines, complexity):")
    for length, complexity, where in rows[: args.top]:
        print(f"  {length:5d} {complexity:4d}  {where}")
    by_complexity = sorted(rows, key=lambda r: -r[1])[: args.top]
    print(f"most complex {args.top} (lines, complexity):")
    for length, complexity, where in by_complexity:
        print(f"  {length:5d} {complexity:4d}  {where}")
    found_circles = circles(graph)
    print(f"import circles: {len(found_circles)}")
    for component in found_circles:
        print("  " + " <-> ".join(component))
    print(f"private names imported across modules: {len(private)}")
    for line in private:
        print("  " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
