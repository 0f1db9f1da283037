"""The daemon's parse of its config, kept in its state dir for the next start and reload of the same text.

Parsing 10,000 jobs costs about half a second of CPU (libyaml's events and the checks of every value), most
of a start-up. A daemon that starts again on the same text, with the same code, reads what the last parse
made instead (``fetch``): a pickle of the ``Config`` as runtime/config_wire.py packs it, a tenth of that.

What it is kept with, and compared in full before it is believed (``_key``; the whole file is checked
against its CRC-32 first):
- the config's whole text (compared, not hashed: no collision can stand in for an edit), its path and the
  state dir the parse defaulted to;
- the code: every module of this package (name, inode, size, mtime) and the interpreter's version, so an
  upgrade or an edited module parses again; and the input limits (runtime/limits.py) the parse ran under.

What the parse also read from the machine is checked again on every use (``host_holds``): the users and
groups named, install_dir, the time zones, the sendmail programs and the PostgreSQL driver. When one of
them no longer holds, the file is parsed again, so the error is the parse's own (file:line:col).
What a load does after the parse (the file's trust, its owner's identities, env files, the jobs' outline)
is done on every load, kept parse or not (runtime/config.py).

Who may have written it: the file is unpickled, so it is believed only when its owner could act alone as
the daemon's own user, and that user could do all the daemon can: never in a daemon that dropped to its
``run_as`` user and kept capabilities to run tenants as their own users. The state dir must belong to the
effective user and not be writable by group or others, every directory above it to root or that user
(writable by others only with the sticky bit), and the file must be a regular file of that user, mode 0600,
opened without following a symlink. A root daemon whose state dir belongs to its ``run_as`` user never uses
one. A missing, foreign, unreadable, corrupt or stale file is a parse, never an error; one that cannot be
written is left unwritten (runtime/config.py).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import re
import stat
import sys
import zlib

from . import caps, config_wire, limits, pgdsn
from . import config_values as v
from .confpath import parents
from .model import Config

log = logging.getLogger(__name__)
_STATE_LINE = re.compile(r"""^[ \t]+state_dir:[ \t]*(["']?)(/[^"'#\\\n]*?)\1[ \t]*(?:#.*)?$""", re.MULTILINE)

NAME = ".config.parsed"  # tenant names start with a letter or digit: no tenant's file is called this
FORMAT = 1
# the file: MAGIC, the CRC-32 of the rest (4 bytes, big-endian), the pickle. A damaged byte (a disk's, a
# torn write's) that still unpickles would otherwise give the daemon another command to run
MAGIC = b"taskserver kept parse\n"
_BODY = len(MAGIC) + 4
MAX_BYTES = 64 << 20  # a 10,000-job config's parse is about 2 MB


def fetch(path: str, default_state: str, text: str) -> Config | None:
    """The kept parse of ``text`` (read from ``path``, parsed with ``default_state`` as the state dir it
    names none), or None when there is none that can be believed for it.

    It is kept in the state dir the config resolves to, known only once parsed: looked for in the one the
    text's ``state_dir:`` line seems to name (``_named_state``, a guess that decides only where to look)
    and in the default, and believed only where the parse it holds resolves to that very directory."""
    for where in dict.fromkeys([*_named_state(text), default_state]):
        data = _read(where)
        if data is None:
            continue
        if not (data.startswith(MAGIC) and int.from_bytes(data[len(MAGIC):_BODY], "big") == zlib.crc32(
                memoryview(data)[_BODY:])):
            log.debug("the kept parse in %s is damaged: not used", where)
            continue
        try:
            key, packed = pickle.loads(memoryview(data)[_BODY:])  # noqa: S301 - this user's alone (docstring)
            if key != _key(path, default_state, text):
                log.debug("the kept parse in %s is of another text, code or path", where)
                continue
            config = config_wire.unpack(packed)
        except Exception as exc:  # corrupt, or made by older code: parse again
            log.debug("the kept parse in %s cannot be read (%s)", where, exc)
            continue
        if isinstance(config, Config) and str(config.server.state_dir) == where and host_holds(config):
            log.debug("config %s: read as parsed before (kept in %s)", path, where)
            return config
    return None


def keep(path: str, default_state: str, text: str, config: Config) -> None:
    """Keep ``config``, the parse of ``text``, for ``fetch`` in its state dir; silently not, where it
    cannot be (that dir does not exist yet, is not this user's alone, is full or read-only)."""
    dir_fd = _open_dir(str(config.server.state_dir))
    if dir_fd is None:
        return
    # one name for every writer: a write killed half-way leaves one file, which the next write replaces (two
    # at once, a reload's child and `stop`, at worst write a file whose checksum fails: it is parsed again)
    tmp = f"{NAME}.new"
    try:
        kept = (_key(path, default_state, text), config_wire.pack(config))
        buf = io.BytesIO()
        buf.write(bytes(_BODY))  # the header, written when the body's checksum is known
        pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.fast = True  # no memo, as runtime/isolate.py: an unpickler's memo leaves the heap larger
        pickler.dump(kept)
        view = buf.getbuffer()
        view[:_BODY] = MAGIC + zlib.crc32(view[_BODY:]).to_bytes(4, "big")
        del view
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
        os.fchmod(fd, 0o600)  # one left by a write killed half-way has this user's own mode already
        with os.fdopen(fd, "wb") as out:
            out.write(buf.getbuffer())
        os.replace(tmp, NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        tmp = ""
    except (OSError, pickle.PicklingError) as exc:
        log.debug("cannot keep the parse of %s: %s", path, exc)
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
        os.close(dir_fd)


def _named_state(text: str) -> list[str]:
    """The absolute path a ``state_dir:`` line of ``text`` seems to hold (plain or quoted, no escapes)."""
    found = _STATE_LINE.search(text)
    return [found.group(2)] if found else []


def host_holds(config: Config) -> bool:
    """What the parse checked on this machine (config_parse: ``host`` and the time zones) still holds.

    Each check is the parse's own converter or test; a change to what the parse reads from the machine must
    be made here too (tests/unit/test_config_cache.py compares a kept parse with a new one)."""
    server = config.server
    zones = {t.timezone for t in config.tenants} | {j.timezone for t in config.tenants for j in t.jobs}
    mailers = {path for _loc, path in v.sendmails(server, config.tenants)}
    dsns = [t.store.dsn for t in config.tenants if t.store.kind == "postgresql" and t.store.dsn]
    try:
        if server.run_as is not None:
            v.existing_user(server.run_as)
        if server.install_dir is not None:
            v.existing_dir(server.install_dir)
        for name in zones:
            if name is not None:
                v.zone(name)
        if dsns:
            from psycopg import conninfo  # noqa: PLC0415 - such a daemon imports it anyway

            for dsn in dsns:
                conninfo.conninfo_to_dict(dsn)
    except Exception as exc:  # the parse words it, at its place in the file
        said = str(exc)
        for dsn in dsns:  # libpq's words may quote a password
            said = pgdsn.scrub(said, dsn)
        log.debug("the kept parse's view of this machine no longer holds (%s): parsing again", said)
        return False
    if not all(v.executable_file(path) for path in mailers):
        log.debug("a sendmail the kept parse named is gone: parsing again")
        return False
    return True


def _key(path: str, state: str, text: str) -> tuple[object, ...]:
    here = os.path.dirname(os.path.abspath(__file__))
    code = []
    with os.scandir(here) as entries:
        for entry in entries:
            if entry.name.endswith(".py"):
                st = entry.stat(follow_symlinks=False)
                code.append((entry.name, st.st_ino, st.st_size, st.st_mtime_ns))
    bounds = sorted((k, x) for k, x in vars(limits).items() if k.isupper() and isinstance(x, int | float))
    return (FORMAT, sys.version, tuple(sorted(code)), tuple(bounds), path, state, text)


def _open_dir(state: str) -> int | None:
    """An fd on the state dir when it and the directories above it pass the checks; None otherwise."""
    me = os.geteuid()
    if me != 0 and caps.effective():
        # a daemon dropped to its user but holding capabilities (to run tenants as their users) can do
        # more than that user: a file the user wrote must not run code in it
        log.debug("capabilities beyond uid %d: no kept parse", me)
        return None
    try:
        fd = os.open(state, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    # the directories above it on the path as given and on the path its symlinks lead to (as conftrust)
    ups = dict.fromkeys([*parents(os.path.abspath(state)), *parents(os.path.realpath(state))])
    try:
        safe = _owned(os.fstat(fd), me, above=False) and all(_owned(os.stat(d), me, above=True) for d in ups)
    except OSError:
        safe = False
    if not safe:
        os.close(fd)
        log.debug("state dir %s is not this user's alone: no kept parse there", state)
        return None
    return fd


def _owned(st: os.stat_result, me: int, *, above: bool) -> bool:
    """The state dir must be ``me``'s, a directory ``above`` it root's or ``me``'s; neither
    writable by group or others, but for one above with the sticky bit (/tmp)."""
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (above and st.st_mode & stat.S_ISVTX)
    return not writable and (st.st_uid in (0, me) if above else st.st_uid == me)


def _read(state: str) -> bytes | None:
    """The kept file's bytes, when the state dir and the file pass the checks (the module docstring)."""
    dir_fd = _open_dir(state)
    if dir_fd is None:
        return None
    try:
        fd = os.open(NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077
                or st.st_size > MAX_BYTES):
            log.debug("%s in %s is not this user's file alone: not used", NAME, state)
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(MAX_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
