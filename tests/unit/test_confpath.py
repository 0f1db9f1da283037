"""The lean commands' text paths (runtime/confpath.py, the pid file's modules) mean what pathlib's did.

Each rule is compared with pathlib on awkward names: relative, dotted, doubled and trailing slashes, ``..``,
a leading dot, spaces and non-ASCII, the standard locations, a $HOME with a trailing slash.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from taskserver.runtime import config, confpath, pidfile, pidplace

NAMES = [
    "/etc/taskserver/taskserver.yaml", "/etc//taskserver/./taskserver.yaml", "x.yaml", "./x.yaml",
    "a/../x.yaml",
    "/srv/app/jobs.yml", "/srv/app/.hidden", "/srv/app/noext", "/srv/app/two.dots.yaml", "/srv/app/trailing.",
    "/srv/with space/Ünïcode.yaml", "//srv/double-root.yaml", "/srv/app/", "rel/dir/", "/", ".", "..", "a..b",
    "/srv/a-b_c.d-e.yaml", "~/.config/taskserver/taskserver.yaml",
]


def _instance_name_by_pathlib(path: Path) -> str:
    """The rule as config.py wrote it with pathlib, before runtime/confpath.py."""
    absolute = Path(os.path.abspath(path))
    user = Path.home() / ".config" / "taskserver" / "taskserver.yaml"
    if absolute in (Path("/etc/taskserver/taskserver.yaml"), user):
        return "taskserver"
    digest = f"{zlib.crc32(os.fsencode(absolute)):08x}"
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in absolute.stem)[:40]
    return f"taskserver-{stem}-{digest}"


@pytest.mark.parametrize("home", ["/root", "/home/u/", "/home//u"])
@pytest.mark.parametrize("name", NAMES)
def test_instance_name_is_pathlibs(name: str, home: str, monkeypatch: pytest.MonkeyPatch,
                                   tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", home)
    monkeypatch.chdir(tmp_path)
    name = name.replace("~", home)
    expected = _instance_name_by_pathlib(Path(name))
    assert confpath.instance_name(name) == expected
    assert confpath.instance_name(Path(name)) == expected
    assert config.instance_name(Path(name)) == expected
    assert pidfile.pidfile_name(name) == expected + ".pid"


@pytest.mark.parametrize("name", NAMES)
def test_stem_is_pathlibs(name: str) -> None:
    assert confpath.stem_of(os.path.abspath(name)) == Path(os.path.abspath(name)).stem


@pytest.mark.parametrize("env", [None, "/etc/other.yaml", "rel.yaml"])
def test_default_config_path_is_the_same_file(env: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if env is None:
        monkeypatch.delenv("TASKSERVER_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TASKSERVER_CONFIG", env)
    user = Path.home() / ".config" / "taskserver" / "taskserver.yaml"
    expected = Path(env) if env else Path("/etc/taskserver/taskserver.yaml") if os.geteuid() == 0 else user
    assert Path(confpath.default_config_path()) == expected
    assert config.default_config_path() == expected


@pytest.mark.parametrize("path", ["/run/taskserver", "/run/taskserver/u1000", "/tmp/taskserver-5", "/", "/a"])
def test_a_places_ancestors_are_pathlibs(path: str) -> None:
    assert confpath.parents(path) == [str(p) for p in Path(path).parents]


@pytest.mark.parametrize("uid", [0, 1000])
def test_the_places_are_where_they_were(uid: int) -> None:
    dirs = [p.dir for p in pidplace.own_places(uid)]
    expected = ["/run/taskserver"] if uid == 0 else [f"/run/taskserver/u{uid}", f"/tmp/taskserver-{uid}"]
    assert dirs == expected


@pytest.mark.parametrize("name", ["taskserver.pid", "taskserver-x_y-0a1b2c3d.pid",
                                  "/run/taskserver/taskserver.pid", "/run/a.b/taskserver-c-00000000.pid"])
def test_a_pid_files_siblings_are_pathlibs(name: str) -> None:
    for suffix in (".lock", ".info"):
        assert pidfile._sibling(name, suffix) == str(Path(name).with_suffix(suffix))


ODD = ["", ".", "/", "//", "///", "//a", "///a", "/a/", "/a//b/./c/", "a/../b", "./a", "a/.", "~x", "/a/.b/",
       "rel/dir/", "/a/b/..", "..", "Ünï/cödé"]


@pytest.mark.parametrize("text", ODD)
def test_pure_and_parent_are_pathlibs(text: str) -> None:
    assert confpath.pure(text) == str(Path(text))
    assert confpath.pure(Path(text)) == str(Path(text))
    assert confpath.parent(text) == str(Path(text).parent)


def _state_dir_by_pathlib(path: Path | None, owner: int | None) -> Path:
    """The rule as config.py wrote it with pathlib, before runtime/confpath.py."""
    import pwd

    env = os.environ.get("STATE_DIRECTORY")
    if owner not in (None, 0) and owner != os.geteuid():
        base = Path(pwd.getpwuid(owner).pw_dir) / ".local" / "state" / "taskserver"
    elif env:
        base = Path(env.split(":")[0])
    elif os.geteuid() == 0:
        base = Path("/var/lib/taskserver")
    else:
        xdg = os.environ.get("XDG_STATE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".local" / "state") / "taskserver"
    if path is None or _instance_name_by_pathlib(path) == "taskserver":
        return base
    return base / _instance_name_by_pathlib(path)


@pytest.mark.parametrize("env", [
    {}, {"STATE_DIRECTORY": "/var/lib/x/"}, {"STATE_DIRECTORY": "/a//b:/c"}, {"STATE_DIRECTORY": ":"},
    {"STATE_DIRECTORY": "rel/./d"}, {"STATE_DIRECTORY": "//srv/s"}, {"XDG_STATE_HOME": "/x//y/"},
    {"XDG_STATE_HOME": "rel"}, {"XDG_STATE_HOME": ""}, {"HOME": "/home//u/"}, {"HOME": "/"}, {"HOME": "//h"},
])
def test_the_default_state_dir_is_pathlibs(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    """As text (what the lean `jobs enqueue` compares with the daemon's published state dir) it is pathlib's
    text, so equal dirs are equal texts; config.py's Path is pathlib's Path. For each config name, owner
    (none, root, another user) and user running the command (root, a user, the owner)."""
    for key in ("STATE_DIRECTORY", "XDG_STATE_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", "/root")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    for name in (None, "/etc/taskserver/taskserver.yaml", "/srv/app/jobs.yml", "x.yaml", "//srv/d.yaml",
                 "a/../b.yaml"):
        for owner in (None, 0, 65534):
            for euid in (0, 1000, 65534):
                monkeypatch.setattr(os, "geteuid", lambda euid=euid: euid)
                path = Path(name) if name is not None else None
                expected = _state_dir_by_pathlib(path, owner)
                case = f"name {name}, owner {owner}, euid {euid}"
                assert confpath.default_state_dir(name, owner) == str(expected), case
                assert confpath.default_state_dir(path, owner) == str(expected), case
                assert config.default_state_dir(path, owner) == expected, case
