"""Where the config file is by default, and the name of its server instance: in plain text paths.

The lean commands (`status`, `jobs enqueue`) run every few seconds under monitoring and in applications, and
pathlib with what it imports (fnmatch, urllib.parse, ipaddress) was about 7 ms of their 50-70 ms here; so
they, and the pid file's modules they use (pidplace, pidfile), work on ``str`` paths. runtime/config.py
re-exports these rules as Paths for everything else.
"""

from __future__ import annotations

import os
import zlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    from typing import TypeAlias

    StrPath: TypeAlias = "str | os.PathLike[str]"

SYSTEM_CONFIG = "/etc/taskserver/taskserver.yaml"


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
