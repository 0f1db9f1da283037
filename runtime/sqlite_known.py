"""QUE rows the SQLite store has just read or written, so that acquiring one of them needs no row back.

The daemon reads the queued tasks (``queued``) and the claimed runs waiting at start (``waiting``), or
claims due times (``claim_many``: a burst's runs), then acquires some of them.  ``UPDATE ... RETURNING``
all 20 columns cost about three times a plain update of the same row (the returned row built again, field
by field).  Here the row as read is kept with the file's ``PRAGMA data_version`` at that read, and the
acquire of a kept row is a plain update (one per row, its ``rowcount`` telling whether the row was still
QUE) whose result is the kept row plus what it wrote.

A claimed row is kept as what the claim wrote (job, due time, queue, creation time), the rest of it as the
schema's defaults (``claimed``), and not as a whole ``Run``: a burst of 10,000 claims keeps 1.4 MB until
its runs start (measured with tracemalloc), not the rows.

That result is the stored row exactly when nothing else changed the row since the read:
- another connection's commit (a command, the web side, another process with the file) changes the
  data_version: none of the kept rows is trusted then, the acquire reads its rows back as before;
- this connection's own writes to a QUE row all move it out of QUE (a cancel, the end of a run not started,
  a report), and the update's ``state='QUE'`` then leaves it alone;
- a rolled-back transaction may have undone any of that: the store forgets every kept row (``forget``), as
  it does when it opens its file again.

The version is read before the rows, so a commit that lands between the two makes the kept rows look
older than they are, never newer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .model import State
from .store import Run

# a kept row that is still QUE becomes RUN for this instance: exactly what acquire's statement sets
# (a waiting row has no output: what one not written by taskserver holds is dropped, never read)
ACQUIRE_ONE = ("UPDATE runs SET state='RUN', started=?, instance=?, pid=NULL, output='' WHERE id=? "
               "AND state='QUE'")


Claim = tuple[str, float, "str | None", float]  # (job, due, queue, created) of a row claim_many inserted


class KnownQueued:
    def __init__(self) -> None:
        # per kind (``queued``, ``waiting``, ``claims``): the data_version before the read, its rows by id
        self._reads: dict[str, tuple[int, dict[int, Run | Claim]]] = {}

    def remember(self, kind: str, version: int, runs: Sequence[Run]) -> None:
        self._reads[kind] = (version, {run.id: run for run in runs})

    def claimed(self, version: int, rows: dict[int, Claim]) -> None:
        """Rows just claimed, at ``version``: added to those claimed before at the same version (a burst is
        claimed in one wake-up and acquired over many)."""
        read_at, kept = self._reads.get("claims", (version, {}))
        if read_at != version or len(kept) >= _MAX_CLAIMS:
            kept = {}
        kept.update(rows)
        self._reads["claims"] = (version, kept)

    def take(self, ids: Sequence[int], version: Callable[[], int]) -> list[Run] | None:
        """The kept rows ``ids``, taken out, if every one is kept and was read at the file's ``version()``
        now (asked only then: no other connection's commit since); None otherwise, and the reads found
        stale are forgotten."""
        found: list[tuple[int, str, Run | Claim]] = []
        for i in ids:
            hit = next(((kind, row) for kind, (_, rows) in self._reads.items() if (row := rows.get(i))), None)
            if hit is None:
                return None
            found.append((i, *hit))
        if not found:
            return None
        now_at = version()
        if stale := {kind for _, kind, _ in found if self._reads[kind][0] != now_at}:
            for kind in stale:
                del self._reads[kind]
            return None
        for i, kind, _ in found:
            self._reads[kind][1].pop(i, None)
        return [row if isinstance(row, Run) else _claimed(i, row) for i, _, row in found]

    def forget(self) -> None:
        self._reads.clear()


_MAX_CLAIMS = 20_000  # claims kept at most, about 3 MB (one more claim starts the count again)


# a claimed row's columns that the claim does not write: the schema's defaults
_DEFAULTS = {"state": State.QUE, "reason": None, "started": None, "finished": None, "pid": None,
             "instance": None, "exit_code": None, "attempt": 0, "argv": None, "output": "", "message": None,
             "queued": False, "proc_start": None, "boot_id": None, "not_before": None, "host": None}


def _claimed(run_id: int, claim: Claim) -> Run:
    """The row claim_many inserted (runtime/sqlite_bulk.py: job, queue, state, due, created, attempt 0), the
    other columns at the schema's defaults (built as sqlite_rows.run_of builds a row: the frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``)."""
    run: Run = object.__new__(Run)
    fields = run.__dict__
    fields["id"], (fields["job"], fields["due"], fields["queue"], fields["created"]) = run_id, claim
    fields.update(_DEFAULTS)
    return run


def acquired(run: Run, *, instance: str, now: float) -> Run:
    """``run`` (a kept QUE row) as ACQUIRE_ONE left it."""
    return changed(run, state=State.RUN, started=now, instance=instance, pid=None)


def changed(run: Run, **fields: object) -> Run:
    """``dataclasses.replace(run, **fields)`` without the frozen dataclass's ``__init__`` (which sets each of
    the 21 fields through ``object.__setattr__``): a row the store wrote itself, as it now stands."""
    got: Run = object.__new__(Run)
    got.__dict__.update(run.__dict__)
    got.__dict__.update(fields)
    return got
