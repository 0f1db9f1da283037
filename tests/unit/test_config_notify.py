"""The notify: key (issue 13): every mistake at its FILE:LINE:COL with a hint, the values a delivery will
put into a URL, a header or an argv checked at load, and the inheritance server -> tenant -> job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from taskserver.runtime.alerts import targets
from taskserver.runtime.config import EXAMPLE_CONFIG, ConfigInvalid, parse_text
from taskserver.runtime.model import Event

F = Path("/etc/taskserver/t.yaml")
HEAD = """\
tenants:
  acme:
    login: acme
    jobs:
      a:
        command: [x]
"""


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        parse_text(text, F)
    return [f"{e}" + (f" || {e.hint}" if e.hint else "") for e in info.value.errors]


def one(notify: str) -> str:
    errs = errors(HEAD + "        notify:\n" + notify)
    assert len(errs) == 1, errs
    return errs[0]


@pytest.mark.parametrize(
    ("notify", "where", "words"),
    [
        ("          on: [failure]\n", "8:11", "names no command:, webhook: or email:"),
        ("          on: [failure, exploded]\n          webhook: http://x\n", "8:25",
         "notify.on: unknown event 'exploded' || on: [failure, crashed, missed, recovered]"),
        ("          on: []\n          webhook: http://x\n", "8:15", "names no event"),
        ("          webhook: file:///etc/passwd\n", "8:20", "expected an http or https URL, got 'file:///etc/"),
        ("          webhook: 'http://host/a b'\n", "8:20", "without spaces or control characters"),
        ("          webhook: 'http:///path'\n", "8:20", "the URL names no host"),
        ("          webhook: 'http://host:99999/'\n", "8:20", "not a URL: Port out of range"),
        ("          webhook: {timeout: 5s}\n", "8:20", "webhook: needs url:"),
        ("          webhook: {url: 'http://h/', retries: 11}\n", "8:48", "expected a number of at most 10"),
        ("          webhook: {url: 'http://h/', timeout: 1h}\n", "8:48", "at most 600 s"),
        ("          webhook:\n            url: http://h/\n            headers: {'X Bad': v}\n", "10:23",
         "bad header name 'X Bad'"),
        ("          webhook:\n            url: http://h/\n            headers: {X-A: \"v\\r\\nX-B: w\"}\n",
         "10:28", "a header value is one line"),
        ("          email: 'Ops <ops@example.com>'\n", "8:18", "expected a mail address, got 'Ops <ops@"),
        ("          email: {to: []}\n", "8:23", "expected 1 to 32 addresses"),
        ("          email: {to: ['ops@example.com', '-oQ/tmp@x']}\n", "8:43", "expected a mail address"),
        ("          email: {to: ops@example.com, from: \"a@b\\nBcc: c@d\"}\n", "8:46",
         "expected a mail address"),
        ("          email: {from: ops@example.com}\n", "8:18", "needs to: (one address or a list)"),
        ("          email: {to: ops@example.com, sendmail: sendmail}\n", "8:50", "expected an absolute path"),
        ("          command: /usr/bin/page\n", "8:20", "expected a list of non-empty strings"),
        ("          command: {argv: [], timeout: 5s}\n", "8:27", "the command is empty (no program to run)"),
        ("          command: {argv: [x], timout: 5s}\n", "8:32", "did you mean 'timeout'?"),
        ("          command: [\"a\\0b\"]\n", "8:20", "holds a NUL character"),
    ],
)
def test_notify_mistakes(notify: str, where: str, words: str) -> None:
    err = one(notify)
    assert err.startswith(f"{F}:{where}: "), err
    assert words in err, err


def test_a_misspelt_channel_is_named_with_the_key_it_resembles() -> None:
    errs = errors(HEAD + "        notify:\n          webhok: http://x\n")
    assert errs[0] == f"{F}:8:11: tenants.acme.jobs.a.notify: unknown key 'webhok' || did you mean 'webhook'?"


def test_notify_must_be_a_mapping_or_a_list_of_them() -> None:
    assert errors(HEAD + "        notify: yes\n") == [
        f"{F}:7:17: tenants.acme.jobs.a.notify: expected a mapping (on:, command:, webhook:, email:), got "
        "the text 'yes' || notify: {on: [failure], webhook: https://hooks.example/x} "
        "(see docs/notifications.md)"]
    err, = errors(HEAD + "        notify:\n          - webhook: http://h/\n          - 5\n")
    assert err.startswith(f"{F}:9:13: tenants.acme.jobs.a.notify[1]: expected a mapping"), err


def test_server_and_tenant_notify_are_checked_too() -> None:
    text = ("task_server:\n  notify: {webhook: 'ftp://h/'}\ntenants:\n  acme:\n    login: acme\n"
            "    notify: {emial: ops@example.com}\n")
    errs = errors(text)
    assert errs[0].startswith(f"{F}:2:21: task_server.notify.webhook: expected an http or https URL"), errs
    assert errs[1].startswith(f"{F}:6:13: tenants.acme.notify: names no command:, webhook: or email:"), errs
    assert errs[2].startswith(f"{F}:6:14: tenants.acme.notify: unknown key 'emial'"), errs
    assert "did you mean 'email'?" in errs[2]
    assert len(errs) == 3, errs


CONFIG = """\
task_server:
  notify: {on: [failure], webhook: 'https://ops.example/hook'}
