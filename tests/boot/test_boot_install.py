"""taskserver-install on booted init systems: systemd, systemd --user, SysV with update-rc.d or insserv.

The project is pip-installed into /opt/taskserver inside each root as a user would (from wheels built from
this tree), the installer runs inside the booted container, and each test checks what the machine does by
itself: the service runs, a job from the config runs, both come back after a reboot, and uninstall leaves
nothing of ours in the overlay's upper dir (the exact record of what changed on the machine).

What uninstall keeps, on purpose: the configuration the admin wrote (/etc/taskserver/..., here written by the
test) and the daemon's state under /var/lib/taskserver, or ~/.local/state/taskserver for --user (job history
is data; removing it is a purge decision, not an uninstall). Everything else named like the service must be
gone: unit or init script, enable links, the installer's manifest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lab
import pytest
from lab_machine import EXIT_REBOOT, Container, Machines, wait_until

pytestmark = pytest.mark.boot

INSTALL = f"{lab.VENV}/bin/taskserver-install"
CONFIG = "/etc/taskserver/taskserver.yaml"
PROOF = "/var/lib/ts-proof"
WRITABLE = ("--writable", PROOF)
JOB_CONFIG = """\
task_server: {{run_as: root}}
tenants:
  t1:
    login: app
    jobs:
      touch: {{every: 2s, command: [/bin/sh, -c, "date +%s >> {proof}"]}}
"""
USER_JOB_CONFIG = """\
tenants:
  t1:
    login: app
    jobs:
      touch: {{every: 2s, command: [/bin/sh, -c, "date +%s >> {proof}"]}}
"""
# Kept by uninstall (see the module docstring); the test's own files are listed where they are made.
KEPT_STATE = "/var/lib/taskserver"


def write_config(root: Path, text: str = JOB_CONFIG.format(proof=PROOF)) -> set[str]:
    """The admin's config, written into the (not yet booted) overlay; returns the paths it created."""
    path = root / CONFIG.lstrip("/")
    path.parent.mkdir(mode=0o755, exist_ok=True)
    path.write_text(text)
    path.chmod(0o644)
    # The unit's ProtectSystem=strict makes / read-only for the daemon and its jobs: a path a job writes
    # must exist and be given with --writable (WRITABLE), as an admin would.
    (root / PROOF.lstrip("/")).touch()
    return {"/etc/taskserver", CONFIG, PROOF}


def install(m: Container, *args: str, user: tuple[str, int] | None = None) -> str:
    """Run taskserver-install inside (as root, or as user=(name, uid)); return its output; must exit 0."""
    argv = [INSTALL, *args]
    if user is not None:
        argv = ["runuser", "-u", user[0], "--", "env", f"XDG_RUNTIME_DIR=/run/user/{user[1]}", *argv]
    proc = m.sh(argv, check=False, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{out}\n{service_log(m)}"
    return out


def daemon_pids(m: Container) -> list[str]:
    """The main daemon's pid: the oldest match (a job's child matches too between fork and exec)."""
    return m.sh(["pgrep", "-o", "-f", f"{lab.VENV}/bin/taskserver "], check=False).stdout.split()


def assert_rerun_changes_nothing(m: Container) -> None:
    """The same install again: says unchanged, and the running daemon is left alone (not restarted)."""
    pids = daemon_pids(m)
    out = install(m, *WRITABLE)
    assert "unchanged" in out, out
    assert pids and daemon_pids(m) == pids, f"daemon restarted by an unchanged re-run: {pids} -> {out}"


def assert_reload_picks_up_a_new_job(m: Container, reload: list[str]) -> None:
    """The boot file's reload (SIGHUP) makes the same daemon run a job added to the config."""
    pid = daemon_pids(m)
    m.sh(["sh", "-c", f"cat >> {CONFIG}"],
         input=f'      reloaded: {{every: 2s, command: [/bin/sh, -c, "echo reloaded >> {PROOF}"]}}\n')
    m.sh(reload)
    wait_until(lambda: "reloaded" in m.path(PROOF).read_text(), 60, "the job added before the reload to run")
    assert daemon_pids(m) == pid, "reload restarted the daemon instead of reloading it"


def status(m: Container, *args: str, user: tuple[str, int] | None = None) -> dict[str, Any]:
    """`taskserver-install --status --json`: what the installer's backend reads from the live init."""
    data: dict[str, Any] = json.loads(install(m, "--status", "--json", *args, user=user))
    return {k: data[k] for k in ("installed", "enabled", "running")}


def service_log(m: Container) -> str:
    """What the daemon said, for failure messages: its journal under systemd, a foreground check on SysV."""
    if m.init == "systemd":
        argv = ["journalctl", "--no-pager", "-n", "40", "-u", "taskserver", "--user-unit", "taskserver"]
    else:
        argv = [f"{lab.VENV}/bin/taskserver", "-c", CONFIG, "check"]
    proc = m.sh(argv, check=False)
    return f"--- {' '.join(argv)} (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"


def proof_runs(m: Container, path: str = PROOF) -> int:
    """How many times the job has run (lines it appended); 0 before the first run."""
    return len(m.path(path).read_text().splitlines()) if m.exists(path) else 0


def proof_runs_offline(m: Container, path: str = PROOF) -> int:
    """The same, read through the overlay while the container is down."""
    p = m.overlay.root / path.lstrip("/")
    return len(p.read_text().splitlines()) if p.exists() else 0


def wait_job_runs(m: Container, after: int, path: str = PROOF) -> None:
    wait_until(lambda: proof_runs(m, path) > after, 60, f"the job to append to {path} (had {after} lines)")


def ok_runs_since(m: Container, since: datetime, user: str | None = None) -> list[dict[str, Any]]:
    """Runs the daemon itself recorded as OK that started at or after since (its `jobs history`)."""
    argv = [f"{lab.VENV}/bin/taskserver", "jobs", "history", "--json"]
    if user is None:
        argv[1:1] = ["-c", CONFIG]
    else:
        argv = ["runuser", "-u", user, "--", *argv]
    proc = m.sh(argv, check=False)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}: {proc.stdout}{proc.stderr}"
    runs: list[dict[str, Any]] = json.loads(proc.stdout)
    return [r for r in runs if r["state"] == "OK" and datetime.fromisoformat(r["started"]) >= since]


