"""Loading: default paths, the embedded default, accepted shapes, and refusing unsafe files."""

from __future__ import annotations

import os
import re
from datetime import time
from pathlib import Path

import pytest

from taskserver.runtime import config
from taskserver.runtime.config import ConfigInvalid, load, parse_text
from taskserver.runtime.errors import UserError
from taskserver.runtime.model import CatchUp, Cron, Every, Retry
from taskserver.runtime.units import parse_duration, parse_size

NOBODY = 65534


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_default_config_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TASKSERVER_CONFIG", raising=False)
    user = Path.home() / ".config/taskserver/taskserver.yaml"
    expected = config.SYSTEM_CONFIG if os.geteuid() == 0 else user
    assert config.default_config_path() == expected
    monkeypatch.setenv("TASKSERVER_CONFIG", str(tmp_path / "x.yaml"))
    assert config.default_config_path() == tmp_path / "x.yaml"


def test_missing_file_gives_the_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    cfg = load(tmp_path / "nope.yaml")
    assert not cfg.exists and cfg.path == tmp_path / "nope.yaml"
    assert [(t.name, t.login, t.jobs) for t in cfg.tenants] == [("default", None, ())]
    # not the default config path: a state subdirectory of its own
    assert cfg.server.state_dir.parent == tmp_path / "state"
    assert cfg.server.state_dir.name.startswith("taskserver-nope-")


def test_state_dir_per_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/a:{tmp_path}/b")
    assert config.default_state_dir(config.SYSTEM_CONFIG) == tmp_path / "a"
    one = config.default_state_dir(tmp_path / "one.yaml")
    two = config.default_state_dir(tmp_path / "two.yaml")
    assert one != two and one.parent == two.parent == tmp_path / "a"
    monkeypatch.delenv("STATE_DIRECTORY")
    if os.geteuid() == 0:
        assert config.default_state_dir(config.SYSTEM_CONFIG) == Path("/var/lib/taskserver")
    cfg = parse_text("task_server:\n  state_dir: /srv/ts\n", tmp_path / "one.yaml")
    assert cfg.server.state_dir == Path("/srv/ts")


def test_example_config_is_valid_and_documents_the_keys(tmp_path: Path) -> None:
    cfg = parse_text(config.EXAMPLE_CONFIG, tmp_path / "c.yaml")
    jobs = {j.name: j for j in cfg.tenants[0].jobs}
    assert jobs["nightly-report"].trigger == Cron("30 2 * * *")
    assert jobs["poll-queue"].trigger == Every(90) and not jobs["poll-queue"].enabled
    assert jobs["rebuild-index"].trigger is None
    for key in ("run_as", "state_dir", "install_dir", "memory_limit", "max_parallel", "stop_timeout",
                "keep_ok", "keep_err", "login", "store", "timezone", "cron", "every", "command", "call",
                "timeout", "window", "catch_up", "max_late", "retries", "enabled"):
        assert f"{key}:" in config.EXAMPLE_CONFIG, key


FULL = """\
task_server:
  run_as: svc:svc
  debug: true
  state_dir: /var/lib/ts
  install_dir: /srv/app
  memory_limit: 512M
  max_parallel: 8
  stop_timeout: 1m30s
  keep_ok: 7d
  keep_err: 30d
  output_tail: 8K
tenants:
  acme:
    login: acme
    timezone: Europe/Berlin
    store: {sqlite: acme/runs.db}
    jobs:
      backup:
        cron: "0 3 * * mon-fri"
        command: [/usr/bin/backup, --all]
        timeout: 2h
        window: ["mon-fri 22:00-06:00", "sat,sun"]
        catch_up: all
        max_late: 12h
        retries: {count: 3, backoff: 30s}
        queue: heavy
        timezone: America/New_York
      sh:
        every: 1h30m
        shell: true
        command: "du -sh /srv | tee /tmp/du"
        retries: 2
        window: "09:00-17:00"
      hook:
        call: myapp.jobs:cleanup
  beta:
    store: {postgresql: "dbname=ts host=db"}
  gamma:
"""


