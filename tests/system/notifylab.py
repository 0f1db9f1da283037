"""Helpers for the notification tests: a real HTTP receiver on loopback that records every POST, and a
config with a job whose outcome a file decides. Waits are for a condition; nothing here measures time."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from daemonlab import cli, me, runs, wait_for


class Receiver:
    """An HTTP server in a thread. ``replies[path]``: the statuses to answer in turn (then 200);
    ``delay[path]``: seconds to hold each request of that path before answering."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.opened: list[str] = []  # paths of requests received (also those still being held)
        self.replies: dict[str, list[int]] = {}
        self.delay: dict[str, float] = {}
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def events(self, path: str = "/hook") -> list[str]:
        with self.lock:
            return [p["body"]["event"] for p in self.posts if p["path"] == path]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        lab = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lab.lock:
                    lab.opened.append(self.path)
                    replies = lab.replies.get(self.path, [])
                    status = replies.pop(0) if replies else 200
                if self.path in lab.delay:
                    lab.release.wait(lab.delay[self.path])
                with lab.lock:
                    lab.posts.append({"path": self.path, "status": status, "headers": dict(self.headers),
                                      "body": json.loads(body)})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def flag_job(flag: Path, **extra: Any) -> dict[str, Any]:
    """A job that exits with the number written in ``flag`` (0: OK)."""
    flag.write_text("0\n")
    flag.chmod(0o644)
    return {"command": ["sh", "-c", f'exit "$(cat {flag})"'], **extra}


def run_job(cfg: Path, job: str, code: int, flag: Path, tenant: str = "t") -> dict[str, Any]:
    """Run ``job`` now with exit code ``code`` (a daemon serves ``cfg``); returns its ended run."""
    flag.write_text(f"{code}\n")
    run_id = int(cli(cfg, "jobs", "run", "--tenant", tenant, job).stdout)
    return wait_for(lambda: next((r for r in runs(cfg, tenant) if r["id"] == run_id and r["finished"]), None),
                    f"run {run_id} to end")


def wait_events(receiver: Receiver, count: int, path: str = "/hook") -> list[str]:
    wait_for(lambda: len(receiver.events(path)) >= count, f"{count} notifications at {path}")
    return receiver.events(path)


__all__ = ["Receiver", "flag_job", "me", "run_job", "wait_events"]
