"""Generated hostile configuration files (fuzzgen.configs: 700 seeded cases plus the issue's named ones).

Each file is loaded in-process the way every command loads it (``config.load``), with a time bound per case
(SIGALRM), and must either be refused with errors that each start FILE:LINE:COL, stay on one line and carry a
hint, or be accepted only when what was accepted is sane: finite bounded durations, commands exec can take,
stores inside the state dir, schedules the daemon can compute. A sample also goes through the real
`taskserver check` (exit 2, no traceback, the location first), accepted ones through `taskserver run --once`
(everything check accepts, the daemon runs), and `taskserver-install --config FIFO` must not wait on the FIFO.
"""

from __future__ import annotations

import math
import os
import pwd
import re
import signal
import subprocess
import sys
import warnings
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import pytest
from fuzzgen import Case, configs

from taskserver.runtime import config, limits, schedule
from taskserver.runtime.config import ConfigInvalid
from taskserver.runtime.errors import UserError
from taskserver.runtime.model import Config, Every

GENERATED = 700
CASE_LIMIT = 60  # seconds: a case still running then is a hang (nothing is measured, it only bounds)
BIN = Path(sys.executable).parent
LOCATED = r"^{file}:\d+:\d+: "


class Hang(Exception):
    pass


def _alarm(_sig: int, _frame: FrameType | None) -> None:
    raise Hang


def _durations(cfg: Config) -> list[float | None]:
    s = cfg.server
    out: list[float | None] = [s.stop_timeout, s.keep_ok_days * 86400, s.keep_err_days * 86400]
    for t in cfg.tenants:
        for j in t.jobs:
            out += [j.timeout, j.max_late, j.retry.backoff]
            out += [j.trigger.seconds] if isinstance(j.trigger, Every) else []
    return out


def _strings(cfg: Config) -> list[str]:
    s = cfg.server
    out = [str(s.state_dir), str(s.install_dir or ""), s.run_as or ""]
    for t in cfg.tenants:
        out += [t.name, t.login or "", t.timezone, str(t.store.path or ""), t.store.dsn or ""]
        for j in t.jobs:
            out += [j.name, j.call or "", j.queue or "", *(j.command or ())]
    return out


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def insane(cfg: Config) -> list[str]:
    """What would be wrong with an accepted config (a wrong acceptance), judged without the loader's code."""
    bad = [f"duration {d!r}" for d in _durations(cfg)
           if d is not None and (not math.isfinite(d) or not 0 <= d <= limits.MAX_DURATION
                                 or 0 < d < limits.MIN_DURATION * 0.999)]  # (keep_ok: via days)
    bad += [f"NUL in {s[:30]!r}" for s in _strings(cfg) if "\0" in s]
    bad += [f"not text: {s[:30]!r}" for s in _strings(cfg) if not s.isascii() and not _encodes(s)]
    s = cfg.server
    if s.memory_limit is not None and not limits.MIN_MEMORY_LIMIT <= s.memory_limit <= limits.MAX_SIZE:
        bad.append(f"memory_limit {s.memory_limit}")
    now = datetime.now(UTC)
    for t in cfg.tenants:
        if t.store.path is not None and not t.store.path.resolve().is_relative_to(s.state_dir.resolve()):
            bad.append(f"store outside the state dir: {t.store.path}")
        for j in t.jobs:
            if j.command is not None and not j.command[0].strip():
                bad.append(f"job {j.name}: empty program")
            if not 0 <= j.retry.count <= limits.MAX_COUNT:
                bad.append(f"job {j.name}: retries {j.retry.count}")
            try:
                schedule.next_fire(j, t.timezone, now)  # what the daemon computes first for every job
            except Exception as exc:
                bad.append(f"job {j.name}: next_fire raised {type(exc).__name__}")
    return bad


def classify(path: Path, case: Case) -> tuple[str, str]:
    """(outcome, detail): ok-refused, ok-accepted, traceback, hang, wrong-acceptance, bad-message."""
    path.write_text(case.text, encoding="utf-8")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_LIMIT)
    try:
        with warnings.catch_warnings(record=True) as warned:  # a warning is printed: not one error line
            warnings.simplefilter("always")
            cfg = config.load(path)
        if warned:
            return "bad-message", f"{case.name}: warning {str(warned[0].message)[:200]!r}"
    except Hang:
        return "hang", case.name
    except ConfigInvalid as exc:
        return _judge_messages(path, [(str(e), e.hint) for e in exc.errors])
    except UserError as exc:
        return _judge_messages(path, [(exc.message, exc.hint)])
    except Exception as exc:
        return "traceback", f"{type(exc).__name__}: {str(exc)[:200]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    problems = insane(cfg)
    if case.must_fail or problems:
        return "wrong-acceptance", f"{case.name}: {problems or 'accepted'}"
    return "ok-accepted", ""


