"""In-place tenant edits change only the intended lines, byte for byte, and never lose the file."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest

from taskserver.runtime.config import parse_text
from taskserver.runtime.config_edit import disable_tenant, edit_file, enable_tenant, write_atomic
from taskserver.runtime.errors import UserError

F = "c.yaml"
ORIGINAL = """\
# top comment, kept as written
tenants:
    # acme is our main customer
    acme:
        login: 'old'   # quoted, with comment
        jobs:
            a: {cron: "@daily", command: [x]}   # flow style kept
    beta:          # no body yet
    gamma:
        timezone: "Europe/Berlin"
        enabled: false  # paused

# trailing section comment
task_server:
    max_parallel:   3    # odd spacing kept
"""


def changes(old: str, new: str) -> list[tuple[str, list[str], list[str]]]:
    """(op, old lines, new lines) for every differing block."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return [(op, a[i1:i2], b[j1:j2]) for op, i1, i2, j1, j2 in sm.get_opcodes() if op != "equal"]


def tenant(text: str, name: str) -> tuple[str | None, bool]:
    t = parse_text(text, Path(F)).tenant(name)
    assert t is not None
    if not t.enabled:
        assert t.login is None  # a disabled tenant has no login for the daemon: it runs nothing
    return t.login or t.disabled_login, t.enabled


def test_change_login_keeps_quoting_style_and_comment() -> None:
    new = enable_tenant(ORIGINAL, F, "acme", "newuser")
    assert changes(ORIGINAL, new) == [
        ("replace", ["        login: 'old'   # quoted, with comment\n"],
         ["        login: newuser   # quoted, with comment\n"])]
    assert tenant(new, "acme") == ("newuser", True)


def test_enable_tenant_without_body() -> None:
    new = enable_tenant(ORIGINAL, F, "beta", "b")
    assert changes(ORIGINAL, new) == [("insert", [], ["        login: b\n"])]
    assert new.splitlines()[7:9] == ["    beta:          # no body yet", "        login: b"]
    assert tenant(new, "beta") == ("b", True)


def test_enable_paused_tenant_sets_login_and_flips_enabled() -> None:
    new = enable_tenant(ORIGINAL, F, "gamma", "g")
    assert changes(ORIGINAL, new) == [
        ("insert", [], ["        login: g\n"]),
        ("replace", ["        enabled: false  # paused\n"], ["        enabled: true  # paused\n"]),
    ]
    assert tenant(new, "gamma") == ("g", True)


def test_disable_keeps_login_and_jobs() -> None:
    new = disable_tenant(ORIGINAL, F, "acme")
    assert changes(ORIGINAL, new) == [("insert", [], ["        enabled: false\n"])]
    assert tenant(new, "acme") == ("old", False)
    again = enable_tenant(new, F, "acme", None)
    assert tenant(again, "acme") == ("old", True)
    assert changes(new, again) == [("replace", ["        enabled: false\n"], ["        enabled: true\n"])]


def test_new_tenant_goes_at_the_end_of_the_tenants_block() -> None:
    new = enable_tenant(ORIGINAL, F, "delta", "d")
    assert changes(ORIGINAL, new) == [("insert", [], ["    delta:\n", "        login: d\n"])]
    lines = new.splitlines()
    assert lines[10:14] == ["        enabled: false  # paused", "    delta:", "        login: d", ""]
    assert tenant(new, "delta") == ("d", True)


def test_no_tenants_section_yet() -> None:
    text = "task_server:\n  debug: true\n"
    new = enable_tenant(text, F, "acme", "acme")
    assert new == text + "tenants:\n  acme:\n    login: acme\n"
    assert enable_tenant("", F, "x", "u") == "tenants:\n  x:\n    login: u\n"
    assert enable_tenant("tenants:\n", F, "x", "u") == "tenants:\n  x:\n    login: u\n"
    assert enable_tenant("tenants: {}\n", F, "x", "u") == "tenants:\n  x:\n    login: u\n"
    assert enable_tenant("tenants: {}  # none yet\ntask_server: {}\n", F, "x", "u") == (
        "tenants: # none yet\n  x:\n    login: u\ntask_server: {}\n")


