"""Several hosts on one PostgreSQL store, under faults: each host is a namespace of its own (tests/system/
pghosts.py), so a daemon judges the others by their leases alone, as on real separate machines. The run
history is what users act on: every check compares it with what the runs' own processes wrote."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from clocklab import faketime_env
from daemonlab import wait_for
from pghosts import Host, hosts, processes, rows, trace_lines, traced

from taskserver.runtime.stores import SHARED_BEAT, SHARED_LEASE_TTL

# a lost lease is found within a lease and a renewal; the bound is generous, a sixth of the lease a daemon
# took in its first minute before (3 minutes)
REAPED = 3 * (SHARED_LEASE_TTL + SHARED_BEAT)


def config(dsn: str, jobs: dict[str, Any]) -> dict[str, Any]:
    return {"task_server": {"run_as": "root", "stop_timeout": "3s", "max_parallel": 8},
            "tenants": {"t": {"login": "app", "store": {"postgresql": dsn}, "jobs": jobs}}}


def long_job(lab: Path, seconds: float = 300, every: str = "2s") -> dict[str, Any]:
    return {"every": every, "command": traced(lab / "trace", lab / "locks", seconds)}


def running(dsn: str, job: str) -> dict[str, Any] | None:
    return next((r for r in rows(dsn) if r["job"] == job and r["state"] == "RUN" and r["pid"]), None)


def ended_row(dsn: str, run_id: int) -> dict[str, Any] | None:
    return next((r for r in rows(dsn) if r["id"] == run_id and r["state"] in ("OK", "ERR")), None)


def leases(dsn: str) -> set[str]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return {h for (h,) in conn.execute("SELECT host FROM taskserver_instances").fetchall()}


def once_per_due(dsn: str, lab: Path) -> None:
    """No (job, due time, attempt) was executed twice, by what the runs' processes wrote."""
    by_id = {r["id"]: r for r in rows(dsn)}
    started = [rid for what, _, _, rid in trace_lines(lab / "trace") if what == "start"]
    assert all(rid in by_id for rid in started), "an execution without a record"
    keys = Counter((by_id[rid]["job"], by_id[rid]["due"], by_id[rid]["attempt"]) for rid in started)
    assert [k for k, n in keys.items() if n > 1] == []


@pytest.fixture
def two(lab: Path, dsn: str) -> Iterator[list[Host]]:
    with hosts(lab, ["alpha", "beta"], config(dsn, {"long": long_job(lab)})) as made:
        yield made


def test_a_daemon_killed_in_its_first_minute_has_its_runs_taken_over_after_its_lease(
        two: list[Host], dsn: str, lab: Path) -> None:
    """kill -9 of the daemon running a long run, seconds after it started: the other host records the run
    `ERR crashed` naming the lost host once the lease (15 s) ran out, and runs the job's later due times.
    A daemon's first lease was three minutes (taken before it knew its store was shared), so the run stayed
    RUN, and the job stopped on every host, for that long. The killed daemon's host lives on, and so does
    the run's process (no host can stop a process on another); when the daemon starts there again it stops
    that process, which nobody records any more (it ran on, beside the job's runs elsewhere, for as long
    as it lasted)."""
    for host in two:
        host.start()
    run = wait_for(lambda: running(dsn, "long"), "a run of the long job", 60)
    victim = next(h for h in two if h.name == run["host"])
    other = next(h for h in two if h is not victim)
    victim.kill()
    ended = wait_for(lambda: ended_row(dsn, run["id"]), "the run of the killed daemon to be settled", REAPED)
    assert (ended["state"], ended["reason"]) == ("ERR", "crashed")
    assert f"host {victim.name}" in ended["message"] and "lost" in ended["message"]
    later = wait_for(lambda: running(dsn, "long"), "the job's next due time to run", REAPED)
    assert later["host"] == other.name and later["due"] > run["due"]
    assert processes(victim.cfg, run["id"]), "the killed daemon's run no longer runs on its host"
    victim.start()
    wait_for(lambda: not processes(victim.cfg, run["id"]), "the restarted daemon to stop the stray", REAPED)
    assert ended_row(dsn, run["id"]) == ended
    once_per_due(dsn, lab)


