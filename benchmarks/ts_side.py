"""The taskserver side of each benchmark: the real `taskserver run` as a subprocess, figures read from its
run store (SQLite) and /proc.

Usage: python benchmarks/ts_side.py WORKLOAD [ARGS...]; prints one JSON object on stdout.
Lateness is taken two ways: the daemon's own record (``started - due`` in the store, taken just before it
forks) and the job's side (the job is ``/bin/date +%s.%N``; its output is the time it ran, minus its due).
"""

from __future__ import annotations

import json
import os
import pwd
import resource
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import IDLE_HOUR, LATE_COMMAND, cpu_ns_precise, cpu_split, discard, percentile, rss_bytes

TASKSERVER = str(Path(sys.executable).parent / "taskserver")
# How start-up grows beyond what one config may hold (10,000 jobs, 1 MiB, 100,000 values: see
# docs/configuration.md) is measured with those limits raised tenfold in the benchmark's daemon only: the
# script it runs (argv[1], then the daemon's own arguments) starts after this; every other check is the same.
RAISED_LIMITS = """
import runpy, sys
from taskserver.runtime import limits
for name in ("MAX_FILE_BYTES", "MAX_LINES", "MAX_NODES", "MAX_ENTRIES", "MAX_JOBS"):
    setattr(limits, name, getattr(limits, name) * 10)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
ME = pwd.getpwuid(os.geteuid()).pw_name


class Server:
    """A private config and state dir (the pid file goes where the user's always does, named after the
    private config); ``run`` the daemon on a given job list."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="taskserver-bench-"))
        self.state = self.base / "state"
        self.config = self.base / "bench.yaml"
        self.proc: subprocess.Popen[bytes] | None = None
        self.raise_limits = False  # start the daemon with the config's input limits raised (RAISED_LIMITS)

    def write_config(self, jobs: list[str]) -> None:
        """``jobs``: YAML lines of the jobs mapping (already indented under ``jobs:``)."""
        head = (
            f"task_server:\n  run_as: {ME}\n  state_dir: {self.state}\n  memory_limit: 1G\n"
            f"tenants:\n  bench:\n    login: {ME}\n    jobs:\n"
        )
        self.config.write_text(head + "".join(jobs) if jobs else head.replace("    jobs:\n", ""))
        self.config.chmod(0o644)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env.update(STATE_DIRECTORY=str(self.state))
        env.update(extra or {})
        return env

    def start(self, *argv: str) -> float:
        """Start `taskserver run ARGV` and wait for READY=1 (through a notify socket); returns that time."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = str(self.base / "notify.sock")
        Path(path).unlink(missing_ok=True)  # a second start of the same server
        sock.bind(path)
        sock.settimeout(120)
        log = open(self.base / "daemon.log", "wb")  # noqa: SIM115 - lives as long as the daemon
        # TS_PROFILE=FILE: run the daemon under cProfile (to find where a target is missed)
        prof = os.environ.get("TS_PROFILE")
        wrap = [sys.executable, "-m", "cProfile", "-o", prof] if prof else []
        if self.raise_limits:
            wrap = [sys.executable, "-c", RAISED_LIMITS]
        self.proc = subprocess.Popen(
            [*wrap, TASKSERVER, "-c", str(self.config), "run", *argv],
            env=self.env({"NOTIFY_SOCKET": path}),
            stdout=log,
            stderr=log,
        )
        while b"READY=1" not in sock.recv(4096).split(b"\n"):
            pass
        ready = time.time()
        sock.close()
        return ready

    def wait(self, timeout: float = 300) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.state / "bench.sqlite")
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def cleanup(self) -> None:
        self.stop()
        discard(self.base)


def _date_job(name: str, trigger: str) -> str:
    return f'      {name}:\n        {trigger}\n        command: {json.dumps(LATE_COMMAND)}\n'


def lateness(n: int, base: float, step: float) -> dict[str, Any]:
    """Job i every (base + i*step) s: first due at start + base + i*step; lateness of each first run.
    The daemon is stopped once every job's first run ended (or after a generous limit); its RSS is read
    then (after every job ran once: what it keeps per job that ran)."""
    srv = Server()
    try:
        srv.write_config([_date_job(f"j{i}", f"every: {base + i * step:.3f}") for i in range(n)])
        srv.start()
        deadline = time.time() + base + n * step + 60 + n / 50
        while time.time() < deadline:
            time.sleep(0.25)
            if srv.rows("SELECT COUNT(DISTINCT job) FROM runs WHERE state IN ('OK', 'ERR')")[0][0] >= n:
                break
        assert srv.proc is not None
        rss_ran = rss_bytes(srv.proc.pid)
        srv.stop()
        first = srv.rows(
            "SELECT r.due, r.started, r.output, r.finished FROM runs r JOIN "
            "(SELECT job, MIN(due) AS due FROM runs WHERE state='OK' GROUP BY job) f "
            "ON r.job = f.job AND r.due = f.due"
        )
        missed = srv.rows("SELECT COUNT(*) FROM runs WHERE state != 'OK'")[0][0]
    finally:
        srv.cleanup()
    daemon = sorted(started - due for due, started, _, _ in first)
    child = sorted(float(out.strip()) - due for due, _, out, _ in first if out.strip())
    span = max(f for *_, f in first) - min(s for _, s, _, _ in first) if first else 0
    return {
        "n": len(first),
        "not_ok": missed,
        "p50": percentile(daemon, 50),
        "p99": percentile(daemon, 99),
        "max": daemon[-1] if daemon else None,
        "child_p50": percentile(child, 50),
        "child_p99": percentile(child, 99),
        "per_s": len(first) / span if span else None,
        "rss_ran": rss_ran,
        "values": daemon,
    }


def idle(n: int, window: float) -> dict[str, Any]:
    """n jobs scheduled once a day; CPU used over ``window`` idle seconds, RSS, and `status` wall time."""
    srv = Server()
    try:
        srv.write_config([_date_job(f"j{i}", f'cron: "{i % 60} {IDLE_HOUR} * * *"') for i in range(n)])
        t0 = time.time()
        ready = srv.start()
        assert srv.proc is not None
        pid = srv.proc.pid
        time.sleep(1.0)  # settle: it is now asleep until its next timer
        before = cpu_ns_precise(pid)
        time.sleep(window)
        used = cpu_ns_precise(pid) - before
        rss = rss_bytes(pid)
        hwm = _vm(pid, "VmHWM")
        status_s, status_cpu = status_times(srv)
    finally:
        srv.cleanup()
    return {
        "startup_s": ready - t0,
        "cpu_per_min": used * 60 / window,
        "rss": rss,
        "hwm": hwm,
        "status_p50": percentile(status_s, 50),
        "status_cpu_p50": percentile(status_cpu, 50),
    }


def _vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def status_times(srv: Server, count: int = 15) -> tuple[list[float], list[float]]:
    """Wall and CPU time of `taskserver -c CONFIG status` against the running daemon (new process each)."""
    walls, cpus = [], []
    for _ in range(count):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        res = subprocess.run(
            [TASKSERVER, "-c", str(srv.config), "status"], env=srv.env(), capture_output=True, check=False
        )
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        assert res.returncode == 0, res
    return sorted(walls), sorted(cpus)


def status_small() -> dict[str, Any]:
    srv = Server()
    try:
        srv.write_config([_date_job("j0", f'cron: "0 {IDLE_HOUR} * * *"')])
        srv.start()
        walls, cpus = status_times(srv)
    finally:
        srv.cleanup()
    return {"status_p50": percentile(walls, 50), "status_cpu_p50": percentile(cpus, 50)}


def throughput(n: int) -> dict[str, Any]:
    """n one-off /bin/true tasks queued (no queue name: they may run in parallel); completed per second.
    First as `jobs enqueue` queues them (each with its status file), then as the client does by default
    (no status file: the daemon makes each one when it starts the task)."""
    with_files = _throughput(n, status_files=True)
    without = _throughput(n, status_files=False)
    return {"n": with_files["n"], "per_s": with_files["per_s"], "per_s_no_file": without["per_s"]}


def serial(n: int) -> dict[str, Any]:
    """n /bin/true tasks in one named queue (one at a time, in order): runs per second and the daemon's CPU
    per run, at two queue lengths, to show whether a wake-up's work grows with what waits."""
    got = _throughput(n, status_files=True, queue="serial")
    return {"n": got["n"], "per_s": got["per_s"],
            "main_cpu_per_run_ms": loop_cpu(n, queue="serial")["main_cpu_s_per_run_ms"]}


