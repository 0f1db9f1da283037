"""Wall-clock steps told apart from elapsed time, and the true reason a due time was handled late.

Due times are wall-clock instants (they are what cron means and what the store records), but a wall clock can
be set: by hand, by NTP at boot, by a VM restored from a snapshot. CLOCK_BOOTTIME counts elapsed time and is
never set (it also counts a system suspend, so a suspend is elapsed time, not a step). The difference
wall - boottime therefore changes exactly when the wall clock is set: that change is the step.

- A forward step makes due times late; the daemon handles them like any late due time (the job's catch_up and
  max_late, see plans.overdue) and the missed records say the clock was set forward.
- A backward step would leave every timer in the wall-clock future; the daemon moves them by the rules in
  schedule.after_step_back, and no job's stored last due time stays later than the new now.
- A stall (SIGSTOP, a starved or suspended process) is no step: the due times are late, and their notes say
  that the daemon could not act, not that the clock moved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

STEP_TOLERANCE = 1.0  # seconds: smaller changes of wall - boottime are reading jitter or NTP slewing


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@dataclass
class ClockWatch:
    offset: float  # wall - boottime at the last look
    step: float = 0.0  # how far the wall clock was set at the last look (seconds; 0.0: not set)
    # the last note made (``cause``), by (due, now, step): every timer of a burst asks it with the same three,
    # and two ISO times cost a fifth of firing a timer
    _said: tuple[float, float, float, str] = field(default=(0.0, 0.0, 0.0, ""), init=False, repr=False,
                                                   compare=False)

    @classmethod
    def start(cls, wall: float, boot: float) -> ClockWatch:
        return cls(offset=wall - boot)

    def look(self, wall: float, boot: float) -> float:
        """The step (seconds, negative: set back) the wall clock was set by since the last look, or 0.0."""
        offset = wall - boot
        change, self.offset = offset - self.offset, offset  # follow slow drift, so it never adds up
        self.step = change if abs(change) >= STEP_TOLERANCE else 0.0
        return self.step

    def cause(self, due: float, now: float) -> str:
        """Why a due time whose timer was set for ``due`` is handled only at ``now`` (a note for records)."""
        said = self._said
        if said[0] == due and said[1] == now and said[2] == self.step:
            return said[3]
        if self.step > 0:
            note = f"the system clock was set forward by {self.step:.0f} s"
        else:
            note = (f"the daemon could not act between {_iso(due)} and {_iso(now)} "
                    "(stopped, suspended or busy)")
        self._said = (due, now, self.step, note)
        return note