def reboot_and_wait(m: Container) -> tuple[int, datetime]:
    """Reboot, boot the same overlay again, wait for the init.

    Returns the job's run count before the boot and when the boot began (whole seconds, as history has).
    """
    assert m.reboot() == EXIT_REBOOT, m.console()
    before = proof_runs_offline(m)
    booted = datetime.now(UTC).replace(microsecond=0)
    m.boot()
    m.wait_ready()
    return before, booted


def no_taskserver_process(m: Container) -> bool:
    return m.sh(["pgrep", "-f", f"{lab.VENV}/bin/taskserver "], check=False).returncode == 1


def assert_nothing_of_ours_left(m: Container, own: set[str]) -> None:
    """After poweroff: the upper dir holds only the init's churn, the test's own files and kept state."""
    left = lab.leftovers(m.overlay) - own
    unexpected = {p for p in left if not (p == KEPT_STATE or p.startswith(KEPT_STATE + "/"))}
    assert unexpected == set(), f"left behind after uninstall: {sorted(unexpected)}"


# --- systemd ------------------------------------------------------------------------------------------------


def systemctl(m: Container, *args: str) -> str:
    return m.sh(["systemctl", *args], check=False).stdout.strip()


def test_systemd_install_reboot_disable_uninstall(installed: lab.Roots, machines: Machines) -> None:
    m = machines.container(installed("systemd"))
    own = write_config(m.overlay.root)
    m.boot()
    m.wait_ready()

    out = install(m, *WRITABLE)  # auto-detects systemd
    assert "systemd" in out and "live" in out, out
    assert systemctl(m, "is-active", "taskserver") == "active", out
    assert systemctl(m, "is-enabled", "taskserver") == "enabled"
    assert status(m) == {"installed": True, "enabled": True, "running": True}
    wait_job_runs(m, 0)
    assert_rerun_changes_nothing(m)
    assert_reload_picks_up_a_new_job(m, ["systemctl", "reload", "taskserver"])
    # Restart=always: a daemon that dies is brought back by systemd.
    pid = daemon_pids(m)
    m.sh(["kill", "-KILL", *pid])
    def restarted() -> bool:
        return daemon_pids(m) not in ([], pid) and systemctl(m, "is-active", "taskserver") == "active"

    wait_until(restarted, 60, "systemd to restart the killed daemon")

    before, booted = reboot_and_wait(m)
    assert systemctl(m, "is-active", "taskserver") == "active", m.console()
    wait_job_runs(m, before)
    assert ok_runs_since(m, booted), "the daemon recorded no OK run since the reboot"

    # The admin's "disable" wins over a re-run of the installer, and the next boot honours it.
    m.sh(["systemctl", "disable", "taskserver"])
    install(m, *WRITABLE)
    assert systemctl(m, "is-enabled", "taskserver") == "disabled"
    reboot_and_wait(m)
    assert systemctl(m, "is-active", "taskserver") == "inactive", "a disabled unit started at boot"
    assert status(m) == {"installed": True, "enabled": False, "running": False}

    out = install(m, "--uninstall")
    assert systemctl(m, "is-active", "taskserver") in ("inactive", "unknown"), out
    assert m.sh(["systemctl", "cat", "taskserver"], check=False).returncode != 0, "unit still known"
    assert status(m)["installed"] is False
    assert no_taskserver_process(m)
    assert m.poweroff() == 0
    assert_nothing_of_ours_left(m, own)


