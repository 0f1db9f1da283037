"""What the daemon does under a booted init, beyond installing: quoting, memory limit, stop, detection.

test_boot_install.py proves the install life cycle (start, reboot, disable, uninstall). These tests prove
behaviour only a real init shows: systemd's own unit parser receiving a config path full of characters
that mean something to it, the supervisor restarting a daemon that ended itself at its memory limit,
systemd's stop (KillMode=mixed) reaching a daemon with a job in flight, and `--detect` reading real
machines (booted systemd, booted SysV, an unbooted root entered with chroot).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import lab
import pytest
from lab_machine import Container, Machines, wait_until
from test_boot_install import CONFIG, INSTALL, install, systemctl

pytestmark = pytest.mark.boot

TASKSERVER = f"{lab.VENV}/bin/taskserver"
PROOF = "/var/lib/ts-proof"
# Every character here means something to a unit file (space splits words, $ expands a variable, % a
# specifier, quotes and backslash quote) or to a shell; the installer must carry it through verbatim.
ODD_CONFIG = "/etc/task server/$x%y'z\"q\\w.yaml"
ODD_NAME = "ts-odd.1"


def job_config(command: str, server: str = "") -> str:
    """One tenant with one job every 2 s running command through /bin/sh (as root, explicitly)."""
    return (f"task_server: {{run_as: root{server}}}\n"
            "tenants:\n  t1:\n    login: app\n    jobs:\n"
            f"      job: {{every: 2s, command: [/bin/sh, -c, {json.dumps(command)}]}}\n")


def put_config(root: Path, path: str, text: str) -> None:
    """The admin's config written into the unbooted overlay: root-owned, 0644, in 0755 directories."""
    target = root / path.lstrip("/")
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(0o644)
    # ProtectSystem=strict: what a job writes must exist and be passed with --writable.
    (root / PROOF.lstrip("/")).touch()


def booted(installed: lab.Roots, machines: Machines, variant: str, config: str | None = None,
           path: str = CONFIG) -> Container:
    m = machines.container(installed(variant))
    if config is not None:
        put_config(m.overlay.root, path, config)
    m.boot()
    m.wait_ready()
    return m


def lines(m: Container, word: str = "") -> int:
    """Lines the job appended to PROOF (those starting with word, if given)."""
    if not m.exists(PROOF):
        return 0
    return sum(1 for line in m.path(PROOF).read_text().splitlines() if line.startswith(word))


def show(m: Container, unit: str, prop: str) -> str:
    return props(m, unit, prop)[prop]