def _throughput(n: int, *, status_files: bool, queue: str | None = None) -> dict[str, Any]:
    srv = Server()
    try:
        srv.write_config([])
        _queue(srv, n, status_files=status_files, queue=queue)
        srv.start()
        deadline = time.time() + 300
        while time.time() < deadline:
            done = srv.rows("SELECT COUNT(*) FROM runs WHERE state IN ('OK','ERR')")[0][0]
            if done >= n:
                break
            time.sleep(0.2)
        first, last, ok = srv.rows("SELECT MIN(started), MAX(finished), SUM(state='OK') FROM runs")[0]
    finally:
        srv.cleanup()
    return {"n": ok, "per_s": ok / (last - first)}


def loop_cpu(n: int, queue: str | None = None) -> dict[str, Any]:
    """The daemon's own CPU per run: n queued /bin/true tasks (with their status files) run by `taskserver
    run --once`, its CPU (all its threads, and its main thread, the loop, alone; not its children's) read
    from /proc once it has exited, minus that of a `run --once` with nothing to do.  CPU time moves with
    the machine's load far less than wall time (caches shared with other work still make it move): compare
    two versions of the loop by runs one right after the other."""
    empty = _once_cpu(0)
    full = _once_cpu(n, queue=queue)
    per_run = {f"{k}_per_run_ms": round((full[k] - empty[k]) * 1000 / n, 3)
               for k in ("cpu_s", "user_s", "sys_s", "main_cpu_s", "child_cpu_s")}
    return {"n": n, "cpu_s": full["cpu_s"], "base_cpu_s": empty["cpu_s"], "wall_s": full["wall_s"], **per_run}


