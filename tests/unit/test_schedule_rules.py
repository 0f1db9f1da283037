"""One test per schedule defect of issue 9: the Vixie day rule for starred day fields, rare matches, the
every: anchor, late timers (stalls, forward steps) through the catch-up policy, backward steps, input."""

from __future__ import annotations

import calendar
import contextlib
import logging
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from taskserver.runtime import cli_jobs, cron, plans
from taskserver.runtime.clock import ClockWatch, boottime
from taskserver.runtime.config import parse_text
from taskserver.runtime.config_parse import ConfigInvalid
from taskserver.runtime.daemon import Daemon
from taskserver.runtime.model import CatchUp, Cron, Every, JobDef
from taskserver.runtime.schedule import after_step_back, catch_up, fires, next_due, next_fire
from taskserver.runtime.sqlite_store import SqliteStore
from taskserver.runtime.windows import parse_window

D = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def job(trigger: Cron | Every, **kw: object) -> JobDef:
    return JobDef(name="j", tenant="t", trigger=trigger, command=("true",), **kw)  # type: ignore[arg-type]


def days(expr: str, start: datetime, n: int) -> list[str]:
    out, t = [], start
    for _ in range(n):
        nxt = next_fire(job(Cron(expr)), "UTC", t)
        assert nxt is not None
        out.append(nxt.strftime("%a %m-%d"))
        t = nxt
    return out


def test_a_stepped_day_of_month_runs_on_odd_days() -> None:
    got = days("0 0 */2 * *", datetime(2026, 1, 1, tzinfo=UTC), 16)
    assert got[:3] == ["Sat 01-03", "Mon 01-05", "Wed 01-07"]
    assert got[-2:] == ["Sat 01-31", "Sun 02-01"]  # the 31st, then the 1st of the next month


def test_a_stepped_day_of_week_runs_on_sun_tue_thu_sat() -> None:
    got = days("0 0 * * */2", datetime(2026, 1, 1, tzinfo=UTC), 8)
    assert {d[:3] for d in got} == {"Sun", "Tue", "Thu", "Sat"}


def test_a_stepped_day_in_february_is_the_first_only() -> None:
    got = days("0 0 */30 2 *", datetime(2026, 1, 1, tzinfo=UTC), 3)
    assert got == ["Sun 02-01", "Mon 02-01", "Tue 02-01"]


def test_catch_up_counts_use_the_same_day_rule() -> None:
    j = job(Cron("0 0 */2 * *"), catch_up=CatchUp.LATEST)
    start, end = datetime(2025, 12, 31, 23, 0, tzinfo=UTC), datetime(2026, 2, 1, 0, 30, tzinfo=UTC)
    plan = catch_up(j, "UTC", start, end)
    listed = len(plan.run) + len(plan.missed)
    assert plan.omitted + listed == 17  # Jan 1, 3, ..., 31 and Feb 1
    assert plan.omitted == sum(1 for _ in fires(j, "UTC", start, plan.omitted_last or D))


def test_matches_40_years_apart_are_found() -> None:
    """Vixie: dow '*/7' is starred, so both must hold: Feb 29 on a Sunday (2088, then 2128)."""
    nxt = next_fire(job(Cron("0 0 29 2 */7")), "UTC", datetime(2089, 1, 1, tzinfo=UTC))
    assert nxt == datetime(2128, 2, 29, tzinfo=UTC)


@pytest.mark.parametrize("expr", ["0 0 31 4 */7", "0 0 30 2 *", "0 0 31 2,4,6,9,11 *"])
def test_never_matching_expressions_are_rejected_with_a_location(tmp_path: Path, expr: str) -> None:
    text = f'tenants:\n  t:\n    jobs:\n      j:\n        cron: "{expr}"\n        command: [x]\n'
    with pytest.raises(ConfigInvalid, match=r"c\.yaml:5:\d+: .*cron") as err:
        parse_text(text, tmp_path / "c.yaml")
    assert "no month" in str(err.value) or "no day ever matches" in str(err.value)


@pytest.mark.parametrize("expr", ["٣ * * * *", "* * * * ²", "*/٢ * * * *", "1" * 50 + " * * * *"])
def test_only_ascii_digits_and_short_numbers(expr: str) -> None:
    with pytest.raises(cron.CronError) as err:
        cron.parse(expr)
    assert len(str(err.value)) < 120  # a long value is cut, not echoed


