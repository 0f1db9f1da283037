"""A real daemon and a real `taskserver web` server on a free loopback port, for the web tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import runns
from daemonlab import TASKSERVER, cli, sandbox_env
from throwaway import users


@contextmanager
def web_home(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """Where a web test keeps its config and state, and the ``task_server`` settings it needs.

    Run by another user: tmp_path, and the tester's own user as run_as (write_config's). Run by root: root's
    `taskserver web` never serves as root (with run_as root it serves as nobody, who may read no store and
    do nothing), so the daemon gets a throwaway user to run as and serve as, and a directory that user can
    reach (pytest's tmp_path is root's alone)."""
    if os.geteuid() != 0:
        yield tmp_path, {}
        return
    with users(1) as (user,):
        base = Path(tempfile.mkdtemp(prefix="ts-web-"))
        base.chmod(0o755)
        # the state dir as the daemon or root's `jobs` would make it: the web server (that user) cannot
        # create it in a directory of root's
        (base / "state").mkdir(mode=0o711)
        os.chown(base / "state", user.uid, user.gid)
        try:
            yield base, {"run_as": user.name}
        finally:
            shutil.rmtree(base, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token(cfg: Path, name: str, *opts: str) -> str:
    return cli(cfg, "web", "token-add", name, *opts).stdout.strip()


@contextmanager
def web_server(cfg: Path, *opts: str) -> Iterator[str]:
    port = free_port()
    log = cfg.parent / f"web-{port}.log"
    with log.open("w") as out:
        argv = [*runns.prefix(), TASKSERVER, "-c", str(cfg), "web", "--listen", f"127.0.0.1:{port}", *opts]
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=sandbox_env(cfg))
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"taskserver web exited {proc.returncode}:\n{log.read_text()}")
            try:
                httpx.get(base + "/healthz", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > end:
                    raise AssertionError(f"taskserver web did not listen:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
