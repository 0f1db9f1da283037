"""A process that may not read a tenant's store (the web side as nobody, a stranger) is told so: never
"no store yet" (an unreadable tenant shown empty and healthy), never an unhandled PermissionError (a 500
for every page). Run as a real throwaway user against real files root made."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from secusers import USER_ENV, USER_TASKSERVER, Lab, as_user, lab, needs_root, write

pytestmark = needs_root

PROBE = """
import sys
from taskserver.runtime.sqlite_base import open_db
from taskserver.runtime.store_errors import NoStore, StoreError
try:
    open_db(sys.argv[1], sys.argv[1] + ".id", create=False, verify=False)
except NoStore as exc:
    print("NoStore", exc.message)
except StoreError as exc:
    print("StoreError", exc.message)
"""


@pytest.fixture
def world() -> Iterator[Lab]:
    with lab() as the_lab:
        yield the_lab


def _probe(world: Lab, path: str) -> str:
    u = world.user("reach")
    python = USER_TASKSERVER[0] if USER_TASKSERVER[0].endswith("python3") else sys.executable
    res = subprocess.run(as_user(u, [python, "-c", PROBE, path]), capture_output=True, text=True,
                         env=world.env(USER_ENV), check=False, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_a_store_behind_a_closed_directory_is_a_store_fault_not_no_store(world: Lab) -> None:
    hidden = world.base / "private"
    hidden.mkdir(mode=0o700)
    write(hidden / "t.sqlite", "", mode=0o600)
    got = _probe(world, str(hidden / "t.sqlite"))
    assert got.startswith("StoreError") and "cannot reach the run store: Permission denied" in got, got


def test_an_unreadable_store_file_is_a_store_fault(world: Lab) -> None:
    open_dir = world.base / "open"
    open_dir.mkdir(mode=0o755)
    write(open_dir / "t.sqlite", "SQLite format 3\0", mode=0o600)
    got = _probe(world, str(open_dir / "t.sqlite"))
    assert got.startswith("StoreError") and "cannot read the run store: Permission denied" in got, got