def test_a_daemon_stopped_beyond_its_lease_stops_what_was_taken_over_and_leaves_its_record(
        lab: Path, dsn: str) -> None:
    """SIGSTOP of the daemon running a run, until another host settled the run as lost (`ERR crashed`) and
    went on with the job, then SIGCONT: the daemon stops that run's process at once (it ran beside the
    job's runs on the other host, unrecorded, for as long as it lasted), writes nothing over the record
    (it wrote OK over it, under the note that said the outcome was unknown), and holds a lease again (it
    went on without one: the other host settled every run it started as lost, at its next renewal)."""
    with hosts(lab, ["alpha", "beta"], config(dsn, {"long": long_job(lab)})) as two:
        for host in two:
            host.start()
        run = wait_for(lambda: running(dsn, "long"), "a run of the long job", 60)
        victim = next(h for h in two if h.name == run["host"])
        victim.signal(signal.SIGSTOP)
        settled = wait_for(lambda: ended_row(dsn, run["id"]), "the other host to settle the run", REAPED)
        assert (settled["state"], settled["reason"]) == ("ERR", "crashed")
        victim.signal(signal.SIGCONT)
        wait_for(lambda: f"run {run['id']} (long): " in victim.log.read_text(),
                 "the stopped daemon to stop the run taken over", REAPED)
        assert ("end", victim.name, "long", run["id"]) not in trace_lines(lab / "trace")
        assert ended_row(dsn, run["id"]) == settled
        wait_for(lambda: leases(dsn) == {"alpha", "beta"}, "both daemons to hold a lease", REAPED)
        once_per_due(dsn, lab)


def test_a_server_outage_longer_than_a_lease_settles_no_live_run(lab: Path, dsn: str, pg_server: Any) -> None:
    """The server stopped (immediate) for longer than a lease while both hosts run a long run: nobody could
    renew a lease meanwhile, so the first daemon back found the other's lease expired and settled its live
    run as lost (and the other, back a moment later, wrote OK over that when the run ended). A daemon back
    from a lost connection judges no lease until the others had a lease's time to come back too."""
    jobs = {"long1": long_job(lab), "long2": long_job(lab)}
    doc = config(dsn, jobs)
    doc["task_server"]["max_parallel"] = 1  # one long run on each host
    with hosts(lab, ["alpha", "beta"], doc) as two:
        for host in two:
            host.start()
        first = wait_for(lambda: both_running(dsn), "a long run on each host", 60)
        pg_server.stop("immediate")
        wait_for(lambda: all("storage fault" in h.log.read_text() for h in two), "both to see the outage", 60)
        time.sleep(SHARED_LEASE_TTL + SHARED_BEAT)  # the outage: every lease runs out
        pg_server.start()
        back = [wait_for(lambda h=h: recovered(h), "the daemons to reconnect", 60) for h in two]
        wait_for(lambda: renewed_after(dsn, max(back)), "both to renew after both were back", 60)
        assert both_running(dsn) == first
    assert not [r for r in rows(dsn) if r["reason"] == "crashed"]
    once_per_due(dsn, lab)


def both_running(dsn: str) -> dict[str, int] | None:
    """Host -> id of its long run, once each host runs one."""
    got = {r["host"]: r["id"] for r in rows(dsn) if r["state"] == "RUN" and r["pid"]}
    return got if len(got) == 2 else None


def recovered(host: Host) -> float | None:
    """When the host's daemon logged that the store was writable again (its own clock: the test's)."""
    for line in host.log.read_text().splitlines():
        if "the store is writable again" in line:
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
    return None


