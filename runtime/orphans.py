"""What a starting daemon does with the runs a dead daemon left in RUN: the orphan policy.

Policy: **kill, never adopt.**  A run whose process is still alive when its daemon is found dead is
stopped (TERM to its process group and to every process carrying its run id, KILL after the grace) and
recorded ``ERR interrupted`` with a note saying why; a run whose process is already gone is recorded
``ERR crashed`` (its daemon died, so nobody saw how it ended).  Adopting a live orphan would need a record
of its real exit status, which only its parent (the dead daemon) could have read; killing it is the only
way to keep both promises: no second copy of a job while the first runs, and no recorded outcome that
the process did not have.  systemd with ``KillMode=mixed`` agrees: when the daemon's main process dies it
kills the rest of the unit's cgroup, so there the orphans are already gone (``crashed``) at the restart;
under SysV, cron or a manual start nothing else kills them, and this module does.

Evidence decides, never a pid alone: a daemon instance is dead when it holds no lease (its row is gone or
expired) or, on this host and boot, its own process is gone; a run's process is alive when its recorded
(boot id, pid, start time) still matches, or when a process carries its tenant, instance and run id in its
environment (which also covers a daemon killed between spawning a run and recording its pid).  Run ids are
per tenant and one daemon serves several tenants, so every look-up by run id here is within one tenant.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from . import liveness
from .model import State
from .store import CRASHED, INTERRUPTED, Instance, Run, Store, cancelled

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settled:
    run: Run
    killed: list[int]


def instance_dead(inst: Instance, *, now: float, exclusive: bool) -> bool:
    """``exclusive``: the store admits one daemon and we hold it, so every other instance is dead."""
    if exclusive:
        return True
    if inst.host == liveness.host() and inst.boot_id == liveness.boot_id():
        return not liveness.same_process(inst.pid, inst.proc_start, inst.boot_id)
    return inst.expires < now


def settle(store: Store, tenant: str, me: str, *, now: float, grace: float, exclusive: bool,
           report: Callable[[Run], None], owner: int | None = None) -> list[Settled]:
    """Record every run of a dead instance truthfully; kill its processes first if they still live.
    ``owner``: the uid the tenant's runs run as; a process counts as a run's only if that user could signal
    it (liveness.may_signal): the store is that user's file, and what it names is that user's say."""
    leases = {i.id: i for i in store.instances() if i.id != me}
    dead = {i for i, inst in leases.items() if instance_dead(inst, now=now, exclusive=exclusive)}
    orphans = [r for r in store.running(exclude=me) if r.instance is None or r.instance not in leases
               or r.instance in dead]
    found = liveness.processes_of(tenant, {r.instance for r in orphans if r.instance})
    hosts = {i: inst.host for i, inst in leases.items()}
    asked = store.cancelling() if orphans else {}  # `jobs cancel` while no daemon ran: who asked
    settled = [_settle_one(store, run, found, now=now, grace=grace, host=hosts.get(run.instance or ""),
                           cancel=asked.get(run.id), owner=owner) for run in orphans]
    done = [s for s in settled if s is not None]  # None: another daemon settled it first (both saw it dead)
    for s in done:
        report(s.run)
    for inst in dead:
        store.detach(inst)
    return done


def stop_strays(store: Store, tenant: str, me: str, *, grace: float, owner: int | None = None) -> list[int]:
    """Stop this host's processes of runs another daemon has settled already (the pids stopped).

    A daemon of this host that died and stayed down beyond its lease on a shared store, or lost the lease,
    left its runs' processes going while another host recorded them lost and went on with their jobs:
    they run beside those jobs unrecorded, and no host but this one can stop them. Called when a daemon
    takes its lease on a shared store (start-up, reload), after ``settle``."""
    live = {i.id for i in store.instances()} | {me}
    stop: list[liveness.Found] = []
    for (instance, run_id), procs in liveness.run_processes(tenant, exclude=live).items():
        run = store.get(run_id)
        if run is not None and run.instance == instance and run.state in (State.OK, State.ERR):
            log.warning("run %d (%s): recorded %s %s by another daemon, but its process %s still ran here "
                        "(its daemon died): stopping it, so that the job does not run twice", run.id,
                        run.job or "task", run.state.value, run.reason or "", sorted(p.pid for p in procs))
            stop += procs
    return liveness.terminate(stop, grace, owner) if stop else []


def _settle_one(store: Store, run: Run, found: dict[tuple[str, int], list[liveness.Found]], *, now: float,
                grace: float, host: str | None = None, cancel: str | None = None,
                owner: int | None = None) -> Settled | None:
    procs = [p for p in found.get((run.instance or "", run.id), []) if liveness.may_signal(p.pid, owner)]
    if run.pid and liveness.same_process(run.pid, run.proc_start, run.boot_id) \
            and liveness.may_signal(run.pid, owner):  # (a forged row may name anyone's process)
        procs.append(liveness.Found(run.pid, run.pid))  # the job leads its own session and group
    if procs:
        killed = liveness.terminate(procs, grace, owner)
        note = (f"the daemon that started it (instance {run.instance}) died while it ran; the restarted "
                f"daemon stopped its processes {sorted(set(killed))} so the job never runs twice")
        # asked to stop while no daemon could: stopped now, and on that request (so never retried)
        reason = INTERRUPTED if cancel is None else cancelled(cancel)
        log.warning("run %d (%s): its daemon died; stopped its live processes %s: ERR %s",
                    run.id, run.job or "task", sorted(set(killed)), reason)
        ended = store.finish(run.id, State.ERR, reason, exit_code=None, output="", now=now, note=note)
        return Settled(ended, killed) if ended is not None else None
    if host is not None and host != liveness.host():
        note = (f"its daemon on host {host} (instance {run.instance}) stopped renewing its lease while it "
                "ran: the host is lost, and how the run ended is unknown")
    else:
        note = ("the daemon that started it died while it ran and its process was gone at the restart: how "
                "it ended is unknown")
    log.warning("run %d (%s) was left running by a dead daemon and its process is gone: ERR crashed",
                run.id, run.job or "task")
    ended = store.finish(run.id, State.ERR, CRASHED, exit_code=None, output="", now=now, note=note)
    return Settled(ended, []) if ended is not None else None
