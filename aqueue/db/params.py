"""The parameters of the statements that take many rows, by name.

Statements in ``sql/*.sql`` that take these name their parameters (``:kind``, ``:queue``
...); ``Statement.args`` lines the fields up with the placeholders, so neither side
depends on an order kept by hand. The big statements take columns (one list per
field, unnested in SQL): one array parameter per column costs the same for one row or
ten thousand.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

__all__ = ["InsertColumns", "OutcomeColumns"]


@dataclass(slots=True)
class InsertColumns:
    """Jobs to insert, in input order (the output keeps that order).

    A batch usually shares a handful of option sets, so each distinct one is sent once,
    as a *group*, and every job names its group: 1,000 jobs with the same options cost
    two arrays of 1,000 and ten of one, and PostgreSQL parses their tags and meta once.
    """

    # -- per job
    #: Arguments as JSON text.
    args: list[str] = field(default_factory=list)
    #: The job's option group: a 1-based index into the group columns below.
    group: list[int] = field(default_factory=list)
    # Only for jobs with a unique key (see aqueue/unique.py); None for the others.
    unique_key: list[str | None] = field(default_factory=list)
    unique_period: list[float | None] = field(default_factory=list)
    #: The states that hold the key, comma-separated.
    unique_states: list[str | None] = field(default_factory=list)
    # -- per option group (one kind and its options)
    kind: list[str] = field(default_factory=list)
    queue: list[str] = field(default_factory=list)
    priority: list[int] = field(default_factory=list)
    max_attempts: list[int] = field(default_factory=list)
    scheduled_at: list[datetime | None] = field(default_factory=list)
    #: Seconds from now, when ``scheduled_at`` is not given.
    delay: list[float | None] = field(default_factory=list)
    #: Tags as a JSON list.
    tags: list[str] = field(default_factory=list)
    meta: list[str] = field(default_factory=list)
    timeout: list[float | None] = field(default_factory=list)
    #: A retry policy as JSON, when set per enqueue.
    retry: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.args)

    def queue_of(self, index: int) -> str:
        return self.queue[self.group[index] - 1]

    def select(self, indexes: list[int]) -> InsertColumns:
        """These jobs only, in this order (the option groups stay as they are)."""
        picked: dict[str, list[Any]] = {}
        for column in fields(self):
            values = getattr(self, column.name)
            picked[column.name] = (
                [values[i] for i in indexes] if column.name in _PER_JOB else values
            )
        return InsertColumns(**picked)


_PER_JOB = frozenset({"args", "group", "unique_key", "unique_period", "unique_states"})


@dataclass(slots=True)
class OutcomeColumns:
    """Attempt outcomes to write, column by column."""

    id: list[int] = field(default_factory=list)
    attempt: list[int] = field(default_factory=list)
    state: list[str] = field(default_factory=list)
    #: The result as JSON text (completed jobs).
    result: list[str | None] = field(default_factory=list)
    #: The error record as JSON text, appended to the job's errors.
    error: list[str | None] = field(default_factory=list)
    #: Seconds until the job is due again (retries, snoozes).
    delay: list[float | None] = field(default_factory=list)
