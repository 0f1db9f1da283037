"""API tokens: a file of ``NAME SHA256 TENANTS RIGHTS`` lines, only the hash of each token is kept.

``TENANTS`` is ``*`` or a comma list; ``RIGHTS`` is ``read`` or ``write`` (write includes read). The file
grants actions as the daemon's user, so it must belong to root (or to the user the web server runs as, for
a user's own server) and must not be writable by group or others; anything else is refused at start.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
HEX_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_FILE = 1 << 20


@dataclass(frozen=True)
class Token:
    name: str
    digest: str
    tenants: frozenset[str] | None  # None: every tenant
    write: bool

    def allows(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_owner(path: Path, st: os.stat_result) -> None:
    if st.st_uid not in (0, os.geteuid()):
        raise UserError(f"{path}: tokens file belongs to uid {st.st_uid}",
                        hint=f"chown root {path} (it grants actions on the tenants' runs)")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UserError(f"{path}: tokens file is writable by group or others", hint=f"chmod 600 {path}")
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{path}: tokens file is not a regular file", hint="point --tokens at a file")


def load(path: Path) -> list[Token]:
    """Read and check the tokens file; a missing file means no tokens (only anonymous reads, if allowed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UserError(f"{path}: cannot open the tokens file: {exc.strerror}",
                        hint="it must be a regular file, not a symbolic link") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        check_owner(path, st)
        data = f.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise UserError(f"{path}: tokens file is larger than {MAX_FILE} bytes", hint="remove unused tokens")
    return [_parse(path, n, line) for n, line in enumerate(data.decode(errors="replace").splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]


def _parse(path: Path, lineno: int, line: str) -> Token:
    parts = line.split()
    where = f"{path}:{lineno}:1"
    if len(parts) != 4 or not NAME_RE.match(parts[0]) or not HEX_RE.match(parts[1]) \
            or parts[3] not in ("read", "write"):
        raise UserError(f"{where}: expected NAME SHA256 TENANTS read|write",
                        hint="create tokens with `taskserver web token-add NAME --tenants T1,T2`")
    tenants = None if parts[2] == "*" else frozenset(parts[2].split(","))
    return Token(parts[0], parts[1], tenants, parts[3] == "write")


def find(tokens: list[Token], presented: str) -> Token | None:
    want = digest(presented)
    found = None
    for t in tokens:  # compare with every entry in constant time: no early exit tells which prefix matched
        if hmac.compare_digest(t.digest, want):
            found = t
    return found


def add(path: Path, name: str, tenants: list[str] | None, write: bool) -> str:
    """Append a new token; returns the token itself (shown once, never stored)."""
    if not NAME_RE.match(name):
        raise UserError(f"token name {name[:40]!r} is not valid", hint="letters, digits, . _ - (1-64)")
    for t in tenants or []:
        if not NAME_RE.match(t):
            raise UserError(f"tenant name {t[:40]!r} is not valid", hint="--tenants NAME1,NAME2 or *")
    existing = load(path)
    if any(t.name == name for t in existing):
        raise UserError(f"{path}: a token named {name!r} exists", hint="choose another name")
    token = secrets.token_urlsafe(32)
    line = f"{name} {digest(token)} {','.join(tenants) if tenants else '*'} {'write' if write else 'read'}\n"
    old = path.read_bytes() if path.exists() else b""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(old + line.encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return token
