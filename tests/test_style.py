"""The code base passes the project's linter and formatter (ruff, configured in pyproject)."""

from __future__ import annotations

import ast
import functools
import json
import shutil
import subprocess
import sys
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


def _package_modules() -> dict[str, Path]:
    """Module name -> file, for every module of the package."""
    paths = {}
    for path in (ROOT / "audiotok").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        paths[name.removesuffix(".__init__")] = path
    return paths


def build_import_graph() -> dict[str, set[str]]:
    paths = _package_modules()
    return {m: _imports(p, m, set(paths)) for m, p in paths.items()}


@functools.lru_cache(maxsize=1)
def _import_graph() -> dict[str, set[str]]:
    """:func:`build_import_graph`, run in a fresh interpreter: in a full run CPython 3.11.7's
    ``ast.parse`` once raised "SystemError: AST constructor recursion depth mismatch" here, in
    a pytest-xdist worker whose earlier tests had ended in RecursionErrors (deep JSON)."""
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import test_style; "
        "print(json.dumps({m: sorted(i) for m, i in test_style.build_import_graph().items()}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).parent)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {m: set(i) for m, i in json.loads(done.stdout).items()}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules ``start`` imports, directly or through others (itself included)."""
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m])
    return seen


def test_no_import_circles():
    """No module imports, even lazily inside a function, one that imports it back: a
    registry or dispatcher lives above the modules it dispatches to."""
    graph = _import_graph()
    # Every circle has an edge from a smaller name to a larger one.
    circles = sorted(
        f"{a} -> {b}" for a in graph for b in graph[a] if a < b and a in _reachable(graph, b)
    )
    assert circles == [], circles


# The training packages: the codec's trainer, and MusicGen / AudioGen fine-tuning.
TRAINING = ("audiotok.train", "audiotok.finetune")


def test_inference_never_imports_training():
    """Compression, generation, datasets and the zoo run without the training packages: only
    the training commands reach them."""
    graph = _import_graph()
    leaks = sorted(
        m
        for m in graph
        if not m.startswith((*TRAINING, "audiotok.cli", "audiotok.__main__"))
        and any(r.startswith(TRAINING) for r in _reachable(graph, m))
    )
    assert leaks == [], leaks


def test_folders_show_the_data_flow():
    """Nothing loose at the top of the package (issue 13): every module lives in the package
    of its step (audio, codec, compression, generate, dataset, train, zoo, ...), and no file
    grows past a sitting's reading (about 400 lines; 420 allowed)."""
    top = sorted(p.name for p in (ROOT / "audiotok").glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "errors.py"]
    for package in (p for p in (ROOT / "audiotok").iterdir() if p.is_dir() and any(p.glob("*.py"))):
        init = package / "__init__.py"
        assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), (
            f"{package.name}/__init__.py explains its package"
        )
    long = {
        str(p.relative_to(ROOT)): n
        for p in _package_modules().values()
        if (n := len(p.read_text().splitlines())) > 420
    }
    assert long == {}, long
