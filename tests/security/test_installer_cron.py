"""The crontab entry runs exactly the intended argv, proven by the real cron daemon (Debian's cron 3.0pl1).

cron's rules for the command field (the rest of the line; upstream vixie cron's do_command.c, and what
Debian's daemon was seen to do here): an unescaped ``%`` ends the command (the rest becomes stdin, each
further ``%`` a newline); ``\\%`` becomes ``%``; Debian's cron also turns ``\\\\`` into ``\\`` (upstream and
cronie keep both); any other backslash is passed on. The command then goes to ``/bin/sh -c``. A newline
cannot be in a crontab line at all, NUL not in a C string: those values are refused.

The daemon runs here in a private mount namespace (tmpfs over the crontab spool, /etc/cron.d and /run; an
empty /etc/crontab), so the host's crontabs are neither run nor touched, under faketime starting two seconds
before a minute, so the entry runs within seconds instead of up to a minute.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskserver.installer import render
from taskserver.installer.backends.cron import Cron
from taskserver.installer.spec import build_spec
from taskserver.runtime.errors import UserError

NAMESPACE_SETUP = """set -e
mount -t tmpfs -o mode=1730 tmpfs /var/spool/cron/crontabs
chgrp crontab /var/spool/cron/crontabs
mount -t tmpfs tmpfs /etc/cron.d
mount --bind "$1/empty" /etc/crontab
mount -t tmpfs tmpfs /run
cp "$1/crontab" /var/spool/cron/crontabs/root
chmod 600 /var/spool/cron/crontabs/root
exec faketime -f '@2026-12-01 10:00:58' cron -f
"""

# values that each break one naive quoting: a backslash before %, %, both quotes, sh specials, spaces
HOSTILE_DIR = "bin 100%\\%'q\" $HOME \\\\%"
HOSTILE_CONFIG = "/etc/odd \\% dir/100% it's \\\\%; `id` $(id).yaml"


def need_cron() -> None:
    tools = ("cron", "faketime", "unshare")
    if os.geteuid() != 0 or any(shutil.which(t) is None for t in tools):
        pytest.skip("needs root, cron, faketime and unshare (cron runs in a private mount namespace)")


def dumper(path: Path, out: Path) -> None:
    """An executable that records the argv it was started with."""
    path.parent.mkdir(parents=True)
    path.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(out)!r}, 'w').write(json.dumps(sys.argv))\n"
    )
    path.chmod(0o755)


def run_cron(tmp_path: Path, lines: list[str], outs: list[Path]) -> None:
    """Run the real cron daemon with a root crontab of ``lines`` until every file of ``outs`` exists."""
    (tmp_path / "empty").write_text("")
    (tmp_path / "crontab").write_text('MAILTO=""\n' + "".join(lines))
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", NAMESPACE_SETUP, "sh", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not all(o.exists() for o in outs) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
            time.sleep(0.1)
        time.sleep(0.3)  # let a writer finish its line
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def naive_cron(words: list[str]) -> str:
    """The filter before the fix: sh quoting, then every % escaped as \\%."""
    return " ".join(shlex.quote(w).replace("%", "\\%") for w in words) + "\n"


def test_real_cron_runs_exactly_the_rendered_argv(tmp_path: Path) -> None:
    """The installer's entry (Cron.block) with hostile paths, next to the old filter's rendering of the same
    argv: cron runs ours exactly, and the old one not (the harness can tell them apart)."""
    need_cron()
    exe, out = tmp_path / HOSTILE_DIR / "taskserver", tmp_path / "argv.json"
    dumper(exe, out)
    spec = build_spec(executable=exe, config=HOSTILE_CONFIG)
    block = Cron(live=False).block(spec)
    exe_old, out_old = tmp_path / "old" / HOSTILE_DIR / "taskserver", tmp_path / "argv-old.json"
    dumper(exe_old, out_old)
    args = ["-c", HOSTILE_CONFIG, "run", "--once", "--time-limit", "55"]
    old_line = "* * * * * " + naive_cron([str(exe_old), *args])
    run_cron(tmp_path, [block, old_line], [out])
    assert json.loads(out.read_text()) == [str(exe), *args]
    old = json.loads(out_old.read_text()) if out_old.exists() else None
    assert old != [str(exe_old), *args]  # the old filter's line ran something else (or nothing)


@pytest.mark.parametrize("ch", ["\n", "\r", "\x00"])
def test_values_that_would_break_the_crontab_line_are_refused(ch: str) -> None:
    with pytest.raises(UserError) as err:
        render.cron(["/opt/ts/bin/taskserver", "-c", f"/etc/a{ch}b.yaml"])
    assert "cannot be written into a boot file" in err.value.message


def test_a_newline_in_the_config_path_is_bad_input_for_the_command() -> None:
    tool = Path(sys.executable).parent / "taskserver-install"
    res = subprocess.run(
        [str(tool), "--init", "cron", "--config", "/etc/a\n* * * * * id.yaml", "--dry-run"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 2 and "control character" in res.stderr and "Traceback" not in res.stderr
