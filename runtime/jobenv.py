"""The environment a run starts with: clean, as cron and systemd give it, never the daemon's own.

A run gets PATH (a fixed safe default), HOME, USER, LOGNAME and SHELL of the user it runs as; then, tenant
first and job second (the job wins), the daemon variables named by ``inherit_env:``, the ``env_file:`` lines
and the ``environment:`` mapping; last the TASKSERVER_* variables, which nothing overrides. Nothing else of
the daemon's environment reaches a job: not a secret the daemon was started with (AWS_SECRET_ACCESS_KEY,
SSH_AUTH_SOCK), not what sudo set (SUDO_USER), not root's PATH, not a supervisor's NOTIFY_SOCKET. When
root runs a config another user controls, ``inherit_env`` passes nothing (``inherit_nothing``).
"""

from __future__ import annotations

import functools
import os
import pwd
from collections.abc import Mapping
from typing import NamedTuple

from .model import EnvDef, JobDef, TenantDef

# systemd's default for services, and what cron's PATH is a subset of
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class RunUser(NamedTuple):
    """Who a run runs as, as its environment names it."""

    name: str
    home: str
    shell: str

    @classmethod
    def of_uid(cls, uid: int) -> RunUser:
        return _lookup(uid)


@functools.lru_cache(maxsize=64)
def _lookup(uid: int) -> RunUser:
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:  # a uid without a passwd entry: still a defined, harmless environment
        return RunUser(str(uid), "/", "/bin/sh")
    return RunUser(pw.pw_name, pw.pw_dir or "/", pw.pw_shell or "/bin/sh")


_INHERITABLE: list[Mapping[str, str]] = []  # set: what inherit_env draws from instead of os.environ


def inherit_nothing() -> None:
    """Root runs a config another user controls: root's environment (its secrets) is not that user's to
    name in ``inherit_env``, which then passes nothing."""
    _INHERITABLE[:] = [{}]


def build(user: RunUser, tenant: TenantDef | None, job: JobDef | None, taskserver: Mapping[str, str],
          daemon_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of one run (see the module docstring for the order)."""
    inherited = daemon_env if daemon_env is not None else _INHERITABLE[0] if _INHERITABLE else os.environ
    env = {"PATH": SAFE_PATH, "HOME": user.home, "USER": user.name, "LOGNAME": user.name, "SHELL": user.shell}
    for layer in (tenant.env if tenant else None, job.env if job else None):
        if layer is not None:
            env.update(_layer(layer, inherited))
    env.update(taskserver)
    return env


def _layer(layer: EnvDef, inherited: Mapping[str, str]) -> dict[str, str]:
    out = {name: inherited[name] for name in layer.inherit if name in inherited}
    out.update(layer.file_vars)
    out.update(layer.environment)
    return out
