"""Enqueue tasks from a Python application without starting a process per task (docs/client.md).

    from taskserver.runtime.client import Client

    with Client("/etc/taskserver/taskserver.yaml") as client:
        run_id = client.enqueue(["/usr/local/bin/report", "--month", "11"], tenant="shop")
        ids = client.enqueue_many([["/usr/local/bin/mail", str(n)] for n in range(1000)], queue="mail")
        run = client.wait(run_id, timeout=600)      # a store Run: run.state is OK or ERR

A task is exactly what `taskserver jobs enqueue -- ARGV` queues: a QUE row in the tenant's store, opened
through the store registry as the `jobs` commands open it, with the same checks on argv and queue names, and
the daemon serving the store woken to start it.  ``enqueue_many`` writes a whole
batch in one transaction (all of it or none) and wakes the daemon once.  Errors are ``UserError`` (a
one-line message and a hint), so a bad argv or an unknown tenant is refused before anything is written.
What fails after the commit (a status file, with ``status_files=True``) is no error: the call returns the
run ids, and ``client.warnings`` says which files were not written and why (logged as a warning too).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from . import cli_jobs, committed, config, statusfile
from .config_values import NAME, NAME_HINT
from .errors import UserError
from .limits import argv_problem, shown
from .model import Config, State, TenantDef
from .store import Run, Store

DEFAULT_QUEUE = cli_jobs.DEFAULT_QUEUE
ENDED = (State.OK, State.ERR)
log = logging.getLogger(__name__)


class StatusWarning(NamedTuple):
    """A queued task's status file that was not written; the task is queued all the same."""

    run_id: int
    path: str
    reason: str  # as the system words it: "No space left on device", "Permission denied"

    def __str__(self) -> str:  # the line `taskserver jobs enqueue` prints after "taskserver: warning: "
        return committed.unwritten_text(self.run_id, "queued", self.path, self.reason)


def queue_problem(queue: object) -> str | None:
    """Why ``queue`` is not a queue name (None when it is): the names the config allows for jobs."""
    if not isinstance(queue, str) or not NAME.fullmatch(queue):
        return f"{shown(queue)} is not a queue name ({NAME_HINT})"
    return None


def _wake(cfg: Config, store: Store) -> None:
    """One wake-up for a whole batch; with no daemon to wake the tasks wait for the next `taskserver run`."""
    with contextlib.suppress(OSError, UserError):
        committed.wake(cfg.path, store.notify, warn=log.warning)


