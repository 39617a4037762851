"""Turning a ``JobRequest`` into an insert row, and the inserted row back into a ``Job``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pydantic_core

from .db.database import InsertRow, Row, UniqueColumns
from .definition import JobRequest
from .errors import DatabaseError
from .jobs import Job, JobState
from .options import Options

if TYPE_CHECKING:
    from .app import App

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_PRIORITY",
    "DEFAULT_QUEUE",
    "ResolvedOptions",
    "insert_unique",
]

DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 0
DEFAULT_MAX_ATTEMPTS = 20
_STATES = {state.value: state for state in JobState}
# Insert-then-read rounds before a unique enqueue gives up: each extra round needs the
# key's holder to leave its unique states between two statements, which is rare.
_UNIQUE_ROUNDS = 5


class ResolvedOptions:
    """A job's options with every default applied, in insert-row order."""

    __slots__ = (
        "max_attempts",
        "meta",
        "meta_json",
        "priority",
        "queue",
        "row_tail",
        "tags",
        "unique",
    )

    def __init__(self, merged: Options, override: Options) -> None:
        self.queue = merged.queue or DEFAULT_QUEUE
        self.priority = merged.priority if merged.priority is not None else DEFAULT_PRIORITY
        self.max_attempts = (
            merged.max_attempts if merged.max_attempts is not None else DEFAULT_MAX_ATTEMPTS
        )
        self.tags = list(merged.tags or ())
        self.meta_json = merged.meta_json()
        self.meta: dict[str, Any] = json.loads(self.meta_json)
        retry = override.retry
        self.unique = merged.unique or None  # False: uniqueness turned off for this enqueue
        self.row_tail: tuple[Any, ...] = (
            self.priority,
            self.max_attempts,
            merged.scheduled_at,
            merged.schedule_in,
            json.dumps(self.tags),
            self.meta_json,
            # Timeout and retry policy are stored only when set per enqueue; otherwise the
            # job's definition decides when it runs (so a deploy can change them).
            override.timeout,
            json.dumps(retry.to_json()) if retry is not None else None,
        )

    def job(self, row: Row, request: JobRequest) -> Job:
        """The Job just inserted, from what we sent plus what the database chose."""
        return Job(
            id=row["id"],
            kind=request.kind,
            queue=self.queue,
            state=_STATES[row["state"]],
            args=pydantic_core.from_json(request.args_json),
            priority=self.priority,
            attempt=0,
            max_attempts=self.max_attempts,
            scheduled_at=row["scheduled_at"],
            created_at=row["created_at"],
            attempted_at=None,
            finalized_at=None,
            errors=[],
            result=None,
            tags=list(self.tags),
            meta=dict(self.meta),
        )


async def insert_unique(
    app: App,
    rows: Sequence[InsertRow],
    requests: Sequence[JobRequest],
    per_job: Sequence[ResolvedOptions],
    conn: Any,
) -> list[Job]:
    """Insert a batch holding unique jobs (see ``aqueue.unique``); returns Jobs in order.

    A key may appear only once in the statement, so a later request for a key already in
    this batch is answered with the first one's job, marked duplicate. Rows are sent
    sorted by key: two batches sharing keys then wait on each other in one order instead
    of deadlocking. A job whose key is held is answered with the holder, read right after
    the insert; if the holder let go of the key in between, the job is inserted again.
    """
    first_for: dict[tuple[str, float | None], int] = {}
    duplicate_of: dict[int, int] = {}
    todo: list[tuple[str, int, UniqueColumns]] = []
    for index, (request, opts) in enumerate(zip(requests, per_job, strict=True)):
        unique = opts.unique
        if unique is None:
            todo.append(("", index, (None, None, None)))
            continue
        key = unique.key(request.kind, opts.queue, request.args_json)
        ident = (key, unique.period_seconds)
        first = first_for.setdefault(ident, index)
        if first != index:
            duplicate_of[index] = first
            continue
        todo.append((key, index, (key, unique.period_seconds, unique.states_csv())))
    todo.sort()
    jobs: dict[int, Job] = {}
    for _ in range(_UNIQUE_ROUNDS):
        written = await app.db.insert_unique_and_notify(
            [rows[index] for _, index, _ in todo], [columns for _, _, columns in todo], conn=conn
        )
        held: list[tuple[tuple[str, int, UniqueColumns], str]] = []
        for entry, row in zip(todo, written, strict=True):
            if row["id"] is not None:
                index = entry[1]
                jobs[index] = per_job[index].job(row, requests[index])
            else:
                held.append((entry, row["wanted_key"]))
        if not held:
            break
        holders = await app.db.unique_holders([key for _, key in held], conn=conn)
        todo = []
        for entry, key in held:
            holder = holders.get(key)
            if holder is not None:
                jobs[entry[1]] = app.job_from_row(holder, duplicate=True)
            else:
                todo.append(entry)  # the holder finished in between: the key is free now
        if not todo:
            break
    else:
        raise DatabaseError(
            f"unique enqueue: the holders of {len(todo)} key(s) kept changing "
            f"over {_UNIQUE_ROUNDS} attempts; try again"
        )
    for index, first in duplicate_of.items():
        jobs[index] = dataclasses.replace(jobs[first], duplicate=True)
    return [jobs[index] for index in range(len(rows))]
