"""What the daemon works out itself to keep shutil (and with it bz2, lzma and zlib) out of its memory,
against shutil: the executor's PATH lookup (runtime/executor.py ``which``) gives ``shutil.which``'s answer
for random PATHs over real files (executable, not executable, a directory, a symlink, missing; empty and
repeated entries, the working directory), and argparse's width (runtime/cli_parser.py ``columns``) is
``shutil.get_terminal_size``'s, on a terminal and off one, with COLUMNS set, unset and bad."""

from __future__ import annotations

import fcntl
import os
import pty
import random
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from taskserver.runtime.executor import which

KINDS = ("exec", "plain", "dir", "link", "none")


def make(where: Path, name: str, kind: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    target = where / name
    if kind == "exec":
        target.write_text("#!/bin/sh\n")
        target.chmod(0o755)
    elif kind == "plain":
        target.write_text("data\n")
        target.chmod(0o644)
    elif kind == "dir":
        target.mkdir()
    elif kind == "link":
        target.symlink_to("/bin/true")


@pytest.mark.parametrize("seed", range(200))
def test_which_answers_as_shutil_which(seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(seed)
    folders = [tmp_path / f"d{i}" for i in range(5)]
    for folder in folders:
        for name in ("tool", "other"):
            make(folder, name, rnd.choice(KINDS))
    cwd = tmp_path / "cwd"
    make(cwd, "tool", rnd.choice(KINDS))
    monkeypatch.chdir(cwd)
    entries = [str(rnd.choice(folders)) for _ in range(rnd.randint(0, 6))]
    entries += [""] * rnd.randint(0, 1) + [str(tmp_path / "missing")] * rnd.randint(0, 1)
    rnd.shuffle(entries)
    path = os.pathsep.join(entries)
    for name in ("tool", "other", "absent"):
        assert which(name, path) == shutil.which(name, path=path), (name, path)


BOTH = ("from taskserver.runtime.cli_parser import columns; import shutil; "
        "print(columns(), shutil.get_terminal_size().columns - 2)")


@pytest.mark.parametrize("env", [None, "100", "0", "-5", "wide", "", "1"])
@pytest.mark.parametrize("tty", [False, True])
def test_argparse_width_is_shutils(env: str | None, tty: bool) -> None:
    environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if env is not None:
        environ["COLUMNS"] = env
    if not tty:
        out = subprocess.run([sys.executable, "-c", BOTH], env=environ, capture_output=True, text=True,
                             check=True).stdout
    else:  # stdout on a pseudo-terminal of a set size
        leader, follower = pty.openpty()
        os.set_blocking(leader, True)
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 123, 0, 0))
        proc = subprocess.run([sys.executable, "-c", BOTH], env=environ, stdout=follower, check=True)
        os.close(follower)
        out = os.read(leader, 1024).decode()
        os.close(leader)
        assert proc.returncode == 0
    ours, theirs = out.split()
    assert ours == theirs, (env, tty, out)
    if tty and env in (None, "0", "-5", "wide", ""):
        assert ours == "121"  # the terminal's width counts
