"""A store the daemon holds (a full disk at its start) is that daemon's as a store it serves is: a second
daemon on the same store is refused at once, not held beside it.

Two configs name the same state dir and tenant, on a real 2 MiB tmpfs (mounted in the daemons' mount
namespace, tests/system/runns.py) that is filled while no daemon runs. Daemon A is started with `taskserver
start` and holds its runs; `taskserver start` and `run --once` of config B must then fail with one line
naming A, exactly as they do while A serves the store (tests/faults/test_stop_and_share.py). Once the file
is removed, A runs what it held; B is still refused. The history is then audited (tests/faults/faultlab.py):
one daemon instance ran every run since A's start, nothing twice, nothing lost. As root (root's configs)
and as a throwaway user (the user's own configs, the state dir a tmpfs of the user's).

The other ways a daemon came up on a store without its lock: a store on a read-only file system (held, its
lock file locked read-only, the holder named by its pid until it can write who it is); a lock file that
cannot be created at all (no inode left: the start ends in one line); a reload naming another path for a
held store (the daemon keeps the store it holds, as it keeps a store it serves); and a lock file deleted
under a serving daemon (taken again by that daemon, so a second daemon started then is refused as well;
before, it made a new lock file and took the store beside the first).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import runns
from daemonlab import wait_for
from faultlab import (
    audit,
    fill,
    in_namespace,
    job,
    kill_everything,
    lab_config,
    rows,
    seen,
    taskserver_as,
)
from secusers import Lab, User, lab, needs_root, one_error

pytestmark = needs_root
EVERY = 1.0
HELD_SAYS = "no space left on device; runs are held until it can be written"
BUSY = "in use by another taskserver daemon"


@dataclass
class Pair:
    """Two configs on one state dir (a tmpfs) and tenant, and who runs their commands."""

    lab: Path
    a: Path
    b: Path
    user: User | None
    world: Lab
    at: str = "t"  # the store's path in the state dir, without `.sqlite`

    @property
    def store(self) -> Path:
        return self.lab / "state" / f"{self.at}.sqlite"

    def rows(self) -> list[dict[str, Any]]:
        return rows(self.a, self.at)

    def ts(self, cfg: Path, *argv: str) -> subprocess.CompletedProcess[str]:
        return taskserver_as(self.user, self.world, cfg, *argv)

    def pid(self, cfg: Path) -> str:
        status = self.ts(cfg, "status")
        assert status.returncode == 0, status
        return status.stdout.split("pid ", 1)[1].split(",", 1)[0].split(")", 1)[0]


def _jobs(where: Path) -> dict[str, Any]:
    return {"tick": {**job(where, 0.05, every=EVERY), "catch_up": "all"}}


def _user_config(user: User, name: str) -> Path:
    """One of the user's own configs (no run_as: its daemon runs as the user)."""
    (user.home / "locks").mkdir(exist_ok=True)
    doc = {"task_server": {"state_dir": str(user.home / "state")},
           "tenants": {"t": {"login": user.name, "jobs": _jobs(user.home)}}}
    cfg = user.home / name
    cfg.write_text(json.dumps(doc, indent=2) + "\n")
    cfg.chmod(0o600)
    for path in (cfg, user.home / "locks"):
        os.chown(path, user.uid, user.gid)
    return cfg