def renewed_after(dsn: str, when: float) -> bool:
    import psycopg

    with psycopg.connect(dsn) as conn:
        beats = [b for (b,) in conn.execute("SELECT heartbeat FROM taskserver_instances").fetchall()]
    return len(beats) == 2 and min(beats) > when


def test_a_host_whose_clock_is_behind_keeps_its_lease(lab: Path, dsn: str) -> None:
    """One host's clock 30 s behind (libfaketime), each host running a long run: its leases ended 30 s
    early on the other host's clock, so the other settled its live run as lost at once, and every run it
    started after. The documentation promised that hosts whose clocks differ by less than about two
    minutes never reap a live lease; a lease is now measured on the server's clock."""
    rc = lab / "faketime.rc"
    rc.write_text("-30\n")
    doc = config(dsn, {"long1": long_job(lab), "long2": long_job(lab)})
    doc["task_server"]["max_parallel"] = 1  # one long run on each host
    with hosts(lab, ["alpha", "beta"], doc) as (alpha, beta):
        alpha.start()
        beta.start(faketime_env(rc))
        first = wait_for(lambda: both_running(dsn), "a long run on each host", 60)
        started = next(r["started"] for r in rows(dsn) if r["id"] == first["alpha"])  # alpha's clock
        # judged by alpha a lease and two renewals after both ran: beta's lease ran out on its clock
        wait_for(lambda: alpha_beat(dsn) > started + SHARED_LEASE_TTL + 2 * SHARED_BEAT,
                 "alpha's renewals", 120)
        assert both_running(dsn) == first
        assert leases(dsn) == {"alpha", "beta"}
    assert not [r for r in rows(dsn) if r["reason"] == "crashed"]


def alpha_beat(dsn: str) -> float:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT heartbeat FROM taskserver_instances WHERE host='alpha'").fetchone()
    return float(row[0]) if row else 0.0


def test_an_interval_job_keeps_one_grid_across_hosts_whose_clocks_differ(lab: Path, dsn: str) -> None:
    """An interval job on two hosts, one clock 5 s behind (libfaketime), that host restarted meanwhile: its
    due times stay the ones the schedule gives, each run once. The host behind found the stored last due
    time after its now at its start, took it for a clock set back and moved it back for every host, and
    then counted its own grid from there: both hosts ran the job, on two grids, twice per interval."""
    rc = lab / "faketime.rc"
    rc.write_text("-5\n")
    with hosts(lab, ["alpha", "beta"], config(dsn, {"tick": long_job(lab, 0)})) as (alpha, beta):
        alpha.start()
        wait_for(lambda: dues_after(dsn, 0.0) >= 2, "alpha's first runs", 60)
        for _ in range(2):  # beta's start, then its restart
            beta.stop()
            beta.start(faketime_env(rc))
            seen = time.time()
            wait_for(lambda s=seen: dues_after(dsn, s) >= 4, "due times after beta's start", 60)
    dues = sorted(r["due"] for r in rows(dsn) if r["job"] == "tick")
    assert [round(b - a, 3) for a, b in itertools.pairwise(dues) if b - a < 2 - 0.01] == []
    assert [r for r in rows(dsn) if r["state"] != "OK"] == []
    once_per_due(dsn, lab)


def dues_after(dsn: str, when: float) -> int:
    return sum(1 for r in rows(dsn) if r["state"] == "OK" and r["due"] > when)


