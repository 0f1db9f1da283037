"""Dropping root for the configured ``run_as`` user, and refusing to run jobs as root by accident.

Order matters: supplementary groups (initgroups) and the gid can only be changed while still root, so
they come before setuid. Afterwards we check that root cannot be regained.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .errors import UserError

if TYPE_CHECKING:
    from .model import Config

log = logging.getLogger(__name__)


class Identity(NamedTuple):
    user: str
    uid: int
    gid: int
    home: str


def resolve(spec: str) -> Identity:
    """``user`` or ``user:group`` (names or numbers) -> the identity to run as."""
    user, _, group = spec.partition(":")
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise UserError(f"run_as: no such user {user!r}", hint="create the user or fix run_as") from None
    gid = pw.pw_gid
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise UserError(f"run_as: no such group {group!r}", hint="fix run_as") from None
    return Identity(pw.pw_name, pw.pw_uid, gid, pw.pw_dir)


def check_root_policy(config: Config) -> None:
    """Refuse to run tenant jobs as root unless the config says ``run_as: root`` explicitly."""
    if os.geteuid() != 0 or config.server.run_as is not None:
        return
    busy = [t.name for t in config.tenants if t.login is not None and any(j.enabled for j in t.jobs)]
    if busy:
        raise UserError(
            f"started as root without run_as, and tenant {busy[0]!r} has jobs (they would run as root)",
            hint="set run_as: USER (or run_as: root explicitly) under server: in " + str(config.path),
        )


def check_can_switch(spec: str | None) -> None:
    """A non-root process can only 'switch' to itself; say so before forking rather than after."""
    if spec is None or os.geteuid() == 0:
        return
    ident = resolve(spec)
    if ident.uid != os.geteuid():
        raise UserError(
            f"run_as: {spec} needs root, but this process runs as uid {os.geteuid()}",
            hint="start taskserver as root, or remove run_as to run everything as yourself",
        )


def prepare_dir(path: Path, spec: str | None) -> None:
    """Create ``path`` (the state dir) and, as root, hand it to the run_as user so it stays usable."""
    created = not path.exists()
    try:
        path.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"state_dir {path}: {exc.strerror}",
            hint="set task_server.state_dir to a directory taskserver may create or use",
        ) from exc
    if os.geteuid() != 0 or spec is None:
        return
    ident = resolve(spec)
    st = os.stat(path, follow_symlinks=False)
    if created or st.st_uid == 0:
        os.chown(path, ident.uid, ident.gid, follow_symlinks=False)


def will_change_uid(spec: str | None) -> bool:
    return spec is not None and os.geteuid() == 0 and resolve(spec).uid != 0


def drop_privileges(spec: str | None) -> None:
    """Become ``spec`` ("user" or "user:group"): initgroups, setgid, setuid, in that order."""
    if spec is None or os.geteuid() != 0:
        return
    ident = resolve(spec)
    os.initgroups(ident.user, ident.gid)
    os.setgid(ident.gid)
    os.setuid(ident.uid)
    # jobs inherit the environment: they should not believe they are root
    os.environ.update(HOME=ident.home, USER=ident.user, LOGNAME=ident.user)
    if ident.uid != 0:
        _verify_dropped()
    log.info("running as %s (uid %d, gid %d, groups %s)", ident.user, ident.uid, ident.gid, os.getgroups())


def _verify_dropped() -> None:
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise RuntimeError("privilege drop failed: setuid(0) succeeded after setuid")
