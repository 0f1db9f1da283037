"""`taskserver web`: serve the dashboard, JSON API, /metrics and /healthz; `web token-add` makes a token.

The web server needs the optional extra ``taskserver[web]``; everything else of taskserver runs without it.
Started by root, it reads the tokens file and binds the address, then becomes whom the daemon's own web
child becomes (runtime/httpd.py ``child_identity``): the config's ``run_as`` user, else ``nobody`` with the
daemon's group (a store that user may not read is then a per-tenant store fault); for a config another
user controls, that user, as every command does. No request is ever parsed as root, and nothing it writes
is more than `taskserver jobs` run by that user could write.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import config, httpd, privs
from .config_http import DEFAULT_LISTEN, LISTEN_HINT, parse_listen, tokens_path
from .errors import UserError
from .model import Config, HttpSettings

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    web = sub.add_parser(
        "web", help="serve the dashboard, JSON API, /metrics and /healthz (needs taskserver[web])",
        description="Serve a dashboard, a JSON API (/api/v1), Prometheus metrics (/metrics) and a health "
        "check (/healthz) for this configuration's tenants. Reads need a token unless --anonymous-read; "
        "actions always need a token with write rights. Tokens: `taskserver web token-add`. Started by "
        "root, it binds the address and reads the tokens as root, then serves as task_server.run_as, or as "
        "nobody when that is unset or root (stores nobody may not read show as store faults; actions are "
        "refused): it never parses a request as root. Limits on slow clients and connections, and how "
        "long /healthz and /metrics reuse a reading: task_server.http (docs/web.md).")
    web.add_argument("--listen", metavar="HOST:PORT",
                     help=f"address to listen on (default: task_server.http.listen, else {DEFAULT_LISTEN}, "
                     "loopback only)")
    web.add_argument("--tokens", type=Path, metavar="FILE",
                     help="tokens file (default: task_server.http.tokens, else `tokens` next to the config "
                     "file)")
    web.add_argument("--anonymous-read", action="store_true",
                     help="let anyone who reaches the address read (never act) without a token (default: "
                     "task_server.http.anonymous_read)")
    web.set_defaults(func=_serve)
    wsub = web.add_subparsers(title="web commands", dest="web_command", metavar="COMMAND")
    add = wsub.add_parser("token-add", help="make a new API token and print it once",
                          description="Append a token to the tokens file (only its SHA-256 is stored) and "
                          "print the token; keep it, it cannot be shown again.")
    add.add_argument("name", metavar="NAME", help="a name for the token (letters, digits, . _ -)")
    add.add_argument("--tenants", default="*", metavar="T1,T2",
                     help="tenants the token may see and act on (default: * = all)")
    add.add_argument("--read-only", action="store_true", help="the token may read but not act")
    add.add_argument("--tokens", type=Path, metavar="FILE", dest="tokens_file",
                     help="tokens file (default: `tokens` next to the config file)")
    add.set_defaults(func=_token_add)


def _listen(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise UserError(f"--listen: {exc}", hint=LISTEN_HINT.replace("listen: ", "--listen ")) from None


def _settings(args: argparse.Namespace, cfg: Config) -> tuple[HttpSettings, Path, bool]:
    """The http settings (address from --listen, else the config's task_server.http, what `taskserver run`
    serves, else the defaults), the tokens file and anonymous reads, likewise."""
    http = cfg.server.http or HttpSettings()
    if args.listen is not None or cfg.server.http is None:
        host, port = _listen(args.listen or DEFAULT_LISTEN)
        http = replace(http, host=host, port=port)
    tokens_file = args.tokens if args.tokens is not None else tokens_path(cfg.path, http.tokens)
    return http, tokens_file, args.anonymous_read or http.anonymous_read


def _token_add(args: argparse.Namespace) -> int:
    from .web import tokens  # noqa: PLC0415

    cfg_path = args.config if args.config is not None else config.default_config_path()
    path = args.tokens_file
    if path is None:  # the file `taskserver run` and `taskserver web` read: task_server.http.tokens
        cfg = config.load(cfg_path) if cfg_path.exists() else None
        http = cfg.server.http if cfg is not None else None
        path = tokens_path(cfg_path, http.tokens if http is not None else None)
        if cfg is not None:  # a config another user controls names a path that user chose: theirs to write
            privs.become_owner(cfg)
    names = None if args.tenants.strip() == "*" else [t.strip() for t in args.tenants.split(",") if t.strip()]
    token = tokens.add(path, args.name, names, write=not args.read_only)
    print(token)
    print(f"taskserver: token {args.name!r} added to {path}; it is shown only this once", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        from .web.serve import serve, warm  # noqa: PLC0415
    except ImportError as exc:
        raise UserError(f"the web server needs the optional extra: {exc.name} is not installed",
                        hint="pip install 'taskserver[web]'") from None
    from .store import load_backends  # noqa: PLC0415
    from .web import tokens  # noqa: PLC0415

    cfg = config.load(args.config)
    http, tokens_file, anonymous = _settings(args, cfg)
    # before the drop: the installation's modules and templates may be readable by root only
    warm()
    load_backends({t.store.kind for t in cfg.tenants})
    privs.become_owner(cfg)  # a config another user controls: its tokens file is read as that user too
    token_list = tokens.load(tokens_file)
    if not token_list and not anonymous:
        log.warning("no tokens in the tokens file: every request needs one; make one with "
                    "`taskserver web token-add NAME`")
    ident = httpd.child_identity(cfg)  # as the daemon's web child: never root (nobody when run_as is not set)
    sock = _bind(http)
    if ident is not None and not ident.is_self:
        privs.become(ident)
    log.info("serving http://%s:%d/ for %s as uid %d", http.host, http.port, cfg.path, os.getuid())
    serve(cfg, http, token_list, anonymous, sock)
    return 0


def _bind(http: HttpSettings) -> socket.socket:
    """Bound while still root, as the daemon does for its child: a port below 1024 works."""
    try:
        return httpd.listening(http.host, http.port)
    except OSError as exc:
        where = f"[{http.host}]:{http.port}" if ":" in http.host else f"{http.host}:{http.port}"
        raise UserError(f"cannot listen on {where}: {exc.strerror or exc}",
                        hint="choose another address with --listen HOST:PORT (or task_server.http.listen), "
                        "or stop what listens there") from None