def props(m: Container, unit: str, *names: str) -> dict[str, str]:
    """Unit properties read in one systemctl call (one consistent snapshot)."""
    out = m.sh(["systemctl", "show", *(f"--property={n}" for n in names), unit]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def history(m: Container, config: str = CONFIG, state_dir: str | None = None) -> list[dict[str, Any]]:
    """The runs the daemon recorded, newest first, read by the CLI from the daemon's store."""
    env = {"STATE_DIRECTORY": state_dir} if state_dir else None
    proc = m.sh([TASKSERVER, "-c", config, "jobs", "history", "--json"], check=False, env=env)
    assert proc.returncode == 0, f"jobs history exited {proc.returncode}: {proc.stdout}{proc.stderr}"
    runs: list[dict[str, Any]] = json.loads(proc.stdout)
    return runs


def journal(m: Container, unit: str = "taskserver") -> str:
    return m.sh(["journalctl", "--no-pager", "-o", "cat", "-u", unit], check=False).stdout


def unit_log(m: Container, unit: str = "taskserver", lines: int = 80) -> str:
    """The unit's last journal lines with their times, systemd's own about it too (why a start failed)."""
    return m.sh(["journalctl", "--no-pager", "-o", "short-precise", "-n", str(lines), "-u", unit],
                check=False).stdout


# --- 1. quoting, through systemd's own parser -----------------------------------------------------------


def test_odd_config_path_and_name_reach_the_daemon_verbatim(installed: lab.Roots, machines: Machines) -> None:
    m = booted(installed, machines, "systemd", job_config(f"date +%s >> {PROOF}"), path=ODD_CONFIG)
    out = install(m, "--name", ODD_NAME, "--config", ODD_CONFIG, "--writable", PROOF)
    unit = f"{ODD_NAME}.service"
    assert systemctl(m, "is-active", unit) == "active", out + journal(m, unit)

    pid = show(m, unit, "MainPID")
    argv = m.sh(["cat", f"/proc/{pid}/cmdline"]).stdout.split("\0")
    assert argv[argv.index("-c") + 1] == ODD_CONFIG and argv[argv.index("-c") + 2] == "run", argv
    # systemd keeps ExecStart's argv as parsed (quotes and %-specifiers resolved) but before its exec-time
    # variable expansion, where "$$" becomes "$": so the property shows each "$" doubled.
    exec_start = show(m, unit, "ExecStart")
    assert f"argv[]={TASKSERVER} -c {ODD_CONFIG.replace('$', '$$')} run ;" in exec_start, exec_start

    wait_until(lambda: lines(m) > 0, 60, "the job of the odd config to run")
    # The CLI reads the same store through the same path (StateDirectory= is named after the service).
    wait_until(lambda: any(r["state"] == "OK" for r in history(m, ODD_CONFIG, f"/var/lib/{ODD_NAME}")), 60,
               "an OK run recorded by the daemon of the odd config")
    install(m, "--uninstall", "--name", ODD_NAME)
    assert systemctl(m, "is-active", unit) in ("inactive", "unknown")


@pytest.mark.parametrize("variant", [v for v in sorted(lab.VARIANTS) if v != "systemd"])
def test_odd_config_path_reaches_the_daemon_verbatim_through_shell_boot_files(
    variant: str, installed: lab.Roots, machines: Machines
) -> None:
    """openrc-run evals its variables, runit and SysV run sh scripts: each must hand the path over as is."""
    m = booted(installed, machines, variant, job_config(f"date +%s >> {PROOF}"), path=ODD_CONFIG)
    install(m, "--name", ODD_NAME, "--config", ODD_CONFIG, "--writable", PROOF)
    daemon = f"^{lab.VENV}/bin/python[0-9.]* {TASKSERVER} "
    pid = m.sh(["pgrep", "-o", "-f", daemon]).stdout.split()[0]
    argv = m.sh(["cat", f"/proc/{pid}/cmdline"]).stdout.split("\0")
    assert argv[argv.index("-c") + 1] == ODD_CONFIG, argv
    wait_until(lambda: lines(m) > 0, 60, "the job of the odd config to run")
    install(m, "--uninstall", "--purge", "--name", ODD_NAME)
    assert m.sh(["pgrep", "-f", daemon], check=False).returncode == 1


# --- 2. memory limit: a clean exit the supervisor turns into a restart -----------------------------------


def test_memory_limit_exit_is_restarted_and_jobs_go_on(installed: lab.Roots, machines: Machines) -> None:
    # The smallest limit (32M) and 48 MB of output the daemon holds (output_tail): every generation reaches
    # the limit after its first run.
    command = f"date +%s >> {PROOF}; head -c {48 << 20} /dev/zero"
    m = booted(installed, machines, "systemd", job_config(command, ", memory_limit: 32M, output_tail: 64M"))
    install(m, "--writable", PROOF)
    seen: list[dict[str, str]] = []

    def restarts(n: int) -> bool:
        seen.append(props(m, "taskserver", "MainPID", "NRestarts", "ExecMainCode", "ExecMainStatus",
                          "Result"))
        return int(seen[-1]["NRestarts"]) >= n

    wait_until(lambda: restarts(1), 60, "systemd to restart the daemon after its memory-limit exit", 0.1)
    runs_then = lines(m)
    wait_until(lambda: restarts(2) and lines(m) > runs_then, 60, "a job run and a restart after it", 0.1)
    assert len({s["MainPID"] for s in seen} - {"0"}) >= 2, f"no new MainPID: {seen}"
    # Between generations (RestartSec) the unit shows how its main process ended: exited (1) with 0.
    exits = {(s["ExecMainCode"], s["ExecMainStatus"]) for s in seen if s["ExecMainCode"] != "0"}
    assert exits == {("1", "0")}, seen
    # systemd counts clean restarts against the unit's start limit too: past its burst (15), the unit must
    # still be restarting, not failed with start-limit-hit.
    wait_until(lambda: restarts(16), 240, "restarts beyond the start-limit burst", 0.5)
    failed = [s for s in seen if s["Result"] != "success"]
    assert not failed, (failed[0], unit_log(m))
    state = m.sh(["systemctl", "is-failed", "taskserver"], check=False).stdout.strip()
    assert state != "failed", seen[-1]
    assert {s["Result"] for s in seen} == {"success"}, seen
    log = journal(m)
    assert "memory limit" in log and "Deactivated successfully" in log, log
    assert "Failed with result" not in log and "status=1/FAILURE" not in log, log
    oks = [r for r in history(m) if r["state"] == "OK"]
    assert len(oks) >= 2, history(m)
    assert not [r for r in history(m) if r["reason"] in ("crashed", "interrupted")], history(m)


# --- 3. systemctl stop with a job in flight (KillMode=mixed) ----------------------------------------------


def stop_during_run(m: Container) -> list[dict[str, Any]]:
    """Wait for a run to start (its "start" line), `systemctl stop` while it runs; the runs that started.

    The stop must end with the daemon's own clean exit: systemd sends SIGTERM to it alone and never had
    to kill anything itself (its TimeoutStopSec is far above the config's stop_timeout).
    """
    wait_until(lambda: lines(m, "start") > 0, 60, "the job to start")
    m.sh(["systemctl", "stop", "taskserver"], timeout=120)
    assert systemctl(m, "is-active", "taskserver") == "inactive"
    log = journal(m)
    assert "stopping (signal SIGTERM): 1 runs still going" in log, log
    assert "timed out" not in log and "Killing process" not in log, log
    assert show(m, "taskserver", "Result") == "success", log
    runs = history(m)
    assert all(r["state"] != "RUN" for r in runs), runs
    # Due times that came while the job ran are recorded missed without starting; they are not the point.
    return [r for r in runs if r["started"] is not None]


def test_stop_interrupts_a_job_longer_than_stop_timeout(installed: lab.Roots, machines: Machines) -> None:
    cfg = job_config(f"echo start >> {PROOF}; sleep 60; echo end >> {PROOF}", ", stop_timeout: 2s")
    m = booted(installed, machines, "systemd", cfg)
    install(m, "--writable", PROOF)
    started = stop_during_run(m)
    assert [(r["state"], r["reason"]) for r in started] == [("ERR", "interrupted")], started
    assert "stop timeout: interrupting 1 runs" in journal(m)
    assert lines(m, "end") == 0


def test_stop_lets_a_short_job_finish(installed: lab.Roots, machines: Machines) -> None:
    cfg = job_config(f"echo start >> {PROOF}; sleep 3; echo end >> {PROOF}", ", stop_timeout: 10s")
    m = booted(installed, machines, "systemd", cfg)
    install(m, "--writable", PROOF)
    started = stop_during_run(m)
    assert started and [(r["state"], r["reason"]) for r in started] == [("OK", None)] * len(started), started
    assert lines(m, "end") == lines(m, "start") == len(started), m.path(PROOF).read_text()
    assert "stop timeout" not in journal(m)


# --- 4. --detect on real machines -------------------------------------------------------------------------


def detect(argv: list[str], run: Any) -> dict[str, Any]:
    proc = run(argv)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}: {proc.stdout}{proc.stderr}"
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


