"""The web server of `taskserver run`, in a process of its own (runtime/httpd.py starts it as
``python -m taskserver.runtime.web.child``): the config, the http settings, the tokens and the daemon's pid
come pickled on stdin (a memory file the daemon wrote), with the number of the listening socket's fd.

It serves as the user the daemon started it as, and makes sure of it: no capabilities, no new privileges
(no set-uid program can raise it), never uid 0 (runtime/web/serve.py), and the kernel TERMs it when the
daemon ends.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
from typing import NoReturn

from .. import caps, logs
from .serve import serve, warm

__all__ = ["main", "warm"]


def main() -> NoReturn:
    """Read what the daemon handed over, become a plain unprivileged process, serve until TERM."""
    with os.fdopen(0, "rb", closefd=False) as stdin:
        # our parent wrote this, from the same code: unpickling it is as safe as its own config
        cfg, http, tokens, parent, listen_fd = pickle.load(stdin)  # noqa: S301
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    caps.die_with_parent(signal.SIGTERM)
    if os.getppid() != parent:  # the daemon ended before that was set
        os._exit(0)
    logs.setup(verbose=False)
    serve(cfg, http, tokens, http.anonymous_read, socket.socket(fileno=listen_fd))
    os._exit(0)


if __name__ == "__main__":
    main()
