"""The store contract's steering part (runtime/store.py: pause, resume, paused, cancel, cancelling), proven
once per backend (conftest.py BACKENDS): what `jobs pause|resume|cancel` and the web side write, and what
every daemon of the store reads back through its own connection."""

from __future__ import annotations

from collections.abc import Callable

from taskserver.runtime.model import State
from taskserver.runtime.store import Instance, Pause, Store

Opener = Callable[[], Store]


def test_a_pause_is_kept_once_and_seen_by_every_connection(connect: Opener) -> None:
    a, b = connect(), connect()
    assert a.paused() == {}
    assert a.pause("nightly", who="ops", now=100.0)
    assert not b.pause("nightly", who="other", now=200.0)  # paused already: the first pause stays
    assert b.paused() == {"nightly": Pause("nightly", 100.0, "ops")}
    assert b.resume("nightly")
    assert not a.resume("nightly")
    assert a.paused() == {}


def test_a_pause_survives_closing_and_reopening(connect: Opener) -> None:
    first = connect()
    first.pause("j", who="ops", now=5.0)
    first.close()
    assert list(connect().paused()) == ["j"]


def test_cancel_ends_a_queued_run_at_once(store: Store) -> None:
    rid = store.add("", queue="q", argv=["/bin/true"], now=10.0)
    run = store.cancel(rid, who="ops", now=11.0)
    assert run is not None and (run.state, run.reason, run.finished) == (State.ERR, "cancelled by ops", 11.0)
    assert store.queued() == []
    assert store.cancelling() == {}


def test_cancel_of_a_running_run_is_a_request_for_its_daemon(connect: Opener) -> None:
    daemon, client = connect(), connect()
    daemon.attach(Instance(id="i1", host="h", pid=1, boot_id=None, proc_start=None, config="/c",
                           started=1.0, heartbeat=1.0, expires=99.0))
    rid = daemon.claim("j", 50.0, now=51.0)
    assert rid is not None and daemon.acquire(instance="i1", now=52.0, ids=[rid])
    run = client.cancel(rid, who="ops", now=53.0)
    assert run is not None and run.state is State.RUN  # still running: its daemon stops it
    assert client.cancel(rid, who="second", now=54.0) is not None
    assert daemon.cancelling() == {rid: "ops"}  # the first request names who asked
    daemon.finish(rid, State.ERR, "cancelled by ops", exit_code=-15, output="", now=55.0)
    assert daemon.cancelling() == {}


def test_cancel_leaves_an_ended_run_and_knows_no_other(store: Store) -> None:
    rid = store.claim("j", 50.0, now=51.0)
    assert rid is not None
    store.finish(rid, State.OK, None, exit_code=0, output="", now=52.0)
    run = store.cancel(rid, who="ops", now=53.0)
    assert run is not None and run.state is State.OK and run.reason is None
    assert store.cancel(rid + 1000, who="ops", now=53.0) is None
