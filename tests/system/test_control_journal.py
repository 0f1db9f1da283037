"""Logging of the real command: journald priority prefixes when stderr is the journal stream, timestamps
otherwise; `run --time-limit` and `--once` end by themselves with exit 0."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonproc import TASKSERVER, Sandbox

from taskserver.runtime.logs import JournalFormatter

STAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    sandbox = Sandbox(tmp_path)
    yield sandbox
    sandbox.cleanup()


def _run_with_stderr_file(box: Sandbox, *argv: str, journal: str | None) -> tuple[int, list[str]]:
    err_path = box.base / "stderr.txt"
    with open(err_path, "w") as err:
        st = os.fstat(err.fileno())
        extra = {"JOURNAL_STREAM": journal.format(dev=st.st_dev, ino=st.st_ino)} if journal else {}
        code = subprocess.run(
            [TASKSERVER, "-c", str(box.base / "a.yaml"), *argv],
            env=box.env(extra),
            stdout=subprocess.DEVNULL,
            stderr=err,
            timeout=60,
            check=False,
        ).returncode
    return code, err_path.read_text().splitlines()


def test_journal_stream_gets_priority_prefixes_and_no_timestamps(box: Sandbox) -> None:
    code, lines = _run_with_stderr_file(box, "-v", "run", "--time-limit", "0.5", journal="{dev}:{ino}")
    assert code == 0
    assert lines, "the daemon logged nothing"
    assert all(re.match(r"<[0-7]>", line) for line in lines), lines
    assert any(line.startswith("<6>") for line in lines)  # info: "no config file ... embedded default"
    assert any(line.startswith("<7>") for line in lines)  # --verbose adds debug
    assert not any(STAMP.search(line) for line in lines)


def test_plain_stderr_gets_timestamps_and_levels(box: Sandbox) -> None:
    code, lines = _run_with_stderr_file(box, "run", "--time-limit", "0.5", journal=None)
    assert code == 0
    assert lines and all(STAMP.match(line) for line in lines), lines
    assert any(" INFO " in line for line in lines)
    assert not any(" DEBUG " in line for line in lines)  # no --verbose


def test_journal_stream_of_another_file_is_ignored(box: Sandbox) -> None:
    # JOURNAL_STREAM inherited from a parent whose stderr was the journal: ours is not, so no prefixes
    code, lines = _run_with_stderr_file(box, "run", "--once", journal="{dev}:1")
    assert code == 0
    assert lines and not any(line.startswith("<") for line in lines)
    assert any("would read" in line or "no config file" in line for line in lines)


def test_prefix_per_level() -> None:
    fmt = JournalFormatter("%(message)s")
    for level, prefix in ((logging.ERROR, "<3>"), (logging.WARNING, "<4>"), (logging.INFO, "<6>")):
        record = logging.LogRecord("t", level, __file__, 1, "line one\nline two", None, None)
        assert fmt.format(record) == f"{prefix}line one\n{prefix}line two"
