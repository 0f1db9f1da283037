"""A tenant with run_as can write its own status directory, where the daemon makes spare files ahead
(runtime/spares.py) and writes each run's status file (runtime/statusfile.py), with the tenant's filesystem
ids. A throwaway tenant puts a link and a FIFO there under the names of a dead daemon's spares, and a FIFO
in place of a status file: no link is followed (the file it points to keeps its text) and nothing waits on
a FIFO (an open() of one for writing waits for a reader: the daemon's loop would stand still)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from secusers import as_user, lab, needs_root

from taskserver.runtime import privs, statusfile
from taskserver.runtime.model import State
from taskserver.runtime.spares import PREFIX, Spares
from taskserver.runtime.store import Run

pytestmark = needs_root


def _run(run_id: int) -> Run:
    return Run(id=run_id, job="", queue=None, state=State.RUN, reason=None, due=None, created=1.0,
               started=2.0, finished=None, pid=None, instance=None, exit_code=None, attempt=0,
               argv=("/bin/true",), output="", message=None, queued=True)


def _returns(work: Callable[[], object], limit: float = 20) -> BaseException | None:
    """Run ``work`` in a thread; fail if it has not returned within ``limit`` seconds (a wait on a FIFO).
    Returns what it raised, if anything."""
    raised: list[BaseException] = []

    def call() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the test
            raised.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), "the daemon's write waited on a FIFO the tenant put in its status directory"
    return raised[0] if raised else None


def _dead_pid() -> str:
    return subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True).stdout.strip()


def _status_dir(world: Any) -> tuple[Any, privs.Identity, Path, Path, int]:
    """A throwaway tenant user, its identity, its state dir, and its status directory for tenant "t",
    prepared as the daemon prepares a run_as tenant's (with the tenant's filesystem ids); the files' mode."""
    tenant = world.user("tenant")
    ident = privs.Identity(tenant.name, tenant.uid, tenant.gid, str(tenant.home))
    state = tenant.home / "state"
    directory = Path(statusfile.status_dir(state, "t"))
    with privs.fs_identity(ident):
        mode = statusfile.prepare(directory)
    return tenant, ident, state, directory, mode


def test_a_link_and_a_fifo_left_as_spares_are_not_taken_over() -> None:
    with lab() as world:
        tenant, ident, state, directory, mode = _status_dir(world)
        precious = tenant.home / "precious"
        dead = _dead_pid()
        link, fifo = directory / f"{PREFIX}{dead}.7", directory / f"{PREFIX}{dead}.8"
        subprocess.run(as_user(tenant, ["sh", "-c", f'echo "the tenant\'s own data" > "{precious}" && '
                                        f'ln -s "{precious}" "{link}" && mkfifo "{fifo}"']), check=True)
        spares = Spares()
        try:
            spares.expect(directory, ["5"], mode, ident)
            end = time.monotonic() + 30
            while link.exists() or fifo.exists():  # looked at (renamed to the daemon's names)
                assert time.monotonic() < end, "the left spares were never looked at"
                time.sleep(0.01)
            time.sleep(0.3)  # the helper thread makes a real spare for the file expected

            def write() -> None:
                with privs.fs_identity(ident):
                    statusfile.update(state, "t", _run(5), spares)

            assert _returns(write) is None
        finally:
            spares.close()
        assert precious.read_text() == "the tenant's own data\n"  # the link was not followed
        assert (directory / "5").read_text() == statusfile.render(_run(5), "t")
        assert not (directory / "5").is_symlink()


def test_a_fifo_in_place_of_a_status_file_is_refused_at_once() -> None:
    with lab() as world:
        tenant, ident, state, directory, _ = _status_dir(world)
        with privs.fs_identity(ident):
            statusfile.update(state, "t", _run(6), None)
        status = directory / "6"
        subprocess.run(as_user(tenant, ["sh", "-c", f'rm "{status}" && mkfifo "{status}"']), check=True)

        def rewrite() -> None:
            with privs.fs_identity(ident):
                statusfile.update(state, "t", _run(6), None)

        raised = _returns(rewrite)
        assert isinstance(raised, OSError), raised  # the daemon logs it and goes on (StatusFiles.write)
        assert os.path.exists(status) and not status.is_file()  # left as the tenant made it


@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_a_spare_swapped_after_it_was_made_is_not_filled(kind: str) -> None:
    """Between the helper making a spare and the loop filling it, the tenant replaces it: the status file
    is then created without it, never through a link or a wait."""
    with lab() as world:
        tenant, ident, state, directory, mode = _status_dir(world)
        precious = tenant.home / "precious"
        spares = Spares()
        try:
            spares.expect(directory, ["7"], mode, ident)
            end = time.monotonic() + 30
            while not (made := sorted(directory.glob(f"{PREFIX}*"))):
                assert time.monotonic() < end, "no spare was made"
                time.sleep(0.01)
            make = f'mkfifo "{made[0]}"' if kind == "fifo" else f'ln -s "{precious}" "{made[0]}"'
            subprocess.run(as_user(tenant, ["sh", "-c", f'echo "the tenant\'s own data" > "{precious}" && '
                                            f'rm "{made[0]}" && {make}']), check=True)

            def write() -> None:
                with privs.fs_identity(ident):
                    statusfile.update(state, "t", _run(7), spares)

            raised = _returns(write)
        finally:
            spares.close()
        assert raised is None, raised  # the file is created without the spare
        assert precious.read_text() == "the tenant's own data\n"
        assert (directory / "7").read_text() == statusfile.render(_run(7), "t")
