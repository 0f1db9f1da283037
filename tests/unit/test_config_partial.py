"""`jobs` commands read one tenant (config.load_tenant): the server section and that tenant come out exactly
as a full load makes them; the rest of the file is only read through, so its YAML syntax and every input
limit still hold there, and the file's trust is checked as for a full load. The libyaml path and the
checked loader leave out the same parts (config_yaml.load_tree with ``prune``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from taskserver.runtime import config, config_yaml, control, limits, yaml_fast
from taskserver.runtime.errors import UserError

pytestmark = pytest.mark.skipif(yaml_fast.CParser is None, reason="the C parser is not installed")


def _jobs(prefix: str, n: int) -> str:
    return "".join(f"      {prefix}{i}:\n        cron: \"{i % 60} 3 * * *\"\n"
                   f"        command: [\"/bin/true\", \"{i}\"]\n" for i in range(n))


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    path.chmod(0o644)
    return path


def _text(tmp_path: Path, other_jobs: str = "", tail: str = "") -> str:
    return (f"task_server:\n  state_dir: {tmp_path / 'state'}\n  max_parallel: 3\n"
            f"tenants:\n  first:\n    login: one\n    timezone: Europe/Berlin\n    jobs:\n{_jobs('a', 30)}"
            f"  second:\n    login: two\n    jobs:\n{_jobs('b', 20)}{other_jobs}"
            f"  third:\n    login: three\n    store: {{sqlite: third.sqlite}}\n{tail}")


@pytest.mark.parametrize("name", ["first", "second", "third"])
def test_one_tenant_is_what_the_whole_load_makes_of_it(tmp_path: Path, name: str) -> None:
    path = _file(tmp_path, _text(tmp_path))
    whole = config.load(path)
    one = config.load_tenant(path, name, jobs=True)
    assert one.server == whole.server
    assert one.tenants == (whole.tenant(name),)
    lean = config.load_tenant(path, name, jobs=False)
    wanted = whole.tenant(name)
    assert wanted is not None and lean.tenants[0].jobs == ()
    assert lean.tenants[0].store == wanted.store and lean.tenants[0].timezone == wanted.timezone


def test_no_name_means_the_only_tenant_else_default(tmp_path: Path) -> None:
    single = _file(tmp_path, f"task_server:\n  state_dir: {tmp_path}\ntenants:\n  solo:\n    login: me\n"
                   f"    jobs:\n{_jobs('s', 5)}")
    assert [j.name for j in config.load_tenant(single, None, jobs=True).tenants[0].jobs][-1] == "s4"
    path = _file(tmp_path, _text(tmp_path) + f"  default:\n    login: d\n    jobs:\n{_jobs('d', 3)}")
    got = config.load_tenant(path, None, jobs=True)
    assert [t.name for t in got.tenants] == ["default"] and len(got.tenants[0].jobs) == 3


def test_an_unknown_tenant_gets_the_whole_file(tmp_path: Path) -> None:
    path = _file(tmp_path, _text(tmp_path))
    got = config.load_tenant(path, "nope", jobs=False)
    assert [t.name for t in got.tenants] == ["first", "second", "third"]


def test_a_mistake_in_a_job_left_out_is_for_check_and_the_daemon(tmp_path: Path) -> None:
    """A job's value is checked where it is read; the one tenant a command acts on is read in full."""
    bad = "      broken:\n        cron: \"99 * * * *\"\n        command: [\"/bin/true\"]\n"
    path = _file(tmp_path, _text(tmp_path, other_jobs=bad))
    with pytest.raises(config.ConfigInvalid, match=r"c\.yaml:\d+:\d+: .*cron"):
        config.load(path)
    assert config.load_tenant(path, "first", jobs=True).tenants[0].name == "first"
    with pytest.raises(config.ConfigInvalid, match=r"c\.yaml:\d+:\d+: .*cron"):
        config.load_tenant(path, "second", jobs=True)