@pytest.fixture(params=["root", "user"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    with lab() as world:
        if request.param == "root":
            where, user, mount = tmp_path, None, "size=2m,mode=0700"
            a, b = (lab_config(where, _jobs(where), name=n) for n in ("a.yaml", "b.yaml"))
        else:
            user = world.user("held")
            where, mount = user.home, f"size=2m,mode=0700,uid={user.uid},gid={user.gid}"
            a, b = (_user_config(user, n) for n in ("a.yaml", "b.yaml"))
        (where / "state").mkdir(exist_ok=True)
        in_namespace("mount", "-t", "tmpfs", "-o", mount, "tmpfs", str(where / "state"))
        got = Pair(where, a, b, user, world)
        try:
            yield got
        finally:
            for cfg in (a, b):
                got.ts(cfg, "stop")
                kill_everything(cfg)
            subprocess.run([*runns.prefix(), "umount", "-l", str(where / "state")], check=False)


def _refused(pair: Pair, holder: str) -> None:
    """B's `start` and `run --once`: one line naming A's pid, as against a store A serves."""
    for argv in (("start",), ("run", "--once")):
        line = one_error(pair.ts(pair.b, *argv))
        assert f"{pair.store}: {BUSY} (pid {holder}" in line, line
    assert pair.ts(pair.b, "status").returncode != 0  # (LSB: not running)


def test_a_second_daemon_is_refused_from_a_store_the_first_holds(pair: Pair, figures: list[str]) -> None:
    assert pair.ts(pair.a, "start").returncode == 0  # a first history, then A is stopped
    wait_for(lambda: sum(r["state"] == "OK" for r in rows(pair.a)) >= 3, "a first history")
    assert pair.ts(pair.a, "stop").returncode == 0
    filler = seen(pair.lab / "state") / "filler"
    fill(filler)
    held_at = time.time()
    started = pair.ts(pair.a, "start")
    assert started.returncode == 0 and f"store {pair.store}: {HELD_SAYS}" in started.stderr, started
    holder = pair.pid(pair.a)
    _refused(pair, holder)
    filler.unlink()
    wait_for(lambda: "degraded" not in pair.ts(pair.a, "status").stdout, "A to resume", timeout=90)
    wait_for(lambda: any(r["state"] == "OK" and (r["due"] or 0) > time.time() - 2 * EVERY
                         for r in rows(pair.a)), "a run on time again")
    _refused(pair, holder)  # served now: refused alike
    assert pair.ts(pair.a, "stop").returncode == 0
    since = [r for r in rows(pair.a) if (r["started"] or 0) >= held_at]
    assert since and len({r["instance"] for r in since}) == 1, since  # one daemon ran them all
    fig = audit(pair.a, f"a store held, a second daemon ({'root' if pair.user is None else 'a user'})", 1,
                {"tick": EVERY})
    figures.append(fig.line())
    fig.assert_clean()


@pytest.mark.parametrize("pair", ["root"], indirect=True)
def test_a_lock_file_deleted_under_the_daemon_is_taken_again(pair: Pair, figures: list[str]) -> None:
    lock = seen(pair.lab / "state") / "t.sqlite.lock"
    assert pair.ts(pair.a, "start").returncode == 0
    wait_for(lambda: sum(r["state"] == "OK" for r in rows(pair.a)) >= 2, "A to run the job")
    gone = os.stat(lock).st_ino
    lock.unlink()
    wait_for(lambda: lock.exists() and os.stat(lock).st_ino != gone and b'"pid"' in lock.read_bytes(),
             "A to take its lock again")
    _refused(pair, pair.pid(pair.a))
    before = len(rows(pair.a))
    wait_for(lambda: len(rows(pair.a)) > before + 1, "A to go on running the job")
    assert pair.ts(pair.a, "stop").returncode == 0
    assert len({r["instance"] for r in rows(pair.a)}) == 1
    fig = audit(pair.a, "a lock file deleted under the daemon", 1, {"tick": EVERY})
    figures.append(fig.line())
    fig.assert_clean()


def _history(pair: Pair) -> None:
    """A first history (so the store and its lock file exist), then A is stopped."""
    assert pair.ts(pair.a, "start").returncode == 0
    wait_for(lambda: sum(r["state"] == "OK" for r in pair.rows()) >= 3, "a first history")
    assert pair.ts(pair.a, "stop").returncode == 0


def _on_time(pair: Pair) -> None:
    wait_for(lambda: "degraded" not in pair.ts(pair.a, "status").stdout, "A to resume", timeout=90)
    wait_for(lambda: any(r["state"] == "OK" and (r["due"] or 0) > time.time() - 2 * EVERY
                         for r in pair.rows()), "a run on time again")


@pytest.mark.parametrize("pair", ["root"], indirect=True)
def test_a_store_on_a_read_only_file_system_is_held_and_claimed(pair: Pair, figures: list[str]) -> None:
    """The store on a file system of its own inside the state dir (a state dir that cannot be written ends
    the start), remounted read-only while no daemon runs: A holds its runs with its lock file locked
    read-only, named by its pid until the file system can be written again."""
    ro = pair.lab / "state" / "ro"
    seen(ro).mkdir()
    in_namespace("mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(ro))
    for cfg in (pair.a, pair.b):
        doc = json.loads(cfg.read_text())
        doc["tenants"]["t"]["store"] = {"sqlite": "ro/t.sqlite"}
        cfg.write_text(json.dumps(doc, indent=2) + "\n")
    pair.at = "ro/t"
    _history(pair)
    in_namespace("mount", "-o", "remount,ro", str(ro))
    started = pair.ts(pair.a, "start")
    assert started.returncode == 0 and f"store {pair.store}: read-only file system" in started.stderr, started
    holder = pair.pid(pair.a)
    line = one_error(pair.ts(pair.b, "run", "--once"))
    assert f"{BUSY} (pid {holder}; it has not said who it is" in line, line
    _refused(pair, holder)
    in_namespace("mount", "-o", "remount,rw", str(ro))
    _on_time(pair)
    line = one_error(pair.ts(pair.b, "run", "--once"))  # A says who it is once it can
    assert f"{BUSY} (pid {holder} on host" in line, line
    assert pair.ts(pair.a, "stop").returncode == 0
    fig = audit(pair.a, "a store held on a read-only file system", 1, {"tick": EVERY}, store=pair.at)
    figures.append(fig.line())
    fig.assert_clean()


@pytest.mark.parametrize("pair", ["root"], indirect=True)
def test_a_lock_file_that_cannot_be_created_ends_the_start_in_one_line(pair: Pair) -> None:
    """No inode left on the state dir's file system and no lock file yet: no daemon can hold the store, so
    none comes up on it (before, each came up holding its runs, unlocked)."""
    state = pair.lab / "state"
    in_namespace("mount", "-o", "remount,nr_inodes=16", str(state))
    taken = 0
    with contextlib.suppress(OSError):
        while True:
            (seen(state) / f"inode-{taken}").touch()
            taken += 1
    assert taken > 0
    for cfg in (pair.a, pair.b):
        line = one_error(pair.ts(cfg, "run"))
        assert f"cannot take the store's lock {pair.store}.lock: No space left on device" in line, line
        assert pair.ts(cfg, "status").returncode != 0


@pytest.mark.parametrize("pair", ["root"], indirect=True)
def test_a_reload_keeps_the_store_it_holds(pair: Pair, figures: list[str]) -> None:
    """A reload naming another store path for a held tenant (and a new job, to see the reload applied):
    the daemon keeps holding, then serves, the store it started with, as it does a store it serves."""
    _history(pair)
    filler = seen(pair.lab / "state") / "filler"
    fill(filler)
    assert pair.ts(pair.a, "start").returncode == 0
    holder = pair.pid(pair.a)
    doc = json.loads(pair.a.read_text())
    doc["tenants"]["t"]["store"] = {"sqlite": "moved.sqlite"}
    doc["tenants"]["t"]["jobs"]["tock"] = {**job(pair.lab, 0.05, every=EVERY), "catch_up": "all"}
    pair.a.write_text(json.dumps(doc, indent=2) + "\n")
    reload = pair.ts(pair.a, "reload")
    assert reload.returncode == 0 and "tenants.t.store" in reload.stderr, reload
    wait_for(lambda: "2 jobs" in pair.ts(pair.a, "status").stdout, "A to apply the reload")
    _refused(pair, holder)
    filler.unlink()
    _on_time(pair)
    wait_for(lambda: any(r["job"] == "tock" and r["state"] == "OK" for r in rows(pair.a)), "the new job")
    _refused(pair, holder)
    assert pair.ts(pair.a, "stop").returncode == 0
    assert not (seen(pair.lab / "state") / "moved.sqlite").exists()
    fig = audit(pair.a, "a reload naming another path for a held store", 1, {"tick": EVERY})
    figures.append(fig.line())
    fig.assert_clean()
