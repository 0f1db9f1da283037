"""Every config mistake is reported at its exact file:line:column with what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskserver.runtime.config import ConfigInvalid, parse_text
from taskserver.runtime.config_parse import VALUE_HINT

F = Path("/etc/taskserver/t.yaml")

HEAD = """\
task_server:
  max_parallel: 2
tenants:
  acme:
    login: acme
    jobs:
"""


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        parse_text(text, F)
    return [f"{e}" + (f" || {e.hint}" if e.hint else "") for e in info.value.errors]


def one(text: str) -> str:
    errs = errors(text)
    assert len(errs) == 1, errs
    return errs[0]


@pytest.mark.parametrize(
    ("body", "where", "words"),
    [
        # unknown keys, with a close-match hint
        ("      a:\n        command: [x]\n        timout: 5m\n", "9:9",
         "unknown key 'timout' || did you mean 'timeout'?"),
        ("      a:\n        command: [x]\n        cron: '* * * * *'\n        retrys: 2\n", "10:9",
         "did you mean 'retries'?"),
        # wrong types
        ("      a:\n        command: [x]\n        enabled: yes\n", "9:18",
         "enabled: expected true or false, got the text 'yes'"),
        ("      a:\n        command: /bin/true\n", "8:18", "expected a list of non-empty strings"),
        ("      a:\n        command: [x]\n        shell: true\n", "8:18",
         "with shell: true the command is one string"),
        ("      a:\n        command: [x]\n        retries: -1\n", "9:18", "expected a number of at least 0"),
        ("      a: [1, 2]\n", "7:10", "tenants.acme.jobs.a: expected a mapping"),
        # triggers
        ("      a:\n        command: [x]\n        cron: '@daily'\n        every: 1h\n", "10:9",
         "a job has cron: or every:, not both"),
        ("      a:\n        command: [x]\n        cron: '61 * * * *'\n", "9:15",
         "bad cron expression '61 * * * *': minute: 61 is out of range 0-59"),
        ("      a:\n        command: [x]\n        cron: '@reboot'\n", "9:15", "unknown alias"),
        ("      a:\n        command: [x]\n        cron: '*/ * * * *'\n", "9:15",
         "bad cron expression '*/ * * * *': minute: step '' must be a positive number"),
        # command / call
        ("      a:\n        cron: '@daily'\n", "7:7", "a job needs command: (an argv list) or call:"),
        ("      a:\n        command: [x]\n        call: 'm:f'\n", "9:9", "command: or call:, not both"),
        ("      a:\n        call: 'not a call'\n", "8:15", "expected module:function"),
        # time zones, windows, durations
        ("      a:\n        command: [x]\n        timezone: Europe/Berln\n", "9:19",
         "unknown time zone 'Europe/Berln' || use an IANA zone name such as Europe/Berlin or UTC; "
         "did you mean 'Europe/Berlin'?"),
        ("      a:\n        command: [x]\n        window: 'mon-fri 22:00-6'\n", "9:17", "bad window"),
        ("      a:\n        command: [x]\n        window: ['sat', 'mon-fri 25:00-06:00']\n", "9:25",
         "bad window: '25:00' is not a time of day"),
        ("      a:\n        command: [x]\n        every: soon\n", "9:16",
         "expected a duration, got the text 'soon' || write a duration like 90s"),
        ("      a:\n        command: [x]\n        every: 0s\n", "9:16",
         "expected a duration above zero (at least 1ms)"),
        # below 1 ms: 5e-324 was 0 as a timedelta (the daemon spun), 1e-300 a ZeroDivisionError in `run`
        ("      a:\n        command: [x]\n        every: 5e-324\n", "9:16",
         "tenants.acme.jobs.a.every: expected 0 or a duration of at least 1ms, got the number 5e-324"),
        ("      a:\n        command: [x]\n        every: 0.0000004\n", "9:16",
         "expected 0 or a duration of at least 1ms, got the number 4e-07"),
        ("      a:\n        command: [x]\n        every: 0.5ms\n", "9:16",
         "expected 0 or a duration of at least 1ms, got the text '0.5ms'"),
        ("      a:\n        command: [x]\n        timeout: 1e-300\n", "9:18", "at least 1ms"),
        ("      a:\n        command: [x]\n        max_late: 5e-324\n", "9:19", "at least 1ms"),
        ("      a:\n        command: [x]\n        retries: {count: 1, backoff: 5e-324}\n", "9:38",
         "tenants.acme.jobs.a.retries.backoff: expected 0 or a duration of at least 1ms"),
        ("      a:\n        command: [x]\n        notify: [{command: {argv: [y], timeout: 1e-9}}]\n", "9:49",
         "at least 1ms"),
        ("      a:\n        command: [x]\n        timeout: 5x\n", "9:18", "expected a duration"),
        ("      a:\n        command: [x]\n        catch_up: newest\n", "9:19",
         "expected skip, latest or all"),
        ("      a:\n        command: [x]\n        cron: '0 12 * * *'\n        window: 'fri 22:00-06:00'\n",
         "10:9", "the cron expression never matches inside the window"),
        # names
        ("      'bad name':\n        command: [x]\n", "7:7", "bad job name 'bad name'"),
    ],
)
def test_job_mistakes(body: str, where: str, words: str) -> None:
    err = one(HEAD + body)
    assert err.startswith(f"{F}:{where}: "), err
    assert words in err, err


def test_duplicate_job_names_are_a_syntax_error_at_the_second() -> None:
    err = one(HEAD + "      a:\n        command: [x]\n      a:\n        command: [y]\n")
    assert err.startswith(f"{F}:9:7: found duplicate key \"a\"")
    assert "first one is at line 7" in err


def test_yaml_syntax_error() -> None:
    err = one(HEAD + "      a:\n        command: [x\n        cron: y\n")
    assert err.startswith(f"{F}:9:13: "), err


def test_server_section_mistakes() -> None:
    text = """\
