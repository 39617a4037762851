"""Read models for the dashboard: the statements of ``sql/browse.sql`` as typed methods.

Everything here only reads. The dashboard's actions (retry, cancel, pause, ...) go through
the App's admin calls, so that a button and ``await app.retry(id)`` cannot disagree.

Paging is by keyset on the primary key (``id < cursor ORDER BY id DESC``), never by
OFFSET and never with a total count: both cost a scan of every row before the page, which
on a table holding millions of finished jobs is the difference between a millisecond and
seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from .database import Database, Row

__all__ = ["Browse", "JobFilter", "JobPage", "JobSummary", "PeriodicRun"]

#: Characters of a job's arguments shown in a listing; the job's own page shows them all.
ARGS_PREVIEW = 160
#: Ids are bigint identities from 1: these bound every keyset query.
_ABOVE_ALL = 2**63 - 1


@dataclasses.dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a listing shows; None matches everything."""

    states: Sequence[str] | None = None
    queue: str | None = None
    kind: str | None = None
    tag: str | None = None

    def params(self) -> tuple[list[str] | None, str | None, str | None, str | None]:
        states = list(self.states) if self.states is not None else None
        return states, self.queue, self.kind, self.tag


@dataclasses.dataclass(frozen=True, slots=True)
class JobSummary:
    """One row of a job listing: everything but the full arguments, errors and result."""

    id: int
    kind: str
    queue: str
    state: str
    priority: int
    attempt: int
    max_attempts: int
    scheduled_at: datetime
    created_at: datetime
    attempted_at: datetime | None
    finalized_at: datetime | None
    tags: list[str]
    args_preview: str
    error_count: int
    #: The running attempt's progress (None when not running or not reported).
    progress: float | None = None
    progress_note: str | None = None

    @classmethod
    def from_row(cls, row: Row) -> JobSummary:
        return cls(**{**dict(row), "tags": list(row["tags"])})


@dataclasses.dataclass(frozen=True, slots=True)
class JobPage:
    """A page of jobs, newest first, and whether pages exist on either side of it."""

    jobs: list[JobSummary]
    has_newer: bool
    has_older: bool


@dataclasses.dataclass(frozen=True, slots=True)
class PeriodicRun:
    """The latest recorded occurrence of one periodic schedule."""

    name: str
    slot: datetime
    enqueued_at: datetime
    job_id: int | None
    job_state: str | None


class Browse:
    """The dashboard's reads over one App's ``Database`` (its pool and its schema)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def jobs(
        self,
        where: JobFilter,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> JobPage:
        """Up to ``limit`` jobs, newest first: the newest ones, those just older than
        ``before``, or those just newer than ``after``."""
        if after is not None:
            rows = await self._db._fetch(
                self._db.q.browse_jobs_newer, *where.params(), after, limit + 1, ARGS_PREVIEW
            )
            jobs = [JobSummary.from_row(row) for row in rows[:limit]]
            jobs.reverse()
            return JobPage(jobs, has_newer=len(rows) > limit, has_older=True)
        cursor = before if before is not None else _ABOVE_ALL
        rows = await self._db._fetch(
            self._db.q.browse_jobs_older, *where.params(), cursor, limit + 1, ARGS_PREVIEW
        )
        jobs = [JobSummary.from_row(row) for row in rows[:limit]]
        return JobPage(jobs, has_newer=before is not None, has_older=len(rows) > limit)

    async def job_ids(self, where: JobFilter, *, before: int | None, limit: int) -> list[int]:
        """Ids of matching jobs, newest first, below ``before``: bulk actions walk these."""
        cursor = before if before is not None else _ABOVE_ALL
        rows = await self._db._fetch(
            self._db.q.browse_jobs_older, *where.params(), cursor, limit, 0
        )
        return [int(row["id"]) for row in rows]

    async def throughput(self, queue: str | None = None) -> dict[str, list[int]]:
        """Jobs finalized in each of the last 60 minutes, by final state: index 0 is the
        oldest minute, index 59 the current one."""
        series: dict[str, list[int]] = {
            state: [0] * 60 for state in ("completed", "discarded", "cancelled")
        }
        for row in await self._db._fetch(self._db.q.throughput, queue):
            minutes_ago = int(row["minutes_ago"])
            if 0 <= minutes_ago < 60 and row["state"] in series:
                series[row["state"]][59 - minutes_ago] += int(row["jobs"])
        return series

    async def periodic_latest(self) -> dict[str, PeriodicRun]:
        """Each periodic schedule's latest recorded occurrence, by schedule name."""
        rows = await self._db._fetch(self._db.q.periodic_latest)
        return {row["name"]: PeriodicRun(**dict(row)) for row in rows}
