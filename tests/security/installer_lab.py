"""What the installer's security tests share: throwaway Unix users (``useradd``, removed afterwards even
when a test fails), root-owned "victim" directories on the host that an attack must leave untouched, and
the real ``taskserver-install`` command run as root with a chosen HOME."""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

TOOL = Path(sys.executable).parent / "taskserver-install"
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def need_root() -> None:
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd: the attacks run as throwaway users against root")


@contextmanager
def throwaway_user() -> Iterator[pwd.struct_passwd]:
    """A fresh user with a home of its own; removed (with the home) on the way out."""
    name = f"tsi{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


@contextmanager
def victim_dir() -> Iterator[Path]:
    """A root-owned directory of the host (0755) that no attack may write into, chown or empty."""
    path = Path(tempfile.mkdtemp(prefix="ts-victim-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def user_dir(user: pwd.struct_passwd) -> Iterator[Path]:
    """A directory the user owns, reachable by them (pytest's tmp_path is root's 0700), removed after."""
    path = Path(tempfile.mkdtemp(prefix="ts-attacker-", dir="/var/tmp"))
    path.chmod(0o755)
    os.chown(path, user.pw_uid, user.pw_gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_user(user: pwd.struct_passwd, *argv: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as ``user`` (its uid, gid and groups): what the attacker can do alone."""
    cmd = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
    return subprocess.run(
        [*cmd, *map(str, argv)], capture_output=True, text=True, check=True, env={"PATH": CLEAN_PATH}
    )


def tool(*args: str | Path, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``taskserver-install ARGS`` as root; HOME as root sets it to install a user unit for that user."""
    env = {"PATH": CLEAN_PATH, "HOME": str(home or "/root"), "LANG": "C.UTF-8"}
    return subprocess.run(
        [str(TOOL), *map(str, args)], capture_output=True, text=True, check=False, env=env, timeout=120
    )


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` -> owner, mode and content hash (or link target): any change shows."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            p = Path(dirpath, name)
            st = p.lstat()
            what = f"{st.st_uid}:{st.st_gid}:{oct(st.st_mode)}"
            if p.is_symlink():
                what += " -> " + os.readlink(p)
            elif p.is_file():
                what += " " + hashlib.sha256(p.read_bytes()).hexdigest()
            out[str(p.relative_to(root))] = what
    return out


def no_traceback(res: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in res.stderr, res.stderr
