"""Status file text (runtime/statusfile.py): the quick time stamps say exactly what ``datetime`` says, the
remembered one-line forms and commands are those worked out afresh, and a rewrite leaves exactly the new
text in a real file, whether it got longer or shorter."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import struct
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from taskserver.runtime import statusfile
from taskserver.runtime.model import State
from taskserver.runtime.store import Run


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def test_stamps_are_what_datetime_writes() -> None:
    rng = random.Random(12)
    values = [0.0, 1.0, 0.0005, 0.0015, 0.9994995, 0.9999995, 0.9999994999, 1_700_000_000.9995,
              1_799_999_999.999_999_5, 4_102_444_799.9999, 1e-7, 86_399.999_5, 951_782_400.25]
    values += [rng.uniform(0, 4e9) for _ in range(20_000)]
    values += [rng.randrange(0, 4_000_000_000) + rng.randrange(0, 1_000_000) / 1e6 for _ in range(20_000)]
    # neighbours of halves of a microsecond and of a millisecond: where rounding could differ
    for _ in range(5_000):
        base = rng.randrange(0, 4_000_000_000) + rng.randrange(0, 1_000_000) / 1e6 + 0.000_000_5
        bits = struct.unpack("<q", struct.pack("<d", base))[0]
        values += [struct.unpack("<d", struct.pack("<q", bits + d))[0] for d in (-1, 0, 1)]
    for t in values:
        assert statusfile._stamp(t) == _iso(t), t
    for t in sorted(values)[:2000]:  # in order too: the cached second must follow
        assert statusfile._stamp(t) == _iso(t), t
    for t in values[:300] * 2:  # stamped again (a run's second write): the kept text is the same
        assert statusfile._stamp(t) == _iso(t), t
    assert statusfile._stamp(None) == ""


def test_remembered_forms_are_the_fresh_ones() -> None:
    for value in ["q", "a\nb", "x\u2028y", "plain name", "tab\there", ""]:
        for _ in range(2):
            want = json.dumps(value) if any(c in value for c in "\n\u2028\t") else value
            assert statusfile._one_line(value) == want
    argv = ("/bin/echo", "é", "a\nb")
    assert statusfile._argv_text(argv) == json.dumps(list(argv)) == statusfile._argv_text(argv)


def _run(state: State, reason: str | None = None) -> Run:
    return Run(id=7, job="", queue="q", state=state, reason=reason, due=None, created=1.5, started=2.25,
               finished=None if state is State.RUN else 3.0, pid=None, instance=None, exit_code=None,
               attempt=0, argv=("/bin/true",), output="", message=None, queued=True)


def test_a_rewrite_leaves_exactly_the_new_text(tmp_path: Path) -> None:
    path = tmp_path / "7"
    long_text = statusfile.render(_run(State.ERR, "exit code 1, and a long reason " * 4), "t")
    short_text = statusfile.render(_run(State.RUN), "t")
    statusfile.rewrite(path, long_text)  # made (no file yet)
    assert path.read_text() == long_text
    statusfile.rewrite(str(path), short_text)  # shorter: the rest is cut off
    assert path.read_text() == short_text
    statusfile.rewrite(path, long_text)  # longer: written over
    assert path.read_text() == long_text


def test_a_kept_file_takes_the_runs_end_and_a_replaced_one_is_written_by_its_path(tmp_path: Path) -> None:
    path = tmp_path / "7"
    run_text, end_text = (statusfile.render(_run(s), "t") for s in (State.RUN, State.OK))
    assert statusfile.rewrite(path, "QUE\n", keep=True) is None  # made (no spare): not kept
    fd = statusfile.rewrite(path, run_text, keep=True)
    assert fd is not None and path.read_text() == run_text
    statusfile.rewrite_open(fd, path, end_text)
    assert path.read_text() == end_text
    fd = statusfile.rewrite(path, run_text, keep=True)
    assert fd is not None
    path.unlink()
    path.write_text("put there by someone else\n")  # a new file at the path: the end goes there
    statusfile.rewrite_open(fd, path, end_text)
    assert path.read_text() == end_text
    with pytest.raises(OSError):  # closed by rewrite_open
        os.fstat(fd)


def test_a_full_disk_leaves_no_temporary_file(tmp_path: Path) -> None:
    """A status file made on a full file system (a real 64 KiB tmpfs, filled): the write fails, and the empty
    temporary file it was written into is gone too (an audit found one left per failed `jobs enqueue`)."""
    full = tmp_path / "full"
    full.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)],
                                           check=False, capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        (full / "status").mkdir()
        with (full / "filler").open("wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        with pytest.raises(OSError) as info:
            statusfile.write(full / "status" / "7", "QUE\n" + "x" * 8192)
        assert info.value.errno == errno.ENOSPC
        assert os.listdir(full / "status") == []
    finally:
        subprocess.run(["umount", str(full)], check=False)
