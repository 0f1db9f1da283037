"""The daemon keeps out of its memory what it does not use: a real `run --once` that starts a scheduled job
and a queued task (a PATH lookup, the spawning threads, the capability calls) never imports shutil with
bz2 and lzma, tempfile with random, or uuid with platform (about 1.3 MB of resident memory together, which
the 10,000-job target of 35 MB cannot spare).  The modules are read from the daemon itself at its exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import runns
from daemonlab import TASKSERVER, cli, runs, sandbox_env, write_config

KEPT_OUT = ("shutil", "bz2", "lzma", "tempfile", "random", "uuid", "platform", "ctypes.util")

# the console script's own entry point, run with a hook that writes the loaded modules at exit
WRAPPER = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_daemon_that_ran_jobs_loaded_none_of_the_modules_it_does_without(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml", {"tick": {"every": 3600, "command": ["true"]}})
    cli(cfg, "jobs", "run", "tick")
    cli(cfg, "jobs", "enqueue", "--queue", "q", "--", "true")  # no slash: looked up in PATH
    out = tmp_path / "modules.json"
    argv = [*runns.prefix(), sys.executable, "-c", WRAPPER, str(out), TASKSERVER, "-c", str(cfg), "run",
            "--once"]
    proc = subprocess.run(argv, env=sandbox_env(cfg), capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert [r["state"] for r in runs(cfg)] == ["OK", "OK"]  # it really ran them
    loaded = set(json.loads(out.read_text()))
    assert "taskserver.runtime.launcher" in loaded and "taskserver.runtime.caps" in loaded
    assert not loaded & set(KEPT_OUT), sorted(loaded & set(KEPT_OUT))
