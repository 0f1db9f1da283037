"""The ``notify:`` key of the server, a tenant or a job (docs/notifications.md).

``notify:`` is one mapping or a list of them; each names the events it wants (``on:``) and where they go:
``command:`` (an argv list, or ``{argv: [...], timeout: 30s}``), ``webhook:`` (a URL, or ``{url, timeout,
retries, backoff, headers}``) and ``email:`` (an address, or ``{to, from, sendmail, timeout}``). Every value
that later lands in an HTTP request, a mail header or an argv is checked here, so a bad one is a config error
at its FILE:LINE:COL, never a surprise when a job fails at night.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from . import config_values as v
from . import limits
from .limits import shown
from .model import Email, Event, NotifyDef, ServerSettings, TenantDef, Webhook

if TYPE_CHECKING:
    from .config_parse import _Walker

ITEM_KEYS = ("on", "command", "webhook", "email", "inherit")
WEBHOOK_KEYS = ("url", "timeout", "retries", "backoff", "headers")
EMAIL_KEYS = ("to", "from", "sendmail", "timeout")
COMMAND_KEYS = ("argv", "timeout")
MAX_ENTRIES = 16  # notify entries of one server, tenant or job
MAX_RECIPIENTS = 32
MAX_HEADERS = 32
MAX_RETRIES = 10
MAX_URL = 2048
MAX_TIMEOUT = 600.0  # seconds: a notification is never worth a stuck delivery worker for longer
# RFC 7230 token: a header name
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
# a plain address (no display name, no comments, no quoting): what reaches a header or an argv is this only
ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~][A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{0,63}"
                     r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                     r"[A-Za-z0-9])?)*")
ON_HINT = "on: [failure, crashed, missed, recovered] (any of them; default: all four)"
ITEM_HINT = "notify: {on: [failure], webhook: https://hooks.example/x} (see docs/notifications.md)"
URL_HINT = "webhook: https://host[:port]/path (http or https, no spaces; percent-encode what needs it)"
ADDRESS_HINT = "a plain address such as ops@example.com (no display name, no <...>)"


def webhook_url(value: object) -> str:
    url = v.text(value)
    if len(url) > MAX_URL or limits.has_control(url) or " " in url:
        raise ValueError(f"expected a URL of at most {MAX_URL} characters without spaces or control "
                         f"characters, got {v.kind(value)}")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"not a URL: {limits.clip(str(exc))}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"expected an http or https URL, got {shown(url)}")
    if not parts.hostname:
        raise ValueError(f"the URL names no host: {shown(url)}")
    if port == 0:
        raise ValueError(f"port 0 is not a port: {shown(url)}")
    return url


def address(value: object) -> str:
    text = v.text(value)
    if not ADDRESS.fullmatch(text) or len(text) > 254:
        raise ValueError(f"expected a mail address, got {shown(text)}")
    return text


def timeout(value: object) -> float:
    seconds = v.positive_duration(value)
    if seconds > MAX_TIMEOUT:
        raise ValueError(f"expected a duration of at most {MAX_TIMEOUT:g} s, got {v.kind(value)}")
    return seconds


def header_value(value: object) -> str:
    text = v.text(value)
    if limits.has_control(text.replace("\t", " ")) or len(text) > 4096:
        raise ValueError("a header value is one line of at most 4096 characters without control characters")
    return text


HINTS = {webhook_url: URL_HINT, address: ADDRESS_HINT, timeout: "a duration such as 10s or 2m (at most 10m)",
         header_value: "write the value on one line"}


def _value(w: _Walker, node: CommentedMap, key: str, conv: Any, where: str) -> Any:
    """``w.value`` with this module's hints."""
    if key not in node:
        return None
    try:
        return conv(node[key])
    except ValueError as exc:
        hint = HINTS.get(conv) or v.HINTS.get(conv)
        w.error(w.loc(node, key, value=True), f"{where}.{key}: {exc}", hint)
        return None


