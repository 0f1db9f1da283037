"""The web server of `taskserver run`, in a process of its own (runtime/httpd.py starts it as
``python -m taskserver.runtime.web.child``): the config, the http settings, the tokens and the daemon's pid
come pickled on stdin (a memory file the daemon wrote), with the number of the listening socket's fd.

It serves as the user the daemon started it as, and makes sure of it: no capabilities, no new privileges
(no set-uid program can raise it), never uid 0, and the kernel TERMs it when the daemon ends.

``warm`` is for `taskserver web`, which serves in its own process after dropping privileges: it imports
what a request will need and reads the templates while still root (the installation's files may be
readable by root only).
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import socket
import sys
from typing import Any, NoReturn

import uvicorn

from .. import caps, logs
from .app import create_app, templates
from .auth import Auth
from .reader import Reader

PRELOAD = ("anyio._backends._asyncio", "anyio.from_thread", "anyio.to_thread")  # imported on first use


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


def main() -> NoReturn:
    """Read what the daemon handed over, become a plain unprivileged process, serve until TERM."""
    with os.fdopen(0, "rb", closefd=False) as stdin:
        # our parent wrote this, from the same code: unpickling it is as safe as its own config
        cfg, http, tokens, parent, listen_fd = pickle.load(stdin)  # noqa: S301
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    caps.limit_to(())
    caps.no_new_privileges()
    caps.die_with_parent(signal.SIGTERM)
    if os.getppid() != parent:  # the daemon ended before that was set
        os._exit(0)
    if os.getuid() == 0 or os.geteuid() == 0:
        print("taskserver: error: the web server refuses to run as root", file=sys.stderr)
        os._exit(71)
    logs.setup(verbose=False)
    sock = socket.socket(fileno=listen_fd)
    app = create_app(Reader(cfg), Auth(tokens, http.anonymous_read))
    uvicorn.Server(uvicorn.Config(app, **_options())).run(sockets=[sock])
    os._exit(0)


if __name__ == "__main__":
    main()