BROKEN = {  # in the second tenant's jobs, which a command for `first` leaves out: each still refused
    "syntax": "      x: [1, 2\n",
    "depth": "      x: " + "[" * limits.MAX_DEPTH + "]" * limits.MAX_DEPTH + "\n",
    "value size": "      x: '" + "y" * (limits.MAX_VALUE_CHARS + 1) + "'\n",
    "number size": "      x: " + "1" * 101 + "\n",
    "entries": "      x: [" + ", ".join(["1"] * (limits.MAX_ENTRIES + 1)) + "]\n",
    "tag": "      x: !!python/object:os.system y\n",
    "duplicate key": "      b0: {}\n",
    "duplicate key in a job": "      x: {cron: a, cron: b}\n",
    "aliases": "      x: &x 1\n      y: [" + ", ".join(["*x"] * (limits.MAX_ALIASES + 1)) + "]\n",
    "alias inside its anchor": "      x: &x {a: *x}\n",
    "bad timestamp": "      x: 2026-02-31\n",
    "merge key": "      x: {<<: 5}\n",
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_syntax_and_input_limits_hold_in_the_parts_left_out(tmp_path: Path, name: str) -> None:
    path = _file(tmp_path, _text(tmp_path, other_jobs=BROKEN[name]))
    with pytest.raises(UserError) as whole:
        config.load(path)
    with pytest.raises(UserError) as one:
        config.load_tenant(path, "first", jobs=False)
    assert str(one.value) == str(whole.value) and str(one.value).startswith(f"{path}:")


def test_an_alias_into_a_part_left_out_is_built_by_the_checked_loader(tmp_path: Path) -> None:
    text = _text(tmp_path).replace("    login: two\n    jobs:\n", "    login: two\n    jobs: &shared\n")
    text += "  fourth:\n    login: four\n    jobs: *shared\n"
    path = _file(tmp_path, text)
    whole = config.load(path)
    assert config.load_tenant(path, "fourth", jobs=True).tenants == (whole.tenant("fourth"),)


@pytest.mark.parametrize("text", [
    "tenants:\n  a:\n    jobs: {x: {every: 1m}}\n  b:\n    jobs:\n      y: {every: 2m}\n",
    "tenants:\n  a: [1, 2]\n  b:\n    login: x\n    jobs: []\n",
    "task_server: {}\ntenants:\n  b:\n    jobs:\n      - a\n  c: {jobs: {z: [1, {q: 2}]}}\n",
])
def test_both_loaders_leave_out_the_same_parts(text: str) -> None:
    def prune(path: tuple[Any, ...]) -> bool:
        return (len(path) == 2 and path[1] != "b") or (len(path) == 3 and path[2] == "jobs")

    fast_paths, checked_paths = yaml_fast.Pruned(), yaml_fast.Pruned()
    fast = yaml_fast.load(text, prune, fast_paths)
    checked = config_yaml.load_yaml(text, "f.yaml")
    config_yaml._prune(checked, (), prune, checked_paths)
    assert fast == checked and fast_paths.paths == checked_paths.paths


def test_trust_is_checked_as_for_a_whole_load(tmp_path: Path) -> None:
    path = _file(tmp_path, _text(tmp_path))
    path.chmod(0o666)
    with pytest.raises(UserError, match="writable by group or others"):
        config.load_tenant(path, "first", jobs=False)
    path.chmod(0o644)
    os.chmod(tmp_path, 0o777)
    try:
        with pytest.raises(UserError, match="writable by group or others"):
            config.load_tenant(path, "first", jobs=False)
    finally:
        os.chmod(tmp_path, 0o755)


def _outline(path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """What a daemon of ``path`` publishes (control._summary, through its JSON .info file) once the file
    has not changed for a while (config.SETTLED_NS; here: at once)."""
    monkeypatch.setattr(config, "SETTLED_NS", 0)
    try:
        return json.loads(json.dumps(control._summary(config.load(path), 0.0)))["outline"]
    finally:
        monkeypatch.undo()


def test_a_file_changed_just_before_it_was_read_is_not_outlined(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(tmp_path, _text(tmp_path))
    assert config.load(path).outline is None  # it may change again within the same tick of the file clock
    assert _outline(path, monkeypatch)[0] == list(config.file_identity(path.stat()))


@pytest.mark.parametrize(("name", "jobs"), [("first", False), ("second", True), ("third", True)])
def test_the_daemons_outline_leaves_the_other_jobs_unread(tmp_path: Path, name: str, jobs: bool,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(tmp_path, _text(tmp_path))
    outline = _outline(path, monkeypatch)
    assert [span[0] for span in outline[1]] == ["first", "second"]
    pruned = config.load_tenant(path, name, jobs=jobs)
    text = path.read_text()
    assert config._blank_jobs(text, path.stat(), outline, name if jobs else None) is not None
    got = config._load(path, True, None, lambda p: len(p) == 2 and p[0] == "tenants" and p[1] != name,
                       outline=outline, keep=name if jobs else None)
    assert got.tenant(name) == pruned.tenants[0] and got.server == pruned.server


def test_an_outlined_read_words_errors_at_their_own_place(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Blanking keeps every line break and column: a mistake after the jobs left out is named where it is."""
    path = _file(tmp_path, _text(tmp_path))
    outline = _outline(path, monkeypatch)
    bad = path.read_text().replace("    login: three\n", "    login: three\n    timezone: Nowhere/Else\n")
    path.write_text(bad)
    with pytest.raises(config.ConfigInvalid) as whole:
        config.load(path)
    bad_outline = [config.file_identity(path.stat()), outline[1]]  # as if published for this file
    with pytest.raises(config.ConfigInvalid) as one:
        config._load(path, True, None, outline=bad_outline, keep=None)
    assert str(one.value) == str(whole.value)


@pytest.mark.parametrize("outline", [
    "changed", "same size", [1, 2, 3], None, [[0], [["first", 5, 2]]], "forged spans", "past the end",
])
def test_an_outline_that_does_not_fit_the_file_is_not_used(tmp_path: Path, outline: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(tmp_path, _text(tmp_path))
    text = path.read_text()
    real = _outline(path, monkeypatch)
    assert config._blank_jobs(text, path.stat(), real, None) is not None
    if outline in ("changed", "same size"):  # the file changed since the daemon read it
        if outline == "changed":
            path.write_text(text.replace("max_parallel: 3", "max_parallel: 12"))
        else:  # replaced, as editors save: another inode (a rewrite in place changes its ctime)
            (tmp_path / "new").write_text(text.replace("max_parallel: 3", "max_parallel: 4"))
            os.replace(tmp_path / "new", path)
        assert config._blank_jobs(path.read_text(), path.stat(), real, None) is None
        return
    if outline == "forged spans":  # this file's identity, spans out of order
        outline = [real[0], [real[1][1], real[1][0]]]
    if outline == "past the end":
        outline = [real[0], [["first", 10, len(text) + 5]]]
    assert config._blank_jobs(text, path.stat(), outline, None) is None
