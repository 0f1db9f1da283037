"""Serving the web side on a bound socket, the one way both `taskserver web` and the daemon's web child do
it: as a plain unprivileged process, with the slow-client limits of runtime/web/guard.py and the shared
sweeps of runtime/web/sweep.py.

``warm`` is for a server started by root: it imports what a request will need and reads the templates
before the privilege drop (the installation's files may be readable by root only).
"""

from __future__ import annotations

import importlib
import math
import os
import socket
import sys
from typing import TYPE_CHECKING, Any

import uvicorn

from .. import caps
from . import guard
from .app import create_app, templates
from .auth import Auth
from .reader import Reader

if TYPE_CHECKING:
    from ..model import Config, HttpSettings
    from .tokens import Token

PRELOAD = ("anyio._backends._asyncio", "anyio.from_thread", "anyio.to_thread")  # imported on first use
REFUSED_AS_ROOT = 71  # EX_OSERR: the web side never parses a request as root


def warm() -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    templates()
    uvicorn.Config(_nothing, **_options()).load()  # imports the protocol and loop modules


async def _nothing(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app for ``warm``: uvicorn imports what serving needs when it loads an app."""


def _options() -> dict[str, Any]:
    return {"log_level": "warning", "access_log": False, "server_header": False, "log_config": None,
            "lifespan": "off", "loop": "asyncio", "http": "h11", "ws": "none", "proxy_headers": False}


def unprivileged() -> None:
    """No capability, no way to gain one (no_new_privs: no set-uid program raises it), never uid 0."""
    caps.limit_to(())
    caps.no_new_privileges()
    if 0 in os.getresuid():  # real, effective and saved
        print("taskserver: error: the web server refuses to run as root", file=sys.stderr)
        os._exit(REFUSED_AS_ROOT)


def serve(cfg: Config, http: HttpSettings, tokens: list[Token], anonymous: bool, sock: socket.socket) -> None:
    """Serve until TERM (or INT) on ``sock``, already bound and listening."""
    unprivileged()
    app = create_app(Reader(cfg), Auth(tokens, anonymous), sweep_max_age=http.sweep_max_age)
    options = {**_options(), "http": guard.protocol(guard.limits(http)), "backlog": guard.ACCEPT_BATCH,
               # uvicorn's keep-alive timer counts whole seconds (0: one request per connection)
               "timeout_keep_alive": math.ceil(http.idle_timeout)}
    _Server(uvicorn.Config(app, **options)).run(sockets=[sock])


class _Server(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        for sock in sockets or ():  # the accept batch is short (guard.ACCEPT_BATCH); the queue need not be
            sock.listen(guard.QUEUE)
