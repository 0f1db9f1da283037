"""The executor with real child processes: exit codes, timeout TERM then KILL, bounded output, env, groups."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

from taskserver.runtime.executor import Executor, Outcome, job_argv
from taskserver.runtime.model import Every, JobDef, State


def run(ex: Executor, argv: list[str], env: dict[str, str] | None = None,
        timeout: float | None = None) -> Outcome:
    ex.spawn("k", argv, env or {}, timeout)
    ((_, outcome),) = ex.wait_all(limit=60)
    return outcome


def test_exit_codes_and_output(tmp_path: Path) -> None:
    ex = Executor(output_tail=4096)
    ok = run(ex, ["sh", "-c", "echo out; echo err >&2"])
    assert (ok.state, ok.reason, ok.exit_code) == (State.OK, None, 0)
    assert ok.output == "out\nerr\n"
    bad = run(ex, ["sh", "-c", "exit 7"])
    assert (bad.state, bad.reason, bad.exit_code) == (State.ERR, "exit code 7", 7)


def test_death_by_signal_is_a_crash() -> None:
    out = run(Executor(output_tail=100), ["sh", "-c", "kill -SEGV $$"])
    assert (out.state, out.reason, out.exit_code) == (State.ERR, "crashed", -signal.SIGSEGV)


def test_output_tail_is_bounded() -> None:
    out = run(Executor(output_tail=10), [sys.executable, "-c", "print('x' * 100000 + 'THE-END')"])
    assert out.output == "xx" + "THE-END\n"


def test_environment_names_the_run() -> None:
    os.environ["NOTIFY_SOCKET"] = "/nonexistent"  # the daemon's own; must not leak into jobs
    try:
        out = run(Executor(output_tail=4096), ["sh", "-c", 'echo "$TASKSERVER_RUN_ID/$NOTIFY_SOCKET"'],
                  env={"TASKSERVER_RUN_ID": "17"})
    finally:
        del os.environ["NOTIFY_SOCKET"]
    assert out.output == "17/\n"


def test_timeout_terms_the_whole_group(tmp_path: Path) -> None:
    # The job starts a grandchild; TERM must reach it too (own session = own process group).
    marker = tmp_path / "grandchild.pid"
    script = f"sleep 300 & echo $! > {marker}; wait"
    out = run(Executor(output_tail=100), ["sh", "-c", script], timeout=0.5)
    assert (out.state, out.reason) == (State.ERR, "timeout")
    gpid = int(marker.read_text())
    end = time.monotonic() + 30
    while alive(gpid) and time.monotonic() < end:  # the signal was sent; give it time to land
        time.sleep(0.02)
    assert not alive(gpid)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_timeout_kills_when_term_is_ignored() -> None:
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(300)"
    out = run(Executor(output_tail=100, kill_grace=0.5), [sys.executable, "-c", code], timeout=0.5)
    assert (out.state, out.reason, out.exit_code) == (State.ERR, "timeout", -signal.SIGKILL)


def test_child_is_a_session_leader_and_gets_cwd(tmp_path: Path) -> None:
    out = run(Executor(output_tail=100, cwd=tmp_path),
              [sys.executable, "-c", "import os; print(os.getsid(0) == os.getpid(), os.getcwd())"])
    assert out.output == f"True {tmp_path}\n"


def test_call_jobs_run_through_the_runner(tmp_path: Path) -> None:
    (tmp_path / "mymod.py").write_text(textwrap.dedent("""
        def good():
            print("called")
        def three():
            return 3
        def boom():
            raise RuntimeError("kaput")
    """))
    ex = Executor(output_tail=4096)
    env = {"PYTHONPATH": str(tmp_path)}
    job = JobDef(name="j", tenant="t", trigger=Every(60), call="mymod:good")
    assert run(ex, job_argv(job), env).output == "called\n"
    three = JobDef(name="j", tenant="t", trigger=None, call="mymod:three")
    assert run(ex, job_argv(three), env).exit_code == 3
    boom = run(ex, job_argv(JobDef(name="j", tenant="t", trigger=None, call="mymod:boom")), env)
    assert boom.reason == "exit code 1" and "RuntimeError: kaput" in boom.output


def test_shell_jobs_use_sh() -> None:
    job = JobDef(name="j", tenant="t", trigger=None, command=("echo $((1+2))",), shell=True)
    assert run(Executor(output_tail=100), job_argv(job)).output == "3\n"


def test_missing_program_raises() -> None:
    ex = Executor(output_tail=100)
    try:
        ex.spawn("k", ["/nonexistent/prog"], {}, None)
    except OSError:
        pass
    else:
        raise AssertionError("spawn of a missing program must raise")
    assert ex.children == {}


def test_spawned_child_gets_a_clean_process_state(tmp_path: Path) -> None:
    # posix_spawn path (no cwd): own session, stdin /dev/null, no inherited fds, SIGPIPE not ignored.
    leak = os.open(tmp_path / "inheritable", os.O_CREAT | os.O_WRONLY)
    os.set_inheritable(leak, True)
    code = ("import os; print(os.getsid(0) == os.getpid(), os.readlink('/proc/self/fd/0'), "
            "sorted(int(f) for f in os.listdir('/proc/self/fd') if int(f) > 2))")
    try:
        ex = Executor(output_tail=1000)
        out = run(ex, [sys.executable, "-c", code])
        ignored = run(ex, ["grep", "SigIgn", "/proc/self/status"]).output.split()[1]
    finally:
        os.close(leak)
    assert out.output == "True /dev/null [3]\n"  # 3: the fd listdir itself opened
    assert int(ignored, 16) & (1 << (signal.SIGPIPE - 1)) == 0  # Python ignores SIGPIPE; jobs must not


def test_program_found_on_path() -> None:
    assert run(Executor(output_tail=100), ["echo", "via PATH"]).output == "via PATH\n"


def test_cancel_stops_the_group_with_the_stop_policy_once() -> None:
    ex = Executor(output_tail=100, kill_grace=0.5)
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\n" \
           "time.sleep(300)"
    child = ex.spawn("k", [sys.executable, "-c", code], {}, None)
    while not child.tail and child.fd is not None:  # its TERM handler is in place once it printed
        ex.read(child)
        time.sleep(0.01)
    assert ex.cancel(child.pid, "ops", time.time())
    assert not ex.cancel(child.pid, "again", time.time())  # asked already: the first name stays
    assert not ex.cancel(child.pid + 100000, "ops", time.time())  # not our child: nothing is signalled
    ((_, out),) = ex.wait_all(limit=60)
    assert (out.state, out.reason, out.exit_code) == (State.ERR, "cancelled by ops", -signal.SIGKILL)
