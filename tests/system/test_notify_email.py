"""Notifications by mail through a sendmail stand-in (a script in the test's directory that records its
arguments and the message), against a real daemon (issue 13). A job's own failure message carries CR/LF and
a header of its own: it must not become a header, nor a recipient."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from daemonlab import TASKSERVER, Daemon, cli, status_text, wait_for, write_config

STAND_IN = """#!/bin/sh
# records what a real sendmail would send: its arguments, its user and the message
out={out}
n=$$
printf '%s\\n' "$@" > "$out/argv.$n"
id -u > "$out/uid.$n"
cat > "$out/mail.$n.tmp" && mv "$out/mail.$n.tmp" "$out/mail.$n"
"""

ATTACK = "disk full\r\nBcc: victim@evil.example\r\nX-Injected: yes\r\n\r\nforged body"


def stand_in(base: Path) -> tuple[Path, Path]:
    out = base / "mails"
    out.mkdir()
    script = base / "sendmail"
    script.write_text(STAND_IN.format(out=out))
    script.chmod(0o755)
    return script, out


def mails(out: Path) -> list[tuple[email.message.EmailMessage, list[str]]]:
    got = []
    for path in sorted(out.glob("mail.*")):
        if path.suffix == ".tmp":
            continue
        n = path.name.split(".", 1)[1]
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        got.append((msg, (out / f"argv.{n}").read_text().splitlines()))
    return got


def test_a_mail_goes_to_the_configured_recipients_and_a_job_cannot_add_headers(tmp_path: Path) -> None:
    script, out = stand_in(tmp_path)
    notify = {"on": ["failure"], "email": {"to": ["ops@example.com", "oncall@example.com"],
                                           "from": "taskserver@example.com", "sendmail": str(script)}}
    # the job reports its own failure with a message an attacker wrote, then exits 0
    report = [TASKSERVER, "jobs", "finish", "--status", "err", "--message", ATTACK]
    job = {"command": report, "notify": notify}
    cfg = write_config(tmp_path / "ts.yaml", {"import": job})
    daemon = Daemon(cfg)
    try:
        cli(cfg, "jobs", "run", "import")
        wait_for(lambda: mails(out), "the mail")
    finally:
        daemon.stop()
    (msg, argv), = mails(out)
    assert argv == ["-oi", "--", "ops@example.com", "oncall@example.com"]  # recipients never from headers
    assert msg["To"] == "ops@example.com, oncall@example.com" and msg["From"] == "taskserver@example.com"
    assert msg["Bcc"] is None and msg["X-Injected"] is None
    assert msg["Subject"] == ("[taskserver] t/import: failure: disk full Bcc: victim@evil.example "
                              "X-Injected: yes forged body")
    assert msg["Auto-Submitted"] == "auto-generated" and msg["X-Taskserver-Event"] == "failure"
    body = msg.get_content()
    assert "reason: reported" in body and "run_id: " in body
    raw = next(out.glob("mail.*")).read_bytes()
    assert b"\nBcc:" not in raw.split(b"\n\n", 1)[0] and b"\nX-Injected" not in raw.split(b"\n\n", 1)[0]


def test_a_sendmail_that_fails_is_logged_and_counted(tmp_path: Path) -> None:
    script = tmp_path / "sendmail"
    script.write_text("#!/bin/sh\necho 'sendmail: cannot connect to the relay' >&2\nexit 75\n")
    script.chmod(0o755)
    notify = {"email": {"to": "ops@example.com", "sendmail": str(script)}}
    cfg = write_config(tmp_path / "ts.yaml", {"broken": {"command": ["false"], "notify": notify}})
    daemon = Daemon(cfg)
    try:
        cli(cfg, "jobs", "run", "broken")
        wait_for(lambda: "1 failed" in status_text(cfg), "the failure counted")
    finally:
        daemon.stop()
    line = next(x for x in daemon.text().splitlines() if "email notification (failure) failed" in x)
    assert "exit code 75: sendmail: cannot connect to the relay" in line
