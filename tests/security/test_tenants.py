"""Classes 5, 7, 9 and 10: tenants isolated by Unix user, the root rule at every spawn, jobs commands with
the target's own groups, state resolved once and nothing world-readable.

A root-owned config (as an admin writes it) with a daemon user and one user per tenant; the daemon is started
by root; the attacks run as the tenants' jobs, as a stranger, or as root.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import shlex
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from secusers import (
    TASKSERVER,
    USER_ENV,
    USER_TASKSERVER,
    Lab,
    Site,
    lab,
    needs_root,
    one_error,
    snapshot,
    tenant_site,
    wait_for,
    write,
)

pytestmark = needs_root
WHOAMI = "{command: [/usr/bin/id]}"


@pytest.fixture
def site() -> Iterator[Site]:
    with lab() as world:
        yield tenant_site(world, lambda a, b: (
            f"  a:\n    login: shop-a\n    run_as: {a.name}\n    jobs:\n      whoami: {WHOAMI}\n"
            f"  b:\n    login: shop-b\n    run_as: {b.name}\n    jobs:\n      whoami: {WHOAMI}\n"))


def _json(res: object) -> object:
    assert getattr(res, "returncode", 1) == 0, res
    return json.loads(getattr(res, "stdout", ""))


def _finished(site: Site, tenant: str, run_id: int) -> dict[str, object]:
    def done() -> bool:
        got = _json(site.world.ts(site.cfg, "jobs", "show", "--tenant", tenant, str(run_id), "--json"))
        return isinstance(got, dict) and got["state"] in ("OK", "ERR")

    assert wait_for(done, 60)
    got = _json(site.world.ts(site.cfg, "jobs", "show", "--tenant", tenant, str(run_id), "--json"))
    assert isinstance(got, dict)
    return got


def _run_now(site: Site, tenant: str, command: str, *argv: str) -> int:
    res = site.world.ts(site.cfg, "jobs", command, "--tenant", tenant, "--json", *argv)
    got = _json(res)
    assert isinstance(got, dict)
    return int(got["id"])


def _proc_status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _daemon_status(pid: int, site: Site) -> dict[str, str]:
    """The daemon's status once its filesystem uid is its own again: it touches a tenant's files with that
    tenant's filesystem ids (runtime/caps.py), for a moment at a time; its real, effective and saved uids
    never change, and are checked at every look."""
    own, tenants = str(site.daemon_user.uid), {str(site.a.uid), str(site.b.uid)}
    deadline = time.monotonic() + 10
    while True:
        status = _proc_status(pid)
        uids = status["Uid"].split()
        assert uids[:3] == [own] * 3 and uids[3] in {own, *tenants}, status["Uid"]
        if uids[3] == own or time.monotonic() > deadline:
            return status
        time.sleep(0.01)


def test_each_tenant_runs_as_its_user_and_cannot_touch_the_other(site: Site) -> None:
    daemon = site.world.daemon(site.cfg)
    # the daemon: its own user (all four uids), and of root's powers only what switching users needs
    status = _daemon_status(daemon.pid, site)
    assert status["Uid"].split() == [str(site.daemon_user.uid)] * 4, status["Uid"]
    kept = (1 << 0) | (1 << 5) | (1 << 6) | (1 << 7)  # CAP_CHOWN, CAP_KILL, CAP_SETGID, CAP_SETUID
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == kept, status
    assert int(status["CapInh"], 16) == int(status["CapAmb"], 16) == 0, status
    a_id = _run_now(site, "a", "run", "whoami")
    b_id = _run_now(site, "b", "run", "whoami")
    for tenant, user, run_id in (("a", site.a, a_id), ("b", site.b, b_id)):
        run = _finished(site, tenant, run_id)
        assert run["state"] == "OK", run
        assert str(run["output"]).startswith(f"uid={user.uid}({user.name}) gid={user.gid}"), run
    b_store = site.state / "tenants" / "b"
    words = ["env", *(f"{k}={v}" for k, v in USER_ENV.items()), *USER_TASKSERVER]
    ts = " ".join(shlex.quote(w) for w in words)
    b_db = str(b_store / "b.sqlite")
    before = snapshot(b_store / "b.sqlite")
    # tenant a's job attacks b: history, enqueue, finish, and the files themselves
    script = (f'{ts} jobs history --tenant b; echo "history=$?"; '
              f'{ts} jobs enqueue --tenant b -- /bin/true; echo "enqueue=$?"; '
              f'{ts} jobs finish --tenant b {b_id} --status err; echo "finish=$?"; '
              f'{ts} jobs show --tenant b {b_id}; echo "show=$?"; '
              f'cat {b_store}/b.sqlite > /dev/null; echo "read=$?"; '
              f'ls {b_store}/status > /dev/null; echo "list=$?"; grep -E "^Cap(Prm|Eff)" /proc/self/status')
    attack = _run_now(site, "a", "enqueue", "--", "/bin/sh", "-c", script)
    out = str(_finished(site, "a", attack)["output"])
    for word in ("history", "enqueue", "finish", "show"):
        assert f"{word}=4" in out, out
    assert out.count("permission denied: tenant 'b' belongs to") == 4, out
    assert "read=1" in out and "list=2" in out, out
    assert "CapPrm:\t0000000000000000" in out and "CapEff:\t0000000000000000" in out, out  # none kept
    b_runs = _json(site.world.ts(site.cfg, "jobs", "history", "--tenant", "b", "--json"))
    assert isinstance(b_runs, list) and [r["id"] for r in b_runs] == [b_id] and b_runs[0]["state"] == "OK"
    # the store may have been checkpointed by the daemon meanwhile; what matters is its owner and mode
    assert snapshot(b_store / "b.sqlite")[b_db][:3] == before[b_db][:3]
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0, site.world.log()


def test_files_belong_to_each_tenant_and_nothing_is_world_readable(site: Site) -> None:
    daemon = site.world.daemon(site.cfg)
    for tenant in ("a", "b"):
        _finished(site, tenant, _run_now(site, tenant, "enqueue", "--", "/bin/true"))
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    for tenant, user in (("a", site.a), ("b", site.b)):
        home = site.state / "tenants" / tenant
        st = home.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (user.uid, site.daemon_user.gid, 0o770)
        files = [p for p in home.rglob("*") if p.is_file()]
        assert any(p.name == f"{tenant}.sqlite" for p in files) and any("status" in p.parts for p in files)
        for path in [home, *home.rglob("*")]:
            assert path.stat().st_uid == user.uid, path
    for path in [site.state, *site.state.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        others = mode & 0o007
        assert others in (0, 0o001) and not (path.is_file() and others), f"{path}: {mode:04o}"


def test_only_root_the_tenant_user_and_the_daemon_user_may_use_a_tenant(site: Site) -> None:
    run_id = _run_now(site, "a", "enqueue", "--", "/bin/true")  # as root: creates a's directory and store
    world, cfg = site.world, site.cfg
    for argv in (["show", str(run_id)], ["history"], ["enqueue", "--", "/bin/true"],
                 ["finish", str(run_id), "--status", "ok"]):
        res = world.ts(cfg, "jobs", argv[0], "--tenant", "a", *argv[1:], user=site.stranger)
        line = one_error(res)
        assert "permission denied: tenant 'a' belongs to" in line and res.returncode == 4, line
    for allowed in (site.a, site.daemon_user):
        res = world.ts(cfg, "jobs", "history", "--tenant", "a", user=allowed)
        assert res.returncode == 0 and "task /bin/true" in res.stdout, (allowed, res)
    listed = world.ts(cfg, "jobs", "list", user=site.stranger)
    assert listed.returncode == 0 and "permission denied" in listed.stdout, listed


def _root_config(world: Lab, jobs: str) -> Path:
    return write(world.base / "etc" / "root.yaml", (
        f"task_server:\n  state_dir: {world.base}/rstate\n"
        f"tenants:\n  t:\n    login: app\n{jobs}"))


def test_root_rule_holds_for_a_task_queued_into_a_tenant_without_jobs(site: Site) -> None:
    world = site.world
    out = world.base / "as-root.out"
    cfg = _root_config(world, "")  # no jobs: start's check has nothing to refuse
    res = world.ts(cfg, "jobs", "enqueue", "--json", "--", "/bin/sh", "-c", f"id > {out}")
    run_id = json.loads(res.stdout)["id"]
    done = world.ts(cfg, "run", "--once")
    assert done.returncode == 0, done.stderr
    run = json.loads(world.ts(cfg, "jobs", "show", str(run_id), "--json").stdout)
    assert run["state"] == "ERR" and run["reason"] == "refused", run
    assert "refusing to run a job as root" in run["output"], run
    assert not out.exists()


def test_root_rule_holds_for_a_job_added_by_reload(site: Site) -> None:
    world = site.world
    out = world.base / "reload-root.out"
    cfg = _root_config(world, "")
    daemon = world.daemon(cfg)
    assert wait_for(lambda: world.ts(cfg, "status").returncode == 0)
    _root_config(world, f'    jobs:\n      sneaky:\n        every: 1s\n        shell: true\n'
                        f'        command: "id > {out}"\n')
    assert world.ts(cfg, "reload").returncode == 0

    def refused() -> bool:
        runs = json.loads(world.ts(cfg, "jobs", "history", "sneaky", "--json").stdout or "[]")
        return any(r["reason"] == "refused" for r in runs)

    assert wait_for(refused, 30)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    assert not out.exists()


def test_jobs_commands_act_with_the_target_users_groups_not_roots(site: Site) -> None:
    """A tenant's store: pointing at a root:root 0660 file: root's supplementary groups must not open it."""
    world = site.world
    victim = world.base / "root-only" / "victim.sqlite"
    victim.parent.mkdir(mode=0o775)
    os.chown(victim.parent, 0, 0)
    with contextlib.closing(sqlite3.connect(victim)) as db:  # a real database root keeps there
        db.execute("CREATE TABLE secrets (x TEXT)")
        db.commit()
    victim.chmod(0o660)
    before = snapshot(victim.parent)
    cfg = write(world.base / "etc" / "groups.yaml", (
        f"task_server:\n  run_as: {site.daemon_user.name}\n  state_dir: {site.state}\n"
        f"tenants:\n  t:\n    login: app\n    store: {{sqlite: {victim}}}\n"))
    # root as a login session has it: supplementary group 0 (root), which opens that file
    login_root = ["setpriv", "--groups=0", "--", TASKSERVER, "-c", str(cfg), "jobs"]
    for argv in (["enqueue", "--", "/bin/true"], ["history"], ["show", "1"]):
        res = subprocess.run([*login_root, argv[0], "--tenant", "t", *argv[1:]], env=world.env(),
                             capture_output=True, text=True, check=False)
        line = one_error(res)
        # refused by the config check (a store must lie inside state_dir) or, were it let through, by the
        # tenant user's own rights; test_acting_as_a_user_takes_exactly_that_users_groups proves the latter
        assert "Permission denied" in line or "inside state_dir" in line, line
    assert snapshot(victim.parent) == before


_GROUPS_PROBE = """
import os, sys
from taskserver.runtime import privs
with privs.acting_as(privs.resolve(sys.argv[1])):
    print(os.geteuid(), os.getegid(), sorted(os.getgroups()))