tenants:
  shop:
    login: shop
    notify:
      - email: {to: [dev@shop.example, lead@shop.example], from: ts@shop.example, sendmail: /usr/lib/sendmail}
      - command: {argv: [/usr/local/bin/page, --team, shop], timeout: 5s}
        on: crashed
    jobs:
      nightly:
        command: [x]
      flaky:
        command: [x]
        notify: {inherit: false}
      own:
        command: [x]
        notify:
          inherit: false
          on: [recovered]
          webhook:
            url: 'http://127.0.0.1:8080/x?y=1'
            retries: 0
            backoff: 1s
            timeout: 3s
            headers: {Authorization: Bearer abc, X-Team: shop}
"""


def test_a_full_notify_config_and_what_each_job_gets() -> None:
    config = parse_text(CONFIG, F)
    shop = config.tenants[0]
    nightly, flaky, own = shop.jobs
    got = targets(config, shop, nightly)
    assert [n.webhook.url if n.webhook else None for n in got] == ["https://ops.example/hook", None, None]
    assert got[0].on == {Event.FAILURE} and got[1].on == frozenset(Event) and got[2].on == {Event.CRASHED}
    assert got[1].email is not None and got[1].email.to == ("dev@shop.example", "lead@shop.example")
    assert (got[1].email.sender, str(got[1].email.sendmail)) == ("ts@shop.example", "/usr/lib/sendmail")
    assert got[2].command == ("/usr/local/bin/page", "--team", "shop") and got[2].command_timeout == 5.0
    assert targets(config, shop, flaky) == ()  # inherit: false and nothing of its own: silenced
    mine, = targets(config, shop, own)
    assert mine.webhook is not None and mine.on == {Event.RECOVERED}
    assert (mine.webhook.retries, mine.webhook.backoff, mine.webhook.timeout) == (0, 1.0, 3.0)
    assert mine.webhook.headers == (("Authorization", "Bearer abc"), ("X-Team", "shop"))


def test_check_refuses_a_bad_notify_with_one_line_and_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "t.yaml"
    cfg.write_text(HEAD + "        notify: {webhook: 'gopher://h/'}\n")
    cfg.chmod(0o600)
    res = subprocess.run([sys.executable, "-m", "taskserver.runtime.cli", "-c", str(cfg), "check"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith(f"taskserver: error: {cfg}:7:27: tenants.acme.jobs.a.notify.webhook: "
                               "expected an http or https URL"), res.stderr
    assert lines[1].startswith("taskserver: hint: webhook: https://host"), res.stderr


def test_check_refuses_a_sendmail_that_is_not_there(tmp_path: Path) -> None:
    cfg = tmp_path / "t.yaml"
    cfg.write_text(HEAD + f"        notify: {{email: {{to: a@b.example, sendmail: {tmp_path}/nope}}}}\n")
    cfg.chmod(0o600)
    res = subprocess.run([sys.executable, "-m", "taskserver.runtime.cli", "-c", str(cfg), "check"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 2, res
    where = f"error: {cfg}:7:17: email: sendmail '{tmp_path}/nope'"
    assert f"{where} is not an executable file here" in res.stderr, res.stderr
    (tmp_path / "nope").write_text("#!/bin/sh\n")
    (tmp_path / "nope").chmod(0o755)
    res = subprocess.run([sys.executable, "-m", "taskserver.runtime.cli", "-c", str(cfg), "check"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


def test_the_example_config_shows_notify_and_it_is_valid_when_uncommented(tmp_path: Path) -> None:
    line = next(x for x in EXAMPLE_CONFIG.splitlines() if "# notify:" in x)
    text = EXAMPLE_CONFIG.replace(line, line.replace("# notify:", "notify:", 1))
    job = next(j for j in parse_text(text, tmp_path / "c.yaml").tenants[0].jobs if j.name == "nightly-report")
    entry, = job.notify
    assert entry.email is not None and entry.email.to == ("ops@example.com",)
    assert entry.on == {Event.FAILURE, Event.RECOVERED}


def test_check_verbose_says_whom_each_job_notifies_without_a_webhooks_secret_path(tmp_path: Path) -> None:
    cfg = tmp_path / "t.yaml"
    cfg.write_text(CONFIG.replace("/usr/lib/sendmail", "/bin/cat").replace(
        "https://ops.example/hook", "https://hooks.example/T000/B000/s3cr3t"))
    cfg.chmod(0o600)
    res = subprocess.run([sys.executable, "-m", "taskserver.runtime.cli", "-c", str(cfg), "check", "-v"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    lines = {line.split(":", 1)[0].strip(): line for line in res.stdout.splitlines() if "/" in line}
    assert lines["shop/nightly"].endswith(
        "; notifies webhook https://hooks.example (failure); email dev@shop.example, lead@shop.example "
        "(all); command /usr/local/bin/page (crashed)"), res.stdout
    assert "notifies" not in lines["shop/flaky"]
    assert lines["shop/own"].endswith("; notifies webhook http://127.0.0.1:8080 (recovered)"), res.stdout
    assert "s3cr3t" not in res.stdout