def test_full_config_values(tmp_path: Path) -> None:
    cfg = parse_text(FULL, tmp_path / "c.yaml")
    s = cfg.server
    assert (s.run_as, s.debug, s.state_dir, s.install_dir) == ("svc:svc", True, Path("/var/lib/ts"),
                                                              Path("/srv/app"))
    assert (s.memory_limit, s.max_parallel, s.stop_timeout, s.output_tail) == (512 << 20, 8, 90.0, 8192)
    assert (s.keep_ok_days, s.keep_err_days) == (7, 30)
    acme, beta, gamma = cfg.tenants
    assert acme.store.path == Path("/var/lib/ts/acme/runs.db") and acme.timezone == "Europe/Berlin"
    assert (beta.store.kind, beta.store.dsn, beta.login) == ("postgresql", "dbname=ts host=db", None)
    assert gamma.login is None and gamma.jobs == () and gamma.store.path is None
    backup, sh, hook = acme.jobs
    assert backup.command == ("/usr/bin/backup", "--all") and backup.timeout == 7200
    assert [(w.days, w.start, w.end) for w in backup.windows] == [
        (frozenset(range(5)), time(22), time(6)), (frozenset({5, 6}), time(0), time(0))]
    assert (backup.catch_up, backup.max_late, backup.retry) == (CatchUp.ALL, 43200, Retry(3, 30))
    assert (backup.queue, backup.timezone, backup.loc and str(backup.loc)) == (
        "heavy", "America/New_York", f"{tmp_path}/c.yaml:18:7")
    assert sh.shell and sh.command == ("du -sh /srv | tee /tmp/du",) and sh.trigger == Every(5400)
    assert sh.retry == Retry(2, 60)
    assert hook.call == "myapp.jobs:cleanup" and hook.trigger is None and hook.command is None


def test_empty_file_is_valid(tmp_path: Path) -> None:
    cfg = parse_text("# nothing yet\n", tmp_path / "c.yaml")
    assert cfg.exists and cfg.tenants == ()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("1w", 604800), ("250ms", 0.25), (42, 42),
     ("42", 42), (1.5, 1.5), ("1h 30m", 5400)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "soon", "5x", "h", "-5s", -1, True, None, "1h-30m"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [("512M", 512 << 20), ("1G", 1 << 30), ("100K", 102400), (4096, 4096), ("1GiB", 1 << 30),
     ("2mb", 2 << 20), ("10", 10)],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["lots", "5X", "-1", -1, True, "M"])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


# ---- refusing unsafe files (real files, real chmod/chown)


def test_group_or_world_writable_config_is_refused(tmp_path: Path) -> None:
    for mode in (0o664, 0o646, 0o666):
        path = write(tmp_path / "c.yaml", "tenants: {}\n", mode)
        with pytest.raises(UserError, match=f"writable by group or others \\(mode 0{mode:o}\\)") as info:
            load(path)
        assert info.value.hint == f"chmod go-w {path}"
    path.chmod(0o644)
    assert load(path).exists
    path.chmod(0o600)
    assert load(path).exists
    path.chmod(0o666)
    assert load(path, check_owner=False).exists