ADMINS_UNIT = "/srv/admin/taskserver.service"  # the admin's own service, linked where our unit was


def main_command(m: Container) -> str:
    """The command line of the service's main process, as the kernel has it ('' when none runs)."""
    pid = systemctl(m, "show", "-p", "MainPID", "--value", "taskserver")
    if pid in ("", "0"):
        return ""
    return m.sh(["cat", f"/proc/{pid}/cmdline"], check=False).stdout.replace("\0", " ").strip()


def test_systemd_a_unit_the_admin_made_their_own_survives_uninstall_and_reboot(installed: lab.Roots,
                                                                               machines: Machines) -> None:
    """The admin replaced our unit with their own through systemd's tools (`systemctl link`, `enable`,
    `restart`) on a running machine: uninstall neither stops nor disables it, and the next boot starts it."""
    m = machines.container(installed("systemd"))
    own = write_config(m.overlay.root)
    admins = m.overlay.root / ADMINS_UNIT.lstrip("/")
    admins.parent.mkdir(parents=True)
    admins.write_text("[Unit]\nDescription=the admin's own service\n[Service]\nExecStart=/bin/sleep 86400\n"
                      "[Install]\nWantedBy=multi-user.target\n")
    own |= {"/srv", "/srv/admin", ADMINS_UNIT}
    m.boot()
    m.wait_ready()
    install(m, *WRITABLE)
    assert "taskserver" in main_command(m), main_command(m)

    m.sh(["rm", "/etc/systemd/system/taskserver.service"])
    m.sh(["systemctl", "link", ADMINS_UNIT])
    m.sh(["systemctl", "enable", "taskserver"])
    m.sh(["systemctl", "restart", "taskserver"])
    assert main_command(m) == "/bin/sleep 86400"
    served = systemctl(m, "show", "-p", "MainPID", "--value", "taskserver")

    out = install(m, "--uninstall")
    assert "the admin's now" in out and "not stopped, not disabled" in out, out
    now = systemctl(m, "show", "-p", "MainPID", "--value", "taskserver")
    assert now == served, f"the admin's service was stopped or restarted: {served} -> {now}"
    assert systemctl(m, "is-enabled", "taskserver") == "enabled", out
    assert status(m)["installed"] is False

    reboot_and_wait(m)
    assert systemctl(m, "is-active", "taskserver") == "active", m.console()
    assert main_command(m) == "/bin/sleep 86400"
    assert no_taskserver_process(m)
    assert m.poweroff() == 0
    left = {p for p in lab.leftovers(m.overlay) - own if not p.startswith(KEPT_STATE)}
    # all that names the service is the admin's: their link in place of our unit, and its enable link
    assert {p for p in left if "taskserver" in p} == {
        "/etc/systemd/system/taskserver.service",
        "/etc/systemd/system/multi-user.target.wants/taskserver.service",
    }, sorted(left)


def test_a_linked_manifest_directory_on_a_live_machine_is_refused(installed: lab.Roots,
                                                                  machines: Machines) -> None:
    """The live /var/lib/taskserver-install (no --root) as a link to a directory a user owns, holding a
    forged manifest: install, --status and --uninstall refuse it with one line naming the link and write
    nothing, here or in the user's directory (tests/security/test_installer_manifest_dir.py: in trees)."""
    m = machines.container(installed("systemd"))
    write_config(m.overlay.root)
    m.boot()
    m.wait_ready()
    m.sh(["useradd", "--create-home", "mallory"])
    m.sh(["runuser", "-u", "mallory", "--", "sh", "-c",
          "mkdir ~/fake && printf '{\"files\": []}' > ~/fake/taskserver.json"])
    m.sh(["ln", "-s", "/home/mallory/fake", "/var/lib/taskserver-install"])
    look = ["sh", "-c", "ls -la --time-style=full-iso /home/mallory/fake; cat /home/mallory/fake/*"]
    before = m.sh(look).stdout
    for argv in ([*WRITABLE], ["--status"], ["--uninstall"], ["--uninstall", "--purge"]):
        res = m.sh([INSTALL, *argv], check=False, timeout=180)
        err = res.stderr.strip().splitlines()
        assert res.returncode == 1, (argv, res)
        assert "/var/lib/taskserver-install is a symbolic link" in err[0], res
        assert "Traceback" not in res.stderr, res
    assert not m.exists("/etc/systemd/system/taskserver.service"), "the unit was written"
    assert systemctl(m, "is-active", "taskserver") != "active"
    assert m.sh(look).stdout == before
    assert m.poweroff() == 0


