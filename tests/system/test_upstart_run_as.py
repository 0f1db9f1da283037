"""No upstart runs here (none is packaged for Debian), so the job file's run_as is proven by doing what
upstart does with it: run its `exec` line with /bin/sh -e -c as root. The daemon must switch to the config's
run_as itself (the job has no setuid, which upstart would apply to pre-start too) and its jobs must run as
that user. The daemon's pid file goes to a private /run/taskserver (runns), never the host's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import runns
from throwaway import users

from taskserver.installer.backends.base import get
from taskserver.installer.spec import build_spec

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="switches to a throwaway user: needs root"),
    pytest.mark.skipif(shutil.which("useradd") is None, reason="needs useradd"),
]
TASKSERVER = Path(sys.executable).parent / "taskserver"


@pytest.fixture
def place() -> Iterator[Path]:
    """A directory every user can reach (tmp_path is root's 0700), removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="ts-upstart-", dir="/var/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


def test_upstart_job_runs_the_daemon_and_its_jobs_as_run_as(place: Path) -> None:
    with users(1) as (user,):
        proof = place / "proof"
        proof.touch()
        proof.chmod(0o666)
        config = place / "taskserver.yaml"
        config.write_text(f"task_server: {{run_as: {user.name}, state_dir: {place / 'state'}}}\n"
                          "tenants:\n  t1:\n    login: app\n    jobs:\n"
                          f"      uid: {{every: 1s, command: [/bin/sh, -c, \"id -u >> {proof}\"]}}\n")
        config.chmod(0o644)
        spec = build_spec(name="taskserver", executable=TASKSERVER, config=config, run_as=user.name)
        (job,) = get("upstart")(live=False).files(spec)
        assert not any(line.startswith(("setuid", "setgid")) for line in job.content.splitlines())
        exec_line = next(line for line in job.content.splitlines() if line.startswith("exec "))
        daemon = subprocess.Popen([*runns.prefix(), "sh", "-e", "-c", exec_line], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"})
        try:
            deadline = time.monotonic() + 30
            while not proof.read_text().strip() and time.monotonic() < deadline and daemon.poll() is None:
                time.sleep(0.1)
            uids = set(proof.read_text().split())
            status = Path(f"/proc/{_daemon_pid(daemon.pid)}/status").read_text()
        finally:
            daemon.terminate()
            _, err = daemon.communicate(timeout=30)
        assert uids == {str(user.uid)}, err.decode()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(user.uid)] * 4  # real, effective, saved, fs: no way back


def _daemon_pid(pid: int) -> int:
    """The daemon itself: sh execs it, nsenter (when root) forks it."""
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    if comm != "nsenter":
        return pid
    return int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
