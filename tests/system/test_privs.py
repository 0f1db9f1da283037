"""Privilege drop as root, with a REAL system user: the daemon and its jobs run with that uid, gid and the
supplementary groups initgroups() gives; started as root without run_as, the server refuses to run jobs."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonproc import Sandbox, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="creates a system user and drops root: needs root"),
    pytest.mark.skipif(shutil.which("useradd") is None, reason="needs useradd/groupadd (passwd package)"),
]


@pytest.fixture
def user() -> Iterator[tuple[str, str]]:
    """A fresh system user with a supplementary group; removed afterwards."""
    tag = uuid.uuid4().hex[:6]
    name, extra = f"tsrv{tag}", f"tsrvx{tag}"
    subprocess.run(["groupadd", "--system", extra], check=True)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "-G", extra, name],
        check=True,
    )
    try:
        yield name, extra
    finally:
        subprocess.run(["userdel", name], check=False)
        subprocess.run(["groupdel", extra], check=False)


@pytest.fixture
def box() -> Iterator[Sandbox]:
    # not under pytest's tmp_path: that is private to root, and the dropped user must reach its state dir
    base = Path(tempfile.mkdtemp(prefix="taskserver-privs-"))
    base.chmod(0o755)
    sandbox = Sandbox(base)
    yield sandbox
    sandbox.cleanup()
    shutil.rmtree(base, ignore_errors=True)


def _config(box: Sandbox, run_as: str | None, login: str) -> Path:
    state = box.base / "srv-state"
    cfg = box.base / "taskserver.yaml"
    run_as_line = f"  run_as: {run_as}\n" if run_as else ""
    cfg.write_text(
        "task_server:\n"
        f"{run_as_line}"
        f"  state_dir: {state}\n"
        "tenants:\n"
        "  acme:\n"
        f"    login: {login}\n"
        "    jobs:\n"
        "      whoami:\n"
        "        every: 1s\n"
        "        shell: true\n"
        f'        command: "id > {state}/id.out.tmp && mv {state}/id.out.tmp {state}/id.out"\n'
    )
    cfg.chmod(0o644)
    return cfg


def _proc_ids(pid: int) -> tuple[int, int, set[int]]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = {k: v.split() for k, _, v in (line.partition(":") for line in lines)}
    return int(fields["Uid"][0]), int(fields["Gid"][0]), {int(g) for g in fields["Groups"]}


def test_daemon_and_jobs_run_as_run_as_with_its_groups(user: tuple[str, str], box: Sandbox) -> None:
    name, extra = user
    pw = pwd.getpwnam(name)
    extra_gid = grp.getgrnam(extra).gr_gid
    cfg = _config(box, name, name)
    proc = box.popen(cfg, "run")
    out = box.base / "srv-state" / "id.out"
    try:
        assert wait_for(out.exists, 30), proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
        # all of uid, euid, saved uid (and gids) are the user's: root cannot come back
        uid, gid, groups = _proc_ids(proc.pid)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert f"Uid:\t{pw.pw_uid}\t{pw.pw_uid}\t{pw.pw_uid}\t{pw.pw_uid}" in status
        assert f"Gid:\t{pw.pw_gid}\t{pw.pw_gid}\t{pw.pw_gid}\t{pw.pw_gid}" in status
        assert (uid, gid) == (pw.pw_uid, pw.pw_gid) and extra_gid in groups and 0 not in groups
        # the job: `id` as the job saw itself
        ident = out.read_text()
        assert ident.startswith(f"uid={pw.pw_uid}({name}) gid={pw.pw_gid}({name})"), ident
        assert f"{extra_gid}({extra})" in ident, ident
        # the state dir root created was handed to the user; the pid file stayed root's, still locked
        state = box.base / "srv-state"
        assert (state.stat().st_uid, state.stat().st_gid) == (pw.pw_uid, pw.pw_gid)
        pidfile = box.pidfile(cfg)
        assert pidfile.stat().st_uid == 0
        assert box.ts(cfg, "status").returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert box.ts(cfg, "status").returncode == 3


def test_start_as_root_drops_too(user: tuple[str, str], box: Sandbox) -> None:
    name, _ = user
    cfg = _config(box, name, name)
    res = box.ts(cfg, "start")
    assert res.returncode == 0, res.stderr
    pid = box.pid_of(cfg)
    assert _proc_ids(pid)[0] == pwd.getpwnam(name).pw_uid
    assert wait_for((box.base / "srv-state" / "id.out").exists, 30)
    # reload re-reads the config as the dropped user: everything it needs was loaded or is readable
    assert box.ts(cfg, "reload").returncode == 0
    log = next((box.base / "srv-state").glob("*.log"))
    assert wait_for(lambda: "reloaded" in log.read_text(), 30), log.read_text()
    assert "reload failed" not in log.read_text()
    assert box.ts(cfg, "stop").returncode == 0
    assert box.ts(cfg, "status").returncode == 3  # the user could not unlink root's pid file: it emptied it


def test_root_without_run_as_refuses_when_jobs_exist(user: tuple[str, str], box: Sandbox) -> None:
    name, _ = user
    cfg = _config(box, None, name)
    for cmd in ("start", "run"):
        res = box.ts(cfg, cmd)
        assert res.returncode == 2, res
        assert "without run_as" in res.stderr and "acme" in res.stderr
        assert "hint: set run_as: USER (or run_as: root explicitly)" in res.stderr
    assert box.ts(cfg, "status").returncode == 3
    assert not (box.base / "srv-state" / "id.out").exists()
