"""What of a PostgreSQL DSN a message may show: never its password.

``redact`` gives the DSN without its password. ``scrub`` takes any text made from a DSN (libpq's and the
driver's errors quote parts of it: an invalid percent escape quotes the whole password, a password holding
an unescaped ``@`` or ``/`` is read as part of the host name or the port) and masks every part of the
password in it. The password is found by its place in the text, without libpq, so that a DSN libpq cannot
read is covered too. Kept free of the driver: the config parse uses it before the driver is imported.
"""

from __future__ import annotations

import re

MASK = "***"
_PIECE = 4  # parts of a password (between @ / ? : #) this long or longer are masked wherever they appear
_KEYWORD = re.compile(r"""(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'?|\S*)""")
_PARTS = re.compile(r"[@/?:#]")


def passwords(dsn: str) -> list[str]:
    """The texts a message must not show, longest first: the password as written, percent-decoded (a URI)
    or unquoted (key=value), and its longer parts (libpq may split it where it holds ``@`` or ``/``)."""
    from urllib.parse import unquote  # noqa: PLC0415 - only for a DSN to scrub, never on the common path

    found: set[str] = set()
    scheme = re.match(r"^\s*postgres(?:ql)?://", dsn)
    if scheme:
        rest = dsn[scheme.end():]
        userinfo = rest[:rest.rfind("@")] if "@" in rest else ""
        if ":" in userinfo:
            secret = userinfo.split(":", 1)[1]
            found |= {secret, unquote(secret)}
        found |= {m.group(1) for m in re.finditer(r"[?&]password=([^&#]*)", rest)}
        found |= {unquote(s) for s in found}
    for m in _KEYWORD.finditer(dsn):
        value = m.group(1)
        found.add(value)
        if value.startswith("'"):
            found.add(re.sub(r"\\(.)", r"\1", value.strip("'")))
    pieces = {p for s in found for p in _PARTS.split(s) if len(p) >= _PIECE}
    return sorted((s for s in found | pieces if s), key=len, reverse=True)


def scrub(text: str, dsn: str | None) -> str:
    """``text`` with every part of ``dsn``'s password masked."""
    if not dsn:
        return text
    for secret in passwords(dsn):
        text = text.replace(secret, MASK)
    return text


def redact(dsn: str) -> str:
    """The DSN without a password, for messages (libpq's own reading of it, where it can read it)."""
    try:
        from psycopg import conninfo  # noqa: PLC0415 - the driver is an extra

        info = conninfo.conninfo_to_dict(dsn)
    except Exception:  # no driver, or a DSN libpq cannot read: nothing of it is shown
        return "the configured DSN"
    info.pop("password", None)
    shown = conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v is not None})
    return scrub(shown, dsn)