@pytest.mark.parametrize("text", ["monkey", "fridge 22:00-23:00", "mon ٢٢:00-23:00"])
def test_windows_take_whole_day_names_and_ascii_digits(text: str) -> None:
    with pytest.raises(ValueError, match=r"weekday|HH:MM"):
        parse_window(text)
    assert parse_window("monday 22:00-23:00").days == frozenset({0})


def test_a_cron_that_never_meets_its_window_is_decided_at_once() -> None:
    j = job(Cron("0 12 * * *"), windows=(parse_window("mon 13:00-14:00"),))
    assert next_fire(j, "UTC", D) is None
    rare = job(Cron("0 0 29 2 *"), windows=(parse_window("sun"),))
    assert next_fire(rare, "UTC", D) == datetime(2032, 2, 29, tzinfo=UTC)


def test_every_goes_on_on_its_grid_after_a_restart() -> None:
    """every: 20s, last due D, stopped at D+5, started at D+10: next due D+20 (not D+30)."""
    j = job(Every(20))
    assert next_due(j, "UTC", D, D + timedelta(seconds=10)) == D + timedelta(seconds=20)
    assert next_due(j, "UTC", D, D + timedelta(seconds=75)) == D + timedelta(seconds=80)
    assert next_due(j, "UTC", None, D) == D + timedelta(seconds=20)  # never run: one interval from now
    # last due a little after now (another host of a shared store, its clock ahead): the grid goes on
    assert next_due(j, "UTC", D + timedelta(seconds=3), D) == D + timedelta(seconds=23)


def test_the_daemon_and_jobs_list_agree_on_the_anchor(tmp_path: Path) -> None:
    text = (f"task_server:\n  state_dir: {tmp_path / 'state'}\n"
            "tenants:\n  t:\n    login: nobody\n    jobs:\n      j: {every: 20s, command: [x]}\n")
    cfg = parse_text(text, tmp_path / "c.yaml")
    store = SqliteStore(tmp_path / "state" / "t.sqlite")
    store.remember_jobs(["j"], now=D.timestamp())  # the job's last due time: D
    store.close()
    listed = SqliteStore(tmp_path / "state" / "t.sqlite")
    try:  # what `jobs list` prints as next
        tenant = cfg.tenants[0]
        assert cli_jobs._next_due(tenant.jobs[0], tenant, listed, D + timedelta(seconds=10)) == \
            D + timedelta(seconds=20)
    finally:
        listed.close()
    d = Daemon(cfg, once=False, time_limit=None, notifier=None, config_loader=None)
    try:
        d._open_tenants(cfg, D.timestamp() + 10)
        assert [t[0] for t in d.timers if t[2] == "fire"] == [D.timestamp() + 20]
    finally:
        d.close()


def _store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "state" / "t.sqlite")


@pytest.mark.parametrize(("policy", "max_late", "runs", "note"), [
    (CatchUp.LATEST, None, 1, "catch_up: latest runs only the newest"),
    (CatchUp.SKIP, None, 1, "catch_up: skip"),
    (CatchUp.ALL, None, 31, None),
    (CatchUp.LATEST, 5.0, 1, "later than max_late (5 s)"),
])
def test_a_late_timer_goes_through_the_catch_up_policy(
        tmp_path: Path, policy: CatchUp, max_late: float | None, runs: int, note: str | None) -> None:
    """A 30 s stall with every: 1s: the timer for D fires at D+30."""
    store, j = _store(tmp_path), job(Every(1), catch_up=policy, max_late=max_late)
    now = D.timestamp() + 30
    todo = plans.overdue(store, j, D.timestamp(), tenant="t", tz="UTC", now=now, cause="CAUSE")
    assert len(todo) == runs and todo[-1] == now
    missed = [r for r in store.history("j", limit=100) if r.reason == "missed"]
    notes = [r.message or "" for r in missed]
    accounted = sum(int(n.split()[0]) if "(summarised)" in n else 1 for n in notes)
    assert accounted == 31 - runs and all("CAUSE" in n for n in notes)  # the oldest summarised in one row
    if note:
        assert any(note in (r.message or "") for r in missed)
    store.close()