def _judge_messages(path: Path, errors: list[tuple[str, str | None]]) -> tuple[str, str]:
    pattern = re.compile(LOCATED.format(file=re.escape(str(path))))
    for message, hint in errors:
        if not pattern.match(message) or "\n" in message or len(message) > 1000 or not hint:
            return "bad-message", f"{message[:300]!r} hint={hint!r}"
    return "ok-refused", ""


def test_generated_configs_never_crash_hang_or_pass_wrongly(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    cases = configs(GENERATED)
    results = [(case, *classify(tmp_path / "c.yaml", case)) for case in cases]
    counts = Counter(outcome for _, outcome, _ in results)
    with capsys.disabled():
        print(f"\nfuzz configs: {len(cases)} cases ({GENERATED} generated + {len(cases) - GENERATED} named): "
              f"{counts['traceback']} tracebacks, {counts['hang']} hangs, "
              f"{counts['wrong-acceptance']} wrong acceptances, {counts['bad-message']} bad messages; "
              f"{counts['ok-refused']} refused, {counts['ok-accepted']} accepted")
    failures = [f"{outcome}: {case.name[:60]}: {detail}" for case, outcome, detail in results
                if not outcome.startswith("ok-")]
    assert not failures, "\n".join(failures[:40])
    assert counts["ok-refused"] > len(cases) / 3 and counts["ok-accepted"] > 20  # both sides were exercised


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSERVER_")}
    env.update(RUNTIME_DIRECTORY=str(tmp / "run"), XDG_RUNTIME_DIR=str(tmp / "run"),
               STATE_DIRECTORY=str(tmp / "state"), XDG_STATE_HOME=str(tmp / "state"))
    return env


def test_a_sample_through_the_real_check_command(tmp_path: Path) -> None:
    """Every 50th case and every other quick named one, through `taskserver check`: exit 2 with
    FILE:LINE:COL first, or 0."""
    cases = configs(GENERATED)
    quick = [c for c in cases[GENERATED:] if "jobs" not in c.name and "keys" not in c.name]
    sample = cases[::50] + quick[::2]
    failures = []
    for i, case in enumerate(sample):
        path = tmp_path / f"c{i}.yaml"
        path.write_text(case.text, encoding="utf-8")
        proc = subprocess.run([str(BIN / "taskserver"), "-c", str(path), "check"], capture_output=True,
                              text=True, timeout=CASE_LIMIT * 2, env=_env(tmp_path), check=False)
        first = proc.stderr.splitlines()[0] if proc.stderr else ""
        located = re.match(rf"taskserver: error: {re.escape(str(path))}:\d+:\d+: ", first)
        refused_here = proc.returncode == 2 and located
        if "Traceback" in proc.stderr or not (proc.returncode == 0 or refused_here):
            failures.append(f"{case.name[:60]}: exit {proc.returncode}: {proc.stderr[-300:]!r}")
        if case.must_fail and proc.returncode == 0:
            failures.append(f"{case.name[:60]}: accepted by check")
    assert not failures, "\n".join(failures)


def test_what_check_accepts_the_daemon_runs(tmp_path: Path) -> None:
    """Accepted generated configs (given a run_as, as root needs one) run through `run --once` cleanly."""
    me = pwd.getpwuid(os.getuid()).pw_name
    accepted = [c for c in configs(GENERATED)[:300]
                if not c.must_fail and c.text.startswith("task_server:\n")]
    ran = 0
    for i, case in enumerate(accepted):
        path = tmp_path / f"r{i}.yaml"
        path.write_text(case.text.replace("task_server:\n", f"task_server:\n  run_as: {me}\n", 1))
        try:
            config.load(path)  # what `check` does
        except UserError:
            continue
        once = [str(BIN / "taskserver"), "-c", str(path), "run", "--once", "--time-limit", "20"]
        proc = subprocess.run(once, capture_output=True, text=True, timeout=CASE_LIMIT * 2,
                              env=_env(tmp_path), check=False)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (case.name, proc.stderr[-2000:])
        ran += 1
        if ran == 4:
            break
    assert ran == 4


def test_installer_refuses_a_fifo_as_config_instead_of_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    proc = subprocess.run([str(BIN / "taskserver-install"), "--dry-run", "--config", str(fifo)],
                          capture_output=True, text=True, timeout=CASE_LIMIT, env=_env(tmp_path), check=False)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
