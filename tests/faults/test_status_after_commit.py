"""`jobs finish` and `jobs cancel` on a full disk, and the Python client's enqueue: the store is the truth.

The state dir is a real small tmpfs (mounted in the daemons' mount namespace, tests/system/runns.py), filled
with a file after the tasks are queued. The tenant's store sits in `db/` below it, on a tmpfs of its own with
room, so its commit goes through while no status file can be written: the command did what it was asked,
so it exits 0 with one warning naming the status file and why, and the status file is left whole (its old
text) with no temporary file beside it. With the store's own file system full, the change fails before its
commit: an error, a non-zero exit, and nothing changed. The client (runtime/client.py, with
``status_files=True``) returns its run ids alike, and its ``warnings`` name each file it could not write and
why. Root runs root's config; a throwaway user runs its own config (its state dir a tmpfs of its own).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import runns
from daemonlab import me, sandbox_env
from faultlab import in_namespace, kill_everything, rows, seen
from secusers import USER_ENV, as_user, lab, needs_root
from test_full_disk_start import Site

pytestmark = needs_root
LONG = "x" * 4000  # the finished text then needs more room than the queued one had: a page more


def _config(where: Path, uid: int, gid: int, login: str, run_as: str | None) -> Path:
    """Tenant `t` with its store in `db/` (its own file system), the state dir `where/state`."""
    server: dict[str, object] = {"state_dir": str(where / "state")}
    if run_as is not None:
        server["run_as"] = run_as
    doc = {"task_server": server, "tenants": {"t": {"login": login, "store": {"sqlite": "db/t.sqlite"}}}}
    cfg = where / "cfg.yaml"
    cfg.write_text(json.dumps(doc, indent=2) + "\n")
    cfg.chmod(0o600)
    os.chown(cfg, uid, gid)
    return cfg


@pytest.fixture(params=["root", "user"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    with lab() as world:
        if request.param == "root":
            where, user, owner = tmp_path, None, ""
            cfg = _config(where, 0, 0, me(), me())
        else:
            user = world.user("fin")
            where, owner = user.home, f",uid={user.uid},gid={user.gid}"
            cfg = _config(where, user.uid, user.gid, user.name, None)
        state = where / "state"
        state.mkdir()
        in_namespace("mount", "-t", "tmpfs", "-o", f"size=1m,mode=0700{owner}", "tmpfs", str(state))
        in_namespace("mkdir", "-m", "0700", str(state / "db"))
        in_namespace("mount", "-t", "tmpfs", "-o", f"size=8m,mode=0700{owner}", "tmpfs", str(state / "db"))
        try:
            yield Site(where, cfg, user, world)
        finally:
            kill_everything(cfg)
            for path in (state / "db", state):
                subprocess.run([*runns.prefix(), "umount", "-l", str(path)], check=False)


def _rows(site: Site) -> dict[int, dict[str, object]]:
    """The store's rows by id (faultlab.rows reads `<state>/<tenant>.sqlite`: here `db/t.sqlite`)."""
    return {r["id"]: r for r in rows(site.cfg, tenant="db/t")}


def _status_dir(site: Site) -> Path:
    return seen(site.lab / "state") / "status" / "t"


def _queued(site: Site) -> tuple[int, int]:
    """Two queued tasks; the second without a status file, as a client's enqueue leaves it by default."""
    ids = []
    for _ in range(2):
        got = site.ts("jobs", "enqueue", "--", "true")
        assert got.returncode == 0, got
        ids.append(int(got.stdout))
    (_status_dir(site) / str(ids[1])).unlink()
    return ids[0], ids[1]


def _warned(got: subprocess.CompletedProcess[str], run_id: int, what: str, path: Path) -> None:
    assert got.returncode == 0, got
    assert got.stderr.splitlines() == [f"taskserver: warning: run {run_id} is {what}, but its status file "
                                       f"was not written ({path}: No space left on device)"], got.stderr


def test_a_committed_finish_and_cancel_warn_when_the_status_file_cannot_be_written(site: Site) -> None:
    first, second = _queued(site)
    queued_text = (_status_dir(site) / str(first)).read_text()
    site.fill()
    status = site.lab / "state" / "status" / "t"  # as the commands name it
    finished = site.ts("jobs", "finish", str(first), "--status", "err", "--message", LONG)
    _warned(finished, first, "ERR reported", status / str(first))
    who = site.user.name if site.user is not None else me()
    cancelled = site.ts("jobs", "cancel", str(second))
    _warned(cancelled, second, f"ERR cancelled by {who}", status / str(second))
    assert cancelled.stdout == f"run {second}: ERR cancelled by {who}\n"
    stored = _rows(site)
    assert (stored[first]["state"], stored[first]["reason"], stored[first]["message"]) == \
        ("ERR", "reported", LONG)
    assert (stored[second]["state"], stored[second]["reason"]) == ("ERR", f"cancelled by {who}")
    assert sorted(os.listdir(_status_dir(site))) == [str(first)]  # no temporary file left behind
    assert (_status_dir(site) / str(first)).read_text() == queued_text  # whole: not half of the new text


