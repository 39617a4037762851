"""Unique jobs: ``aqueue.Unique`` and the key a unique job holds.

How uniqueness is enforced, and why this way
--------------------------------------------

A unique job carries a *key*: a hash of its kind, the arguments chosen by ``by_args``,
its queue when ``by_queue`` is set, and (for a ``period``) the number of the period it
was enqueued in, counted on the database clock so that every node agrees. It also
carries the list of *states* in which it holds that key.

PostgreSQL enforces the rest. A partial unique index covers ``unique_key`` for exactly
the rows whose state is in their own ``unique_states`` (migration 0004). Enqueueing is
``INSERT ... ON CONFLICT (unique_key) WHERE <that predicate> DO NOTHING``: of any number
of concurrent inserts of one key, from any number of connections, the index lets one
row in, and every other insert waits for that row's transaction, then skips. A skipped
job is answered by reading the key's holder in the next statement (a fresh snapshot, so
a holder committed a moment ago is visible); if the holder left its unique states in
between, the key is free and the insert runs again. There is no read-before-write
window: the decision is always the index's.

Why not ``DO UPDATE`` (which returns the holder from the same statement): it locks the
holder until the enqueuing transaction ends. A duplicate enqueued inside a caller's long
transaction would then block the worker writing the holder's outcome, and with it that
worker's whole batch of outcomes.

Why an index predicate and not a key column that is cleared when the job leaves its
unique states: the state of a job is changed by many statements, some owned by other
parts of the engine (claims, outcome writes, rescue of orphaned jobs, cancel, retry).
With the predicate, each of those moves the row into or out of the index as a side
effect of changing ``state``; none of them has to know about uniqueness, and none can
forget to clear a key.

The one rule that makes this safe: ``states`` must include every state the engine moves
jobs between on its own (``pending``, ``scheduled``, ``available``, ``running``,
``retryable``). A job that left the index and came back (say ``running`` ->
``retryable`` with ``retryable`` excluded) could collide with a newer job holding the
key, and the engine's own write would fail. Only the final states ``completed``,
``cancelled`` and ``discarded`` are optional; a final job re-enters the index only
through ``app.retry``, which reports a collision as ``JobStateError``.

The default states are all but ``cancelled`` and ``discarded``: a completed job keeps
its key (with a ``period``, for the rest of the period). Leaving out ``completed`` gives
"at most one waiting or running" semantics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Any

from .errors import InvalidOption
from .jobs import JobState

__all__ = ["ALWAYS_HELD", "DEFAULT_STATES", "Unique"]

#: The states the engine moves jobs between by itself; a unique job holds its key in all.
ALWAYS_HELD = frozenset(
    {
        JobState.PENDING,
        JobState.SCHEDULED,
        JobState.AVAILABLE,
        JobState.RUNNING,
        JobState.RETRYABLE,
    }
)
DEFAULT_STATES = ALWAYS_HELD | {JobState.COMPLETED}
_STATE_ORDER = list(JobState)


@dataclasses.dataclass(frozen=True, slots=True)
class Unique:
    """Make a job unique: a conflicting enqueue returns the existing job (``duplicate=True``).

    - ``by_args``: ``True`` compares all arguments, a list of argument names compares
      only those, ``False`` ignores arguments (one job of the kind at a time).
    - ``by_queue``: also compare the queue (the same job may wait once per queue).
    - ``period``: a ``timedelta`` or seconds; uniqueness then holds within each period
      (counted from the epoch on the database clock), so at most one job per period.
    - ``states``: the states in which a job holds its key. Default: every state except
      ``cancelled`` and ``discarded``; leave out ``completed`` for "at most one waiting or
      running". The waiting and running states cannot be left out.
    """

    by_args: bool | Sequence[str] = True
    by_queue: bool = False
    period: timedelta | float | None = None
    states: Collection[JobState | str] = DEFAULT_STATES

    def __post_init__(self) -> None:
        by_args = self.by_args
        if not isinstance(by_args, bool):
            if isinstance(by_args, str) or not isinstance(by_args, Sequence) or not by_args:
                raise InvalidOption(
                    "unique.by_args",
                    f"must be True, False or a non-empty list of argument names, got {by_args!r}",
                )
            keys = tuple(by_args)
            for key in keys:
                if not isinstance(key, str) or not key:
                    raise InvalidOption(
                        "unique.by_args", f"argument names must be non-empty strings, got {key!r}"
                    )
            if len(set(keys)) != len(keys):
                raise InvalidOption("unique.by_args", f"names a key twice: {list(keys)}")
            object.__setattr__(self, "by_args", keys)
        if not isinstance(self.by_queue, bool):
            raise InvalidOption("unique.by_queue", f"must be True or False, got {self.by_queue!r}")
        period = self.period
        if period is not None:
            seconds = period.total_seconds() if isinstance(period, timedelta) else period
            if (
                not isinstance(seconds, int | float)
                or isinstance(seconds, bool)
                or not math.isfinite(seconds)
                or seconds < 1
            ):
                raise InvalidOption(
                    "unique.period", f"must be a timedelta or seconds >= 1, got {period!r}"
                )
            object.__setattr__(self, "period", timedelta(seconds=seconds))
        if isinstance(self.states, str) or not isinstance(self.states, Collection):
            raise InvalidOption(
                "unique.states", f"must be a collection of job states, got {self.states!r}"
            )
        states: set[JobState] = set()
        for state in self.states:
            try:
                states.add(JobState(state))
            except ValueError:
                raise InvalidOption(
                    "unique.states",
                    f"{state!r} is not one of {', '.join(s.value for s in JobState)}",
                ) from None
        missing = ALWAYS_HELD - states
        if missing:
            names = ", ".join(s.value for s in _STATE_ORDER if s in missing)
            raise InvalidOption(
                "unique.states",
                f"must include {names}: jobs move between the waiting and running states "
                "on their own, and a job must not lose its key on the way (only completed, "
                "cancelled and discarded are optional)",
            )
        object.__setattr__(self, "states", frozenset(states))

    @property
    def period_seconds(self) -> float | None:
        return self.period.total_seconds() if isinstance(self.period, timedelta) else None

    def states_csv(self) -> str:
        return ",".join(s.value for s in _STATE_ORDER if s in self.states)

    def check_arguments(self, kind: str, names: Collection[str], accepts_any: bool) -> None:
        """Fail at definition time when ``by_args`` names an argument the job does not take."""
        if isinstance(self.by_args, bool) or accepts_any:
            return
        unknown = [key for key in self.by_args if key not in names]
        if unknown:
            raise InvalidOption(
                "unique.by_args",
                f"job {kind!r} has no argument named {', '.join(map(repr, unknown))} "
                f"(its arguments: {', '.join(names) or 'none'})",
            )

    def key(self, kind: str, queue: str, args_json: str) -> str:
        """The key without its period bucket (the database appends that)."""
        args: Any
        if self.by_args is True:
            args = json.loads(args_json)
        elif self.by_args is False:
            args = None
        else:
            stored = json.loads(args_json)
            # A key left out of the arguments is compared as absent, not as null.
            args = {key: stored[key] for key in self.by_args if key in stored}
        material = [kind, queue if self.by_queue else None, args, self.period_seconds]
        text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()