def test_an_on_time_timer_just_runs(tmp_path: Path) -> None:
    store = _store(tmp_path)
    todo = plans.overdue(store, job(Every(1), max_late=5.0), D.timestamp(), tenant="t", tz="UTC",
                         now=D.timestamp() + 0.01, cause="CAUSE")
    assert todo == [D.timestamp()] and not store.history("j")
    store.close()


def test_the_clock_watch_tells_steps_from_stalls() -> None:
    watch = ClockWatch.start(1000.0, 10.0)
    assert watch.look(1030.0, 40.0) == 0.0  # 30 s passed on both clocks: a stall or a sleep, no step
    assert "could not act" in watch.cause(1001.0, 1030.0)
    assert watch.look(8230.0, 40.5) == pytest.approx(7199.5)  # the wall clock jumped
    assert "set forward by 7200 s" in watch.cause(1031.0, 8230.0)
    assert watch.look(4630.0, 41.0) == pytest.approx(-3600.5)
    assert watch.look(4630.3, 41.1) == 0.0  # jitter is no step


def test_the_clock_watch_says_each_cause_as_a_new_watch_would() -> None:
    """The note is kept for the due time, now and step it was made for (a burst asks it once per timer with
    the same three): any change of one of them makes it anew."""
    watch = ClockWatch.start(1000.0, 10.0)
    asked = [(1001.0, 1030.0), (1001.0, 1030.0), (1002.0, 1030.0), (1002.0, 1031.0), (1002.0, 1031.0)]
    for due, now in asked:
        assert watch.cause(due, now) == ClockWatch.start(1000.0, 10.0).cause(due, now)
    assert "between 1970-01-01T00:16:42+00:00 and 1970-01-01T00:17:11+00:00" in watch.cause(1002.0, 1031.0)
    watch.look(8231.0, 40.5)  # set forward by about two hours: the same due time and now, another cause
    assert watch.cause(1002.0, 1031.0) == "the system clock was set forward by 7200 s"
    watch.look(8232.0, 41.5)  # no step since: the stall's note again
    assert "could not act" in watch.cause(1002.0, 1031.0)


def test_after_a_backward_step() -> None:
    """every: elapsed time; cron with '*' minutes or hours: the new wall time; fixed cron times: no repeats
    for a step up to 3 h, the new wall time after a larger one."""
    now = D - timedelta(hours=1)
    back = timedelta(hours=-1)
    second = timedelta(seconds=1)
    assert after_step_back(job(Every(1)), "UTC", D + second, back, now) == now + second
    assert after_step_back(job(Cron("* * * * *")), "UTC", D + timedelta(minutes=1), back, now) == \
        now + timedelta(minutes=1)
    fixed = job(Cron("30 13 * * *"))
    assert after_step_back(fixed, "UTC", D + timedelta(minutes=90), back, now) == D + timedelta(minutes=90)
    far = D - timedelta(days=2)
    assert after_step_back(fixed, "UTC", D + timedelta(minutes=90), timedelta(days=-2), far) == \
        far + timedelta(minutes=90)


