"""The store contract (runtime/store.py), proven once per backend (conftest.py BACKENDS): claims, acquiring,
leases, wake-ups, outcomes and reports, history and retention, transactions."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable

import pytest

from taskserver.runtime.model import State
from taskserver.runtime.store import Instance, Run, Store, StoreBusy, StoreError

Opener = Callable[[], Store]  # the `connect` fixture: a new connection to the test's store


def me(ident: str = "i1", pid: int = 4242, now: float = 100.0) -> Instance:
    return Instance(id=ident, host="h1", pid=pid, boot_id="b", proc_start=7, config="/etc/ts.yaml",
                    started=now, heartbeat=now, expires=now + 30)


# -- claims ------------------------------------------------------------------------------------------------
def test_a_due_time_is_claimed_once_and_moves_the_last_due(store: Store) -> None:
    first = store.claim("j", 500.0, queue="q", now=501.0)
    assert first is not None
    assert store.claim("j", 500.0, now=502.0) is None  # already claimed: nothing
    assert store.last_due("j") == 500.0
    run = store.get(first)
    assert run is not None and (run.state, run.due, run.attempt, run.queue, run.queued) == (
        State.QUE, 500.0, 0, "q", False)
    assert store.claim("j", 400.0, now=503.0) is not None
    assert store.last_due("j") == 500.0  # never moves back


def test_a_second_connection_cannot_claim_the_same_due_time(connect: Opener) -> None:
    a, b = connect(), connect()
    assert a.claim("j", 60.0, now=61.0) is not None
    assert b.claim("j", 60.0, now=61.0) is None
    assert [r.due for r in b.waiting()] == [60.0]


def test_a_retry_is_its_own_claim_with_a_start_time(store: Store) -> None:
    assert store.claim("j", 60.0, now=61.0) is not None
    retry = store.claim("j", 60.0, attempt=1, not_before=90.0, now=62.0)
    assert retry is not None and store.claim("j", 60.0, attempt=1, now=63.0) is None
    got = store.get(retry)
    assert got is not None and (got.attempt, got.not_before, got.state) == (1, 90.0, State.QUE)


def test_missed_is_idempotent_and_never_doubles_a_claim(store: Store) -> None:
    store.remember_jobs(["j"], now=10.0)
    store.remember_jobs(["j"], now=99.0)  # first sighting only
    assert store.last_due("j") == 10.0
    store.claim("j", 20.0, now=21.0)
    store.missed("j", [20.0, 30.0], now=40.0, note="down")
    store.missed("j", [30.0], now=41.0)
    hist = store.history("j")
    assert sorted((r.due, r.state, r.reason) for r in hist) == [
        (20.0, State.QUE, None), (30.0, State.ERR, "missed")]
    assert store.last_due("j") == 30.0
    assert store.claim("j", 30.0, now=42.0) is None  # a missed due time is settled


def test_missed_many_records_several_jobs_at_once_as_missed_does(store: Store, connect: Opener) -> None:
    store.remember_jobs(["a", "b"], now=10.0)
    store.claim("a", 20.0, now=21.0)
    store.missed_many([], now=30.0)  # nothing: nothing changes
    store.missed_many([("a", 20.0, "down"), ("a", 30.0, "down; latest"), ("b", 25.0, None),
                       ("b", 15.0, None)], now=40.0)
    store.missed_many([("a", 30.0, "again")], now=41.0)  # idempotent
    got = sorted((r.job, r.due, r.state, r.reason, r.message) for r in connect().history(limit=10))
    assert got == [("a", 20.0, State.QUE, None, None), ("a", 30.0, State.ERR, "missed", "down; latest"),
                   ("b", 15.0, State.ERR, "missed", None), ("b", 25.0, State.ERR, "missed", None)]
    assert store.last_dues() == {"a": 30.0, "b": 25.0}  # each job's newest, never back
    store.missed_many([("a", 5.0, None)], now=50.0)
    assert store.last_due("a") == 30.0


def test_claim_many_claims_several_due_times_at_once_as_claim_does(store: Store, connect: Opener) -> None:
    store.remember_jobs(["a", "b"], now=10.0)
    settled = store.claim("a", 20.0, now=21.0)
    store.missed("b", [25.0], now=26.0)
    assert store.claim_many([], now=30.0) == []
    got = store.claim_many([("a", 20.0, None), ("a", 30.0, "q"), ("b", 25.0, None), ("b", 35.0, None),
                            ("b", 35.0, None), ("c", 5.0, "r")], now=40.0)
    assert got[0] is None and got[2] is None and got[4] is None  # claimed or settled before, or twice here
    new = [rid for rid in got if rid is not None]
    assert len(new) == 3 and len(set(new)) == 3 and settled not in new
    rows = {r.id: r for r in connect().history(limit=20)}
    assert [(rows[rid].job, rows[rid].due, rows[rid].queue, rows[rid].state, rows[rid].attempt,
             rows[rid].created) for rid in new] == [
        ("a", 30.0, "q", State.QUE, 0, 40.0), ("b", 35.0, None, State.QUE, 0, 40.0),
        ("c", 5.0, "r", State.QUE, 0, 40.0)]
    assert store.last_dues() == {"a": 30.0, "b": 35.0, "c": 5.0}
    assert store.claim("b", 35.0, now=41.0) is None  # the same due time once only
    assert settled is not None
    assert [r.id for r in store.waiting()] == sorted([settled, *new], key=lambda i: rows[i].due or 0)


def test_many_rows_at_once_keep_their_order(store: Store, connect: Opener) -> None:
    """More rows than one statement takes (a catch-up of thousands of jobs): the ids follow the rows."""
    claimed = [rid or 0 for rid in store.claim_many([("d", float(i), None) for i in range(700)], now=1.0)]
    assert 0 not in claimed and claimed == sorted(claimed)
    store.missed_many([("e", float(i), f"n{i}") for i in range(700)], now=2.0)
    got = list(reversed(connect().history("e", limit=1000)))
    assert [(r.due, r.message) for r in got] == [(float(i), f"n{i}") for i in range(700)]
    assert store.last_dues() == {"d": 699.0, "e": 699.0}


def test_many_jobs_at_once_each_move_their_last_due_forward_only(store: Store) -> None:
    """A catch-up of thousands of jobs (more than one statement's worth): each job's last due time moves
    to its newest due time written, and never back; jobs not written keep theirs."""
    names = [f"j{i}" for i in range(701)]
    store.remember_jobs(names, now=100.0)
    store.missed_many([(n, 50.0 + 100.0 * (i % 2), None) for i, n in enumerate(names[:700])], now=200.0)
    assert store.last_dues() == {n: 100.0 if i % 2 == 0 or i == 700 else 150.0 for i, n in enumerate(names)}
    claims = [(name, 300.0 - (i % 3), None) for i, name in enumerate(names[1:])]
    assert None not in store.claim_many(claims, now=300.0)
    assert store.last_dues() == {names[0]: 100.0, **{n: 300.0 - (i % 3) for i, n in enumerate(names[1:])}}


def test_waiting_holds_scheduled_rows_and_queued_holds_tasks(store: Store) -> None:
    task = store.add("", queue="q", argv=["echo", "hi there"], now=1.0)
    late = store.claim("j", 50.0, now=2.0)
    early = store.claim("k", 40.0, now=3.0)
    assert [r.id for r in store.queued()] == [task]
    assert [r.id for r in store.waiting()] == [early, late]  # by due time
    got = store.get(task)
    assert got is not None and got.argv == ("echo", "hi there") and got.queued


# -- acquiring and running ---------------------------------------------------------------------------------
def test_acquire_by_id_takes_a_row_once(connect: Opener) -> None:
    a, b = connect(), connect()
    rid = a.claim("j", 5.0, now=5.0)
    assert rid is not None
    got = a.acquire(instance="i1", now=6.0, ids=[rid])
    assert [(r.id, r.state, r.instance, r.started) for r in got] == [(rid, State.RUN, "i1", 6.0)]
    assert b.acquire(instance="i2", now=7.0, ids=[rid]) == []
    assert a.waiting() == []


def test_acquire_without_ids_takes_the_oldest_tasks_up_to_the_limit(store: Store) -> None:
    ids = [store.add("", queue=f"q{i}", argv=["t"], now=float(i)) for i in range(4)]
    store.claim("j", 1.0, now=1.0)  # a scheduled row is not a queued task
    got = store.acquire(instance="i1", now=9.0, limit=3)
    assert [r.id for r in got] == ids[:3]
    assert [r.id for r in store.queued()] == ids[3:]
    assert [r.id for r in store.acquire(instance="i1", now=9.0, limit=3)] == ids[3:]
    assert store.acquire(instance="i1", now=9.0, limit=3) == []


def test_started_records_the_process_identity(store: Store) -> None:
    rid = store.add("", argv=["t"], now=1.0)
    store.acquire(instance="i1", now=2.0, ids=[rid])
    store.started(rid, pid=123, proc_start=456, boot_id="boot")
    run = store.get(rid)
    assert run is not None and (run.pid, run.proc_start, run.boot_id) == (123, 456, "boot")


def test_acquire_by_ids_takes_those_still_queued_in_one_call(connect: Opener) -> None:
    a, b = connect(), connect()
    ids = [a.add("", queue=f"q{i}", argv=["t"], now=1.0) for i in range(3)]
    ids.append(a.claim("j", 5.0, now=5.0) or 0)
    assert [r.id for r in b.acquire(instance="i2", now=6.0, ids=[ids[1]])] == [ids[1]]
    got = a.acquire(instance="i1", now=7.0, ids=ids, limit=len(ids))
    assert [(r.id, r.state, r.instance, r.started) for r in got] == [
        (rid, State.RUN, "i1", 7.0) for rid in (ids[0], ids[2], ids[3])]


def test_an_end_may_bring_the_process_started_would_have_written(store: Store) -> None:
    rid, other = (store.add("", argv=["t"], now=1.0) for _ in range(2))
    store.acquire(instance="i1", now=2.0, ids=[rid, other], limit=2)
    done = store.finish(rid, State.OK, None, exit_code=0, output="", now=3.0, process=(123, None, "boot"))
    assert (done.state, done.finished, done.pid, done.proc_start, done.boot_id) == (
        State.OK, 3.0, 123, None, "boot")
    store.started(other, pid=77, proc_start=88, boot_id="b")
    kept = store.finish(other, State.OK, None, exit_code=0, output="", now=3.0)  # no process: kept as written
    assert (kept.pid, kept.proc_start, kept.boot_id) == (77, 88, "b")


def test_running_lists_other_instances_runs(store: Store) -> None:
    a = store.add("", argv=["t"], now=1.0)
    b = store.add("", argv=["t"], now=1.0)
    store.acquire(instance="dead", now=2.0, ids=[a])
    store.acquire(instance="me", now=2.0, ids=[b])
    assert [r.id for r in store.running(exclude="me")] == [a]


def test_finish_records_the_outcome_and_a_note(store: Store) -> None:
    rid = store.add("", argv=["t"], now=1.0)
    store.acquire(instance="i", now=2.0, ids=[rid])
    done = store.finish(rid, State.ERR, "crashed", exit_code=None, output="out", now=3.0, note="why")
    assert (done.state, done.reason, done.output, done.finished, done.message) == (
        State.ERR, "crashed", "out", 3.0, "why")


def test_an_end_record_is_never_written_over(connect: Opener) -> None:
    """A run that another daemon settled (it found the lease of the daemon running it expired), or that was
    cancelled while it waited, keeps that record: a later end of the same run writes nothing and says so
    (None), through this connection or another, with a batch open or not."""
    daemon, reaper = connect(), connect()
    rid = daemon.add("", queue="q", argv=["t"], now=1.0)
    daemon.acquire(instance="stopped", now=2.0, ids=[rid])
    reaped = reaper.finish(rid, State.ERR, "crashed", exit_code=None, output="", now=20.0, note="host lost")
    assert reaped is not None
    assert reaper.finish(rid, State.ERR, "crashed", exit_code=None, output="", now=21.0, note="twice") is None
    with daemon.batch():
        assert daemon.finish(rid, State.OK, None, exit_code=0, output="done", now=30.0,
                             process=(9, 9, "b")) is None
    assert daemon.get(rid) == reaped
    waiting = daemon.claim("j", 50.0, now=51.0)
    assert waiting is not None
    cancelled = reaper.cancel(waiting, who="ops", now=52.0)
    assert daemon.finish(waiting, State.ERR, "missed", exit_code=None, output="", now=53.0) is None
    assert daemon.get(waiting) == cancelled
    with pytest.raises(StoreError, match="vanished"):
        daemon.finish(waiting + 1000, State.OK, None, exit_code=0, output="", now=54.0)


def test_a_task_report_wins_over_its_exit_code_but_not_over_the_server(store: Store) -> None:
    a = store.add("", queue="q", argv=["x"], now=1.0)
    store.acquire(instance="i", now=2.0, ids=[a])
    store.report(a, False, "disk full", now=3.0)
    assert store.get(a).state is State.RUN  # type: ignore[union-attr]  # still running: the report waits
    done = store.finish(a, State.OK, None, exit_code=0, output="", now=4.0)
    assert (done.state, done.reason, done.message) == (State.ERR, "reported", "disk full")
    b = store.add("", queue="q", argv=["x"], now=1.0)
    store.acquire(instance="i", now=2.0, ids=[b])
    store.finish(b, State.ERR, "exit code 1", exit_code=1, output="", now=3.0)
    late = store.report(b, True, None, now=5.0)  # reported after it exited: applied at once
    assert (late.state, late.reason) == (State.OK, None)
    c = store.add("", queue="q", argv=["x"], now=1.0)
    store.acquire(instance="i", now=2.0, ids=[c])
    store.finish(c, State.ERR, "timeout", exit_code=None, output="", now=3.0)
    with pytest.raises(StoreError, match="already ended ERR timeout"):
        store.report(c, True, "all fine", now=6.0)
    with pytest.raises(StoreError, match="no run 999"):
        store.report(999, True, None, now=6.0)


def test_the_run_finish_returns_is_the_row_as_stored(connect: Opener) -> None:
    """Whatever came between a run's acquire and its end (its process written, a report of the task's own, a
    rolled-back acquire, a message, an end that brings the process, another connection's acquire), the run
    ``finish`` returns is the row a fresh read finds, field for field."""
    s, other = connect(), connect()
    rows = {name: s.add("", queue=f"q{name}", argv=["t", name], now=1.0)
            for name in ("plain", "started", "process", "reported", "rolled", "elsewhere", "queued")}
    rows["job"] = s.claim("j", 5.0, now=1.5) or 0
    with pytest.raises(RuntimeError), s.batch():
        s.acquire(instance="i", now=1.7, ids=[rows["rolled"]])
        raise RuntimeError("boom")  # rolled back: QUE again, its start undone (then taken elsewhere)
    mine = [rows[n] for n in ("plain", "started", "process", "reported", "job")]
    s.acquire(instance="i", now=2.0, ids=mine, limit=len(mine))
    other.acquire(instance="i2", now=2.5, ids=[rows["elsewhere"], rows["rolled"]], limit=2)
    s.started(rows["started"], pid=77, proc_start=88, boot_id="b")
    other.report(rows["reported"], False, "disk full", now=2.7)
    ends = {
        "plain": s.finish(rows["plain"], State.OK, None, exit_code=0, output="o", now=3.0),
        "started": s.finish(rows["started"], State.ERR, "exit code 2", exit_code=2, output="", now=3.1,
                            note="why"),
        "process": s.finish(rows["process"], State.OK, None, exit_code=0, output="", now=3.2,
                            process=(5, 6, "b2")),
        "reported": s.finish(rows["reported"], State.OK, None, exit_code=0, output="", now=3.3),
        "rolled": s.finish(rows["rolled"], State.ERR, "missed", exit_code=None, output="", now=3.4),
        "elsewhere": s.finish(rows["elsewhere"], State.OK, None, exit_code=0, output="", now=3.5),
        "queued": s.finish(rows["queued"], State.ERR, "cancelled", exit_code=None, output="", now=3.6),
        "job": s.finish(rows["job"], State.OK, None, exit_code=0, output="", now=3.7),
    }
    for name, end in ends.items():
        assert end == other.get(rows[name]), name
    assert (ends["reported"].state, ends["reported"].message) == (State.ERR, "disk full")
    assert (ends["started"].pid, ends["started"].message) == (77, "why")
    assert (ends["rolled"].started, ends["rolled"].instance, ends["elsewhere"].instance) == (2.5, "i2", "i2")
    with s.batch():  # an end inside a batch that commits: the same
        again = s.add("", queue="qb", argv=["t"], now=4.0)
        s.acquire(instance="i", now=4.1, ids=[again])
        end = s.finish(again, State.OK, None, exit_code=0, output="", now=4.2)
    assert end == other.get(again)


def test_the_runs_acquire_returns_are_the_rows_as_stored(connect: Opener) -> None:
    """Whatever came between the read of the waiting rows and their acquire (another connection's acquire or
    cancel, this connection's end of a run not started, a rolled-back acquire, a task queued since), the
    runs ``acquire`` returns are the rows a fresh read finds, field for field, and a row no longer QUE is
    not returned."""
    s, other = connect(), connect()
    names = ("plain", "taken", "cancelled", "ended", "rolled", "pair1", "pair2")
    rows = {name: s.add("", queue=f"q{name}", argv=["t", name], now=1.0) for name in names}
    rows["job"] = s.claim("j", 5.0, now=1.5) or 0
    assert {r.id for r in s.queued()} >= {rows[n] for n in names}
    assert [r.id for r in s.waiting()] == [rows["job"]]

    def fresh(got: list[Run]) -> None:
        assert got == [other.get(r.id) for r in got]
        assert all(r.state is State.RUN and r.instance == "i" for r in got)

    got = s.acquire(instance="i", now=2.0, ids=[rows["plain"]])
    assert [r.id for r in got] == [rows["plain"]]
    fresh(got)
    fresh(s.acquire(instance="i", now=2.1, ids=[rows["job"]]))
    s.finish(rows["ended"], State.ERR, "cancelled", exit_code=None, output="", now=2.2)  # never started
    assert s.acquire(instance="i", now=2.3, ids=[rows["ended"]]) == []
    with pytest.raises(RuntimeError), s.batch():
        s.acquire(instance="i", now=2.4, ids=[rows["rolled"]])
        raise RuntimeError("boom")  # rolled back: QUE again, with no start
    got = s.acquire(instance="i", now=2.5, ids=[rows["rolled"]])
    assert [r.started for r in got] == [2.5]
    fresh(got)
    s.queued()  # read again, then changed by another connection
    other.acquire(instance="i2", now=2.6, ids=[rows["taken"]])
    other.cancel(rows["cancelled"], who="t", now=2.6)
    assert s.acquire(instance="i", now=2.7, ids=[rows["taken"]]) == []
    assert s.acquire(instance="i", now=2.7, ids=[rows["cancelled"]]) == []
    late = s.add("", queue="qlate", argv=["t", "late"], now=2.8)  # queued after the read
    got = s.acquire(instance="i", now=2.9, ids=[rows["pair2"], late, rows["pair1"]], limit=3)
    assert [r.id for r in got] == sorted([rows["pair1"], rows["pair2"], late])
    fresh(got)
    assert other.get(rows["taken"]).instance == "i2"  # type: ignore[union-attr]
    # claimed due times (a burst's runs), acquired over several calls, some taken elsewhere first
    made = s.claim_many([("b1", 10.0, None), ("b2", 10.0, "qb"), ("b3", 10.0, None), ("b1", 10.0, None)],
                        now=9.5)
    assert made[3] is None and None not in made[:3]
    burst = [rid for rid in made if rid is not None]
    got = s.acquire(instance="i", now=10.1, ids=burst[:2], limit=2)
    assert [r.id for r in got] == burst[:2] and [r.queue for r in got] == [None, "qb"]
    fresh(got)
    more = s.claim_many([("b4", 11.0, None)], now=10.5)
    other.acquire(instance="i2", now=10.6, ids=burst[2:], limit=1)
    assert s.acquire(instance="i", now=10.7, ids=burst[2:]) == []
    fresh(s.acquire(instance="i", now=10.8, ids=[r for r in more if r is not None]))
    with pytest.raises(RuntimeError), s.batch():
        gone = s.claim_many([("b5", 12.0, None)], now=11.5)
        raise RuntimeError("boom")  # rolled back: the claim never happened
    assert s.acquire(instance="i", now=12.1, ids=[r for r in gone if r is not None]) == []
    with pytest.raises(RuntimeError), s.batch():
        (undone,) = s.claim_many([("b6", 13.0, None)], now=12.5)
        raise RuntimeError("boom")
    reused = s.add("", queue="qr", argv=["t", "reused"], now=13.5)  # may take the undone claim's id
    fresh(s.acquire(instance="i", now=13.6, ids=[reused]))
    assert undone is not None


# -- leases and wake-ups -----------------------------------------------------------------------------------
def renewed(store: Store, instance: str, now: float, expires: float) -> Instance:
    """Renew a lease and read it back: an exclusive store keeps the daemon's times; a shared one keeps the
    lease's length on the server's clock, and lists it on the reader's (hosts whose clocks differ judge a
    lease alike), which is this host's clock: the renewal lies between before and after it."""
    before = time.time()
    assert store.heartbeat(instance, now=now, expires=expires)
    (got,) = [i for i in store.instances() if i.id == instance]
    if store.exclusive:
        assert (got.heartbeat, got.expires) == (now, expires)
    else:
        assert before - 0.5 <= got.heartbeat <= time.time() + 0.5
        assert got.expires - got.heartbeat == pytest.approx(expires - now)
    return got


def test_leases_are_taken_renewed_listed_and_dropped(store: Store) -> None:
    store.attach(me())
    got = renewed(store, "i1", 110.0, 140.0)
    assert (got.id, got.host, got.pid, got.config) == ("i1", "h1", 4242, "/etc/ts.yaml")
    store.detach("i1")
    assert store.instances() == []


def test_a_lease_settled_by_another_daemon_is_told_and_taken_anew(connect: Opener) -> None:
    """A daemon that could not renew its lease in time (stopped, cut off) and was settled as dead learns
    so at its next renewal, which takes the lease again: it does not go on without one."""
    daemon, reaper = connect(), connect()
    daemon.attach(me())
    reaper.detach("i1")  # found expired and settled
    assert daemon.heartbeat("i1", now=150.0, expires=180.0) is False
    assert [(i.id, i.host, i.pid) for i in reaper.instances()] == [("i1", "h1", 4242)]
    renewed(daemon, "i1", 160.0, 190.0)


def test_an_exclusive_store_refuses_a_second_daemon_naming_the_first(connect: Opener) -> None:
    a, b = connect(), connect()
    if not a.exclusive:  # a shared store takes every daemon's lease; claims keep them apart
        a.attach(me("first", pid=1111))
        b.attach(me("second", pid=2222))
        assert sorted(i.id for i in b.instances()) == ["first", "second"]
        return
    a.attach(me("first", pid=1111))
    with pytest.raises(StoreBusy, match=r"pid 1111 on host h1, config /etc/ts\.yaml"):
        b.attach(me("second", pid=2222))
    a.detach("first")
    b.attach(me("second", pid=2222))  # free again
    assert [i.id for i in b.instances()] == ["second"]


def test_notify_wakes_the_attached_daemon_without_its_pid(connect: Opener) -> None:
    daemon, cli = connect(), connect()
    assert not cli.notify()  # nobody listens yet
    daemon.attach(me())
    fd = daemon.wakeup_fd()
    assert fd is not None
    assert select.select([fd], [], [], 0)[0] == []
    assert cli.notify()
    assert select.select([fd], [], [], 5.0)[0] == [fd]
    daemon.drain_wakeups()
    assert select.select([fd], [], [], 0)[0] == []


# -- history, retention, transactions ----------------------------------------------------------------------
def test_history_newest_first_and_per_job(store: Store) -> None:
    ids = [store.add(j, now=float(i)) for i, j in enumerate(["a", "b", "a"])]
    assert [r.id for r in store.history()] == ids[::-1]
    assert [r.id for r in store.history("a")] == [ids[2], ids[0]]
    assert [r.id for r in store.history(limit=1)] == [ids[2]]


def test_purge_keeps_recent_and_running(store: Store) -> None:
    def ended(state: State, finished: float) -> int:
        rid = store.add("", queue="q", argv=["t"], now=1.0)
        store.acquire(instance="i", now=1.0, ids=[rid])
        store.finish(rid, state, None if state is State.OK else "timeout", exit_code=0, output="",
                     now=finished)
        return rid

    ok_old, err_old, ok_new = ended(State.OK, 10.0), ended(State.ERR, 10.0), ended(State.OK, 100.0)
    running = store.add("", argv=["t"], now=1.0)
    store.acquire(instance="i", now=1.0, ids=[running])
    purged = store.purge(ok_before=50.0, err_before=5.0)
    assert (purged.count, purged.queued_ids) == (1, [ok_old])
    assert store.get(err_old) is not None
    purged = store.purge(ok_before=50.0, err_before=50.0)
    assert (purged.count, purged.queued_ids) == (1, [err_old])
    assert {r.id for r in store.history()} == {ok_new, running}


def test_a_batch_is_one_transaction_and_a_failed_one_keeps_nothing(connect: Opener) -> None:
    s, other = connect(), connect()
    with s.batch():
        a = s.claim("j", 1.0, now=1.0)
        with s.batch():  # nested: still one transaction
            s.acquire(instance="i", now=2.0, ids=[a or 0])
        assert other.get(a or 0) is None  # nothing committed yet
    assert other.get(a or 0).state is State.RUN  # type: ignore[union-attr]
    with pytest.raises(RuntimeError), s.batch():
        s.claim("j", 2.0, now=3.0)
        raise RuntimeError("boom")
    assert other.last_due("j") == 1.0 and other.claim("j", 2.0, now=4.0) is not None


def test_check_passes_on_a_healthy_store(store: Store) -> None:
    store.check()
    assert store.recover() is None  # nothing to do


def test_a_pid_is_not_needed_to_identify_an_instance(store: Store) -> None:
    """Leases carry what liveness needs: host, boot, pid and the process's start time."""
    store.attach(me(pid=os.getpid(), now=time.time()))
    (got,) = store.instances()
    assert (got.boot_id, got.proc_start) == ("b", 7)


def test_rewind_pulls_last_due_times_back_to_now(store: Store) -> None:
    store.claim("late", 500.0, now=1.0)
    store.claim("early", 50.0, now=1.0)
    store.rewind(100.0)
    assert (store.last_due("late"), store.last_due("early")) == (100.0, 50.0)


def test_last_dues_reads_every_jobs_last_due_time_at_once(store: Store, connect: Opener) -> None:
    assert store.last_dues() == {}
    store.remember_jobs(["new", "old"], now=10.0)
    store.claim("old", 70.0, now=71.0)
    store.missed("gone", [30.0], now=31.0, note="down")
    store.claim("old", 60.0, now=72.0)  # an older due time does not move it back
    expected = {"new": 10.0, "old": 70.0, "gone": 30.0}
    assert store.last_dues() == expected
    assert connect().last_dues() == expected  # what is committed, as another connection reads it
    assert all(store.last_due(job) == due for job, due in expected.items())


def test_summary_counts_runs_and_cumulative_buckets(store: Store) -> None:
    def ended(job: str, due: float | None, start: float, end: float, state: State) -> None:
        rid = store.claim(job, due, now=start) if due is not None else store.add(job, argv=["x"], now=start)
        store.acquire(instance="i", now=start, ids=[rid or 0])
        store.finish(rid or 0, state, None if state is State.OK else "exit code 1", exit_code=0, output="",
                     now=end)

    ended("j", 10.0, 10.5, 11.0, State.OK)  # 0.5 s late, 0.5 s long
    ended("j", 20.0, 22.0, 30.0, State.ERR)  # 2 s late, 8 s long
    ended("j", 30.0, 30.0, 30.2, State.OK)
    store.missed("j", [40.0], now=41.0)
    got = {(s.job, s.state): s for s in store.summary([1.0, 5.0])}
    ok, err = got[("j", State.OK)], got[("j", State.ERR)]
    assert (ok.count, ok.duration_count, ok.duration_le, ok.lateness_le) == (2, 2, (2, 2), (2, 2))
    assert ok.last_ok == 30.2
    assert (err.count, err.duration_le, err.lateness_le) == (2, (0, 0), (0, 1))  # the missed run has no start
    assert err.duration_count == 1 and abs(err.duration_sum - 8.0) < 1e-9
