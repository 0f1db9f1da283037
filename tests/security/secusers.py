"""Throwaway Unix users and a private place for the security tests; every attack runs as a real user.

``Lab`` creates users with ``useradd`` (unique names, homes under the lab's own directory) and removes them,
their groups and every file afterwards, also when the test failed. Commands run as a user through
``setpriv --init-groups`` (that user's own groups, nothing of root's).
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

TASKSERVER = str(Path(sys.executable).parent / "taskserver")
REPO = Path(__file__).resolve().parents[2]


def _reachable_by_others(path: Path) -> bool:
    real = Path(os.path.realpath(path))
    return all(p.stat().st_mode & stat.S_IXOTH for p in [real, *real.parents])


def _user_command() -> tuple[list[str], dict[str, str]]:
    """How another user runs this checkout's `taskserver`: the venv's own when they can reach its interpreter
    (CI), else the system python3 of the same version with the checkout and the venv's packages on its path
    (a venv made from an interpreter in a private home)."""
    if _reachable_by_others(Path(sys.executable)):
        return [TASKSERVER], {}
    site = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    return ["/usr/bin/python3", "-m", "taskserver.runtime.cli"], {"PYTHONPATH": f"{REPO}:{site}"}


USER_TASKSERVER, USER_ENV = _user_command()
_DROP_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "TASKSERVER_CONFIG", "STATE_DIRECTORY",
              "XDG_STATE_HOME", "RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR")

needs_root = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="creates users and runs attacks as them: needs root"),
    pytest.mark.skipif(shutil.which("useradd") is None or shutil.which("setpriv") is None,
                       reason="needs useradd and setpriv (passwd, util-linux)"),
]


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path


class Lab:
    def __init__(self) -> None:
        # not under pytest's tmp_path: that is private to root, and the users must reach their files
        self.base = Path(tempfile.mkdtemp(prefix="taskserver-sec-"))
        self.base.chmod(0o755)
        (self.base / "home").mkdir(mode=0o755)
        self.run_dir = self.base / "run"
        self.run_dir.mkdir(mode=0o755)
        self.users: list[str] = []
        self.groups: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []

    def user(self, role: str, groups: tuple[str, ...] = ()) -> User:
        name = f"ts{role[:4]}{uuid.uuid4().hex[:6]}"
        home = self.base / "home" / name
        argv = ["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/sh", "--user-group"]
        if groups:
            argv += ["-G", ",".join(groups)]
        subprocess.run([*argv, name], check=True)
        self.users.append(name)
        pw = pwd.getpwnam(name)
        home.chmod(0o755)
        return User(name, pw.pw_uid, pw.pw_gid, home)

    def group(self, role: str) -> str:
        name = f"tg{role[:4]}{uuid.uuid4().hex[:6]}"
        subprocess.run(["groupadd", name], check=True)
        self.groups.append(name)
        return name

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DROP_VARS}
        env["RUNTIME_DIRECTORY"] = str(self.run_dir)
        env.update(extra or {})
        return env

    def ts(self, config: Path | None, *argv: str, user: User | None = None,
           env: Mapping[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``taskserver [-c CONFIG] ARGV`` as root, or as ``user`` with only that user's groups."""
        cmd = [TASKSERVER, *(["-c", str(config)] if config is not None else []), *argv]
        run_env = self.env(env)
        if user is not None:
            cmd = as_user(user, [*USER_TASKSERVER, *cmd[1:]])
            run_env.update(HOME=str(user.home), USER=user.name, LOGNAME=user.name, **USER_ENV)
        return subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=timeout, check=False)

    def daemon(self, config: Path, *argv: str) -> subprocess.Popen[str]:
        """`taskserver run` as root, returned once it serves (its log says so); its log goes to a file."""
        log = self.base / f"daemon-{len(self.procs)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([TASKSERVER, "-c", str(config), "run", *argv], env=self.env(),
                                    stdout=out, stderr=out, text=True)
        self.procs.append(proc)
        assert wait_for(lambda: "serving" in log.read_text() or proc.poll() is not None), log.read_text()
        assert proc.poll() is None, log.read_text()
        return proc

    def log(self, index: int = -1) -> str:
        return (self.base / f"daemon-{len(self.procs) - 1 if index < 0 else index}.log").read_text()

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for name in self.users:
            # --force: a job of theirs may still be ending a moment after the daemon stopped
            subprocess.run(["userdel", "--force", "--remove", name], check=False, capture_output=True)
        for name in self.groups:
            subprocess.run(["groupdel", name], check=False, capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def as_user(user: User, argv: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", "--", *argv]


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    the_lab = Lab()
    try:
        yield the_lab
    finally:
        the_lab.cleanup()


@dataclass
class Site:
    """A root-owned config with a daemon user, two tenants with users of their own and a stranger."""

    world: Lab
    cfg: Path
    state: Path
    daemon_user: User
    a: User
    b: User
    stranger: User


def tenant_site(world: Lab, tenants: Callable[[User, User], str]) -> Site:
    """``tenants(a, b)``: the ``tenants:`` section's entries (indented by two), given the tenants' users."""
    d, a, b, e = world.user("dmn"), world.user("tena"), world.user("tenb"), world.user("strg")
    state = world.base / "state"
    cfg = write(world.base / "etc" / "ts.yaml", f"task_server:\n  run_as: {d.name}\n  state_dir: {state}\n"
                f"tenants:\n{tenants(a, b)}")
    return Site(world, cfg, state, d, a, b, e)


def two_tenants(world: Lab, job: str) -> Site:
    """Tenants a and b, each with its own user (run_as) and one job ``tick`` (``job``: its YAML flow text)."""
    return tenant_site(world, lambda a, b: (
        f"  a:\n    login: shop-a\n    run_as: {a.name}\n    jobs:\n      tick: {job}\n"
        f"  b:\n    login: shop-b\n    run_as: {b.name}\n    jobs:\n      tick: {job}\n"))


def tenant_store(site: Site, tenant: str) -> Path:
    """The tenant's SQLite store in the site's state dir (the only one there)."""
    found = sorted((site.state / "tenants" / tenant).glob("*.sqlite"))
    assert len(found) == 1, found
    return found[0]


def write(path: Path, text: str, owner: User | None = None, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    if owner is not None:
        os.chown(path, owner.uid, owner.gid)
    return path


def snapshot(path: Path) -> dict[str, tuple[int, int, int, str]]:
    """Owner, group, mode and content hash of everything under ``path`` (to prove nothing changed)."""
    out = {}
    for p in [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]:
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        out[str(p)] = (st.st_uid, st.st_gid, st.st_mode, digest)
    return out


def wait_for(check: Callable[[], bool], timeout: float = 30) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return check()


def one_error(res: subprocess.CompletedProcess[str]) -> str:
    """The error line of a refused command: no traceback, a hint, non-zero exit."""
    assert res.returncode != 0, res
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()  # `run` logs to stderr too: find the one error line
    errors = [line for line in lines if line.startswith("taskserver: error: ")]
    assert len(errors) == 1, res.stderr
    assert any(line.startswith("taskserver: hint: ") for line in lines), res.stderr
    return errors[0]


def gid_of(group: str) -> int:
    return grp.getgrnam(group).gr_gid
