"""A daemon started on a full disk comes up and holds its runs, as one whose disk fills while it runs does.

The state dir is a real 2 MiB tmpfs (mounted in the daemons' mount namespace, tests/system/runns.py), filled
with a file while no daemon runs. The daemon is started with `taskserver start`, as a SysV script starts it:
no supervisor would start it again if it exited. It must come up (exit 0, a pid file), say in `status` which
store cannot be written and why, start nothing it could not record, and once the file is removed record and
catch up what it held by each job's catch_up policy. Then the history is read back and audited
(tests/faults/faultlab.py): no contradiction, nothing run twice, nothing lost, nothing left RUN.

Root starts root's config; a throwaway user starts that user's own config (its state dir a tmpfs of its
own). A brand-new store that cannot even be created is held the same way, and created once there is room.
"""

from __future__ import annotations

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
    trace,
)
from secusers import Lab, User, lab, needs_root

from taskserver.runtime.plans import HELD

pytestmark = needs_root
EVERY = 1.0  # seconds between two due times of each job
HELD_SAYS = "no space left on device; runs are held until it can be written"


@dataclass
class Site:
    """A config, its state dir on a tmpfs, and who runs its commands (root, or the config's owner)."""

    lab: Path  # the config's directory: the jobs' trace and locks, and state/
    cfg: Path
    user: User | None
    world: Lab

    @property
    def store(self) -> Path:
        return self.lab / "state" / "t.sqlite"

    def ts(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return taskserver_as(self.user, self.world, self.cfg, *argv)

    def fill(self) -> Path:
        filler = seen(self.lab / "state") / "filler"
        fill(filler)
        return filler


def _jobs(where: Path) -> dict[str, Any]:
    return {"all": {**job(where, 0.05, every=EVERY), "catch_up": "all"},
            "latest": {**job(where, 0.05, every=EVERY), "catch_up": "latest"}}


@pytest.fixture(params=["root", "user"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    with lab() as world:
        if request.param == "root":
            where, user, mount = tmp_path, None, "size=2m,mode=0700"
            cfg = lab_config(where, _jobs(where))
        else:
            user = world.user("full")
            where, mount = user.home, f"size=2m,mode=0700,uid={user.uid},gid={user.gid}"
            cfg = _user_config(user, _jobs(where))
        (where / "state").mkdir(exist_ok=True)
        in_namespace("mount", "-t", "tmpfs", "-o", mount, "tmpfs", str(where / "state"))
        got = Site(where, cfg, user, world)
        try:
            yield got
        finally:
            got.ts("stop")
            kill_everything(cfg)
            subprocess.run([*runns.prefix(), "umount", "-l", str(where / "state")], check=False)


def _user_config(user: User, jobs: dict[str, Any]) -> Path:
    """The user's own config (no run_as: its daemon runs as the user), its lock dir the user's."""
    (user.home / "locks").mkdir()
    doc = {"task_server": {"state_dir": str(user.home / "state")}, "tenants": {"t": {"login": user.name,
                                                                                     "jobs": jobs}}}
    cfg = user.home / "cfg.yaml"
    cfg.write_text(json.dumps(doc, indent=2) + "\n")
    cfg.chmod(0o600)
    for path in (cfg, user.home / "locks"):
        os.chown(path, user.uid, user.gid)
    return cfg


def _started_held(site: Site) -> None:
    """`start` on the full disk: up, and saying at once that and why it holds its runs."""
    started = site.ts("start")
    assert started.returncode == 0 and "taskserver started" in started.stdout, started
    assert f"store {site.store}: {HELD_SAYS}" in started.stderr, started.stderr
    status = site.ts("status")
    assert status.returncode == 0 and f"store {site.store}: {HELD_SAYS}" in status.stdout, status


def _held_a_while(site: Site, held_at: float) -> None:
    """Five due times pass while the daemon holds its runs (a wait for the clock, not for the daemon):
    nothing starts, and a task queued meanwhile is refused before its commit, in one line."""
    queued = site.ts("jobs", "enqueue", "--", *job(site.lab, 0.05)["command"])
    assert queued.returncode != 0 and queued.stdout == "", queued  # the full disk takes no row
    assert "Traceback" not in queued.stderr and f"store {site.store}: no space left" in queued.stderr, queued
    executions = len(trace(site.lab))
    wait_for(lambda: time.time() > held_at + 5 * EVERY, "five due times to pass while held")
    assert len(trace(site.lab)) == executions, "a run started that no record could be committed for"
    assert HELD_SAYS in site.ts("status").stdout


def _caught_up(site: Site, since: float, freed: float) -> list[dict[str, Any]]:
    """Once there is room: every held due time of `all` runs; `latest` runs only its newest (so each one
    due a full interval before the disk had room is recorded missed, saying why). Waited for as states."""
    def held(name: str) -> list[dict[str, Any]]:
        return [r for r in rows(site.cfg) if r["job"] == name and since < (r["due"] or 0) <= freed - EVERY]

    wait_for(lambda: "degraded" not in site.ts("status").stdout, "the daemon to resume", timeout=90)
    wait_for(lambda: len(held("all")) >= 3 and all(r["state"] == "OK" for r in held("all")),
             "every held due time of `all` to have run")
    wait_for(lambda: any((r["due"] or 0) > freed for r in rows(site.cfg) if r["state"] == "OK"),
             "a run on time again")
    assert len(held("latest")) >= 3
    for r in held("latest"):
        assert (r["state"], r["reason"]) == ("ERR", "missed"), r
        assert HELD in r["message"] and "catch_up: latest" in r["message"], r
    return rows(site.cfg)


def _audited(site: Site, figures: list[str], scenario: str) -> None:
    stopped = site.ts("stop")
    assert stopped.returncode == 0, stopped
    fig = audit(site.cfg, scenario, 1, {"all": EVERY, "latest": EVERY})
    figures.append(fig.line())
    fig.assert_clean()


def test_a_daemon_started_on_a_full_disk_holds_its_runs_and_catches_up(site: Site,
                                                                         figures: list[str]) -> None:
    assert site.ts("start").returncode == 0  # a first history, then the daemon is stopped
    wait_for(lambda: sum(r["state"] == "OK" for r in rows(site.cfg)) >= 4, "a first history")
    assert site.ts("stop").returncode == 0
    last = max(r["due"] for r in rows(site.cfg))
    filler = site.fill()
    held_at = time.time()
    _started_held(site)
    _held_a_while(site, held_at)
    filler.unlink()
    _caught_up(site, last, time.time())
    _audited(site, figures, f"started on a full disk ({'root' if site.user is None else 'a user'})")


@pytest.mark.parametrize("site", ["root"], indirect=True)
def test_a_new_store_that_cannot_be_created_is_held_until_it_can(site: Site, figures: list[str]) -> None:
    """No history yet: the store's file cannot become a database on the full disk. The daemon comes up all
    the same; its jobs count from its start, so what came due while it held them is caught up as well."""
    filler = site.fill()
    held_at = time.time()
    _started_held(site)
    _held_a_while(site, held_at)
    filler.unlink()
    _caught_up(site, held_at, time.time())
    _audited(site, figures, "a new store on a full disk")