@pytest.mark.parametrize("site", ["root"], indirect=True)
def test_a_finish_or_cancel_the_store_cannot_commit_is_an_error_and_changes_nothing(site: Site) -> None:
    first, second = _queued(site)
    before = _rows(site)
    filler = seen(site.lab / "state" / "db") / "filler"
    with filler.open("wb") as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    for argv in (("finish", str(first), "--status", "ok"), ("cancel", str(second))):
        got = site.ts("jobs", *argv)
        assert got.returncode != 0 and got.stdout == "", got
        assert "Traceback" not in got.stderr and "no space left on device" in got.stderr, got
        assert len(got.stderr.splitlines()) == 2  # the error and its hint
    assert _rows(site) == before
    assert sorted(os.listdir(_status_dir(site))) == [str(first)]
    assert (_status_dir(site) / str(first)).read_text().startswith("QUE\n")


@pytest.mark.parametrize("site", ["user"], indirect=True)
def test_a_committed_finish_and_cancel_warn_when_the_user_may_not_write_the_status_file(site: Site) -> None:
    """The status directory and file taken over by root (0755, 0644): the user's commands commit all the
    same, and say which file they could not write."""
    assert site.user is not None
    first, second = _queued(site)
    status = _status_dir(site)
    for path in (status, status / str(first)):
        os.chown(path, 0, 0)
    status.chmod(0o755)
    (status / str(first)).chmod(0o644)
    queued_text = (status / str(first)).read_text()
    named = site.lab / "state" / "status" / "t"
    for argv, run_id, what in ((("finish", str(first), "--status", "ok"), first, "OK"),
                               (("cancel", str(second)), second, f"ERR cancelled by {site.user.name}")):
        got = site.ts("jobs", *argv)
        assert got.returncode == 0, got
        warning = (f"taskserver: warning: run {run_id} is {what}, but its status file was not written "
                   f"({named / str(run_id)}: Permission denied)")
        assert got.stderr.splitlines() == [warning], got
    stored = _rows(site)
    assert (stored[first]["state"], stored[second]["state"]) == ("OK", "ERR")
    assert sorted(os.listdir(status)) == [str(first)] and (status / str(first)).read_text() == queued_text


CLIENT = """
import json, logging, sys
from taskserver.runtime.client import Client
logging.basicConfig(format="%(levelname)s %(message)s")
def said(client):
    return [[w.run_id, w.path, w.reason, str(w)] for w in client.warnings]
with Client(sys.argv[1], tenant="t") as client:
    batch = client.enqueue_many([["/bin/true", str(n)] for n in range(3)], status_files=True)
    batch_said = said(client)
    one = client.enqueue(["/bin/true"], status_files=True)
    print(json.dumps({"batch": batch, "batch_said": batch_said, "one": one, "one_said": said(client)}))
"""


def _client(site: Site) -> tuple[dict[str, object], list[str]]:
    """The client's batch of three and one more task, with status files, as the config's owner (in the
    daemons' mount namespace, where the tmpfs is): what it returned and said, and its log lines."""
    python = "/usr/bin/python3" if site.user is not None and USER_ENV else sys.executable
    argv, env = [python, "-c", CLIENT, str(site.cfg)], sandbox_env(site.cfg)
    if site.user is not None:
        argv = as_user(site.user, argv)
        env = site.world.env({"HOME": str(site.user.home), "USER": site.user.name,
                              "LOGNAME": site.user.name, **USER_ENV})
    got = subprocess.run([*runns.prefix(), *argv], capture_output=True, text=True, env=env, timeout=120,
                         check=False)
    assert got.returncode == 0 and "Traceback" not in got.stderr, got
    return json.loads(got.stdout), got.stderr.splitlines()


def _client_warned(site: Site, why: str) -> None:
    """Every task queued (QUE in the store), every file named with ``why``, nothing left half-written."""
    before = sorted(os.listdir(_status_dir(site)))
    got, log = _client(site)
    batch, one = got["batch"], got["one"]
    assert isinstance(batch, list) and isinstance(one, int)
    named = site.lab / "state" / "status" / "t"  # as the client names it

    def warned(run_id: int) -> list[object]:
        text = f"run {run_id} is queued, but its status file was not written ({named / str(run_id)}: {why})"
        return [run_id, str(named / str(run_id)), why, text]

    assert got["batch_said"] == [warned(i) for i in batch]
    assert got["one_said"] == [warned(one)]  # a new list per call
    assert log == [f"WARNING 3 of 3 tasks are queued without a status file; the first: {warned(batch[0])[3]}",
                   f"WARNING {warned(one)[3]}"]
    stored = _rows(site)
    assert [stored[i]["state"] for i in [*batch, one]] == ["QUE"] * 4
    assert sorted(os.listdir(_status_dir(site))) == before  # no temporary file left behind


def test_a_client_on_a_full_disk_queues_and_names_each_status_file_it_could_not_write(site: Site) -> None:
    got = site.ts("jobs", "enqueue", "--", "true")  # the status directory is there
    assert got.returncode == 0, got
    site.fill()
    _client_warned(site, "No space left on device")


@pytest.mark.parametrize("site", ["user"], indirect=True)
def test_a_client_locked_out_of_the_status_directory_queues_and_names_each_file(site: Site) -> None:
    """The status directory taken over by root (0755): the user's client commits all the same."""
    got = site.ts("jobs", "enqueue", "--", "true")
    assert got.returncode == 0, got
    os.chown(_status_dir(site), 0, 0)
    _status_dir(site).chmod(0o755)
    _client_warned(site, "Permission denied")
