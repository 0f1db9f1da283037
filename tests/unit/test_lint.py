"""mypy (strict, from pyproject.toml) and ruff are part of the test suite, so CI fails on them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)


def test_mypy_strict_on_the_package() -> None:
    proc = _run(sys.executable, "-m", "mypy", "-p", "taskserver")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_clean() -> None:
    proc = _run(sys.executable, "-m", "ruff", "check", "--no-cache", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr
