"""A start-up's shared planning answers (runtime/samesched.py) are the answers each job would get alone: a job
it calls quiet gets no run and no missed record from its own catch-up, one it does not gets at least one,
and its next due time is plans.next_due's. Checked on a real SQLite store over schedules, last due times and
jobs that share trigger objects or only equal ones."""

from __future__ import annotations

import itertools
from datetime import time
from pathlib import Path

from taskserver.runtime import plans
from taskserver.runtime.model import CatchUp, Cron, Every, JobDef, TenantDef, Window
from taskserver.runtime.samesched import SameSchedule
from taskserver.runtime.sqlite_store import SqliteStore

NOW = 1_767_225_600.0 + 3 * 3600 + 17 * 60 + 30  # 2026-01-01 03:17:30 UTC
HOURLY = Cron("0 * * * *")
TRIGGERS: list[Cron | Every] = [HOURLY, HOURLY, Cron("0 * * * *"), Cron("*/5 * * * *"), Cron("17 3 * * *"),
                                Every(90), Every(90.0), Every(3600)]
WINDOWS = [(), (Window(frozenset(range(7)), time(3, 0), time(3, 10)),)]
LASTS = [None, NOW - 10, NOW - 90, NOW - 17 * 60 - 30, NOW - 3600, NOW - 86400 * 3]


def jobs() -> list[tuple[JobDef, float | None]]:
    out = []
    for i, (trigger, windows, last) in enumerate(itertools.product(TRIGGERS, WINDOWS, LASTS)):
        job = JobDef(name=f"j{i}", tenant="t", trigger=trigger, command=("/bin/true",), windows=windows,
                     catch_up=CatchUp.ALL, timezone="Europe/Berlin" if i % 3 else None)
        out.append((job, last))
    return out


def test_shared_answers_are_each_jobs_own(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.sqlite")
    tenant = TenantDef(name="t", login="app", timezone="America/New_York")
    same = SameSchedule(store, tenant.timezone, NOW)
    listed = jobs()
    batch = plans.Batch({job.name: last for job, last in listed if last is not None})
    quiet = 0
    for job, last in listed:
        rows_before = len(batch.rows)
        dues = plans.catch_up(store, tenant, job, NOW, batch=batch)
        alone = not dues and len(batch.rows) == rows_before
        assert same.none_missed(job, last) == alone, (job, last)
        quiet += alone
        if last is not None:
            assert same.next_due(job, last) == plans.next_due(store, job, tenant.timezone, NOW, last)
    assert 0 < quiet < len(listed)  # both kinds were met
    # one question per schedule and last due time: the two hourly triggers that are one object share
    assert len(same.quiet) < sum(last is not None for _, last in listed)