def test_one_due_time_at_most_waits_for_a_job_that_runs_on_another_host(lab: Path, dsn: str) -> None:
    """A job due every second that runs four, on two hosts: one due time at most waits behind its run, the
    others are recorded missed, as on one host. Each host kept one waiting due time of its own, and
    dropped it when it found the job running on the other host, so it claimed the next: five waited at
    once, and then ran one after another, seconds late."""
    with hosts(lab, ["alpha", "beta"], config(dsn, {"slow": long_job(lab, 4, every="1s")})) as two:
        for host in two:
            host.start()
        wait_for(lambda: any(r["state"] == "OK" for r in rows(dsn)), "a first run", 60)
        seen = time.time()
        peak = 0
        while time.time() < seen + 4 * SHARED_BEAT:  # watched for four renewals (each re-reads the claims)
            peak = max(peak, sum(1 for r in rows(dsn) if r["state"] == "QUE"))
    assert peak <= 1
    notes = {r["message"] for r in rows(dsn) if r["reason"] == "missed"}
    assert any("on another host" in (n or "") for n in notes), notes
    # one job, no queue, eight slots: no due time waited for a queue or a free slot (the notes said so
    # when a due time waited here for the job's run on the other host)
    assert not [n for n in notes if "free slot" in (n or "")], notes
    once_per_due(dsn, lab)


def test_a_host_stopped_inside_a_transaction_holds_up_the_others_for_a_lease_at_most(
        lab: Path, dsn: str) -> None:
    """SIGSTOP of a daemon in the middle of a wake-up's transaction, holding the tenant's lock that every
    acquire takes (as a host that hangs, or is cut off, at that moment does): the other host started
    nothing any more, and could not even settle the stopped one's lease, for as long as the stop lasted
    (the server keeps an idle connection's locks until TCP gives up on it, hours on a lost network). The
    server now ends a session idle inside a transaction after a lease's time, which frees its locks."""
    jobs = {f"b{i}": {"every": "1s", "command": ["/bin/true"]} for i in range(300)}
    doc = config(dsn, jobs)
    doc["task_server"]["max_parallel"] = 32
    with hosts(lab, ["alpha", "beta"], doc) as (alpha, beta):
        alpha.start()
        beta.start()
        wait_for(lambda: len({r["host"] for r in rows(dsn) if r["state"] == "OK"}) == 2, "runs on both", 60)
        caught = wait_for(lambda: stopped_holding_the_lock(beta, dsn), "beta stopped holding the lock", 120)
        wait_for(lambda: started_on(dsn, "alpha", caught), "alpha to start a run again", 4 * SHARED_LEASE_TTL)
        beta.signal(signal.SIGCONT)
        wait_for(lambda: leases(dsn) == {"alpha", "beta"}, "beta to come back", REAPED)
    assert not [r for r in rows(dsn) if r["state"] == "RUN"]
    once_per_due(dsn, lab)


def stopped_holding_the_lock(host: Host, dsn: str) -> float | None:
    """Stop the host's daemon; when it stopped holding an advisory lock (inside an acquire's transaction)
    the time, else it goes on and None."""
    host.signal(signal.SIGSTOP)
    at = time.time()
    if advisory_held(dsn):
        time.sleep(0.5)  # still held: not a transaction of alpha's that was about to end
        if advisory_held(dsn):
            return at
    host.signal(signal.SIGCONT)
    time.sleep(0.1)
    return None


def advisory_held(dsn: str) -> bool:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype='advisory' AND granted").fetchone()
    return bool(row and row[0])


def started_on(dsn: str, host: str, after: float) -> bool:
    return any(r["host"] == host and (r["started"] or 0) > after + 1 for r in rows(dsn))