def parse(w: _Walker, node: CommentedMap, where: str) -> tuple[NotifyDef, ...]:
    """The ``notify:`` of one section (errors are recorded on the walker)."""
    if "notify" not in node:
        return ()
    raw, where = node["notify"], f"{where}.notify"
    if isinstance(raw, CommentedSeq):
        if len(raw) > MAX_ENTRIES:
            w.error(w.loc(node, "notify", value=True), f"{where}: at most {MAX_ENTRIES} entries", ITEM_HINT)
            return ()
        items = [(f"{where}[{i}]", item, w.loc(raw, i)) for i, item in enumerate(raw)]
    else:
        items = [(where, raw, w.loc(node, "notify", value=True))]
    out = []
    for item_where, item, loc in items:
        if not isinstance(item, CommentedMap):
            w.error(loc, f"{item_where}: expected a mapping (on:, command:, webhook:, email:), got "
                    f"{v.kind(item)}", ITEM_HINT)
            continue
        entry = _entry(w, item, item_where, loc)
        if entry is not None:
            out.append(entry)
    return tuple(out)


def _entry(w: _Walker, node: CommentedMap, where: str, loc: Any) -> NotifyDef | None:
    w.check_keys(node, ITEM_KEYS, where)
    inherit = _value(w, node, "inherit", v.boolean, where)
    channels = [k for k in ("command", "webhook", "email") if k in node]
    if not channels and inherit is not False:
        w.error(loc, f"{where}: names no command:, webhook: or email:", ITEM_HINT)
        return None
    command, command_timeout = _command(w, node, where) if "command" in node else (None, 30.0)
    return NotifyDef(on=_on(w, node, where), command=command, command_timeout=command_timeout,
                     webhook=_webhook(w, node, where) if "webhook" in node else None,
                     email=_email(w, node, where) if "email" in node else None,
                     inherit=inherit is not False, loc=loc)


def _on(w: _Walker, node: CommentedMap, where: str) -> frozenset[Event]:
    if "on" not in node:
        return frozenset(Event)
    raw = node["on"]
    items = list(enumerate(raw)) if isinstance(raw, CommentedSeq) else [(None, raw)]
    got = set()
    for i, name in items:
        loc = w.loc(raw, i) if i is not None else w.loc(node, "on", value=True)
        try:
            got.add(Event(name) if isinstance(name, str) else Event(""))
        except ValueError:
            w.error(loc, f"{where}.on: unknown event {shown(name)}", ON_HINT)
    if not items:
        w.error(w.loc(node, "on", value=True), f"{where}.on: names no event", ON_HINT)
    return frozenset(got)


def _command(w: _Walker, node: CommentedMap, where: str) -> tuple[tuple[str, ...] | None, float]:
    raw, seconds = node["command"], 30.0
    loc, cwhere = w.loc(node, "command", value=True), f"{where}.command"
    if isinstance(raw, CommentedMap):
        w.check_keys(raw, COMMAND_KEYS, cwhere)
        seconds = _value(w, raw, "timeout", timeout, cwhere) or seconds
        loc, raw = w.loc(raw, "argv", value=True), raw.get("argv")
    hint = 'an argv list, e.g. command: ["/usr/local/bin/page-ops", "--team", "infra"] (never a shell)'
    if not isinstance(raw, list) or not all(isinstance(a, str) and a for a in raw):
        w.error(loc, f"{cwhere}: expected a list of non-empty strings, got {v.kind(raw)}", hint)
        return None, seconds
    problem = limits.argv_problem(raw)
    if problem is not None:
        w.error(loc, f"{cwhere}: {problem}", hint)
        return None, seconds
    return tuple(str(a) for a in raw), seconds