task_server:
  memory_limit: lots
  max_parallel: 0
  stop_timeout: 1h30m
  state_dir: relative/dir
  run_as: "bad user"
  debg: true
tenants:
"""
    assert errors(text) == [
        f"{F}:2:17: task_server.memory_limit: expected a size, got the text 'lots' || write a size like 256M"
        " or 1G, well above the daemon's own (about 22M, plus about 1K a job)",
        f"{F}:3:17: task_server.max_parallel: expected a number of at least 1, got 0 || {VALUE_HINT}",
        f"{F}:5:14: task_server.state_dir: expected an absolute path, got 'relative/dir' || {VALUE_HINT}",
        f"{F}:6:11: task_server.run_as: expected USER or USER:GROUP, got 'bad user' || for example run_as:"
        " taskserver or run_as: taskserver:taskserver",
        f"{F}:7:3: task_server: unknown key 'debg' || did you mean 'debug'?",
    ]


@pytest.mark.parametrize("size", ["0", "0.0000001K", "1M", "32767K", "33554431"])
def test_a_memory_limit_below_the_daemons_own_size_is_refused(size: str) -> None:
    # the daemon ended after its first run (at once with 0): a restart loop under a supervisor
    got = one(f"task_server:\n  memory_limit: {size}\n")
    assert got.startswith(f"{F}:2:17: task_server.memory_limit: expected a size of at least 32M (the daemon "
                          "alone takes about 22M), got "), got
    assert got.endswith("|| write a size like 256M or 1G, well above the daemon's own (about 22M, plus about "
                        "1K a job)"), got
    assert parse_text("task_server:\n  memory_limit: 32M\n", F).server.memory_limit == 32 << 20


def test_tenant_mistakes() -> None:
    text = """\
tenants:
  acme:
    login: acme
    stor: {sqlite: a.db}
  beta:
    store: {mysql: x}
    timezone: Mars/Olympus
  gamma: 5
