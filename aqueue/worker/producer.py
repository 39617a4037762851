"""One queue's claim loop and its concurrency slots.

A producer claims when it has free slots and something may be due: a notification for
its queue, a slot freed by a finished job, a retry it scheduled itself coming due, or
the ``poll_interval`` fallback (notifications can be lost; polling only delays). Each
claim is one statement for up to "free slots" jobs, so batches grow with load.

Shutdown has two phases. ``stop()`` ends claiming; running jobs get ``shutdown_timeout``
seconds to finish; then the task group they run in is cancelled and each hands its job
back as ``available`` with the attempt refunded (see executor.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from ..errors import DatabaseError
from .executor import Executor, RunningJob

if TYPE_CHECKING:
    from ..db.database import Database, Row

__all__ = ["Producer"]


class Producer:
    def __init__(
        self,
        queue: str,
        concurrency: int,
        *,
        db: Database,
        kinds: Callable[[], Sequence[str]],
        node_id: str,
        executor: Executor,
        poll_interval: float,
        shutdown_timeout: float,
        logger: logging.Logger,
    ) -> None:
        self.queue = queue
        self.concurrency = concurrency
        self._db = db
        self._kinds = kinds
        self._node_id = node_id
        self._executor = executor
        self._poll_interval = poll_interval
        self._shutdown_timeout = shutdown_timeout
        self._logger = logger
        self.running: dict[int, RunningJob] = {}
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._stopping = False
        self._next_due = math.inf
        self.claimed = 0

    def wake(self) -> None:
        self._wake.set()

    def wake_at(self, delay: float) -> None:
        """A job of this queue becomes due in ``delay`` seconds (a retry or snooze we wrote)."""
        self._next_due = min(self._next_due, anyio.current_time() + max(delay, 0.0))
        self._wake.set()

    def cancel_job(self, job_id: int) -> bool:
        running = self.running.get(job_id)
        if running is None:
            return False
        running.request_cancel()
        return True

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as jobs:
            task_status.started()
            backoff = 0.1
            while not self._stopping:
                free = self.concurrency - len(self.running)
                claimed: Sequence[Row] = ()
                if free > 0:
                    # A wake-up arriving while the claim is in flight must not be lost: reset
                    # the event before claiming, not after.
                    self._wake = anyio.Event()
                    if self._next_due <= anyio.current_time():
                        self._next_due = math.inf
                    try:
                        claimed = await self._db.claim(self.queue, free, self._kinds(),
                                                       self._node_id)
                        backoff = 0.1
                    except DatabaseError as exc:
                        self._logger.warning("aqueue: claim on queue %r failed (%s); retrying",
                                             self.queue, exc)
                        with anyio.move_on_after(backoff):
                            await self._wake.wait()
                        backoff = min(backoff * 2, 5.0)
                        continue
                    for row in claimed:
                        self._start(jobs, row)
                    if len(claimed) == free:
                        continue  # maybe more due; slots will free and wake us
                elif self._wake.is_set():
                    self._wake = anyio.Event()
                timeout = min(self._poll_interval, self._next_due - anyio.current_time())
                with anyio.move_on_after(max(timeout, 0.0)):
                    await self._wake.wait()
            with anyio.move_on_after(self._shutdown_timeout):
                await self._idle.wait()
            if self.running:
                self._logger.warning(
                    "aqueue: queue %r: %d job(s) still running after shutdown_timeout=%ss; "
                    "cancelling them", self.queue, len(self.running), self._shutdown_timeout)
                self._executor.stopping_hard = True
                jobs.cancel_scope.cancel()

    def _start(self, jobs: anyio.abc.TaskGroup, row: Row) -> None:
        running = RunningJob(row["id"], row["attempt"])
        self.running[running.id] = running
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        self.claimed += 1
        jobs.start_soon(self._execute, row, running)

    async def _execute(self, row: Row, running: RunningJob) -> None:
        try:
            await self._executor.run(row, running)
        finally:
            del self.running[running.id]
            if not self.running:
                self._idle.set()
            self._wake.set()
