"""The dashboard's 24-hour picture (runtime/web/timeline.py): one bar per run, colored by state, and a due
time recorded missed because its job was paused in a color of its own (it is not a failure of the job)."""

from __future__ import annotations

from taskserver.runtime.web.timeline import COLORS, PAUSED, timeline_svg

NOW = 1_800_000_000.0


def run(rid: int, state: str, reason: str | None = None, message: str | None = None) -> dict[str, object]:
    when = "2027-01-15T07:00:00+00:00"
    return {"id": rid, "job": "nightly", "state": state, "reason": reason, "message": message,
            "started": None, "due": when, "created": when, "finished": when}


def test_paused_due_times_are_not_painted_as_failures() -> None:
    svg = timeline_svg(["nightly"], [run(1, "ERR", "missed", "paused by ops since 2027-01-15T06:00:00+00:00"),
                                     run(2, "ERR", "exit code 3"), run(3, "OK")], NOW)
    assert svg.count(f'fill="{PAUSED}"') == 1 and svg.count(f'fill="{COLORS["ERR"]}"') == 1
    assert "run 1: ERR missed: paused by ops since" in svg
