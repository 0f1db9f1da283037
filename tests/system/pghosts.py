"""Several hosts on one machine, for the shared-store tests: each "host" is a UTS and PID namespace of its own
(its own host name, its own /proc), so a daemon there sees only its host's processes, as on a real host,
and judges the other daemons by their leases alone. The host lives on while its daemon is killed (its runs'
processes go on, as they would when only the daemon died) and a daemon can be started there again.

Needs root (namespaces); the shared-store tests skip without it. A host's namespaces are entered with
nsenter; its init (PID 1 in it) reaps whatever is orphaned there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import runns
from daemonlab import TASKSERVER, sandbox_env, wait_for

# PID 1 of a host: names the host, says so, then reaps every orphan until killed
_INIT = """
import os, socket, sys, time
socket.sethostname(sys.argv[1])
print("ready", flush=True)
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.2)
"""


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("separate hosts are namespaces, which need root")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


class Host:
    """A host: its namespaces, its config and state dir, and its daemon (started by ``start``)."""

    def __init__(self, base: Path, name: str, doc: dict[str, Any]) -> None:
        self.name = name
        self.dir = base / name
        self.dir.mkdir(parents=True)
        self.cfg = self.dir / "cfg.yaml"
        doc = json.loads(json.dumps(doc))
        doc["task_server"]["state_dir"] = str(self.dir / "state")
        self.cfg.write_text(json.dumps(doc))
        self.cfg.chmod(0o600)
        self.log = self.dir / "daemon.log"
        argv = [*runns.prefix(), "unshare", "--uts", "--pid", "--fork", "--mount-proc", "--propagation",
                "private", sys.executable, "-c", _INIT, name]
        self._ns = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self._ns.stdout is not None and self._ns.stdout.readline() == b"ready\n", "no host namespace"
        self.init = wait_for(lambda: next(iter(_children(self._ns.pid)), None), "the host's init", 10)
        self.proc: subprocess.Popen[bytes] | None = None

    def enter(self) -> list[str]:
        """What to put before a command to run it on this host."""
        return ["nsenter", "-t", str(self.init), "-m", "-u", "-p", "--"]

    def start(self, env: dict[str, str] | None = None) -> None:
        with self.log.open("ab") as out:
            argv = [*self.enter(), TASKSERVER, "-c", str(self.cfg), "-v", "run"]
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         env=sandbox_env(self.cfg) | (env or {}))

    @property
    def daemon(self) -> int:
        """The daemon's pid as this test sees it (nsenter forked it)."""
        assert self.proc is not None
        nsenter = self.proc.pid
        return int(wait_for(lambda: next(iter(_children(nsenter)), None), "the daemon", 10))

    def signal(self, sig: int) -> None:
        os.kill(self.daemon, sig)
        if sig == signal.SIGCONT:  # nsenter stops itself when its child stops (job control): resume it too
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.enter(), TASKSERVER, "-c", str(self.cfg), *args], capture_output=True,
                              text=True, env=sandbox_env(self.cfg) | (env or {}), timeout=120, check=False)

    def stop(self) -> None:
        """Stop the daemon (SIGTERM; it records what it stops)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.signal(signal.SIGCONT)
                self.signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """kill -9 of the daemon alone: the host and its runs' processes go on."""
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(30)

    def close(self) -> None:
        """The host goes away, with every process on it."""
        self.stop()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.init, signal.SIGKILL)  # PID 1 of the namespace: the kernel kills the rest
        self._ns.wait(30)


@contextlib.contextmanager
def hosts(base: Path, names: list[str], doc: dict[str, Any]) -> Iterator[list[Host]]:
    needs_root()
    made: list[Host] = []
    try:
        for name in names:
            made.append(Host(base, name, doc))
        yield made
    finally:
        for host in made:
            host.close()


def traced(trace: Path, locks: Path, seconds: float) -> list[str]:
    """A job's command that writes its start and end (host, job, run id) to ``trace`` and says
    ``overlap`` when another copy of the job still runs anywhere (a lock on the shared file system)."""
    t, lk = shlex.quote(str(trace)), shlex.quote(str(locks))
    script = (f'j="$TASKSERVER_JOB"; h="$(hostname)"; exec 9>>{lk}/"$j"; '
              f'flock -n 9 || echo "overlap $h $j $TASKSERVER_RUN_ID" >> {t}; '
              f'echo "start $h $j $TASKSERVER_RUN_ID" >> {t}; sleep {seconds}; '
              f'echo "end $h $j $TASKSERVER_RUN_ID" >> {t}')
    return ["sh", "-c", script]


def trace_lines(trace: Path) -> list[tuple[str, str, str, int]]:
    """(what, host, job, run id) as the runs wrote them."""
    if not trace.exists():
        return []
    return [(w, h, j, int(r)) for w, h, j, r in (ln.split() for ln in trace.read_text().splitlines())]


def processes(cfg: Path, run_id: int) -> list[int]:
    """Live processes of run ``run_id`` of the daemon of ``cfg``, on whatever host (by their environment)."""
    want = {f"TASKSERVER_CONFIG={cfg}".encode(), f"TASKSERVER_RUN_ID={run_id}".encode()}
    found = []
    for entry in Path("/proc").iterdir():
        try:
            env = set((entry / "environ").read_bytes().split(b"\0"))
            state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if want <= env and state not in (b"Z", b"X"):
            found.append(int(entry.name))
    return found


def rows(dsn: str) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return list(conn.execute("SELECT * FROM taskserver_runs ORDER BY id").fetchall())
