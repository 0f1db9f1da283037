"""A ``Config`` as the parse child hands it to the daemon (runtime/isolate.py): compact and quick to rebuild.

Pickled as it is, 10,000 jobs cost the start-up 0.4 s of CPU: a Python call per object on each side (a job
holds a dozen). Here each job is one row of plain values, which the pickler writes and reads in C: its name,
its numbers and booleans as they are, for each other field the number of a value in one table, and its
position (the number of its file's name, line, column). A value the jobs repeat (a schedule, a command, a
retry, an environment, a notification) stands in the table once, and the daemon's jobs share that one
object. Values count as the same only when their ``repr`` is (the same fields with the same types: 1 and
1.0 stay apart, a number keeps its type). The tenants, the server settings and the table itself are few
and pickled as they are.
"""

from __future__ import annotations

import dataclasses
from operator import attrgetter
from typing import Any

from .model import Config, JobDef, Loc, TenantDef

INLINE = ("name", "shell", "timeout", "max_late", "enabled")  # each job's own, or numbers and booleans
TABLED = ("trigger", "command", "call", "windows", "catch_up", "retry", "queue", "timezone", "env", "notify")
# "tenant" is the tenant's name; "loc" the row's last three values
OTHERS = ("tenant", "loc")
_inline, _tabled = attrgetter(*INLINE), attrgetter(*TABLED)

Row = tuple[Any, ...]  # plain values and numbers into the table
Packed = tuple[Config, tuple[tuple[Row, ...], ...], tuple[object, ...]]


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
    """``config`` as the rows of its jobs, the table they number into, and the rest without its jobs."""
    table = _Table()
    number = table.number
    tenants = []
    for tenant in config.tenants:
        rows = []
        for job in tenant.jobs:
            loc = job.loc
            at = (number(loc.file), loc.line, loc.col) if loc is not None else (-1, 0, 0)
            rows.append((*_inline(job), *map(number, _tabled(job)), *at))
        tenants.append(tuple(rows))
    bare = tuple(dataclasses.replace(t, jobs=()) for t in config.tenants)
    return dataclasses.replace(config, tenants=bare), tuple(tenants), tuple(table.values)


def unpack(packed: Packed) -> Config:
    """The ``Config`` that ``pack`` was given (equal to it, field by field)."""
    bare, rows, values = packed
    tenants = tuple(dataclasses.replace(t, jobs=_jobs(t, r, values)) for t, r in zip(bare.tenants, rows,
                                                                                      strict=True))
    return dataclasses.replace(bare, tenants=tenants)


def _jobs(tenant: TenantDef, rows: tuple[Row, ...], values: tuple[object, ...]) -> tuple[JobDef, ...]:
    # set slot by slot, as the frozen dataclass's own __init__ does, without its call per field default
    new, put = object.__new__, object.__setattr__
    inline, tabled = len(INLINE), len(INLINE) + len(TABLED)
    name = tenant.name
    jobs = []
    for row in rows:
        job = new(JobDef)
        for field, value in zip(INLINE, row[:inline], strict=True):
            put(job, field, value)
        for field, index in zip(TABLED, row[inline:tabled], strict=True):
            put(job, field, values[index])
        file, line, col = row[tabled:]
        put(job, "tenant", name)
        put(job, "loc", Loc(values[file], line, col) if file != -1 else None)  # type: ignore[arg-type]
        jobs.append(job)
    return tuple(jobs)
