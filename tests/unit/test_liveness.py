"""Evidence of life on real processes: start times tell a pid's owner, the environment finds a run's
processes, and terminate gets rid of one that ignores TERM."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from taskserver.runtime import liveness

IGNORE_TERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
               "print('up', flush=True); time.sleep(300)")


def spawn(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", IGNORE_TERM], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"  # its handler is in place
    return proc


def test_a_process_is_known_by_pid_start_time_and_boot() -> None:
    pid = os.getpid()
    mine = liveness.start_time(pid)
    boot = liveness.boot_id()
    assert mine is not None and boot
    assert liveness.same_process(pid, mine, boot)
    assert not liveness.same_process(pid, mine + 1, boot)  # same pid, another process (pid reuse)
    assert not liveness.same_process(pid, mine, "another-boot")
    assert not liveness.same_process(None, mine, boot)


def test_a_run_is_found_by_its_environment_and_killed_although_it_ignores_term() -> None:
    proc = spawn({liveness.INSTANCE_ENV: "dead-instance", liveness.RUN_ENV: "17", liveness.TENANT_ENV: "t"})
    other = spawn({liveness.INSTANCE_ENV: "live-instance", liveness.RUN_ENV: "17", liveness.TENANT_ENV: "t"})
    try:
        found = liveness.processes_of("t", ["dead-instance"])
        assert [f.pid for f in found[("dead-instance", 17)]] == [proc.pid]
        assert ("live-instance", 17) not in found
        start = liveness.start_time(proc.pid)
        killed = liveness.terminate(found[("dead-instance", 17)], grace=0.3)
        assert killed == [proc.pid]
        assert proc.wait(10) == -9  # TERM was ignored: KILL after the grace
        assert not liveness.same_process(proc.pid, start, liveness.boot_id())
        assert other.poll() is None  # another instance's run is not touched
    finally:
        for p in (proc, other):
            p.kill()
            p.wait()


def test_a_run_of_another_tenant_with_the_same_instance_and_run_id_is_not_found() -> None:
    """Run ids are per tenant and one daemon serves several: only the asked tenant's processes count."""
    same = {liveness.INSTANCE_ENV: "dead-instance", liveness.RUN_ENV: "1"}
    mine, theirs = spawn({**same, liveness.TENANT_ENV: "t"}), spawn({**same, liveness.TENANT_ENV: "u"})
    try:
        for tenant, proc in (("t", mine), ("u", theirs)):
            found = liveness.processes_of(tenant, ["dead-instance"])
            assert [f.pid for f in found[("dead-instance", 1)]] == [proc.pid]
    finally:
        for p in (mine, theirs):
            p.kill()
            p.wait()


def test_a_leader_that_dies_on_term_does_not_leave_its_stubborn_child_behind(tmp_path: Path) -> None:
    child_pid = tmp_path / "child"
    script = f"{shlex.quote(sys.executable)} -c {shlex.quote(IGNORE_TERM)} & echo $! > {child_pid}; wait"
    leader = subprocess.Popen(["sh", "-c", script], start_new_session=True, stdout=subprocess.PIPE)
    try:
        assert leader.stdout is not None and leader.stdout.readline() == b"up\n"
        child = int(child_pid.read_text())
        liveness.terminate([liveness.Found(leader.pid, leader.pid)], grace=0.3)
        assert leader.wait(10) == -15  # the leader went at TERM
        assert liveness.start_time(child) is None or not liveness.alive(child)  # its child was KILLed
    finally:
        leader.kill()
        leader.wait()
