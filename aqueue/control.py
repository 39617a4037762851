"""Queue and kind control: pause, resume, drain, obliterate, statistics and kind renames.

These are the operations a deploy leans on (docs/howto/deploys.md), and each is safe while
workers run on any number of nodes:

- **Pause** is a row in the ``queues`` table that every claim statement checks (one
  primary-key probe, evaluated once per claim before any scan). A pause therefore holds
  on every node as soon as it commits, needs no message to arrive, and survives
  restarts. Jobs claimed before it keep running. **Resume** clears the row and sends the
  queue's ordinary wake-up (``i:<queue>``) in the same transaction, so idle workers claim
  at once instead of at their next poll.
- **Drain** waits, polling with a deadline, until the queue has nothing waiting (future
  scheduled jobs included) and nothing running.
- **Obliterate** deletes a queue's jobs in bounded batches. Rows are locked and
  re-checked before deletion: without ``force`` a job that was claimed meanwhile is left
  to its worker rather than deleted under it. With ``force`` running jobs are deleted too
  and their nodes are told to cancel them.
- **rename_kind** moves waiting jobs (scheduled, available, retryable) to a new kind in
  bounded batches walked by id. Running jobs are never touched: a row being claimed is
  waited for and then re-checked, and is skipped once it is running.

Queue and kind names are validated here and travel as query parameters only. A name
nothing knows about is an error (``UnknownQueue``, ``UnknownJobKind``): it is far more
often a typo than a request to act on nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping
from datetime import datetime

import anyio

from .db.database import Database
from .errors import InvalidOption, JobStateError, UnknownJobKind, UnknownQueue
from .jobs import JobState
from .registry import Registry
from .validate import validate_name

__all__ = ["Control", "QueueStats", "RenameReport"]

_WAITING = (JobState.PENDING, JobState.SCHEDULED, JobState.AVAILABLE, JobState.RETRYABLE)


@dataclasses.dataclass(frozen=True, slots=True)
class QueueStats:
    """A snapshot of one queue, from ``app.queue_stats()``.

    ``counts`` maps every ``JobState`` (a ``str``: ``counts["available"]`` works) to its
    number of jobs, zeros included. ``oldest_available_age`` is how
    many seconds the longest-waiting due job has been due (None when none is due).
    ``running_by_node`` maps node ids to their running jobs. ``unrunnable`` maps kinds to
    waiting jobs that no live node working this queue knows, so that nothing can run
    them now (often: a newer version enqueued them and its workers are not up yet).
    ``nodes`` is how many live nodes work the queue. ``global_limit`` and
    ``partition_limit`` are the cluster-wide limits in force (None: no such limit);
    ``running`` is how much of the global limit is in use. ``rate_limit`` starts per
    ``rate_per`` seconds (for each partition key when ``rate_per_partition``) is the rate
    in force; ``rate_used`` is how many starts the trailing window holds (of the busiest
    key, per partition).
    """

    name: str
    paused: bool
    paused_at: datetime | None
    counts: Mapping[str, int]
    oldest_available_age: float | None
    running_by_node: Mapping[str, int]
    unrunnable: Mapping[str, int]
    nodes: int
    global_limit: int | None = None
    partition_limit: int | None = None
    rate_limit: int | None = None
    rate_per: float | None = None
    rate_per_partition: bool = False
    rate_used: int | None = None

    @property
    def waiting(self) -> int:
        """Jobs still to run: pending, scheduled, available or retryable."""
        return sum(self.counts[state] for state in _WAITING)

    @property
    def running(self) -> int:
        return self.counts[JobState.RUNNING]


@dataclasses.dataclass(frozen=True, slots=True)
class RenameReport:
    """What ``rename_kind`` did: ``moved`` waiting jobs, ``running`` jobs left as they were."""

    old: str
    new: str
    moved: int
    running: int


class Control:
    """Queue and kind control for one App (its database and registry)."""

    def __init__(
        self, db: Database, registry: Registry, *, poll_interval: float, logger: logging.Logger
    ) -> None:
        self._db = db
        self._registry = registry
        self._poll_interval = poll_interval
        self._logger = logger

    async def _known_queue(self, queue: object, *, allow_unknown: bool = False) -> str:
        name = validate_name("queue", queue)
        if not allow_unknown and not await self._db.queue_known(name):
            raise UnknownQueue(name)
        return name

    async def pause_queue(self, queue: str, *, allow_unknown: bool = False) -> bool:
        """Stop every node claiming from ``queue``; True if it was running before."""
        name = await self._known_queue(queue, allow_unknown=allow_unknown)
        return await self._db.pause_queue(name)

    async def resume_queue(self, queue: str) -> bool:
        """Let ``queue`` be claimed again and wake its workers; True if it was paused."""
        name = await self._known_queue(queue)
        return await self._db.resume_queue(name)

    async def drain(self, queue: str, timeout: float | None = None) -> None:
        """Wait until ``queue`` has nothing waiting or running; ``TimeoutError`` otherwise."""
        if timeout is not None and (
            not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout >= 0
        ):
            raise InvalidOption("timeout", f"must be a number >= 0, got {timeout!r}")
        name = await self._known_queue(queue)
        limit = math.inf if timeout is None else float(timeout)
        deadline = anyio.current_time() + limit
        warned = False
        while True:
            left = await self._db.queue_unfinished(name)
            if not left:
                return
            now = anyio.current_time()
            if now >= deadline:
                raise TimeoutError(
                    f"queue {name!r} still has {left} waiting or running job(s) after {timeout}s"
                )
            if not warned:
                stats = (await self.queue_stats(name)).get(name)
                if stats is not None and stats.paused and stats.running == 0:
                    self._logger.warning(
                        "aqueue: drain: queue %r is paused; it drains only once resumed", name
                    )
                warned = True
            await anyio.sleep(min(self._poll_interval, deadline - now))

    async def obliterate_queue(
        self, queue: str, *, force: bool = False, batch_size: int = 5000
    ) -> int:
        """Delete every job of ``queue``; refuses while jobs run unless ``force``."""
        if not isinstance(force, bool):
            raise InvalidOption("force", f"must be True or False, got {force!r}")
        _check_batch_size(batch_size)
        name = await self._known_queue(queue)
        if not force:
            running = await self._db.queue_running(name)
            if running:
                raise JobStateError(
                    f"queue {name!r} has {running} running job(s): drain the queue (or cancel "
                    "them) first, or pass force=True to delete them and cancel their runs"
                )
        deleted = 0
        while True:
            batch = await self._db.obliterate_batch(name, force, batch_size)
            count = int(batch["deleted"])
            deleted += count
            if count < batch_size:
                break
        await self._db.forget_queue(name)
        return deleted

    async def queue_stats(self, queue: str | None = None) -> dict[str, QueueStats]:
        """Per-queue statistics, by queue name (one queue when ``queue`` is given)."""
        name = await self._known_queue(queue) if queue is not None else None
        stats: dict[str, QueueStats] = {}
        for row in await self._db.queue_stats(name):
            raw = json.loads(row["counts"])
            stats[row["name"]] = QueueStats(
                name=row["name"],
                paused=row["paused_at"] is not None,
                paused_at=row["paused_at"],
                counts={state: int(raw.get(state.value, 0)) for state in JobState},
                oldest_available_age=row["oldest_available_age"],
                running_by_node=json.loads(row["running_by_node"]),
                unrunnable=json.loads(row["unrunnable"]),
                nodes=row["nodes"],
                global_limit=row["global_limit"],
                partition_limit=row["partition_limit"],
                rate_limit=row["rate_limit"],
                rate_per=row["rate_per"],
                rate_per_partition=row["rate_per_partition"],
                rate_used=row["rate_used"] if row["rate_limit"] is not None else None,
            )
        return stats

    async def rename_kind(
        self, old: str, new: str, *, allow_unknown: bool = False, batch_size: int = 1000
    ) -> RenameReport:
        """Move waiting jobs of kind ``old`` to kind ``new``, ``batch_size`` rows per statement.

        ``new`` must be a kind (or alias) registered on ``app`` or known to a live node,
        unless ``allow_unknown``; ``old`` must be the kind of at least one stored job.
        """
        validate_name("old", old)
        validate_name("new", new)
        if old == new:
            raise InvalidOption("new", f"is the same kind as old ({old!r})")
        _check_batch_size(batch_size)
        if (
            not allow_unknown
            and self._registry.get(new) is None
            and not await self._db.kind_known_to_live_node(new)
        ):
            raise UnknownJobKind(
                new,
                hint="no job or alias of that name is registered on this App and no live "
                "worker knows it (pass allow_unknown=True to move jobs there anyway)",
            )
        if not await self._db.kind_state_counts(old):
            raise UnknownJobKind(old, hint="no job of that kind exists, in any state")
        moved = 0
        last_id = 0
        while True:
            batch = await self._db.rename_kind_batch(old, new, last_id, batch_size)
            count = int(batch["moved"])
            if not count:
                break
            moved += count
            last_id = int(batch["last_id"])
        running = (await self._db.kind_state_counts(old)).get(JobState.RUNNING.value, 0)
        return RenameReport(old=old, new=new, moved=moved, running=running)


def _check_batch_size(batch_size: object) -> None:
    if (
        not isinstance(batch_size, int)
        or isinstance(batch_size, bool)
        or not 1 <= batch_size <= 100_000
    ):
        raise InvalidOption(
            "batch_size", f"must be an integer from 1 to 100000, got {batch_size!r}"
        )
