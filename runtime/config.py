"""Finding and loading the configuration file.

One file describes one independent server (its tenants, its state dir, its pid file). With no file at all the
embedded default is used: one ``default`` tenant without a login (so it runs nothing) and the built-in
housekeeping, state under the default state dir.
"""

from __future__ import annotations

import os
from pathlib import Path

from .model import Config, ServerSettings, TenantDef

SYSTEM_CONFIG = Path("/etc/taskserver/taskserver.yaml")


def default_config_path() -> Path:
    """$TASKSERVER_CONFIG, else the system file when root, else the per-user file."""
    env = os.environ.get("TASKSERVER_CONFIG")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return SYSTEM_CONFIG
    return Path.home() / ".config" / "taskserver" / "taskserver.yaml"


def default_state_dir() -> Path:
    """$STATE_DIRECTORY (systemd's StateDirectory=), else /var/lib/taskserver as root, else XDG state."""
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        # systemd may pass several colon-separated dirs; the first is ours
        return Path(env.split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/taskserver")
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "taskserver"


def embedded_default(path: Path) -> Config:
    """The configuration used when ``path`` does not exist."""
    server = ServerSettings(state_dir=default_state_dir())
    return Config(path=path, exists=False, server=server, tenants=(TenantDef(name="default", login=None),))


def load(path: Path | None = None, *, check_owner: bool = True) -> Config:
    """Read and validate the config at ``path`` (default: ``default_config_path()``)."""
    p = path if path is not None else default_config_path()
    if not p.exists():
        return embedded_default(p)
    raise NotImplementedError("config parsing lands in the next commit")
