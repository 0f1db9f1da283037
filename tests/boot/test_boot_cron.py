"""The cron backend proven by Debian's own cron daemon, in a booted SysV root (cron starts at boot there).

Two entries at once, so one minute of waiting proves both: root's crontab, and the crontab of a non-root
--run-as user. Each crontab already holds an admin's line; within about a minute cron fires our entry, the
daemon runs once (`run --once --time-limit 55`) and the job records the uid it ran as. `--uninstall --purge`
then gives each crontab back byte for byte and removes the state the runs left (the user's is in its home).
"""

from __future__ import annotations

import lab
import pytest
from lab_machine import Container, Machines, wait_until
from test_boot_install import INSTALL

pytestmark = pytest.mark.boot

USER = "tscron"
ADMIN_LINES = "# the admin's own entry\n17 3 * * * /bin/true\n"
ENTRIES = {  # service name -> (run_as, config, proof file)
    "ts-cron-root": (None, "/etc/taskserver/root.yaml", "/var/lib/ts-proof-root"),
    "ts-cron-user": (USER, "/etc/taskserver/user.yaml", "/var/lib/ts-proof-user"),
}


def config(run_as: str | None, proof: str) -> str:
    return ("task_server: {run_as: " + (run_as or "root") + "}\n"
            "tenants:\n  t1:\n    login: app\n    jobs:\n"
            f"      uid: {{every: 1s, command: [/bin/sh, -c, \"id -u >> {proof}\"]}}\n")


def crontab(m: Container, user: str) -> str:
    return m.sh(["crontab", "-u", user, "-l"]).stdout


def test_cron_daemon_fires_our_entries_and_uninstall_keeps_the_rest(installed: lab.Roots,
                                                                    machines: Machines) -> None:
    m = machines.container(installed("sysv"))
    m.boot()
    m.wait_ready()
    assert m.sh(["pgrep", "-x", "cron"], check=False).returncode == 0, "Debian's cron daemon is not running"
    m.sh(["useradd", "--create-home", USER])
    uids = {None: 0, USER: int(m.sh(["id", "-u", USER]).stdout)}
    for user in ("root", USER):
        m.sh(["crontab", "-u", user, "-"], input=ADMIN_LINES)
    for name, (run_as, path, proof) in ENTRIES.items():
        m.sh(["sh", "-c", f"mkdir -p /etc/taskserver && cat > {path} && touch {proof} && chmod 666 {proof}"],
             input=config(run_as, proof))
        args = ["--init", "cron", "--name", name, "--config", path, *(["--run-as", run_as] if run_as else [])]
        out = m.sh([INSTALL, *args], check=False, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
    for user in ("root", USER):
        text = crontab(m, user)
        assert text.startswith(ADMIN_LINES) and "run --once --time-limit 55" in text, text

    for run_as, _path, proof in ENTRIES.values():
        # cron reads changed crontabs at the next minute; the entry fires then: at most about 2 minutes
        wait_until(lambda p=proof: m.path(p).read_text().strip() != "", 150, f"cron to run the job ({proof})")
        assert set(m.path(proof).read_text().split()) == {str(uids[run_as])}

    for name in ENTRIES:
        out = m.sh([INSTALL, "--uninstall", "--purge", "--name", name], check=False, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
    for user in ("root", USER):
        assert crontab(m, user) == ADMIN_LINES
    wait_until(lambda: m.sh(["pgrep", "-f", f"{lab.VENV}/bin/taskserver "], check=False).returncode == 1,
               70, "the last run of the entry to end")
    assert m.poweroff() == 0
    changed = lab.upper_dir_files(m.overlay)
    left = {p for p in changed if "taskserver" in p and not p.startswith("/etc/taskserver")}
    # the daemon made the user's XDG state dir (~/.local/state) for its own; that base is not ours to remove
    left |= {p for p in changed if p.startswith(f"/home/{USER}/.local/state/")}
    assert left == set(), f"left behind by --uninstall --purge: {sorted(left)}"
