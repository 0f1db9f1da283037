"""Status files made ahead (runtime/spares.py) in a real directory: as many as expected and missing, with
the status file's mode; a new status file is a filled spare renamed into place; spares a dead daemon left
are taken over; the unused ones are removed at the end."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from taskserver.runtime import spares as spares_mod
from taskserver.runtime import statusfile
from taskserver.runtime.model import State
from taskserver.runtime.spares import PREFIX, Spares
from taskserver.runtime.store import Run


def spares_in(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith(PREFIX))


def wait_for_spares(directory: Path, count: int) -> None:
    end = time.monotonic() + 30
    while len(spares_in(directory)) != count:
        assert time.monotonic() < end, f"{spares_in(directory)} after 30 s, expected {count}"
        time.sleep(0.01)


def a_run(run_id: int) -> Run:
    return Run(id=run_id, job="", queue="q", state=State.RUN, reason=None, due=None, created=1.0, started=2.0,
               finished=None, pid=None, instance=None, exit_code=None, attempt=0, argv=("/bin/true",),
               output="", message=None, queued=True)


def test_spares_for_the_missing_files_become_status_files(tmp_path: Path) -> None:
    directory = Path(statusfile.status_dir(tmp_path, "t"))
    mode = statusfile.prepare(directory)
    (directory / "2").write_text("QUE\n")  # queued with its status file (jobs enqueue): none needed
    spares = Spares()
    try:
        spares.expect(directory, ["1", "2", "3"], mode, None)
        wait_for_spares(directory, 2)
        for name in spares_in(directory):
            st = (directory / name).stat()
            assert st.st_mode & 0o777 == mode and st.st_size == 0
        made = Path(statusfile.update(tmp_path, "t", a_run(1), spares))
        assert made == directory / "1" and made.read_text() == statusfile.render(a_run(1), "t")
        assert made.stat().st_mode & 0o777 == mode
        assert len(spares_in(directory)) == 1  # the file is a spare renamed: no new one was made for it
        time.sleep(0.2)
        assert len(spares_in(directory)) == 1  # and none is made again: one more file is expected, not two
    finally:
        spares.close()
    assert spares_in(directory) == []  # the unused one is removed at the end


def test_spares_of_a_dead_daemon_are_taken_over(tmp_path: Path) -> None:
    directory = Path(statusfile.status_dir(tmp_path, "t"))
    mode = statusfile.prepare(directory)
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True).stdout.strip()
    left = directory / f"{PREFIX}{dead}.7"
    left.write_text("RUN\nhalf-written by a daemon that died\n")  # filled, never renamed into place
    spares = Spares()
    try:
        spares.expect(directory, ["5"], mode, None)
        end = time.monotonic() + 30
        while left.exists():  # renamed to ours
            assert time.monotonic() < end, "the dead daemon's spare was not taken over"
            time.sleep(0.01)
        time.sleep(0.2)
        assert len(spares_in(directory)) == 1  # not a new one: one was expected and one was there
        made = Path(statusfile.update(tmp_path, "t", a_run(5), spares))
        assert made.read_text() == statusfile.render(a_run(5), "t")  # its old text is gone, all of it
        assert spares_in(directory) == []
    finally:
        spares.close()


def test_a_spare_left_under_our_own_pid_is_emptied_before_it_is_filled(tmp_path: Path) -> None:
    """A daemon that died with this process's pid (reused) left a filled spare under the name the next
    spare gets: it is made again empty, so the status file holds exactly its own text (a fill is a write
    without a truncate)."""
    directory = Path(statusfile.status_dir(tmp_path, "t"))
    mode = statusfile.prepare(directory)
    spares = Spares()
    left = directory / f"{PREFIX}{os.getpid()}.1"  # the first name this Spares gives
    left.write_text("RUN\nid=1\n" + "a longer text a dead daemon with our pid wrote\n" * 20)
    try:
        spares.expect(directory, ["5"], mode, None)
        end = time.monotonic() + 30
        while left.stat().st_size:  # made again: emptied
            assert time.monotonic() < end, "the left spare was not made again"
            time.sleep(0.01)
        made = Path(statusfile.update(tmp_path, "t", a_run(5), spares))
        assert made.read_text() == statusfile.render(a_run(5), "t")
        assert not left.exists()  # it was the spare filled and renamed into place
    finally:
        spares.close()


def test_without_a_spare_the_file_is_created_as_before(tmp_path: Path) -> None:
    spares = Spares()
    try:
        made = Path(statusfile.update(tmp_path, "t", a_run(9), spares))  # nothing was expected
    finally:
        spares.close()
    assert made.read_text().startswith("RUN\nid=9\n")
    assert spares_in(made.parent) == []


def test_a_burst_bigger_than_the_spares_kept_finds_them_made_again(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """At most MAX_SPARES wait made at once, but as they are taken the thread makes more for the files still
    expected: a burst of more first runs than that finds them all made (it used to stop after the first
    MAX_SPARES, and the rest were created in the loop)."""
    monkeypatch.setattr(spares_mod, "MAX_SPARES", 2)
    directory = Path(statusfile.status_dir(tmp_path, "t"))
    mode = statusfile.prepare(directory)
    spares = Spares()
    try:
        spares.expect(directory, [str(i) for i in range(1, 6)], mode, None)
        wait_for_spares(directory, 2)
        for run_id, left in ((1, 2), (2, 2), (3, 2), (4, 1), (5, 0)):  # 5 expected, 2 at most waiting
            before = set(spares_in(directory))
            statusfile.update(tmp_path, "t", a_run(run_id), spares)
            assert before - set(spares_in(directory)), f"run {run_id} did not take a spare"
            wait_for_spares(directory, left)
        time.sleep(0.2)
        assert spares_in(directory) == []  # none beyond what was expected
    finally:
        spares.close()
    assert sorted(os.listdir(directory)) == ["1", "2", "3", "4", "5"]
