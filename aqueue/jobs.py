"""The records users see: job states, the ``Job`` row, an ``Outcome``, the job's context.

State diagram (``docs/explanation/states.md`` draws it in full)::

    enqueue ─┬─> available ──────┐
             └─> scheduled ──(due)┤
                                  v
                  retryable ──> running ──> completed
                     ^   (error)  │ │ │
                     └────────────┘ │ └──> discarded (Discard, or out of attempts)
                    snooze -> scheduled └──> cancelled (Cancel, app.cancel)

``pending``: a workflow step or batch callback waiting on its dependencies; it becomes
``available`` (or ``scheduled``) in the transaction that ends its last dependency, or
``cancelled`` when a dependency fails (see ``aqueue/workflow.py``). ``job_from_row`` and
``unsaved_job``/``saved_job`` (an insert's) are the one place a database row becomes a
``Job``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Container, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import pydantic_core

__all__ = [
    "FINAL_STATES",
    "Job",
    "JobState",
    "Outcome",
    "RowLike",
    "has_job_columns",
    "job_from_row",
    "new_job",
    "new_outcome",
    "saved_job",
    "unsaved_job",
]


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
    #: What the running attempt last reported with ``ctx.progress``: a fraction in [0, 1]
    #: and a short note. None until the attempt reports; a new attempt starts from None.
    progress: float | None = None
    progress_note: str | None = None
    #: The workflow (``app.enqueue_workflow``) or batch (``app.enqueue_batch``) the job
    #: belongs to, and its step's name there ("callback" for a batch's callback).
    workflow_id: int | None = None
    batch_id: int | None = None
    step: str | None = None


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


def _slot_setters() -> tuple[Any, ...]:
    return tuple(Job.__dict__[f.name].__set__ for f in dataclasses.fields(Job))


(
    _set_id,
    _set_kind,
    _set_queue,
    _set_state,
    _set_args,
    _set_priority,
    _set_attempt,
    _set_max_attempts,
    _set_scheduled_at,
    _set_created_at,
    _set_attempted_at,
    _set_finalized_at,
    _set_errors,
    _set_result,
    _set_tags,
    _set_meta,
    _set_duplicate,
    _set_progress,
    _set_progress_note,
    _set_workflow_id,
    _set_batch_id,
    _set_step,
) = _slot_setters()


def new_job(
    id: int,
    kind: str,
    queue: str,
    state: JobState,
    args: Mapping[str, Any],
    priority: int,
    attempt: int,
    max_attempts: int,
    scheduled_at: datetime,
    created_at: datetime,
    attempted_at: datetime | None,
    finalized_at: datetime | None,
    errors: Sequence[Mapping[str, Any]],
    result: Any,
    tags: Sequence[str],
    meta: Mapping[str, Any],
    duplicate: bool = False,
    progress: float | None = None,
    progress_note: str | None = None,
    workflow_id: int | None = None,
    batch_id: int | None = None,
    step: str | None = None,
) -> Job:
    """``Job(...)`` by position, three times faster: a frozen dataclass's ``__init__``
    goes through ``object.__setattr__`` for each of its 22 fields, and enqueue and the
    hooks build a Job per job. The slots are set through their descriptors instead."""
    job: Job = object.__new__(Job)
    _set_id(job, id)
    _set_kind(job, kind)
    _set_queue(job, queue)
    _set_state(job, state)
    _set_args(job, args)
    _set_priority(job, priority)
    _set_attempt(job, attempt)
    _set_max_attempts(job, max_attempts)
    _set_scheduled_at(job, scheduled_at)
    _set_created_at(job, created_at)
    _set_attempted_at(job, attempted_at)
    _set_finalized_at(job, finalized_at)
    _set_errors(job, errors)
    _set_result(job, result)
    _set_tags(job, tags)
    _set_meta(job, meta)
    _set_duplicate(job, duplicate)
    _set_progress(job, progress)
    _set_progress_note(job, progress_note)
    _set_workflow_id(job, workflow_id)
    _set_batch_id(job, batch_id)
    _set_step(job, step)
    return job


_outcome_setters = tuple(Outcome.__dict__[f.name].__set__ for f in dataclasses.fields(Outcome))


def new_outcome(
    state: JobState,
    result: Any,
    error: BaseException | None,
    duration: float,
    snoozed_for: float | None = None,
) -> Outcome:
    """``Outcome(...)`` by position, without a frozen ``__init__`` (see ``new_job``)."""
    outcome: Outcome = object.__new__(Outcome)
    set_state, set_result, set_error, set_duration, set_snoozed_for = _outcome_setters
    set_state(outcome, state)
    set_result(outcome, result)
    set_error(outcome, error)
    set_duration(outcome, duration)
    set_snoozed_for(outcome, snoozed_for)
    return outcome


class RowLike(Protocol):
    """A database row (an asyncpg Record) read by column name."""

    def __getitem__(self, key: str, /) -> Any: ...


# pydantic-core's parser: several times faster than json.loads on the small documents
# (args, meta, errors) a Job is made of, and it runs once per job on hot paths.
_from_json = pydantic_core.from_json
_STATES = {state.value: state for state in JobState}


def has_job_columns(row: Container[str]) -> bool:
    """Whether ``row`` has every column ``job_from_row`` reads: a worker's claim returns
    fewer when no hook, middleware or JobContext needs a Job (``Registry.claim_columns``)."""
    return "errors" in row


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
    # Progress belongs to the attempt that reported it: a row claimed again (a retry, a
    # rescued orphan) still holds the previous attempt's columns until it reports anew.
    progress = progress_note = None
    if row["progress_attempt"] is not None and row["progress_attempt"] == row["attempt"]:
        progress, progress_note = row["progress"], row["progress_note"]
    return new_job(
        row["id"],
        row["kind"],
        row["queue"],
        state,
        _from_json(row["args"]),
        row["priority"],
        row["attempt"],
        row["max_attempts"],
        row["scheduled_at"],
        row["created_at"],
        row["attempted_at"],
        row["finalized_at"],
        errors,
        result,
        list(row["tags"]),
        _from_json(row["meta"]),
        duplicate,
        progress,
        progress_note,
        row["workflow_id"],
        row["batch_id"],
        row["step"],
    )


def unsaved_job(
    kind: str,
    queue: str,
    args_json: str,
    priority: int,
    max_attempts: int,
    tags: Sequence[str],
    meta: Mapping[str, Any],
    *,
    workflow_id: int | None = None,
    batch_id: int | None = None,
    step: str | None = None,
) -> Job:
    """The ``Job`` of an insert still in flight: everything the enqueue sent. It is not a
    Job yet: ``saved_job`` sets what the database chooses, before anyone sees it (see
    ``aqueue/overlap.py``). Sets the slots itself rather than through ``new_job``: a
    call less per job of a batch."""
    job: Job = object.__new__(Job)
    _set_kind(job, kind)
    _set_queue(job, queue)
    _set_args(job, _from_json(args_json))
    _set_priority(job, priority)
    _set_attempt(job, 0)
    _set_max_attempts(job, max_attempts)
    _set_attempted_at(job, None)
    _set_finalized_at(job, None)
    _set_errors(job, [])
    _set_result(job, None)
    # Copies: jobs of one batch share their options, never their lists.
    _set_tags(job, list(tags) if tags else [])
    _set_meta(job, dict(meta) if meta else {})
    _set_duplicate(job, False)
    _set_progress(job, None)
    _set_progress_note(job, None)
    _set_workflow_id(job, workflow_id)
    _set_batch_id(job, batch_id)
    _set_step(job, step)
    return job


def saved_job(
    job: Job, job_id: int, state: str, scheduled_at: datetime, created_at: datetime
) -> Job:
    """Completes an ``unsaved_job`` with what its insert returned; returns it."""
    _set_id(job, job_id)
    _set_state(job, _STATES[state])
    _set_scheduled_at(job, scheduled_at)
    _set_created_at(job, created_at)
    return job
