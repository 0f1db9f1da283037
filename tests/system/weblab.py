"""A real daemon and a real `taskserver web` server on a free loopback port, for the web tests."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import runns
from daemonlab import TASKSERVER, cli, sandbox_env


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
