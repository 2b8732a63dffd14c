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
