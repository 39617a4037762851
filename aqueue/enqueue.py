"""Turning a ``JobRequest`` into an insert row, and the inserted row back into a ``Job``."""

from __future__ import annotations

import json
from typing import Any

import pydantic_core

from .db.database import Row
from .definition import JobRequest
from .jobs import Job, JobState
from .options import Options

__all__ = ["DEFAULT_MAX_ATTEMPTS", "DEFAULT_PRIORITY", "DEFAULT_QUEUE", "ResolvedOptions"]

DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 0
DEFAULT_MAX_ATTEMPTS = 20
_STATES = {state.value: state for state in JobState}


class ResolvedOptions:
    """A job's options with every default applied, in insert-row order."""

    __slots__ = ("max_attempts", "meta", "meta_json", "priority", "queue", "row_tail", "tags")

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