class Client:
    """Queued tasks of one configuration's tenants.  Not thread-safe: give each thread its own client.

    ``config``: a loaded ``Config``, or the path of the file (default: as `taskserver` finds it).
    ``tenant``: the tenant used when a call names none (default: the only one, else ``default``).
    """

    def __init__(self, config_or_path: Config | str | os.PathLike[str] | None = None, *,
                 tenant: str | None = None) -> None:
        if isinstance(config_or_path, Config):
            self.config = config_or_path
        else:
            self.config = config.load(Path(config_or_path) if config_or_path is not None else None)
        self.tenant = tenant
        self.warnings: list[StatusWarning] = []  # what the latest enqueue could not do after its commit
        self._stores: dict[str, Store] = {}  # opened for writing (checked once), kept for the next batch

    # -- writing ---------------------------------------------------------------------------------------
    def enqueue(self, argv: Sequence[str], *, tenant: str | None = None, queue: str = DEFAULT_QUEUE,
                status_files: bool = False) -> int:
        """Queue one task; returns its run id (per tenant).  A queue's tasks run one at a time, in order."""
        return self.enqueue_many([argv], tenant=tenant, queue=queue, status_files=status_files)[0]

    def enqueue_many(self, argvs: Iterable[Sequence[str]], *, tenant: str | None = None,
                     queue: str = DEFAULT_QUEUE, status_files: bool = False) -> list[int]:
        """Queue every command of ``argvs`` in one transaction (all or none); returns their run ids in order.
        The daemon is woken once for the whole batch.

        ``status_files``: also write each task's QUE status file now, as `jobs enqueue` does.  Off by default:
        creating a file per task costs 20 to 100 times what its row does on a busy disk, and an application
        has ``get`` and ``wait``; the daemon writes the file when it starts the task (the task's
        $TASKSERVER_STATUS_FILE is there for it either way).  A file that cannot be written (a full disk, a
        directory this user may not write) does not undo the commit: the ids are returned, and
        ``self.warnings`` lists each file not written and why (a new list per call; logged as a warning)."""
        self.warnings = []
        commands: list[list[str]] = []
        for i, argv in enumerate(argvs):  # every command is checked before anything is written
            problem = argv_problem(argv)
            if problem:
                raise UserError(f"cannot enqueue command {i}: {problem}",
                                hint="give each command as a list of strings")
            commands.append(list(argv))
        if problem := queue_problem(queue):
            raise UserError(f"cannot enqueue: {problem}", hint="queue='default' or a name like 'mail'")
        target = self._tenant(tenant, runnable=True)
        with cli_jobs._as_tenant(self.config, target):
            store = self._writer(target)
            now = time.time()
            with store.batch():  # one commit for the batch; a failed commit keeps none of it
                ids = [store.add("", queue=queue, argv=argv, now=now) for argv in commands]
            if status_files:
                self.warnings = self._status_files(target, ids, commands, queue, now)
            _wake(self.config, store)
        return ids

    def _status_files(self, tenant: TenantDef, ids: list[int], commands: list[list[str]], queue: str,
                      now: float) -> list[StatusWarning]:
        """The runs are committed: a failure here must not make a caller retry (and queue them twice), so
        it is not raised but returned, one warning per file; the daemon writes each file again when it
        starts the task. Each file is tried: each says for itself why it was not written."""
        state_dir = self.config.tenant_dir(tenant.name)
        unwritten = []
        for run_id, argv in zip(ids, commands, strict=True):
            run = Run(id=run_id, job="", queue=queue, state=State.QUE, reason=None, due=None, created=now,
                      started=None, finished=None, pid=None, instance=None, exit_code=None, attempt=0,
                      argv=tuple(argv), output="", message=None, queued=True)
            path = statusfile.status_path(state_dir, tenant.name, run_id)
            try:
                statusfile.write(path, statusfile.render(run, tenant.name))
            except (OSError, UserError) as exc:
                unwritten.append(StatusWarning(run_id, path, committed.reason(exc)))
        if len(unwritten) == 1:
            log.warning("%s", unwritten[0])
        elif unwritten:
            log.warning("%d of %d tasks are queued without a status file; the first: %s", len(unwritten),
                        len(ids), unwritten[0])
        return unwritten

    # -- reading ---------------------------------------------------------------------------------------
    def get(self, run_id: int, *, tenant: str | None = None) -> Run | None:
        """The run as stored now, or None when the tenant has no such run."""
        target = self._tenant(tenant)
        store = self._stores.get(target.name)
        if store is not None:
            return store.get(run_id)
        with cli_jobs._as_tenant(self.config, target):
            reader = cli_jobs._store(self.config, target, create=False)
            if reader is None:
                return None
            try:
                return reader.get(run_id)
            finally:
                reader.close()

    def wait(self, run_id: int, timeout: float | None = None, *, tenant: str | None = None) -> Run:
        """Block until the run ended (OK or ERR) and return it; TimeoutError after ``timeout`` seconds,
        UserError when there is no such run."""
        end = None if timeout is None else time.monotonic() + timeout
        pause = 0.01
        while True:
            run = self.get(run_id, tenant=tenant)
            if run is None:
                raise UserError(f"no run {run_id} in tenant {self._tenant(tenant).name!r}",
                                hint="use the id enqueue() returned, with the same tenant")
            if run.state in ENDED:
                return run
            if end is not None and time.monotonic() >= end:
                raise TimeoutError(f"run {run_id} is still {run.state.value} after {timeout} s")
            time.sleep(pause if end is None else max(0.0, min(pause, end - time.monotonic())))
            pause = min(pause * 2, 0.25)

    # -- plumbing --------------------------------------------------------------------------------------
    def _tenant(self, name: str | None, *, runnable: bool = False) -> TenantDef:
        try:
            tenant = cli_jobs._tenant(self.config, name or self.tenant)
        except UserError as exc:
            raise UserError(exc.message, hint="pass tenant=NAME") from None
        denied = cli_jobs._denied(self.config, tenant)  # root, the tenant's user, the daemon's user only
        if denied is not None:
            raise denied
        if runnable:  # a tenant without a login runs nothing: queueing for it is a mistake, reading is not
            cli_jobs._runnable(self.config, tenant)
        return tenant

    def _writer(self, tenant: TenantDef) -> Store:
        store = self._stores.get(tenant.name)
        if store is None:
            store = cli_jobs._store(self.config, tenant, create=True)  # checked once, before the first write
            assert store is not None
            self._stores[tenant.name] = store
        return store

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
