"""The Python client (runtime/client.py) against the real daemon and the real SQLite store: a batch is one
transaction and one wake-up, every task runs, bad input is refused before anything is written, and get/wait
read what the daemon recorded."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonlab import Daemon, first_line, runs, sandbox_env, status_file, wait_for, write_config

from taskserver.runtime import config
from taskserver.runtime.client import Client
from taskserver.runtime.errors import UserError
from taskserver.runtime.model import State


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = write_config(tmp_path / "cfg.yaml", extra_tenants={"off": {"login": None}})
    for key, value in sandbox_env(path).items():  # pid file and default dirs next to the config
        if key not in os.environ or os.environ[key] != value:
            monkeypatch.setenv(key, value)
    yield path


def test_a_batch_runs_every_task_woken_once(cfg: Path) -> None:
    d = Daemon(cfg)
    try:
        wait_for(lambda: "serving" in d.text(), "the daemon to be up")
        with Client(cfg, tenant="t") as client:
            # the idle daemon sleeps far longer than this test waits: only the client's wake-up starts them
            ids = client.enqueue_many([["/bin/sh", "-c", 'echo "$TASKSERVER_RUN_ID $0"', str(i)]
                                       for i in range(40)], queue="batch")
            assert ids == list(range(ids[0], ids[0] + 40))
            ended = [client.wait(i, timeout=60) for i in ids]
        assert [r.state for r in ended] == [State.OK] * 40
        assert [r.output for r in ended] == [f"{rid} {i}\n" for i, rid in enumerate(ids)]
        rows = [r for r in runs(cfg) if r["id"] in ids]
        assert len({r["created"] for r in rows}) == 1  # one transaction: one time for the whole batch
        starts = [r["started"] for r in rows]
        assert starts == sorted(starts)  # one queue: in order, one at a time
        assert all(first_line(status_file(cfg, i)) == "OK" for i in ids)  # written by the daemon
    finally:
        d.stop()


def test_one_wake_up_per_batch(cfg: Path, tmp_path: Path) -> None:
    """The daemon's wake-up socket (next to the store) gets one datagram for a batch of 500."""
    with Client(cfg, tenant="t") as client:
        client.enqueue(["/bin/true"])  # makes the store, so its wake-up path exists
        wake = tmp_path / "state" / "t.sqlite.wake"
        wake.unlink(missing_ok=True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind(str(wake))
            listener.setblocking(False)
            client.enqueue_many([["/bin/true", str(i)] for i in range(500)])
            got = []
            while True:
                try:
                    got.append(listener.recv(64))
                except BlockingIOError:
                    break
        wake.unlink()
    assert got == [b"!"]
    assert len([r for r in runs(cfg) if r["state"] == "QUE"]) == 501


def test_wait_returns_the_end_and_get_reads_the_store(cfg: Path) -> None:
    with Client(config.load(cfg), tenant="t") as client:
        rid = client.enqueue(["/bin/sh", "-c", "echo failing; exit 3"], queue="q1")
        run = client.get(rid)
        assert run is not None and (run.state, run.argv, run.queue) == (
            State.QUE, ("/bin/sh", "-c", "echo failing; exit 3"), "q1")
        with pytest.raises(TimeoutError, match=f"run {rid} is still QUE"):
            client.wait(rid, timeout=0.2)  # no daemon yet
        assert Daemon(cfg, "--once").wait() == 0
        ended = client.wait(rid, timeout=5)
        assert (ended.state, ended.reason, ended.exit_code, ended.output) == (
            State.ERR, "exit code 3", 3, "failing\n")
        assert client.get(rid + 100) is None
        with pytest.raises(UserError, match=f"no run {rid + 100}"):
            client.wait(rid + 100, timeout=1)


@pytest.mark.parametrize(("argvs", "queue", "message"), [
    ([["/bin/true"], []], "default", "command 1: the command is empty"),
    ([["/bin/true"], "/bin/true"], "default", "command 1: the command is not a list of text"),
    ([["/bin/echo", "a\0b"]], "default", "command 0: argument 1 of the command holds a NUL"),
    ([["/bin/true", 7]], "default", "not a list of text"),
    ([["/bin/true", "x" * 200_000]], "default", "bytes long"),
    ([["/bin/true"]], "bad queue", "'bad queue' is not a queue name"),
    ([["/bin/true"]], "", "'' is not a queue name"),
])
def test_bad_input_is_refused_before_anything_is_written(cfg: Path, argvs: list[object], queue: str,
                                                         message: str) -> None:
    with Client(cfg, tenant="t") as client, pytest.raises(UserError, match=message) as err:
        client.enqueue_many(argvs, queue=queue)  # type: ignore[arg-type]
    assert err.value.hint
    assert runs(cfg) == []  # not even the valid ones of the batch


def test_tenants_are_chosen_and_checked(cfg: Path) -> None:
    with pytest.raises(UserError, match="no tenant 'default'") as err:
        Client(cfg).enqueue(["/bin/true"])  # two tenants, none named default: which one is not guessed
    assert err.value.hint == "pass tenant=NAME"
    with Client(cfg, tenant="t") as client:
        with pytest.raises(UserError, match="no tenant 'nope'"):
            client.enqueue(["/bin/true"], tenant="nope")
        with pytest.raises(UserError, match="tenant 'off' has no login"):
            client.enqueue(["/bin/true"], tenant="off")
        assert client.get(1, tenant="off") is None  # reading a tenant that runs nothing is fine
        rid = client.enqueue(["/bin/true"])
    assert [(r["id"], r["queue"], r["queued"]) for r in runs(cfg)] == [(rid, "default", 1)]


def test_status_files_on_request(cfg: Path) -> None:
    with Client(cfg, tenant="t") as client:
        quiet = client.enqueue(["/bin/true"])
        loud = client.enqueue_many([["/bin/echo", "x"]], status_files=True)[0]
        assert client.warnings == []  # every file written (tests/faults/test_status_after_commit.py: not)
    assert not status_file(cfg, quiet).exists()
    lines = status_file(cfg, loud).read_text().splitlines()
    assert lines[0] == "QUE" and 'argv=["/bin/echo", "x"]' in lines and "queue=default" in lines
