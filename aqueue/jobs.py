"""The records users see: job states, the ``Job`` row, an ``Outcome``, the job's context.

State diagram (``docs/explanation/states.md`` draws it in full)::

    enqueue ─┬─> available ──────┐
             └─> scheduled ──(due)┤
                                  v
                  retryable ──> running ──> completed
                     ^   (error)  │ │ │
                     └────────────┘ │ └──> discarded (Discard, or out of attempts)
                    snooze -> scheduled └──> cancelled (Cancel, app.cancel)

``pending`` is reserved for jobs waiting on workflow dependencies. ``job_from_row`` is the
one place a database row becomes a ``Job``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import pydantic_core

__all__ = ["FINAL_STATES", "Job", "JobState", "Outcome", "RowLike", "job_from_row"]


class JobState(enum.StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    AVAILABLE = "available"
    RUNNING = "running"
    RETRYABLE = "retryable"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    DISCARDED = "discarded"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.COMPLETED, JobState.CANCELLED, JobState.DISCARDED})


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    """A frozen snapshot of one job row."""

    id: int
    kind: str
    queue: str
    state: JobState
    args: Mapping[str, Any]
    priority: int
    attempt: int
    max_attempts: int
    scheduled_at: datetime
    created_at: datetime
    attempted_at: datetime | None
    finalized_at: datetime | None
    errors: Sequence[Mapping[str, Any]]
    result: Any
    tags: Sequence[str]
    meta: Mapping[str, Any]
    duplicate: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt of a job came to, handed to ``after_process`` hooks.

    ``result`` is the object the job returned (not a database read-back), ``error``
    the exception that ended the attempt (None when it completed), ``duration`` the
    seconds the attempt ran.
    """

    state: JobState
    result: Any
    error: BaseException | None
    duration: float
    snoozed_for: float | None = None


class RowLike(Protocol):
    """A database row (an asyncpg Record) read by column name."""

    def __getitem__(self, key: str, /) -> Any: ...


# pydantic-core's parser: several times faster than json.loads on the small documents
# (args, meta, errors) a Job is made of, and it runs once per job on hot paths.
_from_json = pydantic_core.from_json
_STATES = {state.value: state for state in JobState}


def job_from_row(
    row: RowLike,
    *,
    state: JobState | None = None,
    result: Any = None,
    error_json: str | None = None,
    duplicate: bool = False,
) -> Job:
    """A ``Job`` from a row with the ``{job_columns}`` of ``aqueue/db/sql``.

    ``state``/``result``/``error_json`` overlay an outcome the row predates (hooks get the
    job as it is after the attempt, without a re-read)."""
    errors = _from_json(row["errors"]) if row["errors"] else []
    if error_json is not None:
        errors.append(_from_json(error_json))
    if state is None:
        state = _STATES[row["state"]]
        result = _from_json(row["result"]) if row["result"] is not None else None
    return Job(
        id=row["id"],
        kind=row["kind"],
        queue=row["queue"],
        state=state,
        args=_from_json(row["args"]),
        priority=row["priority"],
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        scheduled_at=row["scheduled_at"],
        created_at=row["created_at"],
        attempted_at=row["attempted_at"],
        finalized_at=row["finalized_at"],
        errors=errors,
        result=result,
        tags=list(row["tags"]),
        meta=_from_json(row["meta"]),
        duplicate=duplicate,
    )
