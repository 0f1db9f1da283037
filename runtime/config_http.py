"""``task_server: http:``: where `taskserver run` serves the web side (runtime/httpd.py).

    task_server:
      http:
        listen: 127.0.0.1:8181     # HOST:PORT; HOST an IP address ([::1] for IPv6) or localhost
        tokens: /etc/taskserver/tokens   # default: `tokens` next to the config file
        anonymous_read: false
        max_connections: 256       # open at once; beyond it a client still sending its request is closed
        header_timeout: 10s        # to send a whole request head, from the connection's open
        client_timeout: 30s        # to send a body after its head, and to take a response sent to it
        idle_timeout: 5s           # a keep-alive connection between requests (0: one request each)
        sweep_max_age: 5s          # /healthz and /metrics reuse one reading of every store this long

The same address rules serve `taskserver web --listen`; `taskserver web` takes the other settings from here
too (the defaults when there is no http: section).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config_values as v
from .limits import shown
from .model import HttpSettings

if TYPE_CHECKING:
    from ruamel.yaml.comments import CommentedMap

    from .config_parse import _Walker

KEYS = ("listen", "tokens", "anonymous_read", "max_connections", "header_timeout", "client_timeout",
        "idle_timeout", "sweep_max_age")
MAX_CONNECTIONS = 100_000  # each is an open file; the process's limit is checked at start (guard.py)
DEFAULT_LISTEN = "127.0.0.1:8181"
LISTEN_HINT = f"listen: {DEFAULT_LISTEN} (loopback), [::1]:8181, or 0.0.0.0:8181 for every address"


def parse_listen(value: object) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); HOST is an IP address literal (IPv6 in brackets) or ``localhost``."""
    text = v.ascii_text(value)
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT with a port from 1 to 65535, got {shown(text)}")
    bracketed = host.startswith("[") and host.endswith("]")
    bare = host[1:-1] if bracketed else host
    if bare == "localhost" and not bracketed:
        return bare, int(port)
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError:
        raise ValueError(f"{shown(host)} is not an IP address (or localhost)") from None
    if addr.version == 6 and not bracketed:
        raise ValueError(f"write an IPv6 address in brackets: [{bare}]:{port}")
    return str(addr), int(port)


def parse(w: _Walker, server: CommentedMap) -> HttpSettings | None:
    """The http: section under task_server, or None when it is absent; errors are recorded in ``w``."""
    loc = w.loc(server, "http", value=True)
    node = w.mapping(server.get("http"), "task_server.http", loc)
    if node is None:
        return None
    w.check_keys(node, KEYS, "task_server.http")
    where = "task_server.http"
    host, port = parse_listen(DEFAULT_LISTEN)
    if "listen" in node:
        try:
            host, port = parse_listen(node["listen"])
        except ValueError as exc:
            w.error(w.loc(node, "listen", value=True), f"{where}.listen: {exc}", LISTEN_HINT)
    tokens = w.value(node, "tokens", v._path_text, where)
    anonymous = w.value(node, "anonymous_read", v.boolean, where)
    return HttpSettings(host=host, port=port, tokens=Path(tokens) if tokens else None,
                        anonymous_read=bool(anonymous),
                        loc=w.loc(node, "listen", value=True) if "listen" in node else w.loc(server, "http"),
                        **_limits(w, node, where))


def _limits(w: _Walker, node: CommentedMap, where: str) -> dict[str, Any]:
    """The slow-client and sweep settings that are given (the others keep HttpSettings' defaults)."""
    convs: dict[str, Callable[[object], Any]] = {
        "max_connections": v.whole(1, MAX_CONNECTIONS), "header_timeout": v.positive_duration,
        "client_timeout": v.positive_duration, "idle_timeout": v.duration, "sweep_max_age": v.duration}
    got = {key: w.value(node, key, conv, where) for key, conv in convs.items()}
    return {key: value for key, value in got.items() if value is not None}


def tokens_path(config_path: Path, given: Path | None) -> Path:
    """A relative tokens path counts from the config file's directory, like the default."""
    base = config_path.absolute().parent
    return base / "tokens" if given is None else base / given
