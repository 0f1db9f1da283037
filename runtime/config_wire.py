"""A ``Config`` as the parse child hands it to the daemon (runtime/isolate.py): compact and quick to rebuild.

Pickled as it is, 10,000 jobs cost the start-up 0.4 s of CPU: a Python call per object on each side (a job
holds a dozen). Here a tenant's jobs go as columns of plain values, which the pickler writes and reads in C:
their names, lines and columns, their numbers and booleans as they are, and for each other field the number
of a value in one table. A value the jobs repeat (a schedule, a command, a retry, an environment, a
notification, the file's name) stands in the table once, and the daemon's jobs share that one object.
Values count as the same only when their ``repr`` is (the same fields with the same types: 1 and 1.0 stay
apart, a number keeps its type). The tenants, the server settings and the table itself are few and pickled
as they are.

Columns, not a row per job: what the jobs keep (their names, positions, numbers) is then unpickled side by
side, and what the daemon drops after building them (the table's numbers) lies in memory of its own that
goes back whole; rows interleaved the two and left the daemon's heap larger.
"""

from __future__ import annotations

import dataclasses
from operator import attrgetter
from typing import Any

from .model import Config, JobDef, Loc, TenantDef

INLINE = ("name", "shell", "timeout", "max_late", "enabled")  # each job's own, or numbers and booleans
TABLED = ("trigger", "command", "call", "windows", "catch_up", "retry", "queue", "timezone", "env", "notify")
OTHERS = ("tenant", "loc")  # the tenant's name; the position's file (tabled), line and column
_inline, _tabled = attrgetter(*INLINE), attrgetter(*TABLED)

Columns = tuple[tuple[Any, ...], ...]  # INLINE's, then the file number, line and column, then TABLED's
Packed = tuple[Config, tuple[Columns, ...], tuple[object, ...]]


class _Table:
    """Distinct values, each with its number; ``number`` of one already met is a dictionary lookup."""

    def __init__(self) -> None:
        self.values: list[object] = []
        self.by_id: dict[int, int] = {}  # the values looked up are held by the Config being packed
        self.by_repr: dict[tuple[type, str], int] = {}

    def number(self, value: object) -> int:
        found = self.by_id.get(id(value))
        if found is None:
            key = (type(value), repr(value))
            found = self.by_repr.setdefault(key, len(self.values))
            if found == len(self.values):
                self.values.append(value)
            self.by_id[id(value)] = found
        return found


def pack(config: Config) -> Packed:
    """``config`` as its jobs' columns, the table they number into, and the rest without its jobs."""
    table = _Table()
    number = table.number
    tenants = []
    for tenant in config.tenants:
        rows = []
        for job in tenant.jobs:
            loc = job.loc
            at = (number(loc.file), loc.line, loc.col) if loc is not None else (-1, 0, 0)
            rows.append((*_inline(job), *at, *map(number, _tabled(job))))
        tenants.append(tuple(zip(*rows, strict=True)) if rows else ())
    bare = tuple(dataclasses.replace(t, jobs=()) for t in config.tenants)
    return dataclasses.replace(config, tenants=bare), tuple(tenants), tuple(table.values)


def unpack(packed: Packed) -> Config:
    """The ``Config`` that ``pack`` was given (equal to it, field by field)."""
    bare, columns, values = packed
    tenants = tuple(dataclasses.replace(t, jobs=_jobs(t, c, values)) for t, c in zip(bare.tenants, columns,
                                                                                      strict=True))
    return dataclasses.replace(bare, tenants=tenants)


def _jobs(tenant: TenantDef, columns: Columns, values: tuple[object, ...]) -> tuple[JobDef, ...]:
    if not columns:
        return ()
    # set slot by slot, as the frozen dataclass's own __init__ does, without its call per field default
    new, put = object.__new__, object.__setattr__
    name, inline = tenant.name, len(INLINE)
    jobs = []
    for row in zip(*columns, strict=True):
        job = new(JobDef)
        for field, value in zip(INLINE, row[:inline], strict=True):
            put(job, field, value)
        file, line, col = row[inline:inline + 3]
        for field, index in zip(TABLED, row[inline + 3:], strict=True):
            put(job, field, values[index])
        put(job, "tenant", name)
        put(job, "loc", Loc(values[file], line, col) if file != -1 else None)
        jobs.append(job)
    return tuple(jobs)
