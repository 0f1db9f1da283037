"""What a tenant's user writes into their own store (their file: docs/configuration.md `run_as`) is hostile
input for the daemon that serves every tenant as root.

- A forged RUN row naming another process (its pid, its start time and the boot id, all world-readable in
  /proc) left by a "dead daemon": at its next start the daemon settles its predecessor's runs, and it
  stopped (TERM, then KILL, with the process group) whatever process the row named, a root process or
  another tenant's. Now it signals only processes the tenant's own user could signal itself (real or saved
  uid), as the kernel's own rule for kill(2) says.
- Rows whose values are not of their column's type (SQLite keeps what it is given): a creation time that is
  text took the whole daemon down (exit 70) at the task's start, `jobs history` and `jobs show` failed with
  an internal error, and an unknown state in `reported` was written into the run's state. Now each such
  row is ended ERR without being started, shown with safe values, and the other tenant's jobs go on.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from secusers import Site, as_user, lab, needs_root, tenant_store, two_tenants, wait_for

pytestmark = needs_root
JOB = "{command: [/bin/true], every: 1}"


@pytest.fixture
def site() -> Iterator[Site]:
    with lab() as world:
        yield two_tenants(world, JOB)


def _rows(site: Site, tenant: str) -> dict[int, dict[str, Any]]:
    db = sqlite3.connect(f"file:{tenant_store(site, tenant)}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in db.execute("SELECT * FROM runs ORDER BY id")}
    finally:
        db.close()


def _as_a(site: Site, sql: str) -> str:
    """SQL run by tenant a's user on a's own store with the real sqlite3 shell."""
    res = subprocess.run(as_user(site.a, ["sqlite3", str(tenant_store(site, "a"))]), input=sql, text=True,
                         capture_output=True, env=site.world.env({"HOME": str(site.a.home)}), timeout=60,
                         check=False)
    assert res.returncode == 0 and not res.stderr, res
    return res.stdout


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _command(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return b""


def _served(site: Site) -> bool:
    return all(any(r["state"] == "OK" for r in _rows(site, t).values()) for t in "ab")


def test_a_forged_orphan_row_never_makes_the_daemon_stop_a_process_of_someone_else(site: Site) -> None:
    world = site.world
    daemon = world.daemon(site.cfg)
    assert wait_for(lambda: _served(site), 60), world.log()
    # the victims: a root process and one of tenant b's user, each leading a group of its own
    root_victim = subprocess.Popen(["setsid", "sleep", "300"])
    b_victim = subprocess.Popen(as_user(site.b, ["setsid", "sleep", "300"]))
    own = subprocess.Popen(as_user(site.a, ["setsid", "sleep", "300"]))  # a's own: a may stop it anyway
    try:
        # each has exec'd sleep (setpriv and setsid exec in place): the start time read below is the sleep's
        assert wait_for(lambda: all(_command(p.pid) == b"sleep" for p in (root_victim, b_victim, own)))
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        forged = "".join(
            "INSERT INTO runs (job, state, created, started, pid, proc_start, boot_id, instance, attempt, "
            f"queued) VALUES ('tick', 'RUN', 1, 1, {p.pid}, {_stat(p.pid)[19]}, '{boot}', 'gone', 0, 0);\n"
            for p in (root_victim, b_victim, own))
        _as_a(site, forged)
        daemon.terminate()
        daemon.wait(60)
        world.daemon(site.cfg)  # the next start settles the runs its "predecessor" left
        rows = _rows(site, "a")
        forged_ids = sorted(i for i, r in rows.items() if r["instance"] == "gone")
        assert len(forged_ids) == 3, rows
        assert wait_for(lambda: all(_rows(site, "a")[i]["state"] == "ERR" for i in forged_ids), 60), \
            world.log()
        assert wait_for(lambda: own.poll() is not None, 30), "a's own process, named by a's row, lives on"
        assert root_victim.poll() is None, "the daemon stopped a root process a tenant's row named"
        assert b_victim.poll() is None, "the daemon stopped tenant b's process a's row named"
        assert wait_for(lambda: _served(site), 60), world.log()
    finally:
        for p in (root_victim, b_victim, own):
            p.kill()
            p.wait()


def test_a_real_orphan_of_a_tenant_user_is_still_stopped_at_the_restart(site: Site) -> None:
    """The rule above keeps what it is for: a run of tenant a's user left by a daemon killed -9 is found (by
    its recorded pid and by its environment) and stopped by the next daemon, and recorded so."""
    world = site.world
    cfg = site.cfg
    cfg.write_text(cfg.read_text().replace(
        "      tick: {command: [/bin/true], every: 1}\n  b:",
        "      tick: {command: [/bin/sleep, '300'], every: 1}\n  b:"))
    daemon = world.daemon(cfg)
    assert wait_for(lambda: any(r["state"] == "RUN" and r["pid"] for r in _rows(site, "a").values()), 60), \
        world.log()
    run = next(r for r in _rows(site, "a").values() if r["state"] == "RUN" and r["pid"])
    assert Path(f"/proc/{run['pid']}/status").stat().st_uid == site.a.uid
    daemon.kill()
    daemon.wait(30)
    assert _command(run["pid"]) == b"/bin/sleep", "the run's process went with its daemon"
    world.daemon(cfg)
    assert wait_for(lambda: _rows(site, "a")[run["id"]]["state"] == "ERR", 60), world.log()
    assert _rows(site, "a")[run["id"]]["reason"] == "interrupted", _rows(site, "a")[run["id"]]
    assert wait_for(lambda: _command(run["pid"]) != b"/bin/sleep", 30), "the orphan lives on"


# (columns and values) of queued tasks a's user writes past `jobs enqueue`'s checks; SQLite keeps them all
HOSTILE = [
    ("created", "'abc'"), ("created", "1e308"), ("created", "-1e20"), ("due", "'soon'"),
    ("started", "x'00ff'"), ("attempt", "'x'"), ("attempt", "-1"), ("not_before", "'later'"),
    ("queue", "x'00ff'"), ("argv", "x'5b5d'"), ("message", "x'ff'"), ("pid", "'one'"), ("exit_code", "1.5"),
    ("proc_start", "'t'"), ("boot_id", "x'00'"),
]
TASK = {"job": "''", "state": "'QUE'", "created": "1", "argv": "'[\"/bin/true\"]'", "queued": "1"}


def _insert(**columns: str) -> str:
    """An INSERT of a queued /bin/true task with ``columns`` (SQL literals) in place of its own."""
    row = {**TASK, **columns}
    return f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join(row.values())});"


def test_rows_of_the_wrong_types_end_err_and_take_nothing_down(site: Site) -> None:
    world = site.world
    daemon = world.daemon(site.cfg)
    assert wait_for(lambda: _served(site), 60), world.log()
    sql = ["BEGIN;", *(_insert(**{column: value}) for column, value in HOSTILE)]
    # a task's own report of a state that does not exist, and rows in states that do not
    sql += [_insert(reported="'MAYBE'"), _insert(job="'tick'", state="'BOGUS'", queued="0"),
            _insert(job="'tick'", state="'OK'", finished="'x'", queued="0")]
    sql.append("COMMIT; SELECT max(id) FROM runs;")
    last = int(_as_a(site, "\n".join(sql)).split()[-1])
    first = last - len(HOSTILE) - 2
    hostile, reported = range(first, first + len(HOSTILE)), first + len(HOSTILE)
    woke = world.ts(site.cfg, "jobs", "enqueue", "--tenant", "a", "--", "/bin/true", user=site.a)
    assert woke.returncode == 0, woke
    good = int(woke.stdout)
    assert wait_for(lambda: all(_rows(site, "a")[i]["state"] in ("OK", "ERR")
                                for i in [*hostile, reported, good]), 60), world.log()
    assert daemon.poll() is None, world.log()
    rows = _rows(site, "a")
    for i, (column, _) in zip(hostile, HOSTILE, strict=True):
        assert (rows[i]["state"], rows[i]["reason"]) == ("ERR", "spawn failed"), rows[i]
        assert f"{column} is " in rows[i]["output"], rows[i]
    assert (rows[reported]["state"], rows[reported]["reason"]) == ("OK", None), rows[reported]
    assert rows[good]["state"] == "OK", rows[good]
    # tenant b went on meanwhile, and goes on
    since = time.time()
    assert wait_for(lambda: any(r["state"] == "OK" and (r["started"] or 0) > since
                                for r in _rows(site, "b").values()), 60), world.log()
    # the commands read every row: one run each, the whole history, as root and as a's user
    for who in (None, site.a):
        for argv in (["jobs", "history", "--tenant", "a", "--limit", "100"],
                     *(["jobs", "show", "--tenant", "a", str(i)] for i in range(first, last + 1))):
            res = world.ts(site.cfg, *argv, user=who)
            assert res.returncode == 0 and "internal error" not in res.stderr, (argv, res)
    shown = world.ts(site.cfg, "jobs", "show", "--tenant", "a", "--json", str(last - 1))
    assert json.loads(shown.stdout)["malformed"] == "state is 'BOGUS'", shown
    daemon.terminate()
    assert daemon.wait(60) == 0, world.log()
    assert "Traceback" not in world.log() and "internal error" not in world.log(), world.log()
    # the other tables, read at every start: a last due time, a pause and a lease of the wrong types
    _as_a(site, "UPDATE jobs SET last_due='abc' WHERE name='tick';\n"
                "INSERT INTO paused (job, since, who) VALUES (x'ff00', 'then', x'ff');\n"
                "INSERT INTO instances VALUES ('zz', 1, 'pid', 2, 'x', 3, 'a', 'b', 'c');\n")
    again = world.daemon(site.cfg)
    since = time.time()
    for tenant in "ab":
        assert wait_for(lambda t=tenant: any(r["state"] == "OK" and (r["started"] or 0) > since
                                             for r in _rows(site, t).values()), 60), world.log()
    for argv in (["jobs", "list"], ["status"]):
        res = world.ts(site.cfg, *argv)
        assert res.returncode == 0 and "internal error" not in res.stderr, (argv, res)
    again.terminate()
    assert again.wait(60) == 0 and "Traceback" not in world.log(), world.log()


def test_a_giant_value_in_a_waiting_row_does_not_blow_up_the_daemon(site: Site) -> None:
    """A task row with 300 MB of output (no task that has not run has any): the daemon read every column of
    every waiting row, so one such row made the daemon serving every tenant grow to 883 MB (past its memory
    limit: it exited for a restart, to read the row again) and stall the other tenants' jobs. Waiting and
    running rows are now read without their output, and the acquire empties it."""
    world = site.world
    daemon = world.daemon(site.cfg)
    assert wait_for(lambda: _served(site), 60), world.log()
    _as_a(site, _insert(output="hex(zeroblob(150000000))") + "\n")
    woke = world.ts(site.cfg, "jobs", "enqueue", "--tenant", "a", "--", "/bin/true", user=site.a)
    assert woke.returncode == 0, woke
    assert wait_for(lambda: all(r["state"] in ("OK", "ERR") for r in _rows(site, "a").values()
                                if r["queued"]), 120), world.log()
    since = time.time()
    assert wait_for(lambda: any(r["state"] == "OK" and (r["started"] or 0) > since
                                for r in _rows(site, "b").values()), 60), world.log()
    assert daemon.poll() is None, world.log()
    peak = _kib(daemon.pid, "VmHWM")  # the most the daemon ever held resident
    assert peak < 128 * 1024, f"the daemon held {peak // 1024} MiB at its peak"


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")
