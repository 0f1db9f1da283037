"""The pid file under a booted systemd with `--run-as`: the unit runs the daemon as the run_as user, and
`RuntimeDirectory=` gives that user only /run/taskserver/u<UID>, never root's /run/taskserver. Root's own
commands, run with a bare environment as a SysV script or cron would, find the daemon there, signal it
(reload, enqueue's wake-up) and refuse a process the user planted that is not entirely the user's."""

from __future__ import annotations

import json
import os

import lab
import pytest
from lab_machine import Container, Machines, wait_until

pytestmark = pytest.mark.boot

CONFIG = "/etc/taskserver/taskserver.yaml"
TS = f"{lab.VENV}/bin/taskserver"
USER = "tsapp"
BARE = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]  # no XDG_RUNTIME_DIR, no RUNTIME_DIRECTORY


def _ts(m: Container, *args: str, check: bool = True) -> tuple[int, str]:
    proc = m.sh([*BARE, TS, "-c", CONFIG, *args], check=False)
    out = proc.stdout + proc.stderr
    assert not check or proc.returncode == 0, f"taskserver {' '.join(args)} exited {proc.returncode}: {out}"
    return proc.returncode, out


def _owner_mode(m: Container, inner: str) -> tuple[int, int]:
    st = os.stat(m.path(inner), follow_symlinks=False)
    return st.st_uid, st.st_mode & 0o7777


def test_systemd_run_as_gets_its_own_directory_and_root_finds_the_daemon(
        installed: lab.Roots, machines: Machines) -> None:
    m = machines.container(installed("systemd"))
    conf = m.overlay.root / CONFIG.lstrip("/")
    conf.parent.mkdir(mode=0o755, exist_ok=True)
    conf.write_text(f"task_server: {{run_as: {USER}, state_dir: /var/lib/taskserver}}\n"
                    f"tenants:\n  t1:\n    login: app\n")
    conf.chmod(0o644)
    m.boot()
    m.wait_ready()
    m.sh(["useradd", "--system", "--no-create-home", USER])
    uid = int(m.sh(["id", "-u", USER]).stdout)
    proc = m.sh([f"{lab.VENV}/bin/taskserver-install", "--run-as", USER], check=False, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    main = m.sh(["systemctl", "show", "-P", "MainPID", "taskserver"]).stdout.strip()
    assert main not in ("", "0"), m.sh(["journalctl", "-n", "40", "-u", "taskserver"], check=False).stdout

    assert _owner_mode(m, "/run/taskserver") == (0, 0o755)
    assert _owner_mode(m, f"/run/taskserver/u{uid}")[0] == uid
    assert m.exists(f"/run/taskserver/u{uid}/taskserver.lock")
    code, out = _ts(m, "status")
    assert f"running: pid {main}," in out, out
    _ts(m, "reload")
    code, out = _ts(m, "jobs", "enqueue", "--", "true")
    run_id = out.strip().splitlines()[-1]
    assert "no daemon" not in out, out

    def ok() -> bool:
        return bool(json.loads(_ts(m, "jobs", "show", run_id, "--json")[1])["state"] == "OK")

    wait_until(ok, 60, "the woken daemon to run the enqueued task")

    # The user plants pid and info files naming PID 1 in its directory, and a process that is not entirely
    # the user's holds the lock (root takes it for the test, as a setuid program the user exec'd after
    # locking would hold it): root's stop must refuse rather than signal anything.
    place = f"/run/taskserver/u{uid}"
    m.sh(["systemctl", "stop", "taskserver"])
    m.sh(["runuser", "-u", USER, "--", "sh", "-c",
          f"umask 077; echo 1 > {place}/taskserver.pid; echo '{{\"pid\": 1}}' > {place}/taskserver.info; "
          f": > {place}/taskserver.lock"])
    hold = (f"import fcntl, os, time; fd = os.open('{place}/taskserver.lock', os.O_RDWR); "
            "fcntl.lockf(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(300)")
    m.sh(["sh", "-c", f"python3 -c \"{hold}\" > /run/holder.out 2>&1 &"])
    wait_until(lambda: m.exists("/run/holder.out") and "locked" in m.path("/run/holder.out").read_text(),
               30, "the planted lock holder")
    code, out = _ts(m, "stop", check=False)
    assert code == 4 and "refusing to signal pid" in out and "runs as uids [0]" in out, out
    assert m.sh(["pgrep", "-f", "taskserver.lock"], check=False).returncode == 0, "the holder was signalled"
    m.sh(["pkill", "-f", "taskserver.lock"], check=False)
    assert m.poweroff() == 0
