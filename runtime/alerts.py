"""Which run outcomes become notifications, and to whom (docs/notifications.md).

Every way a run ends passes through its store: ``finish`` (a run's end, a crash found at start, a due time
recorded missed outside its window) and ``missed`` (due times recorded missed). ``Observed`` wraps each
tenant's store in the daemon and sees those calls; what they mean is decided here, and a notification is
handed to the delivery process (runtime/alert_proc.py) only after the transaction that recorded the
outcome committed; a rolled-back one notifies nobody.

A job's failing streak is the set of kinds (failure, crashed, missed) of its final outcomes since its last
OK. A notify entry is told the first event of a streak that it listens to, and ``recovered`` at the first OK
after it; a failed attempt that will be retried, an interrupted run and a job removed are no outcome. The
streak before an event comes from the job's stored history (its newest finished runs), so a restart neither
repeats an old failure nor forgets a recovery; a store only this daemon writes (SQLite) is read once per job
and then followed in memory, a shared one (PostgreSQL, several daemons) is read at every event.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import jobenv, liveness, privs
from .errors import UserError
from .limits import printable
from .model import Config, Event, JobDef, NotifyDef, State, TenantDef
from .notify import Notifier
from .store import CRASHED, INTERRUPTED, MISSED, NO_SUCH_JOB, PAUSED, Run, Store, StoreError

if TYPE_CHECKING:
    from .alert_proc import Courier

log = logging.getLogger(__name__)

OK = "ok"
HISTORY = 50  # finished runs read back to find a job's streak
OUTPUT_TAIL = 2000  # characters of a run's output in a notification
Key = tuple[str, str]
Streak = frozenset[str]
Notice = tuple[Key, Streak, list[tuple[NotifyDef, str, dict[str, Any]]]]


def classify(run: Run, job: JobDef | None, once: bool) -> str | None:
    """OK, an Event for a final bad outcome, or None for what is neither (a retry follows, interrupted)."""
    if run.state is State.OK:
        return OK
    if run.state is not State.ERR or run.reason in (INTERRUPTED, NO_SUCH_JOB):
        return None
    if run.reason == MISSED:  # a due time a paused job let pass is what its operator asked for, not news
        return None if paused(run.message) else Event.MISSED
    if job is not None and not once and run.attempt < job.retry.count:
        return None  # the daemon claims its retry in the same transaction
    return Event.CRASHED if run.reason == CRASHED else Event.FAILURE


def paused(note: str | None) -> bool:
    return (note or "").startswith(PAUSED)


def streak_of(history: Iterable[Run], job: JobDef | None, once: bool) -> Streak:
    """The kinds of the final outcomes since the last OK, newest finished first."""
    seen: set[str] = set()
    ended = sorted((r for r in history if r.finished is not None), key=lambda r: (r.finished, r.id),
                   reverse=True)
    for run in ended:
        kind = classify(run, job, once)
        if kind == OK:
            break
        if kind is not None:
            seen.add(kind)
    return frozenset(seen)


def judge(targets: tuple[NotifyDef, ...], kind: str | None,
          prior: Streak) -> tuple[Streak, list[tuple[NotifyDef, str]]]:
    """The streak after an outcome of ``kind`` and the (entry, event) pairs to notify."""
    if kind is None:
        return prior, []
    if kind == OK:
        told = [t for t in targets if Event.RECOVERED in t.on and (prior & t.on or t.on == {Event.RECOVERED})]
        return frozenset(), [(t, Event.RECOVERED) for t in told] if prior else []
    return prior | {kind}, [(t, kind) for t in targets if kind in t.on and not prior & t.on]


@contextlib.contextmanager
def guarded(what: str) -> Iterator[None]:
    """A defect in the notification code is logged and never ends the daemon or a transaction; a storage
    fault (reading a job's history) is the store's, handled as any other."""
    try:
        yield
    except StoreError:
        raise
    except Exception:
        log.exception("%s failed (a defect: please report it)", what)


def configured(config: Config) -> bool:
    """Does the config name any notify: (then the delivery code is loaded before the privilege drop)?"""
    tenants = config.tenants
    return bool(config.server.notify) or any(t.notify or any(j.notify for j in t.jobs) for t in tenants)


def targets(config: Config, tenant: TenantDef, job: JobDef) -> tuple[NotifyDef, ...]:
    """server -> tenant -> job: each level adds its entries; one with ``inherit: false`` drops those above."""
    out: list[NotifyDef] = []
    for level in (config.server.notify, tenant.notify, job.notify):
        if any(not n.inherit for n in level):
            out = []
        out += [n for n in level if n.command or n.webhook or n.email]
    return tuple(out)


def stamp(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


FIELDS = ("run_id", "reason", "exit_code", "due", "started", "finished", "missed", "message", "output")


def summary(tenant: str, job: str, event: str, run: Run | None, *,
            missed: tuple[list[float], str | None] | None = None, now: float) -> dict[str, Any]:
    """The JSON a webhook receives and a command reads on stdin (docs/notifications.md)."""
    s: dict[str, Any] = {"version": 1, "event": event, "tenant": tenant, "job": job, "host": liveness.host(),
                         "time": stamp(now), "state": "ERR", "attempt": 0, **dict.fromkeys(FIELDS)}
    if run is not None:
        s.update(run_id=run.id, state=run.state.value, reason=run.reason, exit_code=run.exit_code,
                 attempt=run.attempt, due=stamp(run.due), started=stamp(run.started),
                 finished=stamp(run.finished), message=run.message, output=run.output[-OUTPUT_TAIL:])
    if missed is not None:
        dues, note = missed
        s.update(reason=MISSED, missed=len(dues), due=stamp(max(dues)), finished=stamp(now), message=note)
    return s


def environment(s: dict[str, Any], config: Config, tenant: TenantDef) -> dict[str, str]:
    """TASKSERVER_* of a notification command (and of sendmail): one printable line each."""
    names = ("event", "tenant", "job", "run_id", "state", "reason", "exit_code", "attempt", "due", "started",
             "finished", "missed")
    own = {f"TASKSERVER_{n.upper()}": printable(str(s[n])) for n in names if s.get(n) is not None}
    own.update(TASKSERVER_LOGIN=tenant.login or "", TASKSERVER_CONFIG=str(config.path.absolute()))
    return own


class Alerts:
    """The daemon's notifications: streaks, targets, hand-over to the delivery process, counters."""

    def __init__(self, config: Callable[[], Config], *, once: bool, sel: selectors.BaseSelector,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self.once = once
        self.sel = sel
        self.notifier = notifier  # publishes the counters (`taskserver status`, the web's /metrics)
        self.courier: Courier | None = None  # the delivery process, started at the first notification
        self.streaks: dict[Key, Streak] = {}  # followed in memory for exclusive stores
        self.counts: dict[str, dict[str, int]] = {}
        self._targets: dict[Key, tuple[NotifyDef, ...]] = {}  # jobs of tenants that notify (see ``wanted``)
        self._silent: dict[str, bool] = {}
        self._jobs: dict[Key, tuple[TenantDef, JobDef]] = {}  # the config's jobs by name (_index)
        self._for: int = 0
        self._watched: socket.socket | None = None  # the socket the loop's selector watches

    def observe(self, tenant: str, store: Store) -> Store:
        return Observed(store, self, tenant)

    def _index(self) -> Config:
        """The current config, its jobs indexed by name: a catch-up asks for each of 10,000 jobs, and a
        search through the list for each was quadratic (seconds at a start-up)."""
        config = self.config()
        if id(config) != self._for:
            self._targets.clear()
            self._silent.clear()
            self._jobs = {(t.name, j.name): (t, j) for t in config.tenants for j in t.jobs}
            self._for = id(config)
        return config

    def wanted(self, tenant: str, job: str) -> tuple[NotifyDef, ...]:
        config = self._index()
        key = (tenant, job)
        got = self._targets.get(key)
        if got is None:
            if self.silent(tenant):  # nothing kept per job: 10,000 jobs that ran would hold a megabyte
                return ()
            found = self._jobs.get(key)
            got = self._targets[key] = targets(config, *found) if found is not None else ()
        return got

    def silent(self, tenant: str) -> bool:
        """No notify: entry reaches any job of ``tenant`` (none on the server, the tenant or its jobs)."""
        config = self._index()
        got = self._silent.get(tenant)
        if got is None:
            found = config.tenant(tenant)
            got = self._silent[tenant] = not config.server.notify and (
                found is None or not (found.notify or any(j.notify for j in found.jobs)))
        return got

    def job(self, tenant: str, job: str) -> JobDef | None:
        self._index()
        found = self._jobs.get((tenant, job))
        return found[1] if found is not None else None

    def commit(self, notices: list[Notice]) -> None:
        for key, streak, sends in notices:
            self.streaks[key] = streak
            for entry, channel, s in sends:
                with guarded(f"tenant {key[0]} job {key[1]}: {channel} notification"):
                    self._send(key[0], entry, channel, s)

    def _send(self, tenant: str, entry: NotifyDef, channel: str, s: dict[str, Any]) -> None:
        try:
            msg = self._message(tenant, entry, channel, s)
        except UserError as exc:  # the root rule or an identity that is gone: as for a job, refused
            log.error("tenant %s job %s: %s notification refused: %s", tenant, s["job"], channel, exc.message)
            self._take([{"tenant": tenant, "result": "failed"}])
            return
        courier = self._courier()
        why = courier.send(msg) if courier is not None else "the delivery code cannot be loaded"
        self._watch()
        if why is not None:
            log.warning("tenant %s job %s: %s notification (%s) dropped: %s", tenant, s["job"], channel,
                        s["event"], why)
            self._take([{"tenant": tenant, "result": "dropped"}])

    def _message(self, tenant: str, entry: NotifyDef, channel: str, s: dict[str, Any]) -> dict[str, Any]:
        msg: dict[str, Any] = {"channel": channel, "summary": s}
        if channel == "webhook" and entry.webhook is not None:
            w = entry.webhook
            return {**msg, "url": w.url, "headers": [list(h) for h in w.headers], "timeout": w.timeout,
                    "retries": w.retries, "backoff": w.backoff}
        config = self.config()
        conf = config.tenant(tenant)
        if conf is None:
            raise UserError(f"tenant {tenant!r} is no longer in the config")
        ident = privs.run_identity(config, conf)  # the tenant's user, by the rules a job's run meets
        user = jobenv.RunUser.of_uid(ident.uid if ident is not None else os.geteuid())
        msg["env"] = jobenv.build(user, conf, self.job(tenant, s["job"]), environment(s, config, conf))
        msg["ident"] = [ident.uid, ident.gid, list(ident.groups)] if ident is not None else None
        if channel == "command" and entry.command is not None:
            return {**msg, "argv": list(entry.command), "timeout": entry.command_timeout}
        assert entry.email is not None
        e = entry.email
        return {**msg, "to": list(e.to), "from": e.sender, "sendmail": str(e.sendmail), "timeout": e.timeout}

    def _courier(self) -> Courier | None:
        if self.courier is None:
            try:  # imported before the privilege drop when the config had notify: (control.py)
                from .alert_proc import Courier  # noqa: PLC0415
            except ImportError as exc:
                log.error("notifications cannot be delivered: %s (restart the daemon after adding notify:)",
                          exc)
                return None
            self.courier = Courier()
        return self.courier

    def drained(self) -> None:
        """The delivery process reported (the loop's selector said so): count, and publish the counters."""
        if self.courier is not None:
            self._take(self.courier.results())
        self._watch()

    def _watch(self) -> None:
        """Keep the loop's selector on the delivery process's socket: the one there is now, if any."""
        sock = self.courier.sock if self.courier is not None else None
        if self._watched is not None and self._watched is not sock:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self._watched)
            self._watched = None
        if self._watched is None and sock is not None:
            self.sel.register(sock, selectors.EVENT_READ, self)
            self._watched = sock

    def _take(self, results: list[dict[str, Any]]) -> None:
        """Count results (the delivery process's, or the loop's own drops) and publish the counters."""
        for r in results:
            per = self.counts.setdefault(str(r["tenant"]), {"sent": 0, "failed": 0, "dropped": 0})
            per[str(r["result"])] = per.get(str(r["result"]), 0) + 1
        if results and self.notifier is not None:
            self.notifier.publish("notifications", self.counts)

    def close(self) -> None:
        """Daemon stop: pending notifications get the delivery process's grace, then are dropped."""
        if self._watched is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self._watched)
            self._watched = None
        if self.courier is not None:
            self._take(self.courier.close())


