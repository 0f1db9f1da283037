"""Class 1, config trust: a config a user controls makes root do only what that user could do.

Every attack is set up by a real throwaway user (its own home, its own files) and then triggered by root, as
an admin would by running `taskserver -c ~user/...` or with $TASKSERVER_CONFIG pointing there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from secusers import Lab, User, lab, needs_root, one_error, snapshot, write

pytestmark = needs_root


@pytest.fixture
def world() -> Iterator[Lab]:
    with lab() as the_lab:
        yield the_lab


def _job_config(out: Path, extra_server: str = "", tenant_extra: str = "") -> str:
    return ("task_server:\n" + (extra_server or "  debug: false\n") +
            "tenants:\n  t:\n    login: app\n" + tenant_extra +
            f"    jobs:\n      probe:\n        every: 1h\n        shell: true\n"
            f'        command: "id > {out}"\n')


def test_user_config_cannot_name_a_group_the_user_is_not_in(world: Lab) -> None:
    u, other = world.user("mall"), world.user("othr")
    out = u.home / "id.out"
    for server, tenant, what in (
        ("", f"    run_as: {other.name}\n", f"tenants.t.run_as: {other.name} is not allowed"),
        (f"  run_as: {u.name}:shadow\n", "", "is not a member of group shadow"),
        ("", "    run_as: root\n", "tenants.t.run_as: root is not allowed"),
        ("", f"    run_as: {u.name}:shadow\n", "is not a member of group shadow"),
        ("  run_as: root\n", "", "task_server.run_as: root is not allowed"),
    ):
        cfg = write(u.home / "ts.yaml", _job_config(out, server, tenant), owner=u)
        for argv in (["run", "--once"], ["jobs", "list"], ["check"]):
            line = one_error(world.ts(cfg, *argv))
            assert what in line, (argv, line)
        assert not out.exists()


def test_user_config_runs_its_jobs_as_that_user_even_when_root_starts_it(world: Lab) -> None:
    """The positive side: no run_as at all, started by root: the job still runs as the file's owner."""
    u = world.user("own")
    out = u.home / "id.out"
    cfg = write(u.home / "ts.yaml", _job_config(out, f"  state_dir: {u.home}/state\n"), owner=u)
    assert world.ts(cfg, "jobs", "run", "probe").returncode == 0
    res = world.ts(cfg, "run", "--once")
    assert res.returncode == 0, res.stderr
    assert out.read_text().startswith(f"uid={u.uid}({u.name})"), out.read_text()
    assert out.stat().st_uid == u.uid
    state = u.home / "state"
    assert state.stat().st_uid == u.uid and not any(p.stat().st_uid == 0 for p in state.rglob("*"))


def test_state_dir_naming_a_root_directory_is_never_chowned(world: Lab) -> None:
    u = world.user("stat")
    victim = world.base / "rootdir"
    victim.mkdir(mode=0o755)
    write(victim / "keep.txt", "root's\n")
    missing_parent = world.base / "rootparent"
    missing_parent.mkdir(mode=0o755)
    before = {**snapshot(victim), **snapshot(missing_parent)}
    for target, expect in ((victim, "belongs to uid 0"), (missing_parent / "new", "Permission denied")):
        cfg = write(u.home / "ts.yaml", _job_config(u.home / "id.out", f"  state_dir: {target}\n"), owner=u)
        for argv in (["run", "--once"], ["jobs", "enqueue", "--tenant", "t", "--", "/bin/true"],
                     ["jobs", "run", "--tenant", "t", "probe"]):
            line = one_error(world.ts(cfg, *argv))
            assert "state_dir" in line or "run store" in line, (argv, line)
            assert expect in line or "Permission denied" in line or "permission denied" in line, line
        after = {**snapshot(victim), **snapshot(missing_parent)}
        assert after == before  # no chown, no chmod, no file
    assert not (u.home / "id.out").exists()


def test_root_with_taskserver_config_in_a_home_does_nothing_the_user_could_not(world: Lab) -> None:
    """`TASKSERVER_CONFIG=~user/... taskserver jobs list` run by root chowned the state dir before."""
    u = world.user("envc")
    victim = world.base / "var-lib"
    victim.mkdir(mode=0o755)
    cfg = write(u.home / "ts.yaml", _job_config(u.home / "id.out", f"  state_dir: {victim}\n"), owner=u)
    before = snapshot(victim)
    env = {"TASKSERVER_CONFIG": str(cfg)}
    listed = world.ts(None, "jobs", "list", env=env)
    assert listed.returncode == 0, listed.stderr  # reading the config is fine; it touches nothing
    assert re.search(r"^t\s+probe\s", listed.stdout, re.M), listed.stdout  # the table's tenant and job
    for argv in (["jobs", "enqueue", "--", "/bin/true"], ["jobs", "history"], ["jobs", "show", "1"]):
        world.ts(None, *argv, env=env)
    assert snapshot(victim) == before


def test_group_or_world_writable_parent_directory_is_refused(world: Lab) -> None:
    u = world.user("wpar")
    opened = world.base / "open"
    opened.mkdir()
    cfg = write(opened / "ts.yaml", _job_config(world.base / "id.out"))
    for mode in (0o777, 0o775):
        opened.chmod(mode)
        for argv in (["run", "--once"], ["jobs", "list"]):
            assert "directory writable by group or others" in one_error(world.ts(cfg, *argv))
    opened.chmod(0o1777)  # sticky, like /tmp: nobody can replace root's file there
    assert world.ts(cfg, "check").returncode == 0
    # a root-owned config inside the user's directory: the user can swap it
    inside = u.home / "etc"
    inside.mkdir()
    os.chown(inside, u.uid, u.gid)
    cfg = write(inside / "ts.yaml", _job_config(world.base / "id.out"))
    line = one_error(world.ts(cfg, "run", "--once"))
    assert f"below a directory owned by uid {u.uid}" in line, line
    assert not (world.base / "id.out").exists()


def _symlink_as(user: User, target: Path, link: Path) -> None:
    link.symlink_to(target)
    os.lchown(link, user.uid, user.gid)


def test_symlinked_config_or_ancestor_is_judged_by_every_directory_on_the_way(world: Lab) -> None:
    u = world.user("syml")
    out = world.base / "id.out"
    etc = world.base / "etc"
    root_cfg = write(etc / "ts.yaml", _job_config(out, "  run_as: root\n"))
    # the user's link to root's config: the user can point it anywhere, so it is refused
    _symlink_as(u, root_cfg, u.home / "link.yaml")
    assert f"owned by uid {u.uid}" in one_error(world.ts(u.home / "link.yaml", "run", "--once"))
    # a symlinked ancestor in the user's home leading into root's directory
    _symlink_as(u, etc, u.home / "etcdir")
    assert f"owned by uid {u.uid}" in one_error(world.ts(u.home / "etcdir" / "ts.yaml", "run", "--once"))
    # root's link to a file the user owns: the file is the user's, so it may only run as that user
    mine = write(u.home / "real" / "ts.yaml", _job_config(out, "  run_as: root\n"), owner=u)
    os.chown(mine.parent, u.uid, u.gid)
    (etc / "via-link.yaml").symlink_to(mine)
    assert "run_as: root is not allowed" in one_error(world.ts(etc / "via-link.yaml", "run", "--once"))
    assert not out.exists()