def test_config_in_a_writable_directory_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    path = write(d / "c.yaml", "tenants: {}\n")
    d.chmod(0o777)
    with pytest.raises(UserError, match="directory writable by group or others"):
        load(path)
    d.chmod(0o1777)  # sticky, like /tmp: others cannot replace our file
    assert load(path).exists


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_config_owned_by_another_user_is_that_users(tmp_path: Path) -> None:
    """Root may read it, but it counts as that user's: it may name only that user as run_as (the attacks
    themselves run as real users in tests/security)."""
    path = write(tmp_path / "c.yaml", "tenants: {}\n")
    os.chown(path, NOBODY, NOBODY)
    assert load(path).owner == NOBODY
    path.write_text("task_server:\n  run_as: root\n")
    with pytest.raises(UserError, match=r"run_as: root is not allowed in a config .* controls"):
        load(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_config_owned_by_the_run_as_user_is_accepted(tmp_path: Path) -> None:
    import pwd

    nobody = pwd.getpwuid(NOBODY).pw_name
    path = write(tmp_path / "c.yaml", f"task_server:\n  run_as: {nobody}\n")
    os.chown(path, NOBODY, NOBODY)
    assert load(path).server.run_as == nobody


def test_unreadable_inputs_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a regular file"):
        load(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_bytes(b"tenants:\n  caf\xe9: {}\n")
    with pytest.raises(UserError, match="not UTF-8 text"):
        load(path)


def test_load_raises_the_first_error_with_position(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "task_server:\n  max_parallel: many\n")
    expected = f"^{path}:2:17: task_server.max_parallel: expected a whole number"
    with pytest.raises(ConfigInvalid, match=expected):
        load(path)


def test_fifo_in_place_of_the_config_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        load(fifo)


def test_disabled_tenant_runs_nothing_but_keeps_its_login(tmp_path: Path) -> None:
    cfg = parse_text("tenants:\n  a:\n    login: alice\n    enabled: false\n  b:\n    login: null\n",
                     tmp_path / "c.yaml")
    a, b = cfg.tenants
    assert (a.login, a.enabled, a.disabled_login) == (None, False, "alice")
    assert (b.login, b.enabled, b.disabled_login) == (None, True, None)


F = Path("/etc/taskserver/t.yaml")

ANCHORED = """\
task_server:
  debug: &d false
  max_parallel: &m 4
  stop_timeout: &s 1.5
  memory_limit: &ml 512M
tenants:
  t:
    login: &l root
    enabled: &e true
    jobs:
      a: {command: [&c /bin/true, *c], every: &ev 2.5, timeout: &to 10, shell: &sh false, enabled: *e}
      b: {command: [/bin/true], every: *ev, timeout: *to, shell: *sh, max_late: *s, retries: *m, queue: &q q1}
      c: {command: [/bin/true], environment: {D: *ml, F: *s}, retries: {count: *m, backoff: *to}}
"""


def _written_out(text: str) -> str:
    """``text`` with each anchor dropped and each alias replaced by its anchored value."""
    values = dict(re.findall(r"&(\w+) ([^\s,}\]]+)", text))
    text = re.sub(r"&\w+ ", "", text)
    return re.sub(r"\*(\w+)", lambda m: values[m.group(1)], text)


@pytest.mark.parametrize("end", ["\n", ""])  # "": the checked loader reads it (yaml_fast takes no such file)
def test_anchored_values_read_as_their_plain_forms(end: str) -> None:
    # ruamel keeps an anchored boolean as a ScalarBoolean, an int: `debug: &d false` was refused as "the
    # number 0", and `enabled: *e` as 1
    plain = _written_out(ANCHORED)
    assert "&" not in plain and "*" not in plain
    got, want = parse_text(ANCHORED.rstrip("\n") + end, F), parse_text(plain.rstrip("\n") + end, F)
    assert got == want
    assert got.server.debug is False and got.tenants[0].jobs[0].enabled is True
    assert got.tenants[0].jobs[0].shell is False and type(got.tenants[0].jobs[0].shell) is bool


@pytest.mark.parametrize("line", ["  max_parallel: &t true", "  stop_timeout: &t true",
                                  "  memory_limit: &t false"])
def test_an_anchored_boolean_is_refused_where_a_boolean_is(line: str) -> None:
    # an int, it passed as the number 1 (a one-second stop_timeout) or 0
    def error(text: str) -> str:
        with pytest.raises(ConfigInvalid) as info:
            parse_text(f"task_server:\n{text}\n", F)
        return str(info.value.errors[0])

    assert error(line) == error(line.replace("&t ", "")), line
    assert "got a boolean" in error(line)
