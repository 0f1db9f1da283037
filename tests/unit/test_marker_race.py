"""The store's identity marker (runtime/sqlite_guard.py) written by several processes at once, as when the
daemon and a `jobs run` open a new store together: every write succeeds and the marker ends whole. Its
temporary file was one fixed name, so one process renamed another's away and that one failed with ENOENT
("cannot open the run store")."""

from __future__ import annotations

import json
import os
from pathlib import Path

from taskserver.runtime import sqlite_guard

WRITERS, WRITES = 4, 300


def test_processes_writing_the_marker_at_once_all_succeed(tmp_path: Path) -> None:
    marker = tmp_path / ".t.store-id"
    store = tmp_path / "t.sqlite"
    pids = []
    for _ in range(WRITERS):
        pid = os.fork()
        if pid == 0:  # the child: write, and exit 1 at the first failure
            code = 0
            try:
                for _ in range(WRITES):
                    sqlite_guard.write_marker(marker, "abc", store)
            except BaseException:
                code = 1
            os._exit(code)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    assert codes == [0] * WRITERS
    assert json.loads(marker.read_text()) == {"id": "abc", "path": str(store)}
    assert sorted(os.listdir(tmp_path)) == [".t.store-id"]  # no temporary file left behind
