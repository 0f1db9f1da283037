"""Generated bad command lines (fuzzgen.command_lines: seeded), each holding a value the command must refuse.

Every case runs in-process through ``cli.main`` (the entry point of the `taskserver` command) against a real
config and a real SQLite store with one queued run, and must end with a non-zero exit, an error line of
bounded length and no traceback (nor the "internal error" line that stands in for one). A sample runs
through the real `taskserver` binary with a timeout; NUL bytes cannot be passed to a process, so those
cases stay in-process.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import subprocess
import sys
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from fuzzgen import command_lines

from taskserver.runtime import cli

GENERATED = 300
BIN = Path(sys.executable).parent
LIMIT = 120  # seconds for one subprocess case: past it, a hang


def _config(tmp: Path) -> Path:
    me = pwd.getpwuid(os.getuid()).pw_name
    doc = {"task_server": {"run_as": me, "state_dir": str(tmp / "state")},
           "tenants": {"t": {"login": me, "jobs": {"report": {"command": ["/bin/true"]}}}}}
    path = tmp / "c.yaml"
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return path


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in [k for k in os.environ if k.startswith("TASKSERVER_")]:
        monkeypatch.delenv(key)
    for key in ("RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(key, str(tmp_path / "run"))
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    path = _config(tmp_path)
    code, out, err = in_process(["-c", str(path), "jobs", "enqueue", "--", "/bin/true"])
    assert code == 0 and out.strip() == "1", err  # run 1 exists, so `finish 1` reaches its checks
    return path


def in_process(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse's way out
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def judge(code: int, err: str) -> str:
    if "Traceback" in err or "internal error" in err:
        return "traceback"
    if code == 0:
        return "wrong-acceptance"
    errors = [ln for ln in err.splitlines() if ": error: " in ln]
    if len(errors) != 1 or len(errors[0]) > 600:
        return "bad-message"
    return "ok-refused"


def test_bad_command_lines_are_refused_in_one_line(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = command_lines(GENERATED)
    results = []
    for name, argv in cases:
        try:
            code, _, err = in_process(["-c", str(cfg), *argv])
        except Exception as exc:
            code, err = 1, f"Traceback: {type(exc).__name__}: {exc}"
        results.append((name, judge(code, err), err[-400:]))
    counts = Counter(outcome for _, outcome, _ in results)
    with capsys.disabled():
        print(f"\nfuzz command lines: {len(cases)} cases: {counts['traceback']} tracebacks, 0 hangs "
              f"(in-process; see the subprocess sample), {counts['wrong-acceptance']} wrong acceptances, "
              f"{counts['bad-message']} bad messages; {counts['ok-refused']} refused")
    failures = [f"{outcome}: {name}: {err!r}" for name, outcome, err in results if outcome != "ok-refused"]
    assert not failures, "\n".join(failures[:30])


def test_a_sample_through_the_real_command(cfg: Path) -> None:
    env = dict(os.environ)
    sample = [(n, a) for n, a in command_lines(GENERATED)[::15] if not any("\0" in w for w in a)]
    for name, argv in sample:
        proc = subprocess.run([str(BIN / "taskserver"), "-c", str(cfg), *argv], capture_output=True,
                              text=True, timeout=LIMIT, env=env, check=False)
        outcome = judge(proc.returncode, proc.stderr)
        assert outcome == "ok-refused", (name, outcome, proc.returncode, proc.stderr[-500:])
