"""``ctx.progress``: a running job reporting how far it got, cheaply enough to call every
second from a long job.

Each report that changes something is one small UPDATE on the job's row (no read, no
other round trip; the columns are unindexed, so a heap-only update). A report equal to the
last one written is skipped without touching the database, so a loop that reports on
every item only writes when the figure moves. The write is guarded by the attempt: once
the attempt is over (finished, timed out and rescued, claimed again elsewhere), a late
report changes nothing and says so by returning False.
"""

from __future__ import annotations

import math

from .db.database import Database
from .errors import InvalidOption

__all__ = ["NOTE_MAX", "HeldProgress", "ProgressReporter", "check_progress"]

#: Longest note, in characters (the column's CHECK says the same).
NOTE_MAX = 500


def check_progress(fraction: object, note: object) -> tuple[float, str | None]:
    """``(fraction, note)`` as stored, or ``InvalidOption`` naming the bad field."""
    # bool is an int, but progress=True is a mistake, not 100%.
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise InvalidOption("fraction", f"must be a number from 0 to 1, got {fraction!r}")
    value = float(fraction)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidOption("fraction", f"must be a number from 0 to 1, got {fraction!r}")
    if note is None:
        return value, None
    if not isinstance(note, str):
        raise InvalidOption("note", f"must be a string or None, got {type(note).__name__}")
    if len(note) > NOTE_MAX:
        raise InvalidOption("note", f"must be at most {NOTE_MAX} characters, got {len(note)}")
    if "\x00" in note:
        # PostgreSQL text cannot hold NUL: say so here rather than as a database error.
        raise InvalidOption("note", "must not contain NUL characters")
    return value, note


class ProgressReporter:
    """Writes one attempt's progress; one per ``JobContext``, so per attempt."""

    __slots__ = ("_attempt", "_db", "_job_id", "_last")

    def __init__(self, db: Database, job_id: int, attempt: int) -> None:
        self._db = db
        self._job_id = job_id
        self._attempt = attempt
        self._last: tuple[float, str | None] | None = None

    async def report(self, fraction: float, note: str | None) -> bool:
        value = check_progress(fraction, note)
        if value == self._last:
            return True
        applied = await self._db.record_progress(self._job_id, self._attempt, *value)
        if applied:
            self._last = value
        return applied


class HeldProgress(ProgressReporter):
    """Progress kept in memory, for an attempt that has no row to write it to (inline
    mode, ``aqueue.testing.perform_job``): checked like any report, never written."""

    __slots__ = ()

    def __init__(self) -> None:
        self._last = None

    @property
    def last(self) -> tuple[float, str | None] | None:
        """The last report: ``(fraction, note)``, or None when there was none."""
        return self._last

    async def report(self, fraction: float, note: str | None) -> bool:
        self._last = check_progress(fraction, note)
        return True
