"""Delivering one notification: a command, a webhook or a mail (docs/notifications.md).

Runs in the delivery process (runtime/alert_proc.py), never in the daemon's loop. Each function takes one
message the daemon prepared (who, what, with which identity and environment) and returns None when it was
delivered, else one line saying why not. Nothing here raises for a failed delivery.

- command: the argv (never a shell) as the tenant's user, in the job's clean environment plus TASKSERVER_*,
  the JSON summary on stdin; killed (its whole process group) at its timeout.
- webhook: POST of the JSON summary; 2xx is delivered; a connection error, a timeout, 408, 429 or 5xx is
  retried with a doubling backoff; another status, or a redirect (never followed), is final. No proxy from
  the environment is used.
- email: a message built with the standard library's email package, every header value made one printable
  line first (a job's own message cannot add a header), handed to the local sendmail as the tenant's user,
  with the recipients as arguments after ``--`` (never read from the headers: no ``-t``).
"""

from __future__ import annotations

import contextlib

# copy, email.* and encodings.idna: what the email and urllib code import on first use, loaded here, before
# the daemon drops its privileges (its interpreter's files may be out of the daemon user's reach afterwards)
import copy  # noqa: F401
import email.contentmanager
import email.generator
import email.headerregistry
import email.policy
import encodings.idna  # noqa: F401
import json
import os
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from .limits import clip, printable

RETRY_STATUS = (408, 429)
_live: set[subprocess.Popen[bytes]] = set()  # commands running now: killed if the process must end
_live_lock = threading.Lock()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kw: Any) -> None:
        return None  # a 3xx then ends as an HTTPError: the receiver is the URL configured, nothing else


_OPENER = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))


def deliver(msg: dict[str, Any], stop: threading.Event) -> str | None:
    send: Callable[[dict[str, Any], threading.Event], str | None] = _CHANNELS[msg["channel"]]
    try:
        return send(msg, stop)
    except Exception as exc:  # a delivery must never take the delivery process down
        return f"{type(exc).__name__}: {clip(str(exc), 200)}"


def summary_bytes(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg["summary"], sort_keys=True).encode()


# -- command ------------------------------------------------------------------------------------------------
def run_command(msg: dict[str, Any], stop: threading.Event) -> str | None:
    return _run(msg["argv"], summary_bytes(msg), msg, stop)


def _run(argv: list[str], data: bytes, msg: dict[str, Any], stop: threading.Event) -> str | None:
    """Run ``argv`` as the message's identity with ``data`` on stdin; None when it exited 0."""
    ids: dict[str, Any] = {}
    if msg.get("ident") is not None:
        uid, gid, groups = msg["ident"]
        if (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) != (uid, uid, gid, gid):
            ids = {"user": uid, "group": gid, "extra_groups": list(groups)}
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=msg["env"], cwd="/", close_fds=True, start_new_session=True, **ids)
    with _live_lock:
        _live.add(proc)
    try:
        out, _ = proc.communicate(data, timeout=msg["timeout"])
    except subprocess.TimeoutExpired:
        _kill(proc)
        return f"{argv[0]}: timed out after {msg['timeout']:g} s"
    finally:
        with _live_lock:
            _live.discard(proc)
    if proc.returncode != 0:
        tail = printable(out.decode(errors="replace").strip()[-200:])
        return f"{argv[0]}: exit code {proc.returncode}" + (f": {tail}" if tail else "")
    return None


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the whole group goes
    try:
        proc.communicate(timeout=5.0)
    except subprocess.TimeoutExpired:  # a process that left the group still holds the output pipe
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        proc.wait()


def kill_all() -> None:
    """The delivery process ends: no command it started may outlive it."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


# -- webhook ------------------------------------------------------------------------------------------------
def post_webhook(msg: dict[str, Any], stop: threading.Event) -> str | None:
    body, err = summary_bytes(msg), None
    for attempt in range(msg["retries"] + 1):
        err, final = _post(msg["url"], body, msg["headers"], msg["timeout"])
        if err is None or final:
            return err
        if attempt < msg["retries"] and stop.wait(msg["backoff"] * 2 ** attempt):
            return f"{err}; retries cut short: the daemon stopped"
    return f"{err} (after {msg['retries'] + 1} attempts)"


def _post(url: str, body: bytes, headers: list[list[str]], timeout: float) -> tuple[str | None, bool]:
    """One POST: (None, _) when delivered, else (why, whether it is final)."""
    if not url.startswith(("http://", "https://")):  # checked at config load; never a file: URL here
        return "not an http or https URL", True
    head = {"Content-Type": "application/json", "User-Agent": "taskserver"}
    head.update(dict(headers))
    req = urllib.request.Request(url, data=body, headers=head, method="POST")  # noqa: S310 - see above
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            resp.read(65536)
            return None, True
    except urllib.error.HTTPError as exc:
        code = exc.code
        return f"HTTP {code}", not (code >= 500 or code in RETRY_STATUS)
    except urllib.error.URLError as exc:
        return f"cannot reach {clip(url, 80)}: {clip(str(exc.reason), 120)}", False
    except (OSError, ValueError) as exc:  # a timeout while reading, a reset connection, a bad reply
        return f"{clip(url, 80)}: {clip(str(exc) or type(exc).__name__, 120)}", False


# -- email --------------------------------------------------------------------------------------------------
def one_line(text: object, limit: int = 200) -> str:
    """A header value from anything: control characters (CR, LF, ...) become spaces, cut to ``limit``."""
    cleaned = "".join(" " if ch.isspace() or not ch.isprintable() else ch for ch in str(text))
    return clip(" ".join(cleaned.split()), limit)


def message(msg: dict[str, Any]) -> bytes:
    s = msg["summary"]
    mail = EmailMessage(policy=email.policy.default)  # refuses CR or LF in a header value, too
    if msg.get("from"):
        mail["From"] = msg["from"]
    mail["To"] = ", ".join(msg["to"])
    detail = s.get("message") or s.get("reason") or ""
    subject = f"[taskserver] {s['tenant']}/{s['job']}: {s['event']}" + (f": {detail}" if detail else "")
    mail["Subject"] = one_line(subject)
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = make_msgid("taskserver")
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-Taskserver-Event"] = one_line(s["event"])
    mail["X-Taskserver-Job"] = one_line(f"{s['tenant']}/{s['job']}")
    shown = ("event", "tenant", "job", "run_id", "state", "reason", "exit_code", "due", "started", "finished",
             "missed", "host", "message")
    lines = [f"{k}: {'' if s.get(k) is None else s[k]}" for k in shown]
    mail.set_content("\n".join(lines) + "\n\noutput (tail):\n" + (s.get("output") or "") + "\n")
    return mail.as_bytes()


def send_email(msg: dict[str, Any], stop: threading.Event) -> str | None:
    argv = [msg["sendmail"], "-oi", "--", *msg["to"]]
    return _run(argv, message(msg), msg, stop)


_CHANNELS: dict[str, Callable[[dict[str, Any], threading.Event], str | None]] = {
    "command": run_command, "webhook": post_webhook, "email": send_email}