print(os.geteuid(), os.getegid(), sorted(os.getgroups()))
"""


def test_acting_as_a_user_takes_exactly_that_users_groups(site: Site) -> None:
    """Root started with extra supplementary groups (as from a login session) keeps none of them while it
    acts for a user, and gets all of them back afterwards."""
    world = site.world
    extra = world.group("xtra")
    member = world.user("memb", groups=(extra,))
    root_groups = sorted({0, grp.getgrnam("shadow").gr_gid})
    argv = ["setpriv", "--groups=" + ",".join(map(str, root_groups)), "--",
            sys.executable, "-c", _GROUPS_PROBE, member.name]
    res = subprocess.run(argv, capture_output=True, text=True, check=True, env=world.env())
    acting, back = res.stdout.splitlines()
    want = sorted(os.getgrouplist(member.name, member.gid))
    assert acting == f"{member.uid} {member.gid} {want}" and grp.getgrnam(extra).gr_gid in want, acting
    assert back == f"0 0 {root_groups}", back


def test_reload_keeps_the_state_dir_and_files_stay_private(site: Site) -> None:
    """No state_dir in the file and no $STATE_DIRECTORY: root resolves /var/lib/taskserver/<instance>; after
    the drop a reload used to compute the daemon user's own ~/.local/state (0755 dirs, 0644 status files)."""
    world, d = site.world, site.daemon_user
    cfg = write(world.base / "etc" / "noreload.yaml",
                f"task_server:\n  run_as: {d.name}\ntenants:\n  t:\n    login: app\n")
    base = Path("/var/lib/taskserver")
    existed = base.exists()
    daemon = world.daemon(cfg)
    state = next(p for p in base.iterdir() if p.name.startswith("taskserver-noreload-"))
    try:
        write(cfg, f"task_server:\n  run_as: {d.name}\ntenants:\n  t:\n    login: app\n    jobs:\n"
                   "      added:\n        every: 1s\n        command: [/bin/true]\n")
        assert world.ts(cfg, "reload").returncode == 0
        status = state / "status" / "t" / "added.job"
        assert wait_for(lambda: status.exists() and status.read_text().startswith("OK"), 30), world.log()
        assert not (d.home / ".local").exists(), world.log()
        assert state.stat().st_uid == d.uid
        for path in [state, *state.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert not mode & 0o006 and not (path.is_file() and mode & 0o001), f"{path}: {mode:04o}"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        shutil.rmtree(state, ignore_errors=True)
        if not existed:
            with contextlib.suppress(OSError):
                base.rmdir()