def test_refusals() -> None:
    with pytest.raises(UserError, match="no tenant 'nope'"):
        disable_tenant(ORIGINAL, F, "nope")
    with pytest.raises(UserError, match="tenant 'nope' does not exist yet"):
        enable_tenant(ORIGINAL, F, "nope", None)
    with pytest.raises(UserError, match="flow style") as info:
        disable_tenant("tenants:\n  z: {login: z}\n", F, "z")
    assert info.value.hint and "block style" in info.value.hint


@pytest.mark.parametrize(("text", "name", "said"), [
    ("tenants:\n  t: &b\n    login: t\n  u: *b\n", "u", "anchored mapping (&b)"),  # u is t
    ("tenants:\n  t: &b\n    login: t\n  u: *b\n", "t", "anchored mapping (&b)"),  # and t is u
    ("tenants:\n  base: &m\n    login: t\n  t:\n    <<: *m\n    enabled: true\n", "t", "merges"),
    ("tenants: &all\n  t:\n    login: t\n", "t", "anchored mapping (&all)"),
])
def test_a_mapping_other_places_share_is_never_edited(text: str, name: str, said: str) -> None:
    """Writing `enabled: false` into a mapping an alias shares disabled every tenant that named it."""
    for edit in (lambda: disable_tenant(text, F, name), lambda: enable_tenant(text, F, name, "x")):
        with pytest.raises(UserError, match=re.escape(said)) as info:
            edit()
        assert info.value.hint and "by hand" in info.value.hint


def test_edit_file_writes_atomically_and_keeps_mode_and_owner(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(ORIGINAL)
    path.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(path, 0, 65534)
    inode = path.stat().st_ino

    def validate(text: str) -> None:
        parse_text(text, path)

    assert edit_file(path, lambda t: disable_tenant(t, F, "acme"), validate)
    st = path.stat()
    assert (st.st_mode & 0o7777, st.st_gid if os.geteuid() == 0 else 65534) == (0o640, 65534)
    assert st.st_ino != inode  # replaced by rename, not rewritten in place
    assert tenant(path.read_text(), "acme") == ("old", False)
    assert not edit_file(path, lambda t: disable_tenant(t, F, "acme"), validate)  # no change, no write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_failed_validation_leaves_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(ORIGINAL)

    def refuse(text: str) -> None:
        raise UserError("no")

    with pytest.raises(UserError):
        edit_file(path, lambda t: t + "junk: [\n", refuse)
    assert path.read_text() == ORIGINAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_symlinked_config_stays_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.yaml"
    real.write_text(ORIGINAL)
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    edit_file(link, lambda t: disable_tenant(t, F, "acme"), lambda t: None)
    assert link.is_symlink() and tenant(real.read_text(), "acme") == ("old", False)


def test_exclusive_write_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "new.yaml"
    write_atomic(path, "a: 1\n", mode=0o600, exclusive=True)
    assert path.read_text() == "a: 1\n" and path.stat().st_mode & 0o7777 == 0o600
    with pytest.raises(UserError, match="already exists"):
        write_atomic(path, "b: 2\n", exclusive=True)
    assert path.read_text() == "a: 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.yaml"]


def test_concurrent_edits_wait_for_each_other_and_both_land(tmp_path: Path) -> None:
    import fcntl
    import threading

    path = tmp_path / "c.yaml"
    path.write_text(ORIGINAL)
    holder = os.open(path, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another editor is busy with the file
    done = threading.Event()

    def second_editor() -> None:
        edit_file(path, lambda t: enable_tenant(t, F, "delta", "d"), lambda t: None)
        done.set()

    worker = threading.Thread(target=second_editor)
    worker.start()
    inode = f":{path.stat().st_ino} "
    while not any("->" in line and inode in line for line in Path("/proc/locks").read_text().splitlines()):
        assert worker.is_alive()  # wait until the second editor is blocked on the lock
    # the busy editor replaces the file, then lets go; the waiting one must edit the NEW file
    new = disable_tenant(path.read_text(), F, "acme")
    write_atomic(path, new)
    assert not done.is_set()
    os.close(holder)
    worker.join()
    assert done.is_set()
    text = path.read_text()
    assert tenant(text, "acme") == ("old", False) and tenant(text, "delta") == ("d", True)
