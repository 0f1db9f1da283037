"""Parse the configuration in a short-lived child process and hand the daemon only the result.

Parsing a large file with ruamel.yaml peaks at tens of MB (about 75 MB for 10,000 jobs) that the allocator
does not give back to the system afterwards, so a daemon that parsed in-process kept that RSS for life. The
child parses, pickles the frozen ``Config`` into a pipe (as runtime/config_wire.py packs it) and exits; the
daemon keeps only the ``Config``.
Used at start and on every reload, so reloads do not ratchet the daemon's memory up either.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import pickle
import select
import traceback
from collections.abc import Callable, Iterator

from . import config_wire
from .errors import UserError
from .model import Config


def load_in_child(
    load: Callable[[], Config], keepalive: Callable[[], None] | None = None, every: float = 1.0,
    meanwhile: Callable[[], None] | None = None, afterwards: Callable[[], None] | None = None,
) -> Config:
    """``load()`` run in a forked child; its UserError is re-raised here, other failures as RuntimeError.

    ``keepalive`` is called every ``every`` seconds while waiting: a reload of a large file takes seconds,
    longer than a short systemd watchdog allows between pings. ``meanwhile``: the caller's own work, done
    here while the child parses (the child does not get what it loads). ``afterwards``: the child's own
    last work, once its answer is sent (its failures are ignored), while this process reads the answer.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's code
        os.close(read_fd)
        try:
            _child(load, write_fd)
            if afterwards is not None:
                with contextlib.suppress(Exception):
                    afterwards()
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        if meanwhile is not None:
            meanwhile()
        while True:
            ready, _, _ = select.select([pipe], [], [], every)
            if not ready:
                if keepalive is not None:
                    keepalive()
                continue
            chunk = pipe.read(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    try:
        return _answer(chunks)
    finally:
        # ChildProcessError: reaped by a SIGCHLD handler that waits for any child. Reaped after the answer
        # is read: the child's ``afterwards`` runs meanwhile
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _answer(chunks: list[bytes]) -> Config:
    if not chunks:
        raise RuntimeError("the config loader process died without an answer")
    data = b"".join(chunks)
    del chunks[:]
    # our own child wrote this, from the same code: unpickling it is as safe as the parse itself
    with gc_paused():  # a tree of new objects (no cycles): a collection would only walk it again
        kind, value = pickle.loads(data)  # noqa: S301
        del data
        if kind == "config":
            return config_wire.unpack(value)
    if kind == "user-error":
        message, hint, code = value
        raise UserError(message, hint=hint, exit_code=code)
    raise RuntimeError(f"loading the config failed:\n{value}")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: while tens of thousands of long-lived objects are made at once
    (a config's jobs), each collection of the oldest generation walks all of them again, for nothing.
    Reference counting still frees what is dropped; the collector's state before is restored after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _child(load: Callable[[], Config], fd: int) -> None:
    # the collector off for the child's whole short life: parsing 10,000 jobs makes few cycles (a few
    # hundred objects, checked) but its collections cost a third of the parse; all is freed at exit
    gc.disable()
    try:
        result: tuple[str, object] = ("config", config_wire.pack(load()))
    except UserError as err:
        result = ("user-error", (err.message, err.hint, err.exit_code))
    except BaseException:  # the parent must hear of any failure, not wait on a silent pipe
        result = ("crash", traceback.format_exc())
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    # no memo: the rows and the table are a tree (no cycles), and an unpickler's memo of every row made
    # the daemon's heap larger for good
    pickler.fast = True
    pickler.dump(result)
    with os.fdopen(fd, "wb") as pipe:
        pipe.write(buf.getbuffer())
