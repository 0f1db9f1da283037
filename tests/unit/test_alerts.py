"""Which outcomes notify whom (runtime/alerts.py), and the mail a job's own words cannot add headers to
(runtime/alert_send.py); the daemon-level proof is in tests/system/test_notify_*.py."""

from __future__ import annotations

import email
import email.policy
import selectors
from dataclasses import replace
from pathlib import Path

from taskserver.runtime import alert_send
from taskserver.runtime.alerts import OK, Alerts, classify, judge, streak_of
from taskserver.runtime.model import Config, Event, JobDef, NotifyDef, Retry, ServerSettings, State, TenantDef
from taskserver.runtime.steering import pause_note
from taskserver.runtime.store import Pause, Run

JOB = JobDef(name="j", tenant="t", trigger=None, command=("x",), retry=Retry(count=1))
ALL = NotifyDef(webhook=None, command=("x",))
FAILURES = NotifyDef(on=frozenset({Event.FAILURE}), command=("x",))
RECOVERY = NotifyDef(on=frozenset({Event.RECOVERED}), command=("x",))


def run(rid: int, state: State, reason: str | None = None, attempt: int = 1, finished: float = 0.0) -> Run:
    return Run(id=rid, job="j", queue=None, state=state, reason=reason, due=None, created=0.0, started=0.0,
               finished=finished or float(rid), pid=None, instance=None, exit_code=None, attempt=attempt,
               argv=None, output="", message=None)


def test_what_counts_as_an_outcome() -> None:
    assert classify(run(1, State.OK), JOB, once=False) == OK
    assert classify(run(1, State.ERR, "exit code 2"), JOB, once=False) == Event.FAILURE
    assert classify(run(1, State.ERR, "timeout"), JOB, once=False) == Event.FAILURE
    assert classify(run(1, State.ERR, "crashed"), JOB, once=False) == Event.CRASHED
    assert classify(run(1, State.ERR, "missed", attempt=0), JOB, once=False) == Event.MISSED
    assert classify(run(1, State.ERR, "interrupted"), JOB, once=False) is None
    # a due time a paused job let pass (runtime/steering.py's note) is what its operator asked for
    note = pause_note(Pause(job="j", since=0.0, who="ops"))
    paused = replace(run(1, State.ERR, "missed", attempt=0), message=note)
    assert classify(paused, JOB, once=False) is None
    assert streak_of([paused], JOB, once=False) == frozenset()
    assert classify(run(1, State.ERR, "no such job"), JOB, once=False) is None
    # attempt 0 of a job with one retry: the retry decides; in cron mode (--once) nothing is retried
    assert classify(run(1, State.ERR, "exit code 2", attempt=0), JOB, once=False) is None
    assert classify(run(1, State.ERR, "exit code 2", attempt=0), JOB, once=True) == Event.FAILURE


def test_a_streak_is_told_once_per_entry_and_its_recovery_once() -> None:
    entries = (ALL, FAILURES, RECOVERY)
    streak, told = judge(entries, Event.CRASHED, frozenset())
    assert streak == {Event.CRASHED} and told == [(ALL, Event.CRASHED)]
    streak, told = judge(entries, Event.FAILURE, streak)  # FAILURES hears of the streak now: its first
    assert streak == {Event.CRASHED, Event.FAILURE} and told == [(FAILURES, Event.FAILURE)]
    streak, told = judge(entries, Event.FAILURE, streak)
    assert told == []
    streak, told = judge(entries, OK, streak)
    assert streak == frozenset() and told == [(ALL, Event.RECOVERED), (RECOVERY, Event.RECOVERED)]
    assert judge(entries, OK, streak) == (frozenset(), [])
    assert judge(entries, None, frozenset({Event.MISSED})) == (frozenset({Event.MISSED}), [])


def test_recovered_goes_only_to_an_entry_that_heard_of_the_streak() -> None:
    _, told = judge((FAILURES,), OK, frozenset({Event.MISSED}))
    assert told == []
    both = replace(FAILURES, on=frozenset({Event.FAILURE, Event.RECOVERED}))
    assert judge((both,), OK, frozenset({Event.MISSED}))[1] == []
    assert judge((both,), OK, frozenset({Event.FAILURE}))[1] == [(both, Event.RECOVERED)]


def test_the_streak_is_read_back_from_the_newest_finished_runs() -> None:
    history = [run(5, State.ERR, "exit code 1"), run(4, State.ERR, "crashed"), run(3, State.OK),
               run(2, State.ERR, "missed", attempt=0), run(6, State.RUN, finished=0.0),
               run(7, State.ERR, "exit code 1", attempt=0)]  # a failed attempt with its retry to come
    history[4] = replace(history[4], finished=None)
    assert streak_of(history, JOB, once=False) == {Event.FAILURE, Event.CRASHED}
    assert streak_of([run(1, State.ERR, "exit code 1"), run(2, State.OK)], JOB, once=False) == frozenset()
    # ordered by when they ended, not by id: a missed record written after a run that ended later
    late = [run(9, State.ERR, "missed", attempt=0, finished=10.0), run(8, State.OK, finished=20.0)]
    assert streak_of(late, JOB, once=False) == frozenset()


def test_a_job_message_with_cr_lf_cannot_add_a_header() -> None:
    summary = {"event": "failure", "tenant": "t", "job": "j", "reason": "reported", "run_id": 1,
               "message": "oops\r\nBcc: victim@evil.example\r\n\r\nbody", "output": "line\r\nTo: x@y"}
    raw = alert_send.message({"summary": summary, "to": ["ops@example.com"], "from": "ts@example.com"})
    head = raw.split(b"\n\n", 1)[0]
    assert b"Bcc" not in head.replace(b"Subject: [taskserver] t/j: failure: oops Bcc:", b"")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Bcc"] is None and msg.get_all("To") == ["ops@example.com"]
    assert msg["Subject"] == "[taskserver] t/j: failure: oops Bcc: victim@evil.example body"
    assert alert_send.one_line("a\u2028b\x1b[31mc\td", 200) == "a b [31mc d"


def test_a_tenant_is_silent_only_when_no_level_names_a_notify_entry() -> None:
    """A start-up's catch-up writes a silent tenant's missed records without looking at each job."""
    quiet = replace(JOB, notify=())

    def silent(server: tuple[NotifyDef, ...], tenant: tuple[NotifyDef, ...], job: JobDef) -> bool:
        jobs = (quiet, replace(job, name="k"))
        cfg = Config(path=Path("x"), exists=True, server=ServerSettings(notify=server),
                     tenants=(TenantDef(name="t", login="u", jobs=jobs, notify=tenant),))
        return Alerts(lambda: cfg, once=False, sel=selectors.DefaultSelector()).silent("t")

    assert silent((), (), quiet)
    assert not silent((ALL,), (), quiet)
    assert not silent((), (ALL,), quiet)
    assert not silent((), (), replace(JOB, notify=(FAILURES,)))