def _once_cpu(n: int, queue: str | None = None) -> dict[str, Any]:
    srv = Server()
    try:
        srv.write_config([])
        if n:
            _queue(srv, n, status_files=True, queue=queue)
        t0, (_, kids) = time.time(), cpu_split()
        proc = subprocess.Popen([TASKSERVER, "-c", str(srv.config), "run", "--once"], env=srv.env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        got = _zombie_times(proc.pid)
        got["wall_s"] = time.time() - t0
        assert proc.wait() == 0
        got["child_cpu_s"] = cpu_split()[1] - kids - got["cpu_s"]  # what the daemon's children used
        if n:
            done = srv.rows("SELECT COUNT(*) FROM runs WHERE state='OK'")[0][0]
            assert done == n, f"{done} of {n} runs OK"
    finally:
        srv.cleanup()
    return got


def _zombie_times(pid: int) -> dict[str, float]:
    """CPU seconds of a child process, read once it is a zombie: all its threads (not its children), and
    its main thread alone (the loop; the others spawn and make spare files)."""
    tick = os.sysconf("SC_CLK_TCK")
    while True:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            break
        time.sleep(0.01)
    main = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    user, system = (int(f) / tick for f in fields[11:13])
    return {"cpu_s": user + system, "user_s": user, "sys_s": system,
            "main_cpu_s": (int(main[11]) + int(main[12])) / tick}


def _queue(srv: Server, n: int, *, status_files: bool, queue: str | None = None) -> None:
    """n /bin/true tasks queued before the daemon starts, through the store as `jobs enqueue` writes them;
    by default no queue, so they may run side by side (the client API takes only named queues)."""
    from taskserver.runtime import config, statusfile, store

    cfg = config.load(srv.config)
    tenant = cfg.tenants[0]
    st = store.open_store(tenant, srv.state, verify=True)
    with st.batch():
        for _ in range(n):
            st.add("", queue=queue, argv=["/bin/true"], now=time.time())
    if status_files:
        for run in st.queued():
            statusfile.update(cfg.tenant_dir(tenant.name), tenant.name, run)
    st.close()


def enqueue(n: int, jobs: int = 0) -> dict[str, Any]:
    """The CLI's wall time against an idle daemon, then tasks/s through the client API: n / 10 single calls
    (a transaction and a wake-up each), one batch of n, and a batch of n / 10 with status files. ``jobs``:
    daily jobs in the config (the CLI reads the file each time)."""
    from taskserver.runtime.client import Client

    srv = Server()
    try:
        srv.write_config([_date_job(f"j{i}", f'cron: "{i % 60} {IDLE_HOUR} * * *"') for i in range(jobs)])
        # as a config in use: not changed in the seconds before its daemon read it, so the daemon publishes
        # where its jobs are and the settings a lean `jobs enqueue` needs (runtime/cli_enqueue.py)
        time.sleep(2.5)
        srv.start()
        walls = []
        for _ in range(15):
            t = time.perf_counter()
            subprocess.run([TASKSERVER, "-c", str(srv.config), "jobs", "enqueue", "--queue", "cli", "--",
                            "/bin/true"], env=srv.env(), capture_output=True, check=True)
            walls.append(time.perf_counter() - t)
        with Client(srv.config) as client:
            client.enqueue(["/bin/true"])  # the store is opened and checked once, on the first call
            t = time.perf_counter()
            for i in range(n // 10):
                client.enqueue(["/bin/true", str(i)], queue="single")
            single = n // 10 / (time.perf_counter() - t)
            t = time.perf_counter()
            client.enqueue_many([["/bin/true", str(i)] for i in range(n)], queue="bulk")
            many = n / (time.perf_counter() - t)
            t = time.perf_counter()
            client.enqueue_many([["/bin/true", str(i)] for i in range(n // 10)], queue="bulk2",
                                status_files=True)
            many_files = n // 10 / (time.perf_counter() - t)
    finally:
        srv.cleanup()
    return {"many_per_s": many, "many_files_per_s": many_files, "single_per_s": single,
            "cli_p50": percentile(sorted(walls), 50)}


def startup(n: int) -> dict[str, Any]:
    """Seconds from `taskserver run` until READY with n daily jobs, its store made by a first start: once
    parsing the config (``parse_s``: a start after the file was edited, and the start that keeps its parse
    in the state dir) and once more on the same text (``startup_s``: every start after it, as at boot)."""
    srv = Server()
    srv.raise_limits = n > 10_000  # more jobs than one config may hold: see RAISED_LIMITS
    try:
        srv.write_config([_date_job(f"j{i}", f'cron: "{i % 60} {IDLE_HOUR} * * *"') for i in range(n)])
        srv.start()
        srv.stop()
        t0 = time.time()
        parsed = srv.start() - t0
        srv.stop()
        t0 = time.time()
        ready = srv.start()
        assert srv.proc is not None
        rss = rss_bytes(srv.proc.pid)
    finally:
        srv.cleanup()
    return {"startup_s": ready - t0, "parse_s": parsed, "rss": rss}


def catch_up(n: int, days: float) -> dict[str, Any]:
    """CPU the daemon spends from start to READY with n jobs whose last due time is ``days`` ago (the
    store is edited to say so), minus a start with nothing to catch up."""
    srv = Server()
    try:
        srv.write_config([_date_job(f"j{i}", f'cron: "*/{5 + i % 10} * * * *"') for i in range(n)])
        srv.start()
        srv.stop()
        srv.start()
        assert srv.proc is not None
        base = cpu_ns_precise(srv.proc.pid)
        srv.stop()
        db = sqlite3.connect(srv.state / "bench.sqlite")
        db.execute("UPDATE jobs SET last_due = last_due - ?", (days * 86400,))
        db.commit()
        db.close()
        srv.start()
        assert srv.proc is not None
        cpu = cpu_ns_precise(srv.proc.pid)
    finally:
        srv.cleanup()
    return {"cpu_s": cpu - base, "plain_start_cpu_s": base}


def main(argv: list[str]) -> int:
    work = argv[0]
    if work == "lateness":
        result = lateness(int(argv[1]), float(argv[2]), float(argv[3]))
    elif work == "idle":
        result = idle(int(argv[1]), float(argv[2]))
    elif work == "throughput":
        result = throughput(int(argv[1]))
    elif work == "enqueue":
        result = enqueue(int(argv[1]), int(argv[2]) if len(argv) > 2 else 0)
    elif work == "startup":
        result = startup(int(argv[1]))
    elif work == "catchup":
        result = catch_up(int(argv[1]), float(argv[2]))
    elif work == "serial":
        result = serial(int(argv[1]))
    elif work == "loopcpu":
        result = loop_cpu(int(argv[1]))
    elif work == "status":
        result = status_small()
    else:
        raise SystemExit(f"unknown workload {work}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
