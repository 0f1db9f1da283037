"""The security tests use the system tests' helpers (weblab, daemonlab, runns): importable however the
tests are picked, not only when a run happens to collect tests/system too.  The installer attacks share
two fixtures: a throwaway user (root only) and a root-owned victim directory (installer_lab.py)."""

from __future__ import annotations

import pwd
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "system"))

from installer_lab import need_root, throwaway_user, victim_dir


@pytest.fixture
def user() -> Iterator[pwd.struct_passwd]:
    """A throwaway user (``useradd``), removed with its home afterwards; the test needs root."""
    need_root()
    with throwaway_user() as u:
        yield u


@pytest.fixture
def victim() -> Iterator[Path]:
    """A root-owned directory an attack must leave as it was."""
    with victim_dir() as v:
        yield v