@pytest.mark.parametrize("variant", ["systemd", "sysv"])
def test_detect_in_a_booted_machine(variant: str, installed: lab.Roots, machines: Machines) -> None:
    m = booted(installed, machines, variant)
    got = detect([INSTALL, "--detect", "--json"], lambda a: m.sh(a, check=False))
    if variant == "systemd":
        assert (got["init"], got["live"]) == ("systemd", True), got
        assert got["registrar"] in ("pystemd", "systemctl"), got
    else:
        assert (got["init"], got["live"], got["registrar"]) == ("sysv", True, "update-rc.d"), got


@pytest.mark.parametrize("proc", ["no /proc", "/proc mounted"])
def test_detect_in_an_unbooted_root_via_chroot(proc: str, installed: lab.Roots, machines: Machines) -> None:
    """An image build: nothing booted in the root, whether or not the builder mounted /proc into it."""
    # Seen from the chroot, PID 1's root is the host's. A host whose PID 1 root cannot be read (a container
    # without CAP_SYS_PTRACE over its PID 1, as some build machines are) gives the detector nothing to
    # compare with: then it must say so in its evidence, and still find nothing running.
    can_tell = proc == "no /proc" or os.access("/proc/1/root", os.R_OK)
    root = machines.overlay(installed("systemd")).root
    if proc == "/proc mounted":
        lab.run(["mount", "-t", "proc", "proc", str(root / "proc")])
    try:
        got = detect(["chroot", str(root), INSTALL, "--detect", "--json"],
                     lambda a: subprocess.run(a, capture_output=True, text=True, env=lab.CLEAN_ENV,
                                              check=False, timeout=120))
    finally:
        if proc == "/proc mounted":
            lab.run(["umount", str(root / "proc")])
    facts = (got["init"], got["chroot"], got["target"], got["live"])
    assert facts == ("offline", can_tell, "systemd", False), got
    if not can_tell:
        assert any("cannot tell whether this is a chroot" in e for e in got["evidence"]), got
