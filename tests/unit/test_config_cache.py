"""The daemon's kept parse (runtime/config_cache.py): believed only for the very text, code and machine it was
made with, and only from a file its user alone could have written; anything else is a parse, never an error.

Every test goes through the daemon's own load (``control._load_path``: the kept parse, else the parse in a
child, which then keeps it) on real files; none fakes what is checked."""

from __future__ import annotations

import dataclasses
import os
import pickle
import pwd
import shutil
import subprocess
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskserver.runtime import config, config_cache, control, limits
from taskserver.runtime.errors import UserError
from taskserver.runtime.model import Config

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the kept parse of a root daemon: needs root")
pytestmark = root_only


def _text(state: Path, extra_server: str = "", command: str = "aaa", sendmail: Path | None = None,
          env_file: Path | None = None) -> str:
    mail = f"    notify: {{email: {{to: ops@example.com, sendmail: {sendmail}}}}}\n" if sendmail else ""
    env = f"        env_file: {env_file}\n" if env_file else ""
    return (f"task_server:\n  state_dir: {state}\n  run_as: root\n{extra_server}"
            "tenants:\n  shop:\n    login: app\n    timezone: Europe/Berlin\n" + mail +
            "    jobs:\n"
            f"      nightly:\n        cron: \"30 2 * * *\"\n        command: [/bin/echo, {command}]\n" + env +
            "        window: \"mon-fri 01:00-05:00\"\n        retries: {count: 2, backoff: 5m}\n"
            "      often: {every: 90s, command: [/bin/true], timezone: America/New_York, queue: q}\n"
            "  other:\n    login: b\n    store: {sqlite: other.db}\n"
            "    jobs:\n      x: {every: 1h, command: [/bin/true], catch_up: all}\n")


def _program(path: Path) -> Path:
    """An executable file at ``path`` (a sendmail that is there)."""
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A root config whose state dir exists (the daemon made it at its first start)."""
    (tmp_path / "var").mkdir()
    state = tmp_path / "var" / "state"
    state.mkdir(mode=0o711)
    path = tmp_path / "ts.yaml"
    path.write_text(_text(state))
    path.chmod(0o644)
    yield path, state


def _same(a: Config, b: Config) -> bool:
    """Equal but for when the file last changed (a load within 2 s of a change outlines no jobs)."""
    spans = (a.outline[1] if a.outline else None, b.outline[1] if b.outline else None)
    return dataclasses.replace(a, outline=None) == dataclasses.replace(b, outline=None) and (
        None in spans or spans[0] == spans[1])


def _kept(state: Path) -> Path:
    return state / config_cache.NAME


def test_the_kept_parse_is_the_parse(site: tuple[Path, Path], tmp_path: Path) -> None:
    path, state = site
    sendmail = _program(tmp_path / "sendmail")
    env = tmp_path / "job.env"
    env.write_text("A=1\n")
    path.write_text(_text(state, "  install_dir: /\n", sendmail=sendmail, env_file=env))
    assert config.load_kept(path) is None  # nothing kept yet
    first = control._load_path(path)  # parsed in the child, which keeps it
    assert _kept(state).stat().st_mode & 0o777 == 0o600
    kept = config.load_kept(path)
    assert kept is not None
    assert _same(kept, first) and _same(kept, config.load(path))
    assert kept.tenants[0].jobs[0].env.file_vars == (("A", "1"),)
    # what every load does after the parse is done again: an env file's new text is read
    env.write_text("A=2\n")
    again = config.load_kept(path)
    assert again is not None and _same(again, config.load(path))
    assert again.tenants[0].jobs[0].env.file_vars == (("A", "2"),)


def test_an_edit_is_parsed_even_with_the_same_size_and_times(site: tuple[Path, Path]) -> None:
    path, state = site
    control._load_path(path)
    assert config.load_kept(path) is not None
    st = path.stat()
    path.write_text(_text(state, command="bbb"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    assert config.load_kept(path) is None
    got = control._load_path(path)
    assert got.tenants[0].jobs[0].command == ("/bin/echo", "bbb")
    kept = config.load_kept(path)  # the new parse is the one kept now
    assert kept is not None and kept.tenants[0].jobs[0].command == ("/bin/echo", "bbb")


def test_other_code_or_limits_parse_again(site: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    path, _state = site
    control._load_path(path)
    assert config.load_kept(path) is not None
    monkeypatch.setattr(limits, "MAX_JOBS", limits.MAX_JOBS + 1)
    assert config.load_kept(path) is None
    monkeypatch.undo()
    module = Path(config_cache.__file__).with_name("model.py")
    st = module.stat()
    try:
        os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert config.load_kept(path) is None
    finally:
        os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert config.load_kept(path) is not None


@pytest.fixture
def scratch_user() -> Iterator[str]:
    name = f"tsck{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


def test_what_the_parse_read_from_the_machine_is_read_again(site: tuple[Path, Path], tmp_path: Path,
                                                            scratch_user: str) -> None:
    """A user deleted, a directory removed, a sendmail gone: the kept parse is not believed, and the error
    is the parse's own, at its place in the file."""
    path, state = site
    sendmail = _program(tmp_path / "sendmail")
    install = tmp_path / "app"
    install.mkdir()
    for extra, undo, words in ((f"  install_dir: {install}\n", install.rmdir, "task_server.install_dir:"),
                               ("", sendmail.unlink, "email: sendmail")):
        path.write_text(_text(state, extra, sendmail=sendmail))
        control._load_path(path)
        assert config.load_kept(path) is not None
        undo()
        assert config.load_kept(path) is None
        with pytest.raises(UserError) as got:
            control._load_path(path)
        assert words in got.value.message and f"{path}:" in got.value.message, got.value.message
        install.mkdir(exist_ok=True)
        _program(sendmail)
    # the daemon's user
    path.write_text(_text(state).replace("run_as: root", f"run_as: {scratch_user}"))
    control._load_path(path)
    assert config.load_kept(path) is not None
    subprocess.run(["userdel", scratch_user], check=True)
    assert config.load_kept(path) is None
    with pytest.raises(UserError) as got:
        control._load_path(path)
    assert f"no user '{scratch_user}' on this machine" in got.value.message
    assert got.value.message.startswith(f"{path}:3:11: task_server.run_as:")


