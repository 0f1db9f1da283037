"""The stated input limits and rules, one by one (the fuzz suite in tests/fuzz covers them in bulk).

Each test uses the real parser, the real status file renderer and the real checks; only the jobs-per-file
count is lowered (a real 10,001-job file takes seconds to read) to prove that it counts across tenants.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ruamel.yaml.comments import CommentedMap

from taskserver.runtime import config_parse, config_yaml, limits, plans, statusfile, windows
from taskserver.runtime.config import ConfigInvalid, parse_text
from taskserver.runtime.errors import one_line
from taskserver.runtime.model import State
from taskserver.runtime.store import Run

F = Path("/etc/taskserver/t.yaml")


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        parse_text(text, F)
    return [str(e) for e in info.value.errors]


def test_each_limit_is_named_in_its_error() -> None:
    cases = {
        "tenants:\n  t:\n    jobs:\n      j: {command: [x], retries: 1000001}\n": "at most 1000000",
        "a: " + "[" * 40 + "]" * 40 + "\n": f"more than {limits.MAX_DEPTH} levels",
        "a: &a 1\nb: [" + ", ".join(["*a"] * 1001) + "]\n": f"more than {limits.MAX_ALIASES} aliases",
        "a: [" + ", ".join(["1"] * 10_001) + "]\n": f"more than {limits.MAX_ENTRIES} entries",
        "tenants: {" + ", ".join(f"t{i}: {{}}" for i in range(1001)) + "}\n": "more than 1000 tenants",
        "a: '" + "x" * 70_000 + "'\n": f"at most {limits.MAX_VALUE_CHARS}",
        "\n" * 70_000: f"at most {limits.MAX_LINES}",
    }
    for text, words in cases.items():
        got = errors(text)
        assert got[0].startswith(f"{F}:") and words in got[0], (words, got[0][:300])


def test_the_line_limit_counts_lines_not_line_breaks() -> None:
    # exactly MAX_LINES lines, each ended by its line break (the last one too), is within the limit
    assert parse_text("#\n" * limits.MAX_LINES, F).tenants == ()
    assert parse_text("#\n" * (limits.MAX_LINES - 1) + "#", F).tenants == ()
    for text in ("#\n" * (limits.MAX_LINES + 1), "#\n" * limits.MAX_LINES + "#"):
        assert errors(text) == [f"{F}:{limits.MAX_LINES + 1}:1: the file has {limits.MAX_LINES + 1} lines "
                                f"(at most {limits.MAX_LINES})"]


def test_jobs_are_counted_across_tenants(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_JOBS", 3)
    job = "{command: [x]}"
    text = "tenants:\n" + "".join(f"  t{t}:\n    jobs:\n      a: {job}\n      b: {job}\n" for t in range(2))
    assert errors(text) == [f"{F}:9:7: tenants.t1.jobs: more than 3 jobs in one file"]


def test_more_than_max_errors_are_counted_not_listed() -> None:
    text = "task_server:\n" + "".join(f"  bad{i}: 1\n" for i in range(300))
    with pytest.raises(ConfigInvalid) as info:
        parse_text(text, F)
    assert len(info.value.errors) == limits.MAX_ERRORS and info.value.more == 300 - limits.MAX_ERRORS
    assert info.value.message.endswith("(and 299 more)")


def test_recursive_aliases_and_tags_are_refused_where_they_stand() -> None:
    assert errors("x: &x {<<: *x}\n") == [f"{F}:1:12: alias *x is used inside its own anchor"]
    assert errors("tenants: !include more.yaml\n") == [f"{F}:1:10: YAML tag '!include' is not supported"]


def test_merge_keys_without_recursion_still_work() -> None:
    text = ("tenants:\n  t:\n    login: x\n    jobs:\n      a: &base {command: [/bin/true], timeout: 1h}\n"
            "      b:\n        <<: *base\n        every: 5m\n")
    b = parse_text(text, F).tenants[0].jobs[1]
    assert (b.command, b.timeout) == (("/bin/true",), 3600.0)


def _merged_jobs(keys: int, jobs: int) -> str:
    """One tenant whose environment (``keys`` variables) is merged into each of ``jobs`` jobs."""
    env = ", ".join(f"E{i}: v" for i in range(keys))
    job = "{command: [/bin/true], environment: {<<: *e}}"
    return (f"tenants:\n  t:\n    login: x\n    environment: &e {{{env}}}\n    jobs:\n"
            + "".join(f"      j{i}: {job}\n" for i in range(jobs)))


def test_merged_entries_count_against_the_limits_at_the_merge_key() -> None:
    # 256 variables merged into 999 jobs: 60 KB, about 511,000 values once merged; it took 68 s to be read
    # (and 9,990 keys into 999 jobs hours), and passed. Refused at the merge key of the job (the 191st)
    # whose copies take the count over the limit, before anything is built
    got = errors(_merged_jobs(256, 999))
    assert got == [f"{F}:196:50: more than {limits.MAX_NODES} values in one file, counting each entry a "
                   "merge key (<<) copies"]
    many = "".join(f"a{i}: &a{i} {{" + ", ".join(f"k{i}_{j}: 1" for j in range(2_600)) + "}\n"
                   for i in range(4))
    assert errors(many + "b: {<<: [*a0, *a1, *a2, *a3]}\n") == [
        f"{F}:5:5: more than {limits.MAX_ENTRIES} entries in one mapping, counting those a merge key (<<) "
        "copies"]


def test_merge_keys_within_the_limits_load_in_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # 40 variables merged into 999 jobs, 80,000 values: ruamel compared each job's mapping with every one
    # merged before it (CommentedMap.add_referent, through CommentedMap.__eq__: about 500,000 whole-mapping
    # comparisons, 9 s); the loader compares them by identity. Counted, not timed (tests time nothing)
    text = _merged_jobs(40, 999)
    compared = [0]
    equal = CommentedMap.__eq__

    def counted(self: CommentedMap, other: object) -> bool:
        compared[0] += 1
        return bool(equal(self, other))

    monkeypatch.setattr(CommentedMap, "__eq__", counted)
    config_yaml.load_yaml(text, str(F))
    assert compared[0] < 999  # linear in the jobs at worst; none at all now
    monkeypatch.undo()
    jobs = parse_text(text, F).tenants[0].jobs
    assert len(jobs) == 999 and all(len(j.env.environment) == 40 for j in jobs)


def test_a_long_value_is_cut_in_the_message() -> None:
    got = errors("tenants:\n  t:\n    timezone: '" + "Z" * 5000 + "'\n")[0]
    assert len(got) < 300 and "(5000 characters)" in got


@pytest.mark.parametrize("text", ["monkey", "fridge 22:00-23:00", "mondays", "\u0662\u0662:00-23:00"])
def test_windows_take_only_whole_day_names_and_ascii_digits(text: str) -> None:
    with pytest.raises(ValueError, match=r"weekday|HH:MM|not a time"):
        windows.parse_window(text)


def test_full_and_short_day_names_are_both_fine() -> None:
    assert windows.parse_window("Monday-fri 22:00-06:00") == windows.parse_window("mon-friday 22:00-06:00")


@pytest.mark.parametrize(("argv", "words"), [
    ([], "empty"), ([""], "empty"), (["a\0b"], "NUL"), (["/bin/true", "x\0"], "argument 1"),
    (["x" * limits.MAX_ARGV_BYTES], "bytes long"), (["/bin/true"] * (limits.MAX_ARGV_ITEMS + 1), "arguments"),
    ("/bin/true", "not a list"), ([1, 2], "not a list"),
    (["/bin/true", "x\ud800"], "argument 1 of the command is not valid text"),
])
def test_argv_problems(argv: object, words: str) -> None:
    problem = limits.argv_problem(argv)
    assert problem is not None and words in problem
    assert limits.argv_problem(["/bin/echo", "a b", "\n"]) is None


def test_an_undecodable_byte_of_a_command_line_is_a_fine_argument() -> None:
    assert limits.argv_problem(["/bin/echo", "\udcff"]) is None  # os.fsdecode(b"\xff")


def test_status_file_values_cannot_add_lines() -> None:
    run = Run(id=7, job="", queue="x\nstate=OK", state=State.QUE, reason=None, due=None,
              created=time.time(), started=None, finished=None, pid=None, instance=None, exit_code=None,
              attempt=0, argv=("a\nb",), output="", message="m\r\nOK", queued=True)
    lines = statusfile.render(run, "t\u2028x").splitlines()
    assert lines[0] == "QUE" and len(lines) == 12
    assert 'queue="x\\nstate=OK"' in lines and not any(ln.startswith("state=") for ln in lines)


def test_one_line_escapes_control_characters_and_cuts() -> None:
    assert one_line("a\nb\x1b[2Jc") == "a\\nb\\x1b[2Jc"
    assert len(one_line("x" * 10_000)) < 600


def test_reload_names_settings_that_need_a_restart() -> None:
    old = parse_text("task_server: {state_dir: /a, max_parallel: 2}\ntenants: {t: {}}\n", F)
    new = parse_text("task_server: {state_dir: /b, max_parallel: 9}\n"
                     "tenants: {t: {store: {sqlite: x.db}}}\n", F)
    running = plans.restart_settings(old)
    assert plans.restart_needed(running, new) == ["task_server.state_dir", "tenants.t.store"]
    assert plans.restart_needed(running, old) == []


def test_host_checks_run_only_for_this_machine() -> None:
    text = "task_server:\n  run_as: no-such-user-4711\n  install_dir: /nonexistent/app\n"
    assert parse_text(text, F).server.run_as == "no-such-user-4711"  # for another root: not judged here
    with pytest.raises(ConfigInvalid) as info:
        config_parse.parse(text, F, Path("/var/lib/taskserver"), host=True)
    assert [str(e) for e in info.value.errors] == [
        f"{F}:2:11: task_server.run_as: no user 'no-such-user-4711' on this machine",
        f"{F}:3:16: task_server.install_dir: '/nonexistent/app' is not a directory here"]