tennants: {}
"""
    errs = errors(text)
    assert [e.split(" ", 1)[0] for e in errs] == [f"{F}:4:5:", f"{F}:6:12:", f"{F}:7:15:", f"{F}:8:10:",
                                                  f"{F}:9:1:"]
    assert "did you mean 'store'?" in errs[0]
    assert "expected exactly one of sqlite: or postgresql:" in errs[1]
    assert "unknown time zone 'Mars/Olympus'" in errs[2]
    assert "tenants.gamma: expected a mapping" in errs[3]
    assert "did you mean 'tenants'?" in errs[4]


NAME_HINT = "names use letters, digits, '_', '.', '-' (at most 64, starting with a letter or digit)"


@pytest.mark.parametrize(("key", "shown", "read_as", "hint"), [
    ("123", "123", "a number", "quote it to make it text: '123':"),
    ("2020-01-01", "2020-01-01", "a date", "quote it to make it text: '2020-01-01':"),
    ("1e3", "1e3", "a number", "quote it to make it text: '1e3':"),
    ("0x1F", "0x1F", "a number", "quote it to make it text: '0x1F':"),
    ("true", "true", "a boolean", "quote it to make it text: 'true':"),
    ("&k 12", "12", "a number", "quote it to make it text: '12':"),
    ("1.5e+3", "1.5e+3", "a number", NAME_HINT),
    ("2020-01-01 10:00:00", "2020-01-01 10:00:00", "a date", NAME_HINT),
    ("~", "~", "nothing (null)", NAME_HINT),
])
def test_a_name_yaml_reads_as_another_type_is_shown_as_written(key: str, shown: str, read_as: str,
                                                               hint: str) -> None:
    # it was shown as Python has it: 1000.0, datetime.date(2020, 1, 1), True
    said = f"bad job name {shown} (YAML reads it as {read_as}) || {hint}"
    assert one(HEAD + f"      {key}:\n        command: [x]\n") == f"{F}:7:7: tenants.acme.jobs: {said}"
    flow = f"tenants: {{t: {{jobs: {{{key}: {{command: [x]}}}}}}}}\n"
    # (ruamel places a null key of a flow mapping at the "{" before it: that one is not tried)
    assert key == "~" or one(flow) == f"{F}:1:22: tenants.t.jobs: {said}"
    said = said.replace("job name", "tenant name")
    assert one(f"tenants:\n  {key}:\n    jobs: {{}}\n") == f"{F}:2:3: tenants: {said}"


def test_a_mapping_or_list_as_a_name_is_named_so() -> None:
    for key, shown in (("{a: 1}", "a mapping"), ("[1, 2]", "a list")):
        assert one(HEAD + f"      ? {key}\n      : {{command: [x]}}\n") == (
            f"{F}:7:9: tenants.acme.jobs: bad job name {shown} || {NAME_HINT}")


def test_an_unknown_key_yaml_reads_as_another_type_is_shown_as_written() -> None:
    assert one(HEAD + "      a:\n        command: [x]\n        2020-01-01: 1\n").startswith(
        f"{F}:9:9: tenants.acme.jobs.a: unknown key 2020-01-01 || allowed keys: cron, every,")


def test_all_errors_are_collected_in_file_order() -> None:
    text = HEAD + "      a:\n        every: x\n      b:\n        cron: '* *'\n        command: [z]\n"
    errs = errors(text)
    assert [e.split(": ", 1)[0] for e in errs] == [f"{F}:7:7", f"{F}:8:16", f"{F}:10:15"]
    with pytest.raises(ConfigInvalid) as info:
        parse_text(text, F)
    assert str(info.value).endswith("(and 2 more)")


def test_top_level_not_a_mapping() -> None:
    assert one("- a\n- b\n").startswith(f"{F}:1:1: file: expected a mapping")


def test_a_value_repeated_is_checked_and_reported_at_each_place() -> None:
    """Jobs share what they repeat (a converted cron line, a checked argv: runtime/config_jobs.py), never a
    mistake: the same wrong value written twice is reported twice, each at its own place, also after the
    same key held a good value, and an argv with a list inside is an error, not a crash of the sharing."""
    body = "".join([
        '      a: {cron: "0 3 * * *", command: [/bin/x, y]}\n',
        '      b: {cron: "0 3 * * *", command: [/bin/x, y]}\n',
        '      c: {cron: "0 25 * * *", command: [/bin/x, ""]}\n',
        '      d: {cron: "0 25 * * *", command: [/bin/x, ""]}\n',
        '      e: {every: 5m, command: [/bin/x, [y]]}\n',
    ])
    got = errors(HEAD + body)
    assert [e.split(": ")[0] for e in got] == [f"{F}:{line}:{col}" for line, col in
                                               ((9, 17), (9, 40), (10, 17), (10, 40), (11, 31))]
    assert "bad cron expression" in got[0] and "bad cron expression" in got[2]
    assert "non-empty strings" in got[1] and "non-empty strings" in got[3] and "non-empty strings" in got[4]


def test_two_tenants_never_share_one_sqlite_file() -> None:
    """One file named by two tenants mixed their runs: through the web side a token of one tenant read the
    other's tasks. A tenant's default file counts too; PostgreSQL keeps tenants apart by name."""
    got = errors("tenants:\n  a:\n    login: x\n    store: {sqlite: shared.sqlite}\n"
                 "  b:\n    login: y\n    store: {sqlite: shared.sqlite}\n"
                 "  c:\n    login: z\n    store: {sqlite: d.sqlite}\n  d:\n    login: w\n"
                 "  e:\n    login: v\n    store: {sqlite: a.sqlite}\n")
    assert [g.split(": ", 2)[:2] for g in got] == [[f"{F}:5:3", "tenants.b.store"],
                                                   [f"{F}:11:3", "tenants.d.store"]]
    assert all("store too" in g for g in got)