def test_systemd_user_unit_with_linger(installed: lab.Roots, machines: Machines) -> None:
    m = machines.container(installed("systemd"))
    m.boot()
    m.wait_ready()
    m.sh(["useradd", "-m", "alice"])
    uid = int(m.sh(["id", "-u", "alice"]).stdout)
    home = "/home/alice"
    proof = f"{home}/ts-proof"
    m.sh(["runuser", "-u", "alice", "--", "sh", "-c",
          'mkdir -p ~/.config/taskserver && cat > ~/.config/taskserver/taskserver.yaml'],
         input=USER_JOB_CONFIG.format(proof=proof))
    m.sh(["loginctl", "enable-linger", "alice"])
    wait_until(lambda: systemctl(m, "is-active", f"user@{uid}.service") == "active", 60, "alice's manager")

    def user_systemctl(*args: str) -> str:
        return m.sh(["runuser", "-u", "alice", "--", "env", f"XDG_RUNTIME_DIR=/run/user/{uid}",
                     "systemctl", "--user", *args], check=False).stdout.strip()

    out = install(m, "--init", "systemd", "--user", user=("alice", uid))
    assert user_systemctl("is-active", "taskserver") == "active", out
    assert status(m, "--user", user=("alice", uid)) == {"installed": True, "enabled": True, "running": True}
    wait_job_runs(m, 0, proof)

    assert m.reboot() == EXIT_REBOOT
    before = proof_runs_offline(m, proof)
    booted = datetime.now(UTC).replace(microsecond=0)
    m.boot()
    m.wait_ready()
    wait_until(lambda: user_systemctl("is-active", "taskserver") == "active", 60,
               "the user unit to come back by itself after reboot")
    wait_job_runs(m, before, proof)
    assert ok_runs_since(m, booted, user="alice"), "alice's daemon recorded no OK run since the reboot"

    out = install(m, "--uninstall", "--user", user=("alice", uid))
    assert user_systemctl("is-active", "taskserver") in ("inactive", "unknown"), out
    assert no_taskserver_process(m)
    assert m.poweroff() == 0
    unit_dir = f"{home}/.config/systemd/user"
    left = {p for p in lab.upper_dir_files(m.overlay) if p.startswith(unit_dir + "/")}
    assert left == set(), f"left in {unit_dir}: {sorted(left)}"
    # Whole machine: only what useradd and the test made, and alice's daemon state (data, kept).
    skel = lab.variant_root("systemd") / "etc/skel"
    made = {f"/etc/{n}{b}" for n in ("passwd", "group", "shadow", "gshadow", "subuid", "subgid")
            for b in ("", "-")}
    made |= {home, proof, f"{home}/.config", f"{home}/.config/taskserver",
             f"{home}/.config/taskserver/taskserver.yaml", f"{home}/.local", f"{home}/.local/state"}
    made |= {f"{home}/{p.name}" for p in skel.iterdir()}
    kept = f"{home}/.local/state/taskserver"
    unexpected = {p for p in lab.leftovers(m.overlay) - made if not (p == kept or p.startswith(kept + "/"))}
    assert unexpected == set(), f"left behind after uninstall --user: {sorted(unexpected)}"


# --- SysV ---------------------------------------------------------------------------------------------------

def rc_links(m: Container) -> list[str]:
    out = m.sh(["sh", "-c", "ls /etc/rc?.d | grep -E '^[SK][0-9]{2}taskserver$' || true"]).stdout
    return out.split()


def start_links(m: Container) -> list[str]:
    """The multi-user runlevels' start links for us (what makes the service come up at boot)."""
    out = m.sh(["sh", "-c", "ls -d /etc/rc[2-5].d/S[0-9][0-9]taskserver 2>/dev/null || true"]).stdout
    return out.split()


def sysv_status(m: Container) -> int:
    return m.sh(["/etc/init.d/taskserver", "status"], check=False).returncode