def test_a_backward_step_rewinds_the_stored_last_due(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.remember_jobs(["j"], now=D.timestamp())
    store.rewind(D.timestamp() - 3600)
    assert store.last_due("j") == D.timestamp() - 3600
    store.rewind(D.timestamp())  # never moves a last due time forward
    assert store.last_due("j") == D.timestamp() - 3600
    store.close()


def test_the_daemon_moves_its_timers_when_the_clock_is_set_back(tmp_path: Path) -> None:
    """The real Daemon and store, its clock watch told that the wall clock went back an hour."""
    text = (f"task_server:\n  state_dir: {tmp_path / 'state'}\n"
            "tenants:\n  t:\n    login: nobody\n    jobs:\n"
            "      every: {every: 10s, command: [x]}\n"
            "      wild: {cron: '*/5 * * * *', command: [x]}\n"
            "      fixed: {cron: '30 13 * * *', command: [x]}\n")
    cfg = parse_text(text, tmp_path / "c.yaml")
    d = Daemon(cfg, once=False, time_limit=None, notifier=None, config_loader=None)
    try:
        d._open_tenants(cfg, D.timestamp())
        before = {t[4]: t[0] for t in d.timers if t[2] == "fire"}
        now = D.timestamp() - 3600 + 1  # one second later, on a clock set back by an hour
        d.clock = ClockWatch.start(D.timestamp(), boottime() - 1)
        d._check_clock(now, boottime())
        after = {t[4]: t[0] for t in d.timers if t[2] == "fire"}
        assert after["every"] == pytest.approx(now + 9, abs=0.1)  # 10 s to go at D, 1 s later 9 s to go
        assert after["wild"] == (D - timedelta(minutes=55)).timestamp()  # next */5 on the new wall clock
        assert after["fixed"] == before["fixed"]  # 13:30 not run again
        assert d.stores["t"].last_due("every") == now  # rewound: never in the future
    finally:
        d.close()


def test_a_store_that_blocks_the_wake_up_is_no_clock_step(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The real loop, its store's first transaction stalled 1.3 s (as a PostgreSQL server restarting blocks
    a reconnect): the wall clock and CLOCK_BOOTTIME are read together at the wake-up's start, so the stall is
    neither a step back (timers moved, last due times rewound) nor, a wake-up later, a step forward (due times
    recorded missed "because the clock was set forward")."""
    text = (f"task_server:\n  state_dir: {tmp_path / 'state'}\n"
            "tenants:\n  t:\n    login: nobody\n    jobs:\n      hourly: {every: 1h, command: [x]}\n")
    cfg = parse_text(text, tmp_path / "c.yaml")
    d = Daemon(cfg, once=False, time_limit=2.5, notifier=None, config_loader=None)
    steps: list[float] = []
    look = d.clock.look

    def watched(wall: float, boot: float) -> float:
        steps.append(look(wall, boot))
        return steps[-1]

    try:
        d.start_up()
        tx, stalled = d.stores.tx, list[float]()

        @contextlib.contextmanager
        def slow_tx(*, eager: bool = False) -> Iterator[None]:
            if not stalled:
                time.sleep(1.3)
                stalled.append(1.3)
            with tx(eager=eager):
                yield

        d.stores.tx = slow_tx  # type: ignore[method-assign]
        d.clock.look = watched  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING):
            assert d.loop() == 0
    finally:
        d.close()
    assert stalled and len(steps) >= 2, steps  # the stall happened, and the clock was looked at after it
    assert steps == [0.0] * len(steps), steps
    assert "system clock" not in caplog.text


def _ever(doms: list[int], months: list[int], dows: set[int], either: bool) -> bool:
    """Brute force over one whole Gregorian cycle (the calendar repeats after 400 years)."""
    for year in range(2000, 2400):
        for month in months:
            for day in range(1, calendar.monthrange(year, month)[1] + 1):
                dow_ok = (calendar.weekday(year, month, day) + 1) % 7 in dows
                if (day in doms or dow_ok) if either else (day in doms and dow_ok):
                    return True
    return False


def test_exactly_the_expressions_that_never_match_are_rejected() -> None:
    """Sparse day fields (29-31, few months, starred or listed weekdays): parse() accepts an expression
    exactly when a brute-force walk over 400 years finds a matching day, and then next_match finds it."""
    rng = random.Random(9)
    verdicts = {True: 0, False: 0}
    for _ in range(60):
        doms = sorted(rng.sample([29, 30, 31], rng.randint(1, 2)))
        months = sorted(rng.sample(range(1, 13), rng.randint(1, 3)))
        dow_text = rng.choice(["*/7", "*/3", "1-5", "sat", "*"])
        dows = {d % 7 for d in cron._parse_field(dow_text, 4)}
        expr = f"0 0 {','.join(map(str, doms))} {','.join(map(str, months))} {dow_text}"
        exists = _ever(doms, months, dows, either=not dow_text.startswith("*"))
        verdicts[exists] += 1
        if exists:
            assert cron.next_match(cron.parse(expr), datetime(2026, 1, 1)) is not None, expr
        else:
            with pytest.raises(cron.CronError):
                cron.parse(expr)
    assert verdicts[True] and verdicts[False]  # both kinds were tried
