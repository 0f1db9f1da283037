"""Issue 7 class 4 and issue 9: the pid file cannot be used to make root signal anything but its daemon.

Each attack runs as real throwaway users (useradd), against the real `taskserver` command as root, and the
target is a real unrelated root process (`sleep`) that must survive: a user who can write the pid file's
directory and replaces the files; a user's own place naming a process that is not entirely the user's; a
foreign lock on the pid file; a stale pid after kill -9 that now belongs to another process; a user's
/tmp/taskserver-UID prepared by somebody else. Also: root with a non-root run_as needs no XDG_RUNTIME_DIR,
and a daemon started with RUNTIME_DIRECTORY set is found by commands run without it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import runns
from daemonproc import TASKSERVER, Sandbox, wait_for
from throwaway import User, users

from taskserver.runtime.config import instance_name
from taskserver.runtime.pidfile import starttime

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="attacks as throwaway users: needs root"),
    pytest.mark.skipif(shutil.which("useradd") is None, reason="needs useradd"),
]

HOLD_LOCK = textwrap.dedent("""\
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(600)
""")


@pytest.fixture
def two() -> Iterator[list[User]]:
    with users(2) as made:
        yield made


@pytest.fixture
def box() -> Iterator[Sandbox]:
    base = Path(tempfile.mkdtemp(prefix="ts-secpid-"))
    base.chmod(0o755)  # the dropped daemon reaches its state dir
    sandbox = Sandbox(base)
    yield sandbox
    sandbox.cleanup()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated root process that nothing here may signal."""
    proc = subprocess.Popen(["sleep", "600"])
    yield proc
    proc.kill()
    proc.wait()


