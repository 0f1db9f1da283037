"""A wake-up signal that arrives while the daemon is still starting must not kill it.

`jobs enqueue` sends SIGUSR1 as soon as the pid file names a daemon; the daemon takes the pid file before its
loop installs handlers, and SIGUSR1's default action ends a process. Found by the dashboard's browser test:
a `jobs run` right after `taskserver run` left the server dead with no word in its log.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import runns
from daemonlab import Daemon, cli, runs, wait_for, write_config

from taskserver.runtime.pidfile import pidfile_name


def test_sigusr1_and_sighup_during_start_up(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml", {"hello": {"command": ["/bin/true"]}})
    pid_dir = runns.run_dir()
    daemon = Daemon(cfg)
    try:
        # signal the daemon from the instant its pid file exists, as fast as we can, until it serves
        pid_file = pid_dir / pidfile_name(cfg.absolute())
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), "the pid file")
        pid = int(pid_file.read_text())
        assert pid == daemon.proc.pid
        sent = 0
        while "serving" not in daemon.text() and daemon.proc.poll() is None:
            os.kill(pid, signal.SIGUSR1 if sent % 2 else signal.SIGHUP)
            sent += 1
        assert daemon.proc.poll() is None, f"the daemon died after {sent} signals:\n{daemon.text()}"
        run_id = int(cli(cfg, "jobs", "run", "hello").stdout)
        wait_for(lambda: any(r["id"] == run_id and r["state"] == "OK" for r in runs(cfg)), "the run")
    finally:
        daemon.stop()


def test_a_stop_during_start_up_ends_the_daemon_cleanly(tmp_path: Path) -> None:
    """SIGTERM from the instant the pid file names the daemon: it stops through its own exit path (0)."""
    cfg = write_config(tmp_path / "cfg.yaml", {"hello": {"command": ["/bin/true"]}})
    pid_file = runns.run_dir() / pidfile_name(cfg.absolute())
    daemon = Daemon(cfg)
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() == str(daemon.proc.pid),
                 "the pid file")
        os.kill(daemon.proc.pid, signal.SIGTERM)
        assert daemon.wait() == 0, daemon.text()
    finally:
        daemon.stop()
