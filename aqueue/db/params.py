"""The parameters of the statements that take many rows, by name.

Statements in ``sql/*.sql`` that take these name their parameters (``:kind``, ``:queue``
...); ``Statement.bind`` reads each off these objects by name, so neither side depends
on an order kept by hand.

Per-row values travel as ONE JSON document (``jobs``, ``outcomes``: an array of small
arrays), not as one array parameter per column: asyncpg encodes a text or nullable
array element by element in Python-visible steps (measured: 0.8 ms per 1,000 strings,
3.4 ms for an outcome batch's six arrays), while a document is one string that
PostgreSQL parses in C (0.2 ms). The values in it are numbers, state names, hex keys
and JSON that aqueue itself produced, so the document is joined as text.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

__all__ = ["Deps", "GroupColumns", "InsertColumns", "Inserted", "Outcomes", "outcome_row"]


@dataclass(slots=True)
class InsertColumns:
    """Jobs to insert, in input order (the output keeps that order).

    A batch usually shares a handful of option sets, so each distinct one is sent once,
    as a *group*, and every job names its group: 1,000 jobs with the same options cost
    one document of 1,000 small rows and ten one-element arrays, and PostgreSQL parses
    their tags and meta once.
    """

    # -- per job
    #: Arguments as JSON text.
    args: list[str] = field(default_factory=list)
    #: The job's option group: a 1-based index into the group columns below.
    group: list[int] = field(default_factory=list)
    #: The flow-control partition key (aqueue.flow.Partition); None for most jobs.
    partition_key: list[str | None] = field(default_factory=list)
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

    @property
    def jobs(self) -> str:
        """``[[group, args, partition key], ...]``, with the unique key, period and states
        appended for a unique insert."""
        keys = [_json_text(key) for key in self.partition_key]
        if self.unique_key:
            rows = [
                f"[{group},{args},{key},{_text(ukey)},{_number(period)},{_text(states)}]"
                for group, args, key, ukey, period, states in zip(
                    self.group,
                    self.args,
                    keys,
                    self.unique_key,
                    self.unique_period,
                    self.unique_states,
                    strict=True,
                )
            ]
        else:
            rows = [
                f"[{group},{args},{key}]"
                for group, args, key in zip(self.group, self.args, keys, strict=True)
            ]
        return "[" + ",".join(rows) + "]"

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


_PER_JOB = frozenset(
    {"args", "group", "partition_key", "unique_key", "unique_period", "unique_states"}
)


@dataclass(slots=True)
class GroupColumns(InsertColumns):
    """``InsertColumns`` for the jobs of one workflow or batch (``insert_group_jobs``)."""

    workflow_id: int | None = None
    batch_id: int | None = None
    # -- per job
    #: The step's name (None for a batch's members).
    step: list[str | None] = field(default_factory=list)
    #: How many dependencies the job waits for.
    deps: list[int] = field(default_factory=list)
    #: on_dep_failure="run": the job runs even when a dependency failed.
    run_anyway: list[bool] = field(default_factory=list)

    @property
    def jobs(self) -> str:
        """``[[group, args, partition key, step, deps, run anyway], ...]``."""
        return (
            "["
            + ",".join(
                f"[{group},{args},{_json_text(key)},{_json_text(step)},{deps},"
                f"{'true' if run else 'false'}]"
                for group, args, key, step, deps, run in zip(
                    self.group,
                    self.args,
                    self.partition_key,
                    self.step,
                    self.deps,
                    self.run_anyway,
                    strict=True,
                )
            )
            + "]"
        )


@dataclass(slots=True)
class Deps:
    """Dependency edges: ``job_id[i]`` waits for ``dep_id[i]``."""

    dep_id: list[int] = field(default_factory=list)
    job_id: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Inserted:
    """What ``insert_jobs`` chose: the ids in input order, and per option group the state
    and due time its jobs got (they share them), and the one creation time."""

    ids: list[int]
    states: list[str]
    scheduled_at: list[datetime]
    created_at: datetime


def outcome_row(
    job_id: int,
    attempt: int,
    state: str,
    result_json: str | None,
    error_json: str | None,
    delay: float | None,
) -> str:
    """One element of ``record_outcomes``'s document: ``[id, attempt, state, result, error,
    delay]``, the result and error as the JSON they already are."""
    return (
        f'[{job_id},{attempt},"{state}",{result_json or "null"},{error_json or "null"},'
        f"{_number(delay)}]"
    )


@dataclass(slots=True)
class Outcomes:
    """Attempt outcomes to write, each made by ``outcome_row``."""

    rows: list[str] = field(default_factory=list)

    @property
    def outcomes(self) -> str:
        return "[" + ",".join(self.rows) + "]"


def _number(value: float | None) -> str:
    if value is None:
        return "null"
    number = float(value)
    if not math.isfinite(number):  # not JSON; callers validate delays, this is the guard
        raise ValueError(f"not a finite number: {value!r}")
    return repr(number)


def _json_text(value: str | None) -> str:
    # Partition keys come from users: escaped as JSON, unlike the values below.
    return "null" if value is None else json.dumps(value)


def _text(value: str | None) -> str:
    # Only hex digests and state names come here: nothing that needs escaping.
    return "null" if value is None else f'"{value}"'