class Observed:
    """A tenant's store as the daemon uses it, telling ``Alerts`` what ended (see the module docstring)."""

    def __init__(self, store: Store, alerts: Alerts, tenant: str) -> None:
        self._store = store
        self._alerts = alerts
        self._tenant = tenant
        self._depth = 0
        self._held: list[Notice] = []
        self._pending: dict[str, Streak] = {}  # streaks changed inside the open transaction

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if callable(attr):
            setattr(self, name, attr)  # looked up once: the loop calls the store often
        return attr

    def finish(self, run_id: int, state: State, reason: str | None, **kw: Any) -> Run | None:
        run = self._store.finish(run_id, state, reason, **kw)
        # None: ended before, and told then; (a burst's every run: no guard and no text to make for it)
        if run is not None and run.job and not self._silent():
            with guarded(f"tenant {self._tenant} run {run.id}: its notifications"):
                self._ended(run)
        return run

    def _silent(self) -> bool:
        """No notify: entry reaches this tenant; a defect in finding out takes the guarded path, which logs
        it."""
        try:
            return self._alerts.silent(self._tenant)
        except Exception:  # as guarded(): never ends the daemon or a transaction
            return False

    def _ended(self, run: Run) -> None:
        if entries := self._alerts.wanted(self._tenant, run.job):
            job = self._alerts.job(self._tenant, run.job)
            kind = classify(run, job, self._alerts.once)
            if kind is not None:
                prior = self._prior(run.job, job, exclude=run.id)
                self._note(run.job, entries, kind, prior,
                           make=lambda ev: summary(self._tenant, run.job, ev, run, now=run.finished or 0.0))

    def missed(self, job: str, dues: Iterable[float], *, now: float, note: str | None = None) -> None:
        dues = list(dues)
        entries: tuple[NotifyDef, ...] = ()
        prior: Streak | None = None
        with guarded(f"tenant {self._tenant} job {job}: its notifications"):
            entries = self._alerts.wanted(self._tenant, job) if dues and not paused(note) else ()
            prior = self._prior(job, self._alerts.job(self._tenant, job), exclude=None) if entries else None
        self._store.missed(job, dues, now=now, note=note)
        if prior is not None:
            with guarded(f"tenant {self._tenant} job {job}: its notifications"):
                self._note(job, entries, Event.MISSED, prior,
                           make=lambda ev: summary(self._tenant, job, ev, None, missed=(dues, note), now=now))

    def missed_many(self, rows: Sequence[tuple[str, float, str | None]], *, now: float) -> None:
        """``missed`` for many jobs (a start-up's catch-up): the jobs someone is told about go through
        ``missed`` (their streaks and notices), by job and note in order; the others in one write."""
        if self._alerts.silent(self._tenant):  # nobody to tell: one write, no look at each row
            self._store.missed_many(rows, now=now)
            return
        quiet: list[tuple[str, float, str | None]] = []
        told: dict[tuple[str, str | None], list[float]] = {}
        wanted: dict[str, bool] = {}
        for job, due, note in rows:
            if job not in wanted:
                wanted[job] = False
                with guarded(f"tenant {self._tenant} job {job}: its notifications"):
                    wanted[job] = bool(self._alerts.wanted(self._tenant, job))
            if wanted[job] and not paused(note):
                told.setdefault((job, note), []).append(due)
            else:
                quiet.append((job, due, note))
        self._store.missed_many(quiet, now=now)
        for (job, note), dues in told.items():
            self.missed(job, dues, now=now, note=note)

    def _prior(self, job: str, jobdef: JobDef | None, exclude: int | None) -> Streak:
        if job in self._pending:
            return self._pending[job]
        known = self._alerts.streaks.get((self._tenant, job)) if self._store.exclusive else None
        if known is not None:
            return known
        runs = [r for r in self._store.history(job, limit=HISTORY) if r.id != exclude]
        return streak_of(runs, jobdef, self._alerts.once)

    def _note(self, job: str, entries: tuple[NotifyDef, ...], kind: str, prior: Streak, *,
              make: Callable[[str], dict[str, Any]]) -> None:
        """Judge an outcome; its notifications go when the transaction holding it has committed."""
        streak, told = judge(entries, kind, prior)
        sends = []
        for entry, event in told:
            s = make(event)
            sends += [(entry, ch, s) for ch in ("command", "webhook", "email") if getattr(entry, ch)]
        notice: Notice = ((self._tenant, job), streak, sends)
        if self._depth:
            self._pending[job] = streak
            self._held.append(notice)
        else:
            self._alerts.commit([notice])

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        self._depth += 1
        ok = False
        try:
            with self._store.batch():
                yield
            ok = True
        finally:
            self._depth -= 1
            if self._depth == 0:
                held, self._held, self._pending = self._held, [], {}
                if ok:
                    self._alerts.commit(held)
