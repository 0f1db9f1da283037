"""Every bootable init system of the registry, as root and with a non-root --run-as: install -> the daemon
runs (as that user) and a job ran; reboot -> it came back by itself and a job ran again; `--uninstall
--purge` -> nothing of ours in the overlay's upper dir, state and logs included.

The matrix is the registry's (installer.backends.base.names()) minus lab.NOT_BOOTED, each booted from its
lab.VARIANTS root: a new init system without a root to boot fails test_every_init_system_is_booted_or_excused.
Each test prints one BOOT-TIMING line (install, reboot, purge seconds); nothing asserts on them.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import lab
import pytest
from lab_machine import EXIT_REBOOT, Container, Machines, wait_until
from test_boot_install import CONFIG, INSTALL, PROOF, WRITABLE, proof_runs_offline

from taskserver.installer.backends.base import get, names

pytestmark = pytest.mark.boot

USER = "tsapp"
DAEMON = re.escape(f"{lab.VENV}/bin/python") + r"[0-9.]* " + re.escape(f"{lab.VENV}/bin/taskserver") + " "
ACCOUNTS = re.compile(r"^/etc/(passwd|group|shadow|gshadow|subuid|subgid)-?$")
MODES = {"root": None, "run-as": USER}
MATRIX = [(init, mode) for init in names() if init in lab.VARIANTS for mode in MODES]


def job_config(user: str | None) -> str:
    """One job every 2 s that appends the uid it ran as to PROOF; run_as names who the daemon runs as."""
    return ("task_server: {run_as: " + (user or "root") + "}\n"
            "tenants:\n  t1:\n    login: app\n    jobs:\n"
            f"      uid: {{every: 2s, command: [/bin/sh, -c, \"id -u >> {PROOF}\"]}}\n")


def test_every_init_system_is_booted_or_excused() -> None:
    assert set(lab.VARIANTS) | set(lab.NOT_BOOTED) == set(names())
    assert not set(lab.VARIANTS) & set(lab.NOT_BOOTED)


def prepare(m: Container, user: str | None) -> set[str]:
    """Config and proof file in the unbooted overlay, the run_as user made with the root's useradd."""
    root = m.overlay.root
    cfg = root / CONFIG.lstrip("/")
    cfg.parent.mkdir(mode=0o755, exist_ok=True)
    cfg.write_text(job_config(user))
    cfg.chmod(0o644)
    proof = root / PROOF.lstrip("/")
    proof.touch()
    proof.chmod(0o666)  # the job of a non-root daemon appends to it
    if user is not None:
        lab.run(["chroot", str(root), "useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                 user])
    return {"/etc/taskserver", CONFIG, PROOF}


def daemon(m: Container) -> tuple[int, int] | None:
    """(pid, uid) of the daemon process itself (not its supervisor, whose argv names it too)."""
    pid = m.sh(["pgrep", "-o", "-f", "^" + DAEMON], check=False).stdout.split()
    if not pid:
        return None
    status = m.path(f"/proc/{pid[0]}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    return int(pid[0]), uid


def job_uids(m: Container) -> list[int]:
    return [int(x) for x in m.path(PROOF).read_text().split()] if m.exists(PROOF) else []


def installer(m: Container, *args: str) -> str:
    proc = m.sh([INSTALL, *args], check=False, timeout=180, env={"TMPDIR": "/var/tmp"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"taskserver-install {' '.join(args)} exited {proc.returncode}:\n{out}"
    return out


def running_as(m: Container, uid: int, after: int) -> None:
    """The daemon runs as uid and a job ran as uid after the first `after` runs."""
    wait_until(lambda: (d := daemon(m)) is not None and d[1] == uid, 60, f"the daemon to run as uid {uid}")
    wait_until(lambda: len(job_uids(m)) > after, 60, f"a job to run (had {after})")
    assert set(job_uids(m)[after:]) == {uid}, job_uids(m)


def assert_supervised(m: Container, uid: int) -> None:
    """caps.supervision: a daemon that dies is started again by the init system (as the same user)."""
    found = daemon(m)
    assert found is not None
    m.sh(["kill", "-KILL", str(found[0])])
    wait_until(lambda: (d := daemon(m)) is not None and d[0] != found[0] and d[1] == uid, 60,
               "the supervisor to start the killed daemon again")


@pytest.mark.parametrize(("init", "mode"), MATRIX)
def test_install_reboot_purge(init: str, mode: str, installed: lab.Roots, machines: Machines) -> None:
    user = MODES[mode]
    m = machines.container(installed(init))
    own = prepare(m, user)
    m.boot()
    m.wait_ready()
    uid = int(m.sh(["id", "-u", user or "root"]).stdout)
    detected = json.loads(m.sh([INSTALL, "--detect", "--json"]).stdout)
    assert (detected["init"], detected["live"]) == (init, True), detected

    t0 = time.monotonic()
    args = ["--init", init, *WRITABLE, *(["--run-as", user] if user else [])]
    out = installer(m, *args)
    assert "live" in out and "verified" in out, out
    running_as(m, uid, 0)
    state = json.loads(installer(m, "--status", "--json"))
    facts = [state[k] for k in ("backend", "installed", "enabled", "running")]
    assert facts == [init, True, True, True], state
    t_install = time.monotonic() - t0
    if get(init).caps.supervision:
        assert_supervised(m, uid)

    assert m.reboot() == EXIT_REBOOT, m.console()
    t0 = time.monotonic()
    before = proof_runs_offline(m)
    m.boot()
    m.wait_ready()
    running_as(m, uid, before)
    t_reboot = time.monotonic() - t0

    t0 = time.monotonic()
    out = installer(m, "--uninstall", "--purge")
    assert daemon(m) is None, out
    t_purge = time.monotonic() - t0
    if init == "openrc":  # its dependency cache forgets our script at once, not only if a later change shows
        deptree = m.sh(["cat", "/run/openrc/deptree"]).stdout
        assert "taskserver" not in deptree, deptree
    assert m.poweroff() == 0
    left = {p for p in lab.leftovers(m.overlay) - own if not ACCOUNTS.match(p)}
    cache = m.overlay.root / "usr/lib/rc/cache/deptree"  # OpenRC's, rewritten at shutdown: without us
    assert not cache.exists() or b"taskserver" not in cache.read_bytes()
    assert left == set(), f"left behind by --uninstall --purge: {sorted(left)}\n{out}"
    _timing(init, mode, t_install, t_reboot, t_purge)


def _timing(init: str, mode: str, install: float, reboot: float, purge: float) -> None:
    line = f"BOOT-TIMING {init} {mode} install={install:.1f}s reboot={reboot:.1f}s purge={purge:.1f}s"
    print(line)
    path = os.environ.get("TASKSERVER_BOOT_TIMINGS")
    if path:
        with Path(path).open("a") as f:
            f.write(line + "\n")



# How the install is made to fail after it registered the service, for real: its program exits at once (the
# start or the check that it runs fails), or the manifest cannot be written after a verified start.
STATE_LOG = "/var/lib/taskserver/taskserver.log"  # runtime/control.py: <state dir>/<instance>.log
FAILURES = [(init, how) for init in names() if init in lab.VARIANTS for how in ("exits", "manifest")]


@pytest.mark.parametrize(("init", "how"), FAILURES)
def test_a_failed_live_install_is_rolled_back(init: str, how: str, installed: lab.Roots,
                                              machines: Machines) -> None:
    """Registered, started (runsv starts it at the link), then a step fails: the rollback stops and
    unregisters it and removes what the start made (runit's supervise/ directories, which left the service
    directory behind, "Directory not empty"; a state directory), keeping only a log with something in it,
    named in the error: also the one SysV's daemon writes inside its state directory, which went with the
    directory. Nothing else of the service is left in the overlay's upper dir."""
    m = machines.container(installed(init))
    own = prepare(m, None)
    args = ["--init", init, *WRITABLE]
    if how == "exits":
        args += ["--executable", "/bin/false"]
    else:
        (m.overlay.root / "var/lib/taskserver-install").write_text("in the way\n")
        own.add("/var/lib/taskserver-install")
    m.boot()
    m.wait_ready()
    proc = m.sh([INSTALL, *args], check=False, timeout=180, env={"TMPDIR": "/var/tmp"})
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert len(lines) == 2 and "rolled back everything this install did" in lines[0], proc.stderr
    kept = re.findall(r"kept what the service wrote: ([^)]*)\)", lines[0])
    logs = kept[0].split(", ") if kept else []
    assert daemon(m) is None
    assert m.poweroff() == 0
    for log in logs:  # a log the service wrote something into, nothing else
        held = m.overlay.upper / log.lstrip("/")
        assert log.startswith("/var/log/") or log.endswith(".log"), lines[0]
        assert held.is_dir() or held.stat().st_size > 0, log
    if (init, how) == ("sysv", "manifest"):  # `taskserver start` appended to it, in the state directory
        assert STATE_LOG in logs, lines[0]
        assert "started with" in (m.overlay.upper / STATE_LOG.lstrip("/")).read_text()
    churn = lab.sysv_registrar_churn(m.overlay) if init == "sysv" else set()
    left = {p for p in lab.leftovers(m.overlay) - own - churn if not ACCOUNTS.match(p)
            and not any(p == log or p.startswith(log + "/") or log.startswith(p + "/") for log in logs)}
    assert left == set(), f"left behind by a rolled-back install: {sorted(left)}\n{proc.stderr}"


@pytest.mark.parametrize("init", [init for init in names() if init in lab.VARIANTS])
def test_a_failed_reinstall_leaves_the_service_running_as_before(init: str, installed: lab.Roots,
                                                                 machines: Machines) -> None:
    """Installed and running; re-installed with a boot file whose program exits at once, it was restarted
    on it, the check failed and the old boot file came back, but OpenRC's supervise-daemon went on
    restarting the program it had been given (systemd and runsv restart from the file on disk, and SysV's
    restart failed before it stopped the daemon). The rollback restarts the service on the old file; on
    every init system it runs as before."""
    m = machines.container(installed(init))
    prepare(m, None)
    m.boot()
    m.wait_ready()
    installer(m, "--init", init, *WRITABLE)
    wait_until(lambda: daemon(m) is not None, 60, "the daemon to run")
    proc = m.sh([INSTALL, "--init", init, *WRITABLE, "--executable", "/bin/false"], check=False, timeout=180,
                env={"TMPDIR": "/var/tmp"})
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert len(lines) == 2 and lines[0].endswith(" — rolled back everything this install did"), proc.stderr
    wait_until(lambda: daemon(m) is not None, 60, "the daemon to run again on the old boot file")
    state = json.loads(installer(m, "--status", "--json"))
    assert (state["running"], state["files_changed"]) == (True, []), state
