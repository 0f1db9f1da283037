"""A tenant cannot make `jobs enqueue` skip the whole-file check of a store that is not its own.

A command writing into a store checks the whole file only while no live daemon serves it, which it learns
from the store's lock file (runtime/sqlite_guard.py ``served``). A lock file may lie in a directory a
tenant controls: here the daemon user's tenants ``plain`` and ``other`` keep their stores in tenant a's own
directory. With no daemon serving plain and old damage in its store, tenant a's user puts a held lock where
plain's lock belongs: a file of a's, a link to the lock the daemon's user holds for other's store, or that
lock itself, moved. Root's command still checks the whole file and refuses, writing nothing. A lock a takes
on its own store's lock file, as a daemon takes it, skips the check on a's own store only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from secusers import USER_ENV, Site, User, as_user, lab, needs_root, tenant_site
from storelab import add_history, digest, garble_old_history

pytestmark = needs_root
HISTORY = 20_000
# a lock file of the user's own, readable by all (the command, acting as the store's owner, can open it),
# saying what a daemon holding it for the store argv[2] says
_HOLD = ("import fcntl, json, os, sys\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)\nos.fchmod(fd, 0o644)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nst = os.stat(sys.argv[2])\n"
         "os.write(fd, json.dumps({'pid': os.getpid(), 'store': [st.st_dev, st.st_ino]}).encode())\n"
         "print('held', flush=True)\nsys.stdin.read()\n")


@pytest.fixture
def site() -> Iterator[Site]:
    with lab() as world:
        got = tenant_site(world, lambda a, b: (
            f"  a:\n    login: shop-a\n    run_as: {a.name}\n"
            "  plain:\n    login: shop-p\n    store:\n      sqlite: tenants/a/plain.sqlite\n"
            "  other:\n    login: shop-o\n    store:\n      sqlite: tenants/a/other.sqlite\n"))
        assert _enqueue(got, "a").returncode == 0  # tenant a's directory, made as root makes it (a's)
        yield got


def _enqueue(site: Site, tenant: str, user: User | None = None) -> subprocess.CompletedProcess[str]:
    return site.world.ts(site.cfg, "jobs", "enqueue", "--tenant", tenant, "--", "/bin/true", user=user)


def _damaged(site: Site, tenant: str, user: User | None = None) -> Path:
    """The tenant's store, made by a first task (no daemon runs), with a long history damaged in the middle
    (written as root: the file keeps its owner)."""
    assert _enqueue(site, tenant, user).returncode == 0
    store = site.state / "tenants" / "a" / f"{tenant}.sqlite"
    owner = store.stat().st_uid
    add_history(store, HISTORY)
    garble_old_history(store)
    assert store.stat().st_uid == owner and not store.with_name(store.name + "-wal").exists()
    return store


def _hold(user: User, store: Path) -> subprocess.Popen[str]:
    """A process of ``user``'s holding a lock file of its own where ``store``'s lock belongs, as a daemon
    holds it and saying what a daemon says."""
    lock = store.with_name(store.name + ".lock")
    proc = subprocess.Popen(as_user(user, ["/usr/bin/python3", "-c", _HOLD, str(lock), str(store)]),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n", proc.poll()
    return proc


_TAKE = ("import os, sys\nfrom pathlib import Path\n"
         "from taskserver.runtime.sqlite_guard import InstanceLock\n"
         "from taskserver.runtime.store import Instance\n"
         "me = Instance('i', 'h', os.getpid(), None, None, 'c', 0, 0, 0)\n"
         "InstanceLock(Path(sys.argv[1])).take(me)\nprint('held', flush=True)\nsys.stdin.read()\n")


def _take(site: Site, user: User, store: Path) -> subprocess.Popen[str]:
    """A process of ``user``'s holding ``store``'s instance lock as a daemon does (with the daemon's code)."""
    python = "/usr/bin/python3" if USER_ENV else sys.executable
    proc = subprocess.Popen(as_user(user, [python, "-c", _TAKE, str(store)]), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=site.world.env(USER_ENV))
    assert proc.stdout is not None and proc.stdout.readline() == "held\n", proc.poll()
    return proc


def _end(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(30)


def _refused(site: Site, store: Path) -> None:
    before = digest(store)
    got = _enqueue(site, "plain")
    assert got.returncode != 0 and got.stdout == "", got
    assert "the run store is corrupt" in got.stderr and "Traceback" not in got.stderr, got.stderr
    assert digest(store) == before


def test_a_tenants_lock_does_not_vouch_for_a_store_of_another_user_in_its_directory(site: Site) -> None:
    store = _damaged(site, "plain")
    assert store.stat().st_uid == site.daemon_user.uid and store.parent.stat().st_uid == site.a.uid
    lock = store.with_name("plain.sqlite.lock")
    holder = _hold(site.a, store)  # a file of a's, where the store's lock belongs, naming the store
    try:
        _refused(site, store)
    finally:
        _end(holder)
    lock.unlink()
    assert _enqueue(site, "other").returncode == 0
    other = store.with_name("other.sqlite.lock")
    holder = _take(site, site.daemon_user, store.with_name("other.sqlite"))  # as other's daemon holds it
    try:
        subprocess.run(as_user(site.a, ["ln", "-s", str(other), str(lock)]), check=True)
        _refused(site, store)  # a link to it, where plain's store's lock belongs: not followed
        subprocess.run(as_user(site.a, ["mv", "-f", str(other), str(lock)]), check=True)
        assert lock.stat().st_uid == site.daemon_user.uid and not lock.is_symlink()
        _refused(site, store)  # the held lock itself, moved into place: it is other's store's
    finally:
        _end(holder)


def test_a_tenants_lock_on_its_own_stores_lock_file_skips_the_check_there_only(site: Site) -> None:
    own = _damaged(site, "a", site.a)
    holder = _take(site, site.a, own)
    try:
        got = _enqueue(site, "a", site.a)  # its own store: as if its daemon ran; SQLite's own checks remain
        assert got.returncode == 0 and got.stdout.strip().isdigit(), got
        assert os.stat(own).st_uid == site.a.uid
        _refused(site, _damaged(site, "plain"))
    finally:
        _end(holder)
