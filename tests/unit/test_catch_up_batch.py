"""A start-up's catch-up of all of a tenant's jobs at once (plans.Batch: shared decisions, one write) records
exactly what catching up each job on its own records: the same rows, notes and last due times, the same
due times to run now. Real SQLite stores; the jobs share schedule objects (as a config's jobs do) but not
always their policy, max_late, window, zone or last due time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

from taskserver.runtime import plans
from taskserver.runtime.model import CatchUp, Cron, Every, JobDef, TenantDef, Window
from taskserver.runtime.sqlite_store import SqliteStore

NOW = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC).timestamp()
DAY = 86400.0


def _jobs() -> list[tuple[JobDef, float | None]]:
    """(job, its last due time); one trigger object shared by many jobs, as in a loaded config."""
    five, hourly, every, equal = Cron("*/5 * * * *"), Cron("0 * * * *"), Every(600), Cron("*/5 * * * *")
    window = (Window(frozenset(range(5)), time(8, 0), time(9, 0)),)
    out: list[tuple[JobDef, float | None]] = []
    variants: list[dict[str, Any]] = [
        {}, {"catch_up": CatchUp.SKIP}, {"catch_up": CatchUp.ALL}, {"max_late": 3600.0},
        {"catch_up": CatchUp.ALL, "max_late": 900.0}, {"windows": window}, {"timezone": "Europe/Berlin"}]
    for i in range(280):  # each combination of trigger, variant and last due time twice
        trigger = (five, hourly, every, equal)[i % 4]  # the last: equal to the first, not the same object
        kw = variants[i % len(variants)]
        last = NOW - (30 * DAY, 2 * DAY, 1800.0, 40.0, 30 * DAY)[i % 5]
        out.append((JobDef(name=f"j{i}", tenant="t", trigger=trigger, command=("true",), **kw), last))
    out.append((JobDef(name="never", tenant="t", trigger=five, command=("true",)), None))  # no last due
    out.append((JobDef(name="oneoff", tenant="t", trigger=None, command=("true",)), NOW - DAY))
    return out


def _store(path: Path, jobs: Sequence[tuple[JobDef, float | None]]) -> SqliteStore:
    store = SqliteStore(path)
    for job, last in jobs:
        if last is not None:  # the last due time a daemon left behind
            store.missed(job.name, [last], now=last)
    return store


def _rows(store: SqliteStore) -> list[tuple[object, ...]]:
    """The history as shown (newest first): ids are not compared, their order is."""
    return [(r.job, r.due, r.state, r.reason, r.message, r.created, r.finished)
            for r in store.history(limit=100_000)]


def test_a_batch_records_what_each_job_alone_records(tmp_path: Path) -> None:
    jobs = _jobs()
    tenant = TenantDef(name="t", login="u", timezone="America/New_York", jobs=tuple(j for j, _ in jobs))
    alone, together = _store(tmp_path / "alone.sqlite", jobs), _store(tmp_path / "batch.sqlite", jobs)
    runs_alone = {j.name: plans.catch_up(alone, tenant, j, NOW) for j, _ in jobs}
    batch = plans.Batch(together.last_dues())
    runs_together = {j.name: plans.catch_up(together, tenant, j, NOW, batch=batch) for j, _ in jobs}
    batch.write(together, "t", plans.DOWN, NOW)

    assert runs_together == runs_alone
    assert _rows(together) == _rows(alone)
    assert together.last_dues() == alone.last_dues()
    missed = [r for r in _rows(together) if r[3] == "missed" and r[5] == NOW]
    assert len(missed) > 300 and any("(summarised)" in str(r[4]) for r in missed)  # the test sees work
    assert len(batch.shared) == 4 * 7 * 4  # one decision per trigger object, variant and last due time
    alone.close()
    together.close()


def test_a_shared_decision_is_not_changed_by_its_users(tmp_path: Path) -> None:
    """The due times handed to one job are its own: changing them changes no other job's."""
    five = Cron("*/5 * * * *")
    jobs = [(JobDef(name=f"j{i}", tenant="t", trigger=five, command=("true",),
                    catch_up=CatchUp.ALL), NOW - 3600.0) for i in range(3)]
    tenant = TenantDef(name="t", login="u", jobs=tuple(j for j, _ in jobs))
    store = _store(tmp_path / "s.sqlite", jobs)
    batch = plans.Batch(store.last_dues())
    first = plans.catch_up(store, tenant, jobs[0][0], NOW, batch=batch)
    expected = list(first)
    first.clear()
    assert plans.catch_up(store, tenant, jobs[1][0], NOW, batch=batch) == expected
    assert expected and expected[-1] <= NOW and expected[0] > NOW - 3600.0 - timedelta(minutes=5).seconds
    store.close()


def test_timers_of_one_wake_up_record_with_shared_decisions_what_each_records_alone(tmp_path: Path) -> None:
    """The timers that fire in one wake-up share their decisions (plans.overdue with ``shared``): the same
    rows, notes and due times to run as each decided alone, whatever the policy, max_late, window, zone or
    how late each timer fired, and a shared decision's due times are each job's own list."""
    jobs = _jobs()
    alone, together = _store(tmp_path / "alone.sqlite", jobs), _store(tmp_path / "shared.sqlite", jobs)
    shared: dict[tuple[object, ...], plans.Decision] = {}
    runs_alone, runs_together = {}, {}
    for job, last in jobs:
        if job.trigger is None or last is None:
            continue
        for store, runs, kw in ((alone, runs_alone, {}), (together, runs_together, {"shared": shared})):
            due = last + (600.0 if isinstance(job.trigger, Every) else 300.0)  # the timer after ``last``
            runs[job.name] = plans.overdue(store, job, due, tenant="t", tz="America/New_York", now=NOW,
                                           cause=plans.DOWN, **kw)
    assert runs_together == runs_alone
    assert _rows(together) == _rows(alone)
    assert len(shared) < len(runs_together) / 2  # the jobs of one schedule were decided once
    assert any(runs_together.values())  # the test sees due times to run now
    first = next(name for name, dues in runs_together.items() if dues)
    runs_together[first].append(0.0)
    assert all(0.0 not in dues for name, dues in runs_together.items() if name != first)
    alone.close()
    together.close()
