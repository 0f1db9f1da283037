"""A private PostgreSQL server for the tests: Debian's packaged server binaries, initdb and pg_ctl into a
temporary directory, listening on a unix socket only (no TCP, no host configuration touched).

Run as root, the server runs as the `postgres` user (PostgreSQL refuses to run as root); run as another
user, as that user. ``PgServer.database()`` makes a new empty database per test.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def bindir() -> Path | None:
    """Where initdb and pg_ctl are: $TASKSERVER_PG_BINDIR, the PATH, or Debian's versioned layout."""
    given = os.environ.get("TASKSERVER_PG_BINDIR")
    if given:
        return Path(given)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


class PgServer:
    def __init__(self) -> None:
        bin_dir = bindir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL's server is not installed (Debian package postgresql)")
        self.bin = bin_dir
        self.base = Path(tempfile.mkdtemp(prefix="taskserver-pg-"))
        self.base.chmod(0o755)
        self.data, self.sock = self.base / "data", self.base / "sock"
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
        self.sock.mkdir()
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.sock, pw.pw_uid, pw.pw_gid)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self._as_owner(str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres",
                       "--no-sync", "-E", "UTF8")
        self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"), "-w",
                       "-o", f"-k {self.sock} -c listen_addresses='' -c fsync=off -c max_connections=200",
                       "start")

    def _as_owner(self, *argv: str) -> subprocess.CompletedProcess[str]:
        cmd = ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, cwd=self.base)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        return proc

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@/{db}?host={self.sock}"

    def database(self) -> str:
        """A new empty database; its DSN."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self, mode: str = "fast") -> None:
        self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def start(self) -> None:
        self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"), "-w",
                       "-o", f"-k {self.sock} -c listen_addresses='' -c fsync=off -c max_connections=200",
                       "start")

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def locked(dsn: str) -> Iterator[Any]:
    """Every taskserver table of the database locked by another session until the block ends, so that
    each reading of the store waits, for as long as a test wants; yields a session to watch them with."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'taskserver%' ORDER BY tablename")]
        conn.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
        try:
            with psycopg.connect(dsn, autocommit=True) as watch:
                yield watch
        finally:
            conn.rollback()


def waiting(watch: Any) -> int:
    """Sessions that wait for a lock in the database: the readings of a ``locked`` store going on."""
    row = watch.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'").fetchone()
    return int(row[0])