def test_two_tenants_orphans_with_the_same_run_ids_are_each_settled_by_their_own_processes(
        lab: Path, pg_server: Any) -> None:
    """Two tenants, each in a database of its own, so their run ids are the same (1 and 2); one daemon
    serves both and is killed (kill -9). In t run 1 lives on and run 2's process is gone; in u the other
    way round. The restarted daemon judges each run by its own tenant's processes: a live process of u's
    run 2 is no evidence about t's run 2, and is not stopped for it."""
    from taskserver.runtime import pg_store

    dsns = {t: str(pg_server.database()) for t in ("t", "u")}
    for url in dsns.values():
        pg_store.migrate(url)
    jobs = {"live": {"command": ["sleep", "300"]}, "gone": {"command": ["sleep", "300"]}}
    doc = config(dsns["t"], jobs)
    doc["tenants"]["u"] = {"login": "app", "store": {"postgresql": dsns["u"]}, "jobs": jobs}
    order = {"t": ("live", "gone"), "u": ("gone", "live")}
    with hosts(lab, ["alpha"], doc) as (host,):
        ids = {(t, name): int(host.cli("jobs", "run", "--tenant", t, name).stdout)
               for t, names in order.items() for name in names}
        assert ids == {("t", "live"): 1, ("t", "gone"): 2, ("u", "gone"): 1, ("u", "live"): 2}
        host.start()
        for t, url in dsns.items():
            wait_for(lambda url=url: len([r for r in rows(url) if r["pid"]]) == 2, f"both runs of {t}", 60)
        host.kill()
        for t in order:
            gone = tenant_processes(host.cfg, t, ids[t, "gone"])
            assert gone, f"tenant {t}'s run {ids[t, 'gone']} no longer runs"
            for pid in gone:
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda t=t: not tenant_processes(host.cfg, t, ids[t, "gone"]), "the end of a run", 30)
        host.start()
        for t, url in dsns.items():
            wait_for(lambda url=url: all(r["state"] == "ERR" for r in rows(url)), f"{t}'s runs settled", 60)
        for t, url in dsns.items():
            got = {r["id"]: (r["state"], r["reason"]) for r in rows(url)}
            assert got == {ids[t, "live"]: ("ERR", "interrupted"), ids[t, "gone"]: ("ERR", "crashed")}, t


def tenant_processes(cfg: Path, tenant: str, run_id: int) -> list[int]:
    """Live processes of run ``run_id`` of ``tenant`` of the daemon of ``cfg`` (by their environment)."""
    want = {f"TASKSERVER_TENANT={tenant}".encode()}
    return [pid for pid in processes(cfg, run_id) if want <= _environ(pid)]


def _environ(pid: int) -> set[bytes]:
    try:
        return set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except OSError:
        return set()


def test_a_claim_another_daemon_left_is_taken_though_another_tenant_waits_with_the_same_run_id(
        lab: Path, pg_server: Any) -> None:
    """Two tenants in databases of their own (their run ids overlap). Tenant t's job runs long, so its next
    due time waits in the daemon, as run X. A claim that another daemon made in tenant u's store and left
    there (the same `claim` every daemon makes) also has id X: the daemon takes it up at its next renewal.
    It was skipped as "ours already" while any tenant had a run X waiting, for as long as t's job ran."""
    from taskserver.runtime import pg_store

    dsns = {t: str(pg_server.database()) for t in ("t", "u")}
    for url in dsns.values():
        pg_store.migrate(url)
    doc = config(dsns["t"], {"a": long_job(lab)})
    doc["tenants"]["u"] = {"login": "app", "store": {"postgresql": dsns["u"]},
                           "jobs": {"b": {"cron": "0 0 1 1 *", "command": ["sleep", "300"]}}}
    with hosts(lab, ["alpha"], doc) as (host,):
        host.start()
        wait_for(lambda: running(dsns["t"], "a"), "t's long run", 60)
        rid = wait_for(lambda: next((r["id"] for r in rows(dsns["t"]) if r["state"] == "QUE"), None),
                       "t's next due time to wait behind it", 60)
        import psycopg

        with psycopg.connect(dsns["u"]) as conn:  # u's next run id is X
            conn.execute("SELECT setval(pg_get_serial_sequence('taskserver_runs', 'id'), %s)", (rid - 1,))
        store = pg_store.PgStore("u", dsns["u"])
        try:
            now = time.time()
            assert store.claim("b", now, now=now) == rid
        finally:
            store.close()
        wait_for(lambda: running(dsns["u"], "b"), "u's claim to be taken up and run", REAPED)
        assert any(r["id"] == rid and r["state"] == "QUE" for r in rows(dsns["t"]))  # t's still waited