@pytest.mark.parametrize("registrar", ["update-rc.d", "insserv"])
def test_sysv_install_reboot_uninstall(registrar: str, installed: lab.Roots, machines: Machines) -> None:
    m = machines.container(installed("sysv"))
    own = write_config(m.overlay.root)
    m.boot()
    m.wait_ready()
    if registrar == "insserv":
        # Without update-rc.d the installer must register with insserv itself.
        m.sh(["mv", "/usr/sbin/update-rc.d", "/root/update-rc.d.away"])
        own |= {"/usr/sbin/update-rc.d", "/root/update-rc.d.away"}
    detected = m.sh([INSTALL, "--detect", "--json"]).stdout
    assert f'"{registrar}"' in detected, detected

    out = install(m, *WRITABLE)
    assert "sysv" in out and "live" in out, out
    assert sysv_status(m) == 0, out
    links = rc_links(m)
    assert any(x.startswith("S") for x in links) and any(x.startswith("K") for x in links), links
    assert start_links(m), links
    assert status(m) == {"installed": True, "enabled": True, "running": True}
    wait_job_runs(m, 0)
    assert_rerun_changes_nothing(m)
    assert_reload_picks_up_a_new_job(m, ["/etc/init.d/taskserver", "reload"])

    before, booted = reboot_and_wait(m)
    wait_until(lambda: sysv_status(m) == 0, 60, "the init script to report running after reboot")
    wait_job_runs(m, before)
    assert ok_runs_since(m, booted), "the daemon recorded no OK run since the reboot"

    if registrar == "update-rc.d":
        # The admin's "update-rc.d NAME disable" wins over a re-run of the installer and over the next boot.
        m.sh(["update-rc.d", "taskserver", "disable"])
        install(m, *WRITABLE)
        assert start_links(m) == [], "a re-run of the installer re-enabled the service"
        reboot_and_wait(m)
        assert sysv_status(m) == 3, "a disabled service started at boot"
        assert status(m) == {"installed": True, "enabled": False, "running": False}

    out = install(m, "--uninstall")
    # The script is gone now; ask the daemon itself (LSB: 3 = not running).
    daemon = m.sh([f"{lab.VENV}/bin/taskserver", "-c", CONFIG, "status"], check=False)
    assert daemon.returncode == 3, out + daemon.stdout + daemon.stderr
    assert rc_links(m) == [], out
    assert not m.exists("/etc/init.d/taskserver")
    assert no_taskserver_process(m)
    assert m.poweroff() == 0
    # Strict: insserv renumbers other services' links when ours comes and goes; uninstall must put their
    # numbers back (lab.sysv_registrar_churn would excuse that, but the installer does restore them).
    assert_nothing_of_ours_left(m, own)


# --- offline: installed into an unbooted root, then booted ----------------------------------------------


def processes_in(root: Path) -> list[int]:
    """Host processes whose root directory is inside the given tree (what a chroot install started)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/root").startswith(str(root)):
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


@pytest.mark.parametrize("how", ["chroot", "--root"])
@pytest.mark.parametrize("name", sorted(lab.VARIANTS))
def test_offline_install_then_boot(name: str, how: str, installed: lab.Roots, machines: Machines) -> None:
    """An image build: the root is not booted; files and boot links only, then the first boot starts it.

    "chroot" runs the root's own installer inside it; "--root" runs this machine's installer on the tree
    (the executable is then the root's, given explicitly).
    """
    m = machines.container(installed(name))
    root = m.overlay.root
    write_config(root)
    if how == "chroot":
        argv = ["chroot", str(root), INSTALL, *WRITABLE]
    else:
        host_installer = Path(sys.executable).with_name("taskserver-install")
        argv = [str(host_installer), "--root", str(root), "--executable", f"{lab.VENV}/bin/taskserver",
                *WRITABLE]
    host_files = ("/etc/systemd/system/taskserver.service", "/etc/init.d/taskserver", "/etc/sv/taskserver",
                  "/etc/runit/runsvdir/default/taskserver", "/var/lib/taskserver-install/taskserver.json")
    host_before = [os.path.lexists(p) for p in host_files]
    proc = subprocess.run(argv, capture_output=True, text=True, env=lab.CLEAN_ENV, check=False, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{out}"
    assert "offline" in out, out
    assert processes_in(root) == [], "the offline install started something"
    assert [os.path.lexists(p) for p in host_files] == host_before, "the install wrote outside the root"

    m.boot()
    m.wait_ready()
    wait_job_runs(m, 0)  # started by the init system by itself, from the files and links written offline
    assert status(m) == {"installed": True, "enabled": True, "running": True}
    assert m.poweroff() == 0
