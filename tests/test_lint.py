"""Lint (ruff) and types (mypy) are part of the test suite, so the README's test command and CI
check them. Settings: pyproject.toml ([tool.ruff], [tool.mypy])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_finds_nothing():
    res = _run("ruff", "check", "--no-cache", "src", "tests", "benchmarks")
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_finds_nothing_in_src():
    res = _run("mypy")
    assert res.returncode == 0, res.stdout + res.stderr
