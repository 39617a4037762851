"""``aqueue jobs list``'s read: whole jobs, filtered and paged, from ``sql/listing.sql``.

Paging is by keyset on the primary key, as for the dashboard (``browse.py``): a cursor
is the last id shown, and the next page costs what the first did.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ..jobs import Job, job_from_row
from .database import Database

__all__ = ["list_jobs_page"]

#: Ids are bigint identities from 1: these bound every keyset query.
_BELOW_ALL = 0
_ABOVE_ALL = 2**63 - 1


async def list_jobs_page(
    db: Database,
    *,
    states: Sequence[str] | None,
    queue: str | None,
    kind: str | None,
    since: datetime | None,
    cursor: int | None,
    newest: bool,
    limit: int,
) -> tuple[list[Job], int | None]:
    """Up to ``limit`` jobs after ``cursor`` (oldest first, or newest first), and the
    cursor of the next page (None when this one is the last)."""
    statement = db.q.list_jobs_newest if newest else db.q.list_jobs_oldest
    if cursor is None:
        cursor = _ABOVE_ALL if newest else _BELOW_ALL
    filters = (list(states) if states is not None else None, queue, kind, since)
    rows = await db._fetch(statement, *filters, cursor, limit + 1)
    jobs = [job_from_row(row) for row in rows[:limit]]
    return jobs, (jobs[-1].id if len(rows) > limit else None)