def _config(box: Sandbox, run_as: str) -> Path:
    cfg = box.base / "app.yaml"
    cfg.write_text(f"task_server:\n  run_as: {run_as}\n  state_dir: {box.base / 'state'}\n"
                   f"  stop_timeout: 5s\ntenants:\n  shop:\n    login: {run_as}\n")
    cfg.chmod(0o644)
    return cfg


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def _hold_lock(path: Path, user: User | None) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", HOLD_LOCK, str(path)]
    proc = subprocess.Popen([*runns.prefix(), *(user.argv(*argv) if user else argv)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def _as(user: User, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [*runns.prefix(), *user.argv(sys.executable, "-c", code, *args)]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


PLANT = textwrap.dedent("""\
    import json, os, sys
    d, stem, pid, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    for ext in ("pid", "info", "lock"):
        try:
            os.unlink(f"{d}/{stem}.{ext}")
        except FileNotFoundError:
            pass
    open(f"{d}/{stem}.pid", "w").write(f"{pid}\\n")
    open(f"{d}/{stem}.info", "w").write(json.dumps({"pid": pid, "starttime": start, "stop_timeout": 1}))
    os.close(os.open(f"{d}/{stem}.lock", os.O_RDWR | os.O_CREAT, 0o600))
""")


def _plant(user: User, where: Path, cfg: Path, pid: int) -> None:
    res = _as(user, PLANT, str(where), instance_name(cfg), str(pid), str(starttime(pid)))
    assert res.returncode == 0, res.stderr


def _client_enqueue(box: Sandbox, cfg: Path) -> subprocess.CompletedProcess[str]:
    """A task queued through the Python client (docs/client.md), its log on stdout."""
    script = ("import logging, sys\n"
              "logging.basicConfig(stream=sys.stdout, format='%(levelname)s %(message)s')\n"
              "from taskserver.runtime.client import Client\n"
              f"print(Client({str(cfg)!r}).enqueue(argv=['/bin/true']))\n")
    return subprocess.run([*runns.prefix(), sys.executable, "-c", script], env=box.env(), capture_output=True,
                          text=True, timeout=60, check=False)


def _signalling_commands(box: Sandbox, cfg: Path) -> list[subprocess.CompletedProcess[str]]:
    return [box.ts(cfg, "stop"), box.ts(cfg, "reload"), box.ts(cfg, "jobs", "enqueue", "--", "true")]


def test_a_user_who_can_write_the_pid_directory_cannot_steer_roots_signals(
        two: list[User], box: Sandbox, victim: subprocess.Popen[bytes]) -> None:
    """What `RuntimeDirectory=` with `User=` did: /run/taskserver handed to the run_as user, who then
    replaced the pid, info and lock files (and holds the new lock) to point root at a root process."""
    user = two[0]
    cfg = _config(box, user.name)
    assert box.ts(cfg, "start").returncode == 0
    daemon = box.pid_of(cfg)
    os.chown(box.run_dir, user.uid, user.gid)
    holder = None
    try:
        _plant(user, Path("/run/taskserver"), cfg, victim.pid)
        holder = _hold_lock(Path("/run/taskserver") / f"{instance_name(cfg)}.lock", user)
        stop, reload, enqueue = _signalling_commands(box, cfg)
        assert stop.returncode == 2 and "unsafe pid file directory /run/taskserver" in stop.stderr, stop
        assert reload.returncode == 2 and "unsafe pid file directory" in reload.stderr, reload
        assert enqueue.returncode == 0
        # the store's own wake-up socket reaches the daemon without any pid file; else the pid file is
        # refused and the task waits, saying so
        assert enqueue.stderr == "" or "not waking the daemon: unsafe pid file directory" in enqueue.stderr
        assert _alive(victim) and holder.poll() is None  # root signalled neither
        assert box.ts(cfg, "start").returncode == 2  # nor does root put its own pid file there
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        os.chown(box.run_dir, 0, 0)
        for f in box.run_dir.glob(instance_name(cfg) + ".*"):
            f.unlink()
        os.kill(daemon, signal.SIGKILL)


def test_a_users_own_place_names_only_that_users_processes(
        two: list[User], box: Sandbox, victim: subprocess.Popen[bytes]) -> None:
    """/run/taskserver/u<UID> belongs to the user (systemd makes it for a daemon run as the user). A process
    holding its lock that is not entirely the user's (a root process here; a setuid program the user
    exec'd after locking would look the same, since record locks survive exec) is never signalled."""
    user = two[0]
    cfg = _config(box, user.name)
    place = box.run_dir / f"u{user.uid}"
    place.mkdir(mode=0o755)
    os.chown(place, user.uid, user.gid)
    try:
        _check_users_place(box, cfg, user, victim)
    finally:
        shutil.rmtree(place)  # uids are reused by the next useradd


def _check_users_place(box: Sandbox, cfg: Path, user: User, victim: subprocess.Popen[bytes]) -> None:
    inside = Path(f"/run/taskserver/u{user.uid}")
    _plant(user, inside, cfg, victim.pid)
    lock = inside / f"{instance_name(cfg)}.lock"
    root_holder = _hold_lock(lock, None)
    try:
        assert box.ts(cfg, "status").returncode == 0  # status only reports what it sees
        stop, reload, enqueue = _signalling_commands(box, cfg)
        for res in (stop, reload):
            assert res.returncode == 4, res
            assert f"refusing to signal pid {root_holder.pid}" in res.stderr and "uids [0]" in res.stderr
        assert "not waking the daemon: refusing to signal" in enqueue.stderr
        client = _client_enqueue(box, cfg)  # the Python client refuses as well, and logs it: never prints
        assert client.returncode == 0 and client.stderr == "", client
        assert "WARNING not waking the daemon: refusing to signal" in client.stdout, client
        assert _alive(victim) and root_holder.poll() is None
    finally:
        root_holder.kill()
        root_holder.wait()
    # held by a process of the user: root may signal that one (the user could), and only that one
    user_holder = _hold_lock(lock, user)
    res = box.ts(cfg, "stop")
    assert res.returncode == 0 and f"stopped (pid {user_holder.pid})" in res.stdout, res
    assert user_holder.wait(30) == -signal.SIGTERM and _alive(victim)


def test_a_foreign_lock_on_the_pid_file_cannot_fake_a_running_server(
        two: list[User], box: Sandbox) -> None:
    user, other = two
    cfg = _config(box, user.name)
    assert box.ts(cfg, "start").returncode == 0
    pidfile = Path("/run/taskserver") / f"{instance_name(cfg)}.pid"
    grab = textwrap.dedent("""\
        import fcntl, os, sys, time
        fd = os.open(sys.argv[1], os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH)
        fcntl.lockf(fd, fcntl.LOCK_SH)
        try:
            os.open(sys.argv[1][:-4] + ".lock", os.O_RDONLY)
            print("opened the lock file", flush=True)
        except PermissionError:
            print("locked the pid file; the lock file is closed to me", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([*runns.prefix(), *other.argv(sys.executable, "-c", grab, str(pidfile))],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "locked the pid file; the lock file is closed to me\n"
        assert box.ts(cfg, "stop").returncode == 0
        assert box.ts(cfg, "status").returncode == 3
        started = box.ts(cfg, "start")
        assert started.returncode == 0 and "started (pid" in started.stdout, started
        assert "already running" not in started.stdout and "pid 0" not in started.stdout
        pid = box.pid_of(cfg)
        assert Path(f"/proc/{pid}").exists() and box.ts(cfg, "status").returncode == 0
    finally:
        proc.kill()
        proc.wait()


def test_a_stale_pid_that_now_names_another_process_is_never_signalled(
        two: list[User], box: Sandbox, victim: subprocess.Popen[bytes]) -> None:
    cfg = _config(box, two[0].name)
    assert box.ts(cfg, "start").returncode == 0
    daemon = box.pid_of(cfg)
    os.kill(daemon, signal.SIGKILL)
    assert wait_for(lambda: box.ts(cfg, "status").returncode == 1, 30)
    # pid reuse: the dead daemon's pid now belongs to an unrelated root process
    (box.run_dir / f"{instance_name(cfg)}.pid").write_text(f"{victim.pid}\n")
    st = box.ts(cfg, "status")
    assert st.returncode == 1 and f"pid {victim.pid} is now another process" in st.stdout, st.stdout
    assert box.ts(cfg, "reload").returncode == 7
    assert "no daemon is running" in box.ts(cfg, "jobs", "enqueue", "--", "true").stderr
    stop = box.ts(cfg, "stop")
    assert stop.returncode == 0 and "not running (removed a stale pid file)" in stop.stdout
    assert _alive(victim)
    started = box.ts(cfg, "start")
    assert started.returncode == 0 and "started (pid" in started.stdout, started
    assert box.ts(cfg, "stop").returncode == 0 and _alive(victim)


def _clean_env(box: Sandbox, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in box.env().items() if k not in ("XDG_RUNTIME_DIR", "RUNTIME_DIRECTORY")}
    return {**env, **extra}


def _ts(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=120)


def test_root_with_a_run_as_user_needs_no_xdg_runtime_dir(two: list[User], box: Sandbox) -> None:
    """Issue 9: `env -u XDG_RUNTIME_DIR taskserver start` as root (SysV, sudo, cron); RUNTIME_DIRECTORY
    set at start only; restart with a config that cannot start leaves the running server up."""
    cfg = _config(box, two[0].name)
    elsewhere = box.base / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    ts = [*runns.prefix(), TASKSERVER, "-c", str(cfg)]
    res = _ts([*ts, "start"], _clean_env(box, RUNTIME_DIRECTORY=str(elsewhere)))
    assert res.returncode == 0, res.stderr
    assert not list(elsewhere.iterdir())  # the variable decides nothing
    assert (box.run_dir / f"{instance_name(cfg)}.pid").stat().st_uid == 0
    st = _ts([*ts, "status"], _clean_env(box))
    assert st.returncode == 0 and "running: pid" in st.stdout
    pid = int(st.stdout.split("pid ", 1)[1].split(",", 1)[0])
    res = _ts([*ts, "restart"], _clean_env(box, XDG_RUNTIME_DIR=str(elsewhere)))
    assert res.returncode == 0 and f"stopped (pid {pid})" in res.stdout, res
    cfg.write_text(cfg.read_text() + "  broken: [\n")
    res = _ts([*ts, "restart"], _clean_env(box))
    assert res.returncode == 2 and "app.yaml:" in res.stderr, res
    assert _ts([*ts, "status"], _clean_env(box)).returncode == 0  # still up
    assert _ts([*ts, "stop"], _clean_env(box)).returncode == 0
    assert _ts([*ts, "status"], _clean_env(box)).returncode == 3


def test_a_users_own_daemon_lives_in_a_place_derived_from_its_uid(two: list[User], box: Sandbox) -> None:
    user, other = two
    home = box.base / "u"
    home.mkdir()
    cfg = home / "mine.yaml"
    cfg.write_text(f"task_server:\n  state_dir: {home / 'state'}\ntenants:\n  t: {{}}\n")
    cfg.chmod(0o600)
    for p in (home, cfg):
        os.chown(p, user.uid, user.gid)
    place = Path(f"/tmp/taskserver-{user.uid}")
    mine = [*runns.prefix(), *user.argv(TASKSERVER, "-c", str(cfg))]
    try:
        # somebody else prepared the place: a symlink to their directory, then a directory of theirs
        trap = Path(tempfile.mkdtemp(prefix="ts-trap-"))
        os.chown(trap, other.uid, other.gid)
        assert _as(other, f"import os; os.symlink({str(trap)!r}, {str(place)!r})").returncode == 0
        res = _ts([*mine, "start"], _clean_env(box))
        assert res.returncode == 2 and "unsafe pid file directory" in res.stderr and "symlink" in res.stderr
        place.unlink()
        made = _as(other, f"import os; os.mkdir({str(place)!r}); os.chmod({str(place)!r}, 0o777)")
        assert made.returncode == 0
        res = _ts([*mine, "start"], _clean_env(box))
        assert res.returncode == 2 and f"owned by uid {other.uid}" in res.stderr, res
        assert not list(trap.iterdir()) and not list(place.iterdir())
        place.rmdir()
        shutil.rmtree(trap)
        # the user's own: created 0700 from the uid alone, found whatever the environment says
        res = _ts([*mine, "start"], _clean_env(box))
        assert res.returncode == 0, res.stderr
        assert (place.stat().st_uid, place.stat().st_mode & 0o777) == (user.uid, 0o700)
        info = json.loads((place / f"{instance_name(cfg)}.info").read_text())
        st = _ts([*mine, "status"], _clean_env(box, XDG_RUNTIME_DIR="/nonexistent", RUNTIME_DIRECTORY="/x"))
        assert st.returncode == 0 and f"pid {info['pid']}" in st.stdout, st
        assert _ts([*mine, "stop"], _clean_env(box)).returncode == 0
    finally:
        _ts([*mine, "stop"], _clean_env(box))
        if place.is_symlink():
            place.unlink()
        shutil.rmtree(place, ignore_errors=True)


def test_the_run_as_user_finds_roots_daemon_without_any_variable(two: list[User], box: Sandbox) -> None:
    """The user a root-started daemon dropped to (its jobs, too) sees it: status, a second start, and the
    wake-up of `jobs enqueue` reach it with the user's own rights, the lock file staying closed to them."""
    user = two[0]
    cfg = _config(box, user.name)
    assert box.ts(cfg, "start").returncode == 0
    pid = box.pid_of(cfg)
    theirs = [*runns.prefix(), *user.argv(TASKSERVER, "-c", str(cfg))]
    st = _ts([*theirs, "status"], _clean_env(box))
    assert st.returncode == 0 and f"pid {pid}" in st.stdout, st
    again = _ts([*theirs, "start"], _clean_env(box))
    assert again.returncode == 0 and f"already running (pid {pid})" in again.stdout, again
    queued = _ts([*theirs, "jobs", "enqueue", "--", "true"], _clean_env(box))
    assert queued.returncode == 0 and "no daemon" not in queued.stderr, queued
    run_id = queued.stdout.strip()
    assert wait_for(lambda: '"OK"' in box.ts(cfg, "jobs", "show", run_id, "--json").stdout, 30)
    assert box.ts(cfg, "stop").returncode == 0


def test_a_root_directory_handed_to_a_user_is_skipped_by_the_user_and_refused_by_root(
        two: list[User], box: Sandbox) -> None:
    """An old unit's RuntimeDirectory= gave /run/taskserver to its User=: that user's own daemon still starts
    (in its own place; no root daemon can be in a directory that is not root's), and root's commands say the
    directory is unsafe instead of believing anything in it."""
    user = two[0]
    home = box.base / "u"
    home.mkdir()
    cfg = home / "mine.yaml"
    cfg.write_text(f"task_server:\n  state_dir: {home / 'state'}\ntenants:\n  t: {{}}\n")
    cfg.chmod(0o600)
    for p in (home, cfg):
        os.chown(p, user.uid, user.gid)
    mine = [*runns.prefix(), *user.argv(TASKSERVER, "-c", str(cfg))]
    os.chown(box.run_dir, user.uid, user.gid)
    try:
        res = _ts([*mine, "start"], _clean_env(box))
        assert res.returncode == 0, res.stderr
        assert _ts([*mine, "status"], _clean_env(box)).returncode == 0
        st = box.ts(cfg, "status")
        assert st.returncode == 2 and "unsafe pid file directory /run/taskserver" in st.stderr, st
        assert _ts([*mine, "stop"], _clean_env(box)).returncode == 0
    finally:
        os.chown(box.run_dir, 0, 0)
        _ts([*mine, "stop"], _clean_env(box))
        shutil.rmtree(f"/tmp/taskserver-{user.uid}", ignore_errors=True)