def _webhook(w: _Walker, node: CommentedMap, where: str) -> Webhook | None:
    raw, hwhere = node["webhook"], f"{where}.webhook"
    if not isinstance(raw, CommentedMap):
        url = _value(w, node, "webhook", webhook_url, where)
        return Webhook(url=url) if url is not None else None
    w.check_keys(raw, WEBHOOK_KEYS, hwhere)
    if "url" not in raw:
        w.error(w.loc(node, "webhook", value=True), f"{hwhere}: needs url:", URL_HINT)
        return None
    url = _value(w, raw, "url", webhook_url, hwhere)
    got = {k: _value(w, raw, k, conv, hwhere) for k, conv in
           (("timeout", timeout), ("retries", v.whole(0, MAX_RETRIES)), ("backoff", timeout))}
    fields = {k: x for k, x in got.items() if x is not None}
    headers = _headers(w, raw, hwhere) if "headers" in raw else ()
    return Webhook(url=url, headers=headers, **fields) if url is not None else None


def _headers(w: _Walker, node: CommentedMap, where: str) -> tuple[tuple[str, str], ...]:
    raw = w.mapping(node["headers"], f"{where}.headers", w.loc(node, "headers", value=True))
    if raw is None:
        return ()
    if len(raw) > MAX_HEADERS:
        w.error(w.loc(node, "headers"), f"{where}.headers: at most {MAX_HEADERS} headers")
        return ()
    out = []
    for name in raw:
        if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
            w.error(w.loc(raw, name), f"{where}.headers: bad header name {shown(name)}",
                    "header names are letters, digits and !#$%&'*+.^_`|~- (RFC 7230)")
            continue
        value = _value(w, raw, name, header_value, f"{where}.headers")
        if value is not None:
            out.append((name, value))
    return tuple(out)


def _email(w: _Walker, node: CommentedMap, where: str) -> Email | None:
    raw, ewhere = node["email"], f"{where}.email"
    if not isinstance(raw, CommentedMap):
        to = _value(w, node, "email", address, where)
        return Email(to=(to,)) if to is not None else None
    w.check_keys(raw, EMAIL_KEYS, ewhere)
    to = _recipients(w, raw, ewhere)
    sender = _value(w, raw, "from", address, ewhere)
    sendmail = _value(w, raw, "sendmail", v.abs_path, ewhere) or Path("/usr/sbin/sendmail")
    seconds = _value(w, raw, "timeout", timeout, ewhere) or 30.0
    return Email(to=to, sender=sender, sendmail=sendmail, timeout=seconds) if to else None


def describe(entries: tuple[NotifyDef, ...]) -> str:
    """What `check -v` shows of a job's notifications: where each goes, and on which events."""
    parts = []
    for n in entries:
        on = ",".join(sorted(n.on)) if n.on != frozenset(Event) else "all"
        ways = ([f"command {n.command[0]}"] if n.command else []) + (
            [f"webhook {_origin(n.webhook.url)}"] if n.webhook else []) + (
            [f"email {', '.join(n.email.to)}"] if n.email else [])
        parts += [f"{way} ({on})" for way in ways]
    return "; ".join(parts)


def _origin(url: str) -> str:
    """scheme://host[:port] only: a webhook's path often is its secret (chat services put the token there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def host_checks(w: _Walker, server: ServerSettings, tenants: list[TenantDef]) -> None:
    """A sendmail that is not there would fail every mail at night: `check` says so now."""
    usable: dict[Path, bool] = {}
    for loc, path in v.sendmails(server, tenants):
        if path not in usable:
            usable[path] = v.executable_file(path)
        if not usable[path]:
            w.error(loc, f"email: sendmail {shown(str(path), 200)} is not an executable file here",
                    "install a mail transport agent that provides sendmail, or name yours with sendmail:")


def _recipients(w: _Walker, node: CommentedMap, where: str) -> tuple[str, ...]:
    raw = node.get("to")
    if raw is None:
        w.error(w.loc(node, None), f"{where}: needs to: (one address or a list)", ADDRESS_HINT)
        return ()
    if not isinstance(raw, CommentedSeq):
        got = _value(w, node, "to", address, where)
        return (got,) if got is not None else ()
    if not raw or len(raw) > MAX_RECIPIENTS:
        w.error(w.loc(node, "to", value=True), f"{where}.to: expected 1 to {MAX_RECIPIENTS} addresses",
                ADDRESS_HINT)
        return ()
    return tuple(w.each(raw, address, f"{where}.to", ADDRESS_HINT))
