"""Evidence of life: is a pid still the process we started, and which processes belong to a run.

A pid alone proves nothing (pids are reused).  A process is identified by (boot id, pid, start time): the
start time is field 22 of /proc/PID/stat, in clock ticks since boot, and never changes for a process; the
boot id (/proc/sys/kernel/random/boot_id) tells a pid of an earlier boot.  Each run's process also carries
``TASKSERVER_INSTANCE``, ``TASKSERVER_TENANT`` and ``TASKSERVER_RUN_ID`` in its environment, so a restarted
daemon finds it in /proc/*/environ even when the daemon died between spawning it and recording its pid (and
finds children that left its process group).  All three name a run: run ids are per tenant, and one daemon
instance serves several tenants.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
INSTANCE_ENV = "TASKSERVER_INSTANCE"
RUN_ENV = "TASKSERVER_RUN_ID"
TENANT_ENV = "TASKSERVER_TENANT"


def boot_id() -> str | None:
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def host() -> str:
    return socket.gethostname()


def _stat(pid: int) -> bytes:
    """/proc/PID/stat in one read (a line well under 4 KiB): read once per run, so no file object."""
    fd = os.open(f"{PROC}/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (the process's start, clock ticks after boot); None when it is gone."""
    try:
        stat = _stat(pid)
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count fields after its closing ')'
    fields = stat[stat.rindex(b")") + 2:].split()
    return int(fields[19])


def _zombie(pid: int) -> bool:
    try:
        stat = _stat(pid)
    except OSError:
        return True
    return stat[stat.rindex(b")") + 2:].split()[0] in (b"Z", b"X")


def same_process(pid: int | None, started: int | None, boot: str | None) -> bool:
    """True when ``pid`` is still the very process recorded with ``started`` in boot ``boot``."""
    if not pid or started is None or (boot is not None and boot != boot_id()):
        return False
    return start_time(pid) == started and not _zombie(pid)


@dataclass(frozen=True)
class Found:
    pid: int
    pgid: int


def processes_of(tenant: str, instances: Iterable[str]) -> dict[tuple[str, int], list[Found]]:
    """Every live process of a run of ``tenant`` whose environment names one of ``instances``, by (instance,
    run id).  Run ids are per tenant: one daemon instance serves several tenants, and their runs share ids,
    so a process is evidence only for a run of its own tenant."""
    wanted = {i.encode() for i in instances}
    return _scan(tenant, lambda inst: inst in wanted) if wanted else {}


def run_processes(tenant: str, exclude: Iterable[str]) -> dict[tuple[str, int], list[Found]]:
    """Every live process of a run of ``tenant`` whose instance is not one of ``exclude``, by (instance,
    run id)."""
    skip = {i.encode() for i in exclude}
    return _scan(tenant, lambda inst: inst not in skip)


def _scan(tenant: str, instance_wanted: Callable[[bytes], bool]) -> dict[tuple[str, int], list[Found]]:
    name = tenant.encode()
    found: dict[tuple[str, int], list[Found]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        env = _environ(entry)
        inst, run = env.get(INSTANCE_ENV.encode()), env.get(RUN_ENV.encode())
        if inst is None or not instance_wanted(inst) or env.get(TENANT_ENV.encode()) != name \
                or run is None or not run.isdigit() or _zombie(int(entry.name)):
            continue
        with contextlib.suppress(OSError):
            pid = int(entry.name)
            found.setdefault((inst.decode(), int(run)), []).append(Found(pid, os.getpgid(pid)))
    return found


def _environ(entry: Path) -> dict[bytes, bytes]:
    try:
        raw = (entry / "environ").read_bytes()
    except OSError:  # gone, or another user's (not ours to judge)
        return {}
    return dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)


def terminate(pids: Iterable[Found], grace: float, owner: int | None = None) -> list[int]:
    """TERM each process (and each group it leads: its children), wait up to ``grace`` for all of them to
    go, then KILL what is left of them.  Returns the pids that were alive.  ``owner``: only processes that
    user could signal itself are signalled (``may_signal``), a group member by member."""
    targets = [f for f in pids if may_signal(f.pid, owner)]
    for f in targets:
        _send(f, signal.SIGTERM, owner)
    _wait_gone(targets, grace, owner)
    if _members(targets, owner):  # checked first: a group whose members are all gone has an id free for reuse
        for f in targets:
            _send(f, signal.SIGKILL, owner)
        _wait_gone(targets, 5.0, owner)
    return [f.pid for f in targets]


def may_signal(pid: int, uid: int | None) -> bool:
    """Whether a process of user ``uid`` could signal ``pid`` itself: kill(2) lets a sender signal a process
    whose real or saved uid is its own.  What a tenant's store names is written by the tenant's user, so
    the daemon signals on its say only what that user could (None: no such limit, a root tenant's)."""
    if uid is None:
        return True
    try:
        status = (PROC / str(pid) / "status").read_bytes()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith(b"Uid:"):
            real, _effective, saved = (int(x) for x in line.split()[1:4])
            return uid in (real, saved)
    return False


def _wait_gone(targets: list[Found], limit: float, owner: int | None) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end and _members(targets, owner):
        time.sleep(0.02)


def _members(targets: list[Found], owner: int | None) -> set[int]:
    """The live processes among ``targets`` and in the groups they lead (those ``owner`` may signal)."""
    groups = {f.pgid for f in targets if f.pgid == f.pid}
    live = {f.pid for f in targets if alive(f.pid)}
    if groups:
        live |= {pid for pid, group in _groups() if group in groups}
    return {pid for pid in live if may_signal(pid, owner)} if owner is not None else live


def _groups() -> Iterator[tuple[int, int]]:
    """(pid, process group) of every live process."""
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[0] not in (b"Z", b"X"):
                yield int(entry.name), int(fields[2])


def alive(pid: int) -> bool:
    """A live process has this pid (a zombie, a process that ended but is not reaped yet, is none)."""
    return start_time(pid) is not None and not _zombie(pid)


def _send(f: Found, sig: signal.Signals, owner: int | None) -> None:
    # A run's process leads its own group (the executor starts each in a new session), so its group is
    # its own and its children's; a process found by its environment inside someone else's group is
    # signalled alone: an environment anyone can set must not reach processes that do not carry it.  With
    # an ``owner``, the group's members are signalled one by one, each only if that user could.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if f.pgid == f.pid and f.pgid != os.getpgid(0):
            if owner is None:
                os.killpg(f.pgid, sig)
            else:
                for pid, group in list(_groups()):
                    if group == f.pgid and may_signal(pid, owner):
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.kill(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(f.pid, sig)