def _framed(body: bytes) -> bytes:
    """``body`` as the file holds it: the header and a checksum that fits (what ``keep`` writes)."""
    return config_cache.MAGIC + zlib.crc32(body).to_bytes(4, "big") + body


@pytest.mark.parametrize("spoil", ["garbage", "truncated", "group-readable", "symlink", "foreign", "fifo",
                                   "directory", "other-key", "not-a-config", "flipped-byte",
                                   "framed-garbage"])
def test_a_kept_file_that_cannot_be_believed_is_a_parse(site: tuple[Path, Path], tmp_path: Path,
                                                        spoil: str) -> None:
    path, state = site
    control._load_path(path)
    kept = _kept(state)
    good = kept.read_bytes()
    if spoil == "garbage":
        kept.write_bytes(b"\x80\x05not a pickle at all")
    elif spoil == "truncated":
        kept.write_bytes(good[: len(good) // 2])
    elif spoil == "group-readable":
        kept.chmod(0o640)
    elif spoil == "symlink":
        elsewhere = tmp_path / "elsewhere"
        shutil.copy(kept, elsewhere)
        elsewhere.chmod(0o600)
        kept.unlink()
        kept.symlink_to(elsewhere)
    elif spoil == "foreign":
        os.chown(kept, pwd.getpwnam("nobody").pw_uid, -1)
    elif spoil == "fifo":
        kept.unlink()
        os.mkfifo(kept, 0o600)
    elif spoil == "directory":
        kept.unlink()
        kept.mkdir(mode=0o700)
    elif spoil == "other-key":
        key, packed = pickle.loads(good[config_cache._BODY:])
        kept.write_bytes(_framed(pickle.dumps(((*key[:-1], key[-1] + "# another text\n"), packed))))
    elif spoil == "not-a-config":
        key, _packed = pickle.loads(good[config_cache._BODY:])
        kept.write_bytes(_framed(pickle.dumps((key, "a string"))))
    elif spoil == "flipped-byte":  # still unpickles, with another command: the checksum tells
        at = good.rindex(b"/bin/echo")
        kept.write_bytes(good[:at] + b"/bin/ecHo" + good[at + 9:])
        assert pickle.loads(kept.read_bytes()[config_cache._BODY:])  # the damage alone would not show
    elif spoil == "framed-garbage":
        kept.write_bytes(_framed(b"\x80\x05not a pickle"))
    assert config.load_kept(path) is None
    got = control._load_path(path)  # parsed, no error
    assert got.tenants[0].jobs[0].command == ("/bin/echo", "aaa")
    if spoil != "directory":  # the parse is kept again, over what was there
        assert config.load_kept(path) is not None


@pytest.mark.parametrize("where", ["state", "parent"])
def test_a_state_dir_others_can_write_keeps_nothing(site: tuple[Path, Path], tmp_path: Path,
                                                    where: str) -> None:
    path, state = site
    control._load_path(path)
    assert config.load_kept(path) is not None
    (state if where == "state" else state.parent).chmod(0o777)
    try:
        assert config.load_kept(path) is None
        _kept(state).unlink()
        control._load_path(path)
        assert not _kept(state).exists()
    finally:
        state.parent.chmod(0o755)
        state.chmod(0o711)


def test_a_state_dir_that_does_not_exist_yet_or_is_full(site: tuple[Path, Path], tmp_path: Path) -> None:
    """No state dir yet (a first start): parsed, nothing kept, nothing made. A state dir on a full file
    system: parsed, nothing half-written left behind."""
    path, state = site
    shutil.rmtree(state)
    control._load_path(path)
    assert not state.exists()
    full = tmp_path / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(full)],
                      check=False, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        big = _text(full)
        jobs = "".join(f"      j{i}: {{every: 1h, command: [/bin/true, {'y' * 40}]}}\n" for i in range(2000))
        path.write_text(big.replace("    jobs:\n      x:", "    jobs:\n" + jobs + "      x:"))
        got = control._load_path(path)
        assert len(got.tenants[1].jobs) == 2001
        assert sorted(os.listdir(full)) == []
    finally:
        subprocess.run(["umount", str(full)], check=False)


def test_a_state_dir_reached_through_a_symlink_is_judged_where_it_leads(tmp_path: Path) -> None:
    """``link/state`` with ``link`` leading into a directory another user owns: that user could swap what
    lies below it, so nothing is kept or read there; the same path without that owner keeps as usual."""
    inner = tmp_path / "theirs" / "deep"
    inner.mkdir(parents=True)
    (inner / "state").mkdir(mode=0o711)
    (tmp_path / "link").symlink_to(inner)
    path = tmp_path / "ts.yaml"
    path.write_text(_text(tmp_path / "link" / "state"))
    path.chmod(0o644)
    control._load_path(path)
    assert config.load_kept(path) is not None  # all of it root's: kept and read through the link
    os.chown(tmp_path / "theirs", pwd.getpwnam("nobody").pw_uid, -1)
    assert config.load_kept(path) is None
    (inner / "state" / config_cache.NAME).unlink()
    control._load_path(path)
    assert not (inner / "state" / config_cache.NAME).exists()


def test_a_write_killed_half_way_leaves_one_file_that_the_next_replaces(site: tuple[Path, Path]) -> None:
    """The parse child killed while it writes (kill -9 of the daemon's process group at start): a partial
    file under the one temporary name. The next start parses (the kept file is still the old one, or none)
    and replaces it; temporary files never pile up."""
    path, state = site
    leftover = state / f"{config_cache.NAME}.new"
    leftover.write_bytes(config_cache.MAGIC + b"\0\0\0\0half a pickle")
    leftover.chmod(0o644)
    control._load_path(path)
    assert sorted(p.name for p in state.iterdir()) == [config_cache.NAME]
    assert config.load_kept(path) is not None
    assert (state / config_cache.NAME).stat().st_mode & 0o777 == 0o600
