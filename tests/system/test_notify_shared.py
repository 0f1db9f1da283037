"""Notifications with a tenant whose PostgreSQL store two daemons share (as two hosts would; issue 13): a
streak is judged from the shared history at every outcome, so whichever daemon runs which run, the receiver
hears one failure per streak and one recovery."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from daemonlab import Daemon, cli, wait_for
from notifylab import Receiver, wait_events


def host_config(base: Path, name: str, dsn: str, flag: Path, hook: str) -> Path:
    d = base / name
    d.mkdir()
    cfg = d / "cfg.yaml"
    job = {"command": ["sh", "-c", f'exit "$(cat {flag})"'], "notify": {"webhook": hook}}
    cfg.write_text(json.dumps({
        "task_server": {"run_as": "root" if os.geteuid() == 0 else os.environ.get("USER", ""),
                        "state_dir": str(d / "state")},
        "tenants": {"t": {"login": "app", "store": {"postgresql": dsn}, "jobs": {"flaky": job}}}}))
    cfg.chmod(0o600)
    return cfg


def run_on(cfg: Path, code: int, flag: Path) -> dict[str, Any]:
    """Run the job now with exit code ``code``, through ``cfg``'s command line; returns the ended run."""
    flag.write_text(f"{code}\n")
    run_id = cli(cfg, "jobs", "run", "flaky").stdout.strip()

    def ended() -> dict[str, Any] | None:
        run = json.loads(cli(cfg, "jobs", "show", run_id, "--json").stdout)
        return run if run["finished"] else None

    return wait_for(ended, f"run {run_id} to end")  # type: ignore[no-any-return]


def test_two_daemons_sharing_a_store_tell_a_streak_once(tmp_path: Path, dsn: str) -> None:
    """Each run is left to one daemon by stopping the other (SIGSTOP, well inside its lease): a fails, b
    recovers, a fails again. a's own memory still says "failing" at the last run: only the shared
    history says it recovered, and the receiver hears failure, recovered, failure."""
    receiver = Receiver()
    flag = tmp_path / "flag"
    flag.write_text("0\n")
    flag.chmod(0o644)
    cfgs = [host_config(tmp_path, name, dsn, flag, receiver.url()) for name in ("a", "b")]
    daemons = [Daemon(cfg) for cfg in cfgs]
    try:
        for cfg in cfgs:
            wait_for(lambda cfg=cfg: cli(cfg, "status", check=False).returncode == 0, "the daemons")
        for turn, (code, who) in enumerate(((1, 0), (0, 1), (2, 0))):
            other = daemons[1 - who].proc
            other.send_signal(signal.SIGSTOP)
            try:
                run = run_on(cfgs[who], code, flag)
            finally:
                other.send_signal(signal.SIGCONT)
            assert f"tenant t run {run['id']} (flaky): " in daemons[who].text(), daemons[who].text()
            assert wait_events(receiver, turn + 1) == ["failure", "recovered", "failure"][:turn + 1]
    finally:
        for d in daemons:
            d.stop()
        receiver.close()
    assert receiver.events() == ["failure", "recovered", "failure"]
    texts = "".join(d.text() for d in daemons)
    assert "Traceback" not in texts, texts
