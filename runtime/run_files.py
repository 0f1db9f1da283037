"""The status files of the runs in progress: each run's file written at its start and its end (the start's
descriptor kept open for the end), and the new files made ahead by a helper thread (runtime/spares.py).

A status file is a view for the run's user: it is written after the store's commit and never decides
anything, so a file that cannot be written is logged and the run goes on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

from . import privs, statusfile, tenancy
from .errors import UserError
from .model import Config, JobDef
from .runplace import Place, Places
from .spares import Spares
from .store import Run

log = logging.getLogger(__package__ + ".runs")  # the name these lines had before they moved here


class StatusFiles:
    def __init__(self, config: Callable[[], Config], places: Places) -> None:
        self.config = config
        self.places = places
        self.spares = Spares()  # new status files made ahead by a helper thread (runtime/spares.py)
        self.fds: dict[tuple[str, int], int] = {}  # (tenant, run id) -> its status file, open
        self._told_jobs: dict[str, set[str]] = {}  # status file names the spares were told of, per tenant
        self._told_tasks: dict[str, int] = {}  # the last queued task's id they were told of

    def write_for(self, tenant: str, run: Run | None) -> None:
        """``run``'s file as its row now says (nothing for a run purged meanwhile)."""
        if run is not None:
            place = self.places(self.config(), tenant)
            self.write(place, run, place.status_path(run))

    def write(self, place: Place, run: Run, path: str, keep: bool = False) -> None:
        """``keep``: the file is kept open for the run's next write (``fds``), its end."""
        fd = self.fds.pop((place.name, run.id), None)
        try:
            text = statusfile.render(run, place.name)
            if place.files is None:  # the daemon's own ids: no switch of filesystem ids to enter and leave
                self._rewrite((place.name, run.id), path, text, fd, keep=keep)
                return
            with privs.fs_identity(place.files):
                self._rewrite((place.name, run.id), path, text, fd, keep=keep)
        except (OSError, UserError) as exc:
            log.warning("status file of run %d: %s", run.id, exc)

    def _rewrite(self, key: tuple[str, int], path: str, text: str, fd: int | None, *, keep: bool) -> None:
        if fd is not None:
            statusfile.rewrite_open(fd, path, text, self.spares)
        elif (kept := statusfile.rewrite(path, text, self.spares, keep=keep)) is not None:
            self.fds[key] = kept

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        self.spares.close()

    def expect_jobs(self, tenant: str, jobs: Iterable[JobDef]) -> None:
        """These scheduled jobs will run: their status files (those not made yet) are made ahead."""
        names = {statusfile.job_status_name(job.name) for job in jobs}
        told = self._told_jobs.setdefault(tenant, set())
        self._expect(tenant, sorted(names - told))
        told |= names

    def expect_tasks(self, tenant: str, runs: Iterable[Run]) -> None:
        """These queued tasks wait to start: those that came without a status file get one made ahead
        (each task told once: run ids only grow)."""
        last = self._told_tasks.get(tenant, 0)
        fresh = [run.id for run in runs if run.id > last]
        if fresh:
            self._told_tasks[tenant] = max(fresh)
            self._expect(tenant, [str(i) for i in fresh])

    def _expect(self, tenant: str, names: list[str]) -> None:
        config = self.config()
        conf = config.tenant(tenant)
        if conf is None or not names:
            return
        ident = tenancy.file_identity(config, conf)
        directory = statusfile.status_dir(config.tenant_dir(tenant), tenant)
        try:
            with privs.fs_identity(ident):
                mode = statusfile.prepare(directory)
        except (OSError, UserError) as exc:
            log.warning("tenant %s: status directory: %s", tenant, exc)
            return
        self.spares.expect(directory, names, mode, ident)
