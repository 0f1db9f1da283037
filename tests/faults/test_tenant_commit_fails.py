"""One tenant's store failing its COMMIT under a running daemon holds back only that tenant.

Two tenants with Unix users of their own (run_as), each with a job that logs its own start and end
(tests/faults/faultlab.py). Tenant A's store is on a small tmpfs of its own (`store: {sqlite:
tenants/a/db/a.sqlite}`; A's directory, with its runs' status files, is not). A full disk alone does not
make a commit fail: SQLite writes its write-ahead log over from the start after each checkpoint, into
space it has. So while the daemon runs, A's user keeps a read transaction open on A's store (their own
file; any reader does this: a backup, a long `jobs history`): the log cannot start over and must grow
with each commit; then A's file system is filled. The daemon's next commit into A's store has no room
to grow the log and fails (SQLite keeps a transaction's pages in memory until its commit: the statements
before it succeed). A's runs must be held (set aside, retried), B's must go on and be recorded; once the
disk has room and the reader is gone, A must go on by itself. Both histories are then audited against
what the jobs' processes logged: no contradiction, no run twice, none lost, no run left RUN.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultlab import fill, job, judge, trace
from secusers import Lab, User, as_user, lab, needs_root, wait_for

pytestmark = needs_root
A_EVERY, B_EVERY = 0.2, 0.5


class TwoTenants:
    def __init__(self, world: Lab) -> None:
        self.world = world
        self.own, self.a, self.b = world.user("dmn"), world.user("tena"), world.user("tenb")
        self.lab = world.base / "lab"  # the jobs' trace and locks, written by both tenants' users
        (self.lab / "locks").mkdir(parents=True)
        (self.lab / "trace").touch()
        for path, mode in ((self.lab, 0o755), (self.lab / "locks", 0o1777), (self.lab / "trace", 0o666)):
            path.chmod(mode)
        self.state = world.base / "state"
        # A's store alone is on the small file system (its own directory keeps the runs' status files,
        # which a full disk would fail first): the store's commit is what meets the full disk
        self.adir = self.state / "tenants" / "a" / "db"
        self.adir.mkdir(parents=True)
        for path in (self.state, self.state / "tenants"):  # as the daemon makes them
            os.chown(path, self.own.uid, self.own.gid)
            path.chmod(0o711)
        os.chown(self.adir.parent, self.a.uid, self.own.gid)
        self.adir.parent.chmod(0o770)
        opts = f"size=16m,mode=0770,uid={self.a.uid},gid={self.own.gid}"
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(self.adir)], check=True)
        self.cfg = world.base / "etc" / "ts.yaml"
        self.cfg.parent.mkdir()
        self.cfg.write_text(
            f"task_server:\n  run_as: {self.own.name}\n  state_dir: {self.state}\ntenants:\n"
            f"{self._tenant('a', self.a, 'atick', A_EVERY)}{self._tenant('b', self.b, 'btick', B_EVERY)}")

    def _tenant(self, name: str, user: User, job_name: str, every: float) -> str:
        spec = {**job(self.lab, 0.02, every=every), "catch_up": "all"}
        store = "    store: {sqlite: tenants/a/db/a.sqlite}\n" if name == "a" else ""
        return (f"  {name}:\n    login: shop-{name}\n    run_as: {user.name}\n{store}    jobs:\n"
                f"      {job_name}: {json.dumps(spec)}\n")

    def store(self, tenant: str) -> Path:
        return self.adir / "a.sqlite" if tenant == "a" else self.state / "tenants" / "b" / "b.sqlite"

    def rows(self, tenant: str) -> list[dict[str, Any]]:
        """As the tenant's own user reads them (read-only: a look never writes)."""
        out = subprocess.run(as_user(self.a if tenant == "a" else self.b, [
            "sqlite3", "-json", "-cmd", ".timeout 30000", f"file:{self.store(tenant)}?mode=ro",
            "SELECT * FROM runs ORDER BY id"]), capture_output=True, text=True, check=True, timeout=60,
            env=self.world.env())
        return list(json.loads(out.stdout or "[]"))

    def ok_after(self, tenant: str, since: float) -> int:
        return sum(r["state"] == "OK" and (r["due"] or 0) > since for r in self.rows(tenant))


@pytest.fixture
def site() -> Iterator[TwoTenants]:
    with lab() as world:
        site = TwoTenants(world)
        try:
            yield site
        finally:
            world.cleanup()  # the daemon first: it keeps files open on the tmpfs
            subprocess.run(["umount", "-l", str(site.adir)], check=False)


def _reader(site: TwoTenants) -> subprocess.Popen[str]:
    """A's user keeps a read transaction open on A's store with the real sqlite3 shell."""
    proc = subprocess.Popen(as_user(site.a, ["sqlite3", str(site.store("a"))]), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=site.world.env({"HOME": str(site.a.home)}))
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(".timeout 30000\nBEGIN;\nSELECT 'reading ' || count(*) FROM runs;\n")
    proc.stdin.flush()
    assert proc.stdout.readline().startswith("reading "), "the reader could not read A's store"
    return proc


def test_a_store_failing_its_commit_under_a_running_daemon_holds_back_only_its_tenant(
        site: TwoTenants) -> None:
    world = site.world
    daemon = world.daemon(site.cfg, "-v")  # (the failed commit is named at debug level)
    assert wait_for(lambda: site.ok_after("a", 0) >= 3 and site.ok_after("b", 0) >= 2, 60), world.log()
    reader = _reader(site)
    try:
        fill(site.adir / "filler")
        assert wait_for(lambda: "tenant a: its commit failed" in world.log(), 60), world.log()
        assert "tenant a: storage fault" in world.log(), world.log()
        faulted = time.time()
        # B goes on, and is recorded, while A's store cannot take a commit
        assert wait_for(lambda: site.ok_after("b", faulted + B_EVERY) >= 6, 60), world.log()
        status = world.ts(site.cfg, "status").stdout
        assert "degraded: tenant a: storage fault" in status and "tenant b" not in status, status
        held = [r for r in site.rows("a") if (r["due"] or 0) > faulted + 1.0]
        assert not held, held  # nothing of A was committed meanwhile: its runs are held
    finally:
        assert reader.stdin is not None
        reader.stdin.write("COMMIT;\n.quit\n")
        reader.stdin.close()
        reader.wait(30)
        (site.adir / "filler").unlink()
    freed = time.time()
    assert wait_for(lambda: "tenant a: the store is writable again" in world.log(), 60), world.log()
    assert wait_for(lambda: site.ok_after("a", freed + A_EVERY) >= 5, 60), world.log()
    assert "tenant b: storage fault" not in world.log(), world.log()
    daemon.terminate()
    assert daemon.wait(60) == 0, world.log()
    lines = trace(site.lab)
    for tenant, name, every in (("a", "atick", A_EVERY), ("b", "btick", B_EVERY)):
        fig = judge(site.rows(tenant), [ln for ln in lines if ln[1] == name],
                    f"tenant {tenant}: commit failing under a running daemon", 1, {name: every})
        fig.assert_clean()
        assert fig.executions >= 5, fig.line()
    a_rows = site.rows("a")
    assert any(r["state"] == "OK" and faulted < (r["due"] or 0) < freed for r in a_rows)  # caught up
    assert "Traceback" not in world.log()
