"""`jobs enqueue` into a store a live daemon serves does not check the whole file; without a daemon it does.

A store with a long history (50,000 finished runs) gets one page of old history garbled in the middle of
the file while its daemon runs. The daemon checked the whole file when it opened it and keeps writing into
it; a command then writes its row as the daemon does (SQLite reads only the pages the row touches), on the
lean path and on the full one, and the daemon runs both. Once the daemon is stopped, the same commands are
refused as corrupt, and the file is not changed by them. No time is measured: the proof is what a
whole-file check would have refused.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from daemonlab import cli, wait_for
from faultlab import kill_everything, lab_config, popen, stop_foreground
from storelab import add_history, digest, garble_old_history, state_of

HISTORY = 50_000
PATHS = {"lean": ("--queue", "q"), "full": ("--queue=q",)}  # argparse reads `--queue=q`: the full path
FELL_BACK = "jobs enqueue: the full path"  # with -v, the lean path's fall-back says so


def test_a_served_store_takes_a_task_past_old_damage_and_an_unserved_one_is_refused(tmp_path: Path) -> None:
    cfg = lab_config(tmp_path, {})
    store = tmp_path / "state" / "t.sqlite"
    first = int(cli(cfg, "jobs", "enqueue", "--", "true").stdout)  # no daemon: creates the store
    add_history(store, HISTORY)
    time.sleep(2.1)  # the lean path trusts a config unchanged for 2 s before its daemon read it
    daemon = popen(cfg, "run")
    try:
        wait_for(lambda: state_of(store, first) == "OK", "the daemon's first run")  # its start-up work done
        garble_old_history(store)  # damage a whole-file check finds
        ids = {}
        for name, queue in PATHS.items():
            got = cli(cfg, "-v", "jobs", "enqueue", *queue, "--", "true", check=False)
            assert got.returncode == 0 and got.stdout.strip().isdigit(), (name, got)
            # the lean one did not fall back (it serves only a root-owned config: the tests' own as root)
            assert os.geteuid() != 0 or FELL_BACK not in got.stderr, (name, got.stderr)
            ids[name] = int(got.stdout)
        for name, run_id in ids.items():
            wait_for(lambda run_id=run_id: state_of(store, run_id) == "OK", f"the daemon's run of the {name} "
                     "path's task")
        assert stop_foreground(daemon) == 0
    finally:
        kill_everything(cfg)
        if daemon.poll() is None:
            daemon.kill()
    before = digest(store)
    for name, queue in PATHS.items():
        got = cli(cfg, "jobs", "enqueue", *queue, "--", "true", check=False)
        assert got.returncode != 0 and got.stdout == "", (name, got)
        assert "Traceback" not in got.stderr and "the run store is corrupt" in got.stderr, (name, got.stderr)
        assert digest(store) == before, name
