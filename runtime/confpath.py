"""Where the config file is by default, the name of its server instance and its default state dir: in plain
text paths, with the few path rules of pathlib they need.

The lean commands (`status`, `jobs enqueue`) run every few seconds under monitoring and in applications, and
pathlib with what it imports (fnmatch, urllib.parse, ipaddress) was about 7 ms of their 50-70 ms here; so
they, and the modules they use (the pid file's, the privilege helpers, the status files, the SQLite store's
guards), work on ``str`` paths and take a Path too. runtime/config.py re-exports these rules as Paths for
everything else; tests/unit/test_confpath.py holds each rule to pathlib's.
"""

from __future__ import annotations

import os
import pwd
import zlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    from typing import TypeAlias

    StrPath: TypeAlias = "str | os.PathLike[str]"

SYSTEM_CONFIG = "/etc/taskserver/taskserver.yaml"


def pure(path: StrPath) -> str:
    """``str(PurePosixPath(path))``: empty and ``.`` components and trailing slashes dropped, ``..`` kept (it
    is not lexical where a link is on the way), a leading ``//`` kept as POSIX allows, ``.`` for nothing."""
    text = os.fspath(path)
    root = ("//" if text[:2] == "//" and text[2:3] != "/" else "/") if text[:1] == "/" else ""
    parts = [p for p in text.split("/") if p and p != "."]
    return root + "/".join(parts) if root or parts else "."


def parent(path: StrPath) -> str:
    """pathlib's ``parent``: the directory above, ``.`` above a relative name, the root above the root."""
    return os.path.dirname(pure(path)) or "."


def parents(path: str) -> list[str]:
    """The ancestors of an absolute path, nearest first, up to "/" (pathlib's ``parents``)."""
    found = []
    while (above := os.path.dirname(path)) != path:
        found.append(above)
        path = above
    return found


def user_config() -> str:
    """The per-user config file: ~/.config/taskserver/taskserver.yaml."""
    return os.path.join(os.path.expanduser("~"), ".config", "taskserver", "taskserver.yaml")


def default_config_path() -> str:
    """$TASKSERVER_CONFIG, else the system file when root, else the per-user file."""
    env = os.environ.get("TASKSERVER_CONFIG")
    if env:
        return env
    return SYSTEM_CONFIG if os.geteuid() == 0 else user_config()


def instance_name(path: StrPath) -> str:
    """``taskserver`` for the standard config locations, else a name unique to the file's absolute path."""
    absolute = os.path.abspath(path)
    if absolute in (SYSTEM_CONFIG, os.path.abspath(user_config())):
        return "taskserver"
    # crc32, not sha256: hashlib loads OpenSSL, +4 MB of daemon RSS, to name a file (not a security use)
    digest = f"{zlib.crc32(os.fsencode(absolute)):08x}"
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem_of(absolute))[:40]
    return f"taskserver-{stem}-{digest}"


def stem_of(path: str) -> str:
    """The last component without its last suffix, as pathlib's ``stem``."""
    name = os.path.basename(path)
    dot = name.rfind(".")
    return name[:dot] if 0 < dot < len(name) - 1 else name


def default_state_dir(path: StrPath | None = None, owner: int | None = None) -> str:
    """The state dir used when the config does not set one: $STATE_DIRECTORY (systemd's StateDirectory=;
    its first entry), else /var/lib/taskserver as root, else $XDG_STATE_HOME/taskserver; a config file other
    than the default one gets its own subdirectory there (``instance_name``).

    ``owner``: root reading a config another user controls uses that user's default, as that user would.
    """
    env = os.environ.get("STATE_DIRECTORY")
    if owner not in (None, 0) and owner != os.geteuid():
        base = os.path.join(pwd.getpwuid(owner).pw_dir, ".local", "state", "taskserver")
    elif env:
        base = env.split(":")[0]  # systemd passes several dirs colon-separated; the first is ours
    elif os.geteuid() == 0:
        base = "/var/lib/taskserver"
    else:
        xdg = os.environ.get("XDG_STATE_HOME")
        base = os.path.join(xdg or os.path.join(os.path.expanduser("~"), ".local", "state"), "taskserver")
    name = instance_name(path) if path is not None else "taskserver"
    return pure(base if name == "taskserver" else os.path.join(base, name))
