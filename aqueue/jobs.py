"""The records users see: job states, the ``Job`` row, an ``Outcome``, the job's context.

State diagram (``docs/states.md`` draws it in full)::

    enqueue ─┬─> available ──────┐
             └─> scheduled ──(due)┤
                                  v
                  retryable ──> running ──> completed
                     ^   (error)  │ │ │
                     └────────────┘ │ └──> discarded (Discard, or out of attempts)
                    snooze -> scheduled └──> cancelled (Cancel, app.cancel)

``pending`` is reserved for jobs waiting on workflow dependencies.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import App

__all__ = ["FINAL_STATES", "Job", "JobContext", "JobState", "Outcome"]


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


@dataclasses.dataclass(frozen=True, slots=True)
class JobContext:
    """Passed to a job whose first parameter is annotated ``JobContext``."""

    job: Job
    app: App
    logger: logging.Logger

    @property
    def attempt(self) -> int:
        return self.job.attempt
