"""Linux capabilities and the filesystem ids, through libc (the standard library has neither).

The daemon started by root keeps only what switching to each tenant's user needs (see ``KEEP``), and touches a
tenant's files with that tenant's filesystem ids (``setfsuid``/``setfsgid``), so the kernel checks every open,
create and rename against the tenant's rights, not the daemon's.
"""

from __future__ import annotations

import ctypes
import os

CAP_CHOWN = 0
CAP_KILL = 5
CAP_SETGID = 6
CAP_SETUID = 7
# the kernel's names by bit (linux/capability.h), for the log line that says what the daemon kept
_NAMES = dict(enumerate((
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)))

# Why each one (docs/security.md says the same):
#   CAP_SETUID, CAP_SETGID  start a tenant's job as its user and groups; switch the filesystem ids to it
#   CAP_KILL                TERM/KILL a job of another user at its timeout and at stop
#   CAP_CHOWN               hand a tenant directory the daemon has just created (a reload may add one) to
#                           that tenant's user; nothing that existed before is ever chowned
# Not kept: CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH/CAP_FOWNER. The daemon reaches a tenant's files as that
# tenant (fsuid), so it never needs to bypass a permission check.
KEEP = (CAP_SETUID, CAP_SETGID, CAP_KILL, CAP_CHOWN)

_PR_SET_KEEPCAPS = 8
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _Data(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32))


# The process's own symbols, libc's among them (as runtime/launcher.py reaches posix_spawn): not
# ctypes.util.find_library, which runs `ldconfig -p` in a child at import and loads shutil, tempfile, bz2,
# lzma and random into the daemon for good (about 0.9 MB of its memory)
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def keep_across_setuid(on: bool) -> None:
    """PR_SET_KEEPCAPS: the permitted set survives the setuid() away from root (and only that one call)."""
    _check(_libc.prctl(_PR_SET_KEEPCAPS, int(on), 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")


def limit_to(keep: tuple[int, ...]) -> None:
    """Effective and permitted = ``keep``, inheritable and ambient empty: jobs exec'd from here get none."""
    mask = sum(1 << c for c in keep)
    header = _Header(_VERSION_3, 0)
    data = (_Data * 2)(_Data(mask, mask, 0), _Data(0, 0, 0))
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    _check(_libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl(PR_CAP_AMBIENT)")


def effective() -> int:
    """The effective capability mask of this process (from /proc: no libcap needed)."""
    # bytes, not text: after the privilege drop no codec module may be importable any more
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"CapEff:"):
                return int(line.split()[1], 16)
    return 0


def has(cap: int) -> bool:
    return bool(effective() >> cap & 1)


def names(mask: int) -> list[str]:
    # a bit a newer kernel added is named by its number
    return [_NAMES.get(bit, f"cap{bit}") for bit in range(64) if mask >> bit & 1]


def set_fs_ids(uid: int, gid: int) -> tuple[int, int]:
    """Set the filesystem uid and gid; returns the previous ones (setfsuid(-1) only reads)."""
    old_gid = _libc.setfsgid(gid)
    old_uid = _libc.setfsuid(uid)
    if _libc.setfsuid(-1) != uid or _libc.setfsgid(-1) != gid:  # these calls report failure only this way
        set_fs_ids_back(old_uid, old_gid)
        raise PermissionError(f"cannot switch the filesystem ids to {uid}:{gid} (needs CAP_SETUID/SETGID)")
    return old_uid, old_gid


def set_fs_ids_back(uid: int, gid: int) -> None:
    _libc.setfsuid(uid)
    _libc.setfsgid(gid)


_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_TIMERSLACK = 29


def precise_timers() -> None:
    """PR_SET_TIMERSLACK of 1 ns for the calling thread (and the threads it starts later): the kernel may
    otherwise end a sleep up to 50 us late to group wake-ups, and the loop's sleeps end at due times.
    A kernel that refuses it leaves the default: a matter of microseconds, not an error."""
    _libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)


def no_new_privileges() -> None:
    """PR_SET_NO_NEW_PRIVS: no exec from here on (set-uid programs, file capabilities) can add privileges."""
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def die_with_parent(sig: int) -> None:
    """PR_SET_PDEATHSIG: the kernel sends ``sig`` when the parent ends (set it after any uid change, which
    clears it)."""
    _check(_libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
