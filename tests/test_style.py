"""The code base passes the project's linter and formatter (ruff, configured in pyproject)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def ruff(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff") or pytest.fail("ruff is not installed (pip install -e '.[dev]')")
    return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_check():
    result = ruff("check", "audiotok", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format():
    result = ruff("format", "--check", "audiotok", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_pickle_in_the_package():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "audiotok").rglob("*.py")
        if "import pickle" in p.read_text() or "allow_pickle=True" in p.read_text()
    ]
    assert offenders == [], f"we write and read no pickles: {offenders}"


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """The package's modules that ``module`` (at ``path``) imports, anywhere in its body."""
    import ast

    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join([*base, node.module] if node.module else base)
            if not node.level:
                target = node.module or ""
            names = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules and name != module}
    return found


def test_no_import_circles():
    """No module imports, even lazily inside a function, one that imports it back: a
    registry or dispatcher lives above the modules it dispatches to."""
    paths = {}
    for path in (ROOT / "audiotok").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        paths[name.removesuffix(".__init__")] = path
    graph = {m: _imports(p, m, set(paths)) for m, p in paths.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m == goal:
                return True
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
        return False

    # Every circle has an edge from a smaller name to a larger one.
    circles = sorted(f"{a} -> {b}" for a in graph for b in graph[a] if a < b and reaches(b, a))
    assert circles == [], circles
