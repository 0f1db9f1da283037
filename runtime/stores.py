"""The daemon's open stores, one per tenant with a login: its lease on each, its transactions, its faults.

- ``open`` claims a tenant's store (the lock of a store that allows one daemon: refused while another
  daemon holds it), opens it (the daemon's opener: through the registry, as the tenant's user), takes this
  instance's lease and settles what dead instances left running (runtime/orphans.py). A store a storage
  fault keeps from opening stays claimed while the daemon holds its runs: no second daemon comes up on it.
- ``tx`` groups everything one wake-up writes into one transaction per tenant (one commit for many runs);
  ``use`` is how the daemon reaches a store inside it.  It is closed before the daemon sleeps, so `jobs
  enqueue` never waits on a sleeping daemon's lock.  Each store's transaction is begun and committed on its
  own: a store that cannot begin one (another writer's lock), fails its check or its commit is named in
  ``failed`` and its tenants set aside (``aside``: the daemon holds their runs, runtime/health.py) while the
  other stores' work commits.  A tenant set aside is not served (not iterated here) until it is taken back.
  A store another writer holds locked when a wake-up's work begins is not waited for: its tenant sits the
  work out (``locked``: aside, nothing of it dropped) and is tried at each ``tx`` until LOCK_WAIT is over.
- ``heartbeat`` renews the leases; ``check`` and ``recover`` find and mend a store that failed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import selectors
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from . import liveness, orphans
from .executor import KILL_GRACE
from .model import TenantDef
from .store import Claim, Instance, Run, Store, StoreError, StoreFault, StoreLocked

log = logging.getLogger(__name__)

MAX_SLEEP = 60.0  # the daemon wakes at least this often anyway
LEASE_TTL = 3 * MAX_SLEEP  # a lease lasts this long without a heartbeat; renewed on the daemon's own wake-ups
# A shared store (several hosts): a dead host's runs are taken over after its lease, so leases are short and
# renewed every few seconds; each renewal also reaps the leases of dead daemons and re-reads waiting claims.
SHARED_LEASE_TTL = 15.0
SHARED_BEAT = 5.0
# A store another writer holds locked when a wake-up begins: its tenant sits that wake-up out (the loop
# never waits for the lock: every other tenant's runs would wait with it) and is tried again LOCK_POLLS
# seconds after it was first met (growing, as SQLite's own busy handler waits: a writer that takes the
# lock at a steady beat is not met at the same point of it each time); a lock held longer than LOCK_WAIT
# is a fault (runtime/health.py). A command's write holds it for a millisecond or so: such a conflict
# costs its tenant about that, never a fault.
LOCK_WAIT = 0.25
LOCK_POLLS = (0.001, 0.003, 0.008, 0.018, 0.033, 0.053, 0.078, 0.103, 0.128, 0.178, 0.228, LOCK_WAIT)
# The clocks of a shared store's hosts may differ this much: a stored last due time less far after now is
# another host's due time (its clock is ahead), not a sign of this host's clock set back.
SHARED_SKEW = 120.0


Opener = Callable[[Claim | None], Store]  # opens a tenant's store, holding the claim taken for it
Claimer = Callable[[Instance], Claim | None]  # takes the store's lock before it is opened (store.claim_store)


def _ignore(run: Run) -> None:
    pass


class Stores(Mapping[str, Store]):
    def __init__(self, *, instance: str, started: float, config: Callable[[], Path],
                 sel: selectors.BaseSelector) -> None:
        self.instance = instance
        self.started = started
        self.config = config
        self.sel = sel
        self._open: dict[str, Store] = {}
        self._claims: dict[str, Claim] = {}  # the locks of the stores served, released at ``close``
        self._owners: dict[str, int | None] = {}  # the uid each tenant's runs run as (``open``)
        # tenants whose store a storage fault kept from opening: the lock held meanwhile (None: not taken
        # yet) and how to open and claim that store, the one first asked for, when it can be opened
        self._held: dict[str, tuple[Claim | None, Opener, Claimer | None]] = {}
        self._tx: dict[str, contextlib.AbstractContextManager[None]] | None = None  # the open batches
        # tenants whose store failed: the daemon holds their runs (runtime/health.py); shared with Runs
        self.aside: set[str] = set()
        self.why: dict[str, StoreError] = {}  # what set each of them aside
        self.failed: dict[str, StoreError] = {}  # the stores that failed in the last ``tx``, by tenant
        # when the leases are renewed next, on the monotonic clock: on the wall clock, a clock set back by
        # more than a lease held every renewal back as long, and the other hosts settled this daemon's live
        # runs as lost (its lease ran out on the server's clock, where leases are kept)
        self._beat_at = 0.0
        # tenants (also aside) whose store another writer held locked at a ``tx``'s begin: since when
        # (monotonic) and what it said; tried again at every ``tx`` until LOCK_WAIT is over (``overdue``)
        self.locked: dict[str, tuple[float, int, StoreError]] = {}  # (since, tries, error)
        self.resumed: list[str] = []  # tenants of ``locked`` whose store the last ``tx`` could begin
        # tenant -> until when no other lease is judged there: we came back from a lost connection, and the
        # other daemons, cut off as long, had no way to renew theirs meanwhile either
        self.judge_from: dict[str, float] = {}
        self.shared = False  # any open store is shared with other daemons (not exclusive)

    def __getitem__(self, tenant: str) -> Store:
        if tenant in self.aside:
            raise KeyError(tenant)
        return self._open[tenant]

    def __iter__(self) -> Iterator[str]:
        if not self.aside:
            return iter(self._open)
        return (t for t in self._open if t not in self.aside)

    def __len__(self) -> int:
        return len(self._open) - len(self.aside.intersection(self._open))

    def names(self) -> set[str]:
        """Every tenant whose store is open, set aside or not."""
        return set(self._open)

    def store_of(self, tenant: str) -> Store:
        """A tenant's open store, also while it is set aside (to mend it)."""
        return self._open[tenant]

    def open(self, tenant: TenantDef, opener: Opener, now: float, report: Callable[[Run], None],
             claimer: Claimer | None = None, *, owner: int | None = None) -> Store:
        """Claim the tenant's store (``claimer``: its lock, StoreBusy while another daemon holds it), open
        it (``opener``) and take our lease on it; the runs dead daemons left in RUN are settled here, by
        evidence, before anything new starts. A StoreFault (the daemon holds the tenant's runs) keeps the
        claim, and the next ``open`` of the tenant opens that same store (a reload naming another path
        meanwhile waits for a restart, as it does for a store served); any other failure releases it."""
        name = tenant.name
        self._owners[name] = owner  # whose processes its runs may be (orphans.settle)
        claim, opener, claimer = self._held.pop(name, (None, opener, claimer))
        try:
            if claim is None and claimer is not None:
                claim = claimer(self.me(now))
            store = self._attached(opener(claim), name, now, report)
        except StoreFault:
            self._held[name] = (claim, opener, claimer)
            raise
        except BaseException:
            if claim is not None:
                claim.release()
            raise
        if claim is not None:
            self._claims[name] = claim
        self._open[name] = store
        self.shared = self.shared or not store.exclusive
        self._watch(store)
        # attach wrote a fresh lease; the next renewal (on a shared store also its look for dead daemons
        # and their claims) comes at the usual beat, not a minute later, nor later than the other stores'
        mono = time.monotonic()
        self._beat_at = min(self._beat_at or mono + self.beat, mono + self.beat)
        return store

    def _attached(self, store: Store, tenant: str, now: float, report: Callable[[Run], None]) -> Store:
        # known before the lease is taken: a shared store's first lease is as short as every later one (a
        # host that died in its first minute held its runs for LEASE_TTL, three minutes)
        shared = self.shared or not store.exclusive
        try:
            store.attach(self.me(now, shared=shared))
            owner = self._owners.get(tenant)
            orphans.settle(store, tenant, self.instance, now=now, grace=KILL_GRACE,
                           exclusive=store.exclusive, report=report, owner=owner)
            if not store.exclusive:
                orphans.stop_strays(store, tenant, self.instance, grace=KILL_GRACE, owner=owner)
        except BaseException:
            store.close()  # (a claim it was opened with stays: ``open`` keeps or releases it)
            raise
        return store

    def release(self, tenant: str) -> None:
        """A held tenant the config no longer has: its store is no longer claimed."""
        claim = self._held.pop(tenant, (None,))[0]
        if claim is not None:
            claim.release()

    def me(self, now: float, *, shared: bool | None = None) -> Instance:
        pid = os.getpid()
        ttl = SHARED_LEASE_TTL if (self.shared if shared is None else shared) else LEASE_TTL
        return Instance(id=self.instance, host=liveness.host(), pid=pid, boot_id=liveness.boot_id(),
                        proc_start=liveness.start_time(pid), config=str(self.config()), started=self.started,
                        heartbeat=now, expires=now + ttl)

    @property
    def next_beat(self) -> float:
        """When the leases are renewed next, on the wall clock as it reads now (the daemon wakes for it)."""
        return time.time() + (self._beat_at - time.monotonic()) if self._beat_at else 0.0

    @property
    def lease_ttl(self) -> float:
        return SHARED_LEASE_TTL if self.shared else LEASE_TTL

    @property
    def beat(self) -> float:
        """Seconds between two renewals of the leases."""
        return SHARED_BEAT if self.shared else LEASE_TTL / 3

    def _watch(self, store: Store) -> None:
        """Select on the store's wake-up (new queued tasks), replacing what was watched for it before."""
        for key in [k for k in self.sel.get_map().values() if k.data is store]:
            self.sel.unregister(key.fileobj)
        fd = store.wakeup_fd()
        if fd is not None:
            self.sel.register(fd, selectors.EVENT_READ, store)

    @contextlib.contextmanager
    def tx(self, *, eager: bool = False) -> Iterator[None]:
        """One transaction per store for the work inside. ``eager``: every served store's is begun first,
        so that a store another writer holds locked is set aside before any work was done for it (the
        work then never meets it); each is committed on its own. A store that fails to begin or commit is
        named in ``failed`` and its tenant set aside; its work is rolled back. An error out of the work
        itself rolls every store back and is raised."""
        self._tx, self.failed, self.resumed = {}, {}, []
        try:
            if eager:
                for tenant in [*self, *self.locked]:
                    with contextlib.suppress(StoreError):
                        self._try(tenant)
            yield
        except BaseException as exc:
            self._end(exc)
            raise
        self._end(None)

    def _try(self, tenant: str) -> None:
        """Begin the tenant's transaction without waiting for another writer's lock: a store locked has
        its tenant sit this work out (``locked``), and is tried again by the next ``tx``."""
        store = self._open[tenant]
        try:
            with store.no_wait():
                self._begin(tenant, locked_ok=True)
        except StoreLocked as exc:
            since, tries, _ = self.locked.get(tenant, (time.monotonic(), 0, exc))
            if not tries:
                log.debug("tenant %s: another writer holds its store's lock: it sits this work out", tenant)
            self.locked[tenant] = (since, tries + 1, exc)
            self.aside.add(tenant)
            self.why[tenant] = exc
            return
        if self.locked.pop(tenant, None) is not None:
            self.take_back(tenant)
            self.resumed.append(tenant)

    def overdue(self, *, every: bool = False) -> dict[str, StoreError]:
        """The tenants whose store has been locked longer than LOCK_WAIT (``every``: all of ``locked``): a
        fault now (they stay aside)."""
        mono = time.monotonic()
        late = {t: exc for t, (since, _, exc) in self.locked.items() if every or mono - since >= LOCK_WAIT}
        for tenant in late:
            del self.locked[tenant]
        return late

    def lock_retry_at(self, now: float) -> float | None:
        """When the next store that was locked is to be tried again (wall clock, as ``now``)."""
        if not self.locked:
            return None
        mono = time.monotonic()
        return now + max(0.0, min(since + LOCK_POLLS[min(tries, len(LOCK_POLLS)) - 1] - mono
                                  for since, tries, _ in self.locked.values()))

    def _begin(self, tenant: str, *, locked_ok: bool = False) -> None:
        assert self._tx is not None
        batch = self._open[tenant].batch()
        try:
            batch.__enter__()
        except StoreError as exc:
            if not (locked_ok and isinstance(exc, StoreLocked)):
                self.set_aside(tenant, exc)
            raise
        self._tx[tenant] = batch

    def _end(self, exc: BaseException | None) -> None:
        batches, self._tx = self._tx or {}, None
        for tenant, batch in batches.items():
            undo = exc if exc is not None else self.why.get(tenant) if tenant in self.aside else None
            try:
                if undo is None:
                    batch.__exit__(None, None, None)  # its commit
                    continue
                with contextlib.suppress(StoreError):  # (a rollback that fails: the transaction ends too)
                    batch.__exit__(type(undo), undo, undo.__traceback__)
            except StoreError as failed:
                if undo is None:
                    log.debug("tenant %s: its commit failed: %s", tenant, failed)
                self.set_aside(tenant, failed)

    def set_aside(self, tenant: str, exc: StoreError) -> None:
        """The tenant's store failed: it is served no more until ``take_back``."""
        self.failed[tenant] = self.why[tenant] = exc
        self.aside.add(tenant)
        self.locked.pop(tenant, None)

    def of(self, exc: StoreError) -> list[str]:
        """The served tenants whose store raised ``exc`` (those of every store served, when it does not say
        where it came from)."""
        if exc.where is None:
            return list(self)
        return [t for t in self if self._open[t].where == exc.where]

    def take_back(self, tenant: str) -> None:
        self.aside.discard(tenant)
        self.why.pop(tenant, None)
        self.locked.pop(tenant, None)

    def use(self, tenant: str) -> Store:
        if tenant in self.aside:  # its runs are held: nothing may be written for it
            raise self.why[tenant]
        if self._tx is not None and tenant not in self._tx:
            self._begin(tenant)
        return self._open[tenant]

    def heartbeat(self, now: float, report: Callable[[str, Run], None] | None = None,
                  lost: Callable[[str], None] | None = None) -> list[str]:
        """Renew our leases; on shared stores also settle the runs of daemons whose lease ran out (a host
        that died). Returns the tenants whose shared store should be re-read for waiting claims. ``lost``
        is told of each tenant where our own lease had run out and was settled by another daemon (we
        hold a new one now)."""
        mono = time.monotonic()
        if mono < self._beat_at:
            return []
        self._beat_at = mono + self.beat
        reread = []
        for name, store in list(self.items()):
            try:
                renewed = store.heartbeat(self.instance, now=now, expires=now + self.lease_ttl)
            except StoreError as exc:  # its tenant's work is undone; the other stores' goes on
                self.set_aside(name, exc)
                continue
            if not renewed:
                log.error("tenant %s: this daemon's lease on its store had run out (it could not renew it: "
                          "stopped, or cut off from the store) and another daemon settled its runs; "
                          "it holds a new lease now", name)
                if lost is not None:
                    lost(name)
            if not store.exclusive:
                if now >= self.judge_from.get(name, 0.0):
                    orphans.settle(store, name, self.instance, now=now, grace=KILL_GRACE, exclusive=False,
                                   report=functools.partial(report, name) if report else _ignore,
                                   owner=self._owners.get(name))
                reread.append(name)
        return reread

    def check(self) -> None:
        """Each served store that vanished or was replaced under us (a fault, not silence) is set aside."""
        for name, store in list(self.items()):
            try:
                store.check()
            except StoreError as exc:
                self.set_aside(name, exc)

    def recover(self, tenant: str, now: float) -> None:
        """Mend the tenant's store if it can be (a deleted store is written back, a lost connection made
        again); raises StoreError if still broken. Back on a shared store, the leases of the other daemons
        are judged again only a lease's time later: a server restart or a network fault cut them off too,
        and they come back by themselves (each retries within seconds)."""
        store = self._open[tenant]
        note = store.recover()
        if note:
            log.warning("tenant %s: %s", tenant, note)
            self._watch(store)
            if not store.exclusive:
                self.judge_from[tenant] = now + SHARED_LEASE_TTL
        store.check()

    def close(self) -> None:
        for store in self._open.values():
            with contextlib.suppress(StoreError):
                store.detach(self.instance)  # a clean exit: no lease left for the next start to judge
            store.close()
        self._open.clear()
        for claim in [*self._claims.values(), *(held[0] for held in self._held.values())]:
            if claim is not None:
                claim.release()  # after the stores: none writes into a store another daemon may have now
        self._claims.clear()
        self._held.clear()
