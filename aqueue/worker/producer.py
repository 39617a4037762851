"""One queue's claim loop and its concurrency slots.

A producer claims when it has free slots and something may be due: a notification for
its queue, a slot freed by a finished job, a retry it scheduled itself coming due, or
the ``poll_interval`` fallback (notifications can be lost; polling only delays). Each
claim is one statement for up to "free slots" jobs, so batches grow with load.

Claiming ahead: while a claim is in flight the slots would sit idle if jobs are short,
so a producer may hold a few claimed jobs waiting for a slot: as many as its slots are
expected to finish during one claim round trip (measured: average claim time over
average run time, times the concurrency, at most the concurrency). Long jobs get no
lookahead, so a busy worker never sits on jobs an idle one could run. A waiting job is
cancelled like a running one, and one still waiting at shutdown is handed back
unstarted (``available``, attempt refunded).

Items of chunk jobs are claimed like any job but wait in an accumulator until a list of
them is dispatched to one slot (chunks.py explains when); they count toward the
concurrency, waiting or running, one place each.

Shutdown has two phases. ``stop()`` ends claiming; running jobs get ``shutdown_timeout``
seconds to finish; then the task group they run in is cancelled and each hands its job
back as ``available`` with the attempt refunded (see executor.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from ..db.database import Row
from ..errors import DatabaseError
from .attempt import Attempt
from .chunks import ChunkAccumulator, ChunkBatch, ChunkItem
from .executor import Executor, RunningJob

if TYPE_CHECKING:
    from ..db.database import ClaimColumns, Database
    from .chunk_executor import ChunkExecutor

__all__ = ["Producer"]


class Producer:
    def __init__(
        self,
        queue: str,
        concurrency: int,
        *,
        db: Database,
        kinds: Callable[[], Sequence[str]],
        claim_columns: Callable[[], ClaimColumns],
        node_id: str,
        alive: Callable[[], bool],
        executor: Executor,
        poll_interval: float,
        shutdown_timeout: float,
        logger: logging.Logger,
        outstanding: Callable[[], Iterable[int]] = tuple,
        sync_ack: bool = False,
        chunks: ChunkExecutor | None = None,
    ) -> None:
        self.queue = queue
        self.concurrency = concurrency
        self._db = db
        self._kinds = kinds
        self._claim_columns = claim_columns
        self._node_id = node_id
        self._alive = alive
        #: Claims skipped because the node's heartbeat was overdue.
        self.skipped_unhealthy = 0
        self._executor = executor
        self._poll_interval = poll_interval
        self._shutdown_timeout = shutdown_timeout
        self._logger = logger
        self._outstanding = outstanding
        self.running: dict[int, RunningJob] = {}
        self._held: set[int] = set()  # claimed, until the slot running it is done with it
        # A claim failed: it may have committed on the server with its reply lost (a restart
        # or dropped connection mid-statement). Its jobs would stay `running` under this live
        # node forever, so before claiming again we look for them and run them.
        self._claim_unsure = False
        self._claim_scope: anyio.CancelScope | None = None
        #: Claimed, waiting for a slot (claimed ahead); ids flagged by app.cancel meanwhile.
        self.waiting: set[int] = set()
        self._cancel_waiting: set[int] = set()
        self._busy = 0  # claimed and not finished: running or waiting for a slot
        # Moving averages (seconds) that size the lookahead; None until measured.
        self._run_avg: float | None = None
        self._claim_avg: float | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._next_due = math.inf
        #: The queue has cluster-wide limits in force (set by the worker from the database).
        self.limited = False
        self.global_limit: int | None = None
        #: The queue has a rate limit: a short claim asks when the window frees a place.
        self.rated = False
        #: The queue's partition limit in force (chunk lists of one key never grow past it).
        self.partition_limit: int | None = None
        # Of a limited queue: jobs done here whose outcome is not written yet. They still
        # hold their places in the database, so a claim now would find no room.
        self._unwritten: set[int] = set()
        self._released_early: set[int] = set()
        self._sync_ack = sync_ack
        # Only when chunk jobs exist: other queues' hand-off pays nothing for them.
        self._chunk_executor = chunks
        self._chunks = ChunkAccumulator(chunks.definition_of) if chunks is not None else None
        self._chunk_items = 0  # chunk items held: waiting in the accumulator or running

    def wake(self) -> None:
        self._wake.set()

    def wake_at(self, delay: float) -> None:
        """A job of this queue becomes due in ``delay`` seconds (a retry or snooze we wrote)."""
        self._next_due = min(self._next_due, anyio.current_time() + max(delay, 0.0))
        self._wake.set()

    def cancel_job(self, job_id: int) -> bool:
        running = self.running.get(job_id)
        if running is None:
            if job_id not in self.waiting:
                return False
            row = self._chunks.remove(job_id) if self._chunks is not None else None
            if row is not None:
                # Gathering in a list that may wait its timeout: cancelled now, not then.
                self.waiting.discard(job_id)
                self._executor.cancel_unstarted(row)
                self._chunk_items -= 1
                self._finished(job_id)
            else:
                self._cancel_waiting.add(job_id)
            return True
        running.request_cancel()
        return True

    def lookahead(self) -> int:
        """How many jobs to claim beyond the free slots (see the module docstring)."""
        if self._run_avg is None or self._claim_avg is None or self._chunk_items:
            # Chunk items claimed ahead would join the next chunk, and a slot running it
            # would run more items than the concurrency allows.
            return 0
        expected = self.concurrency * self._claim_avg / max(self._run_avg, 1e-6)
        return min(self.concurrency, int(expected))

    def set_limits(self, limited: bool, global_limit: int | None, *, rated: bool = False) -> None:
        """The limits in force changed (read from the database by the worker)."""
        self.limited = limited
        self.global_limit = global_limit
        self.rated = rated
        # What was counted under the old limits no longer says anything about the new.
        self._unwritten.clear()
        self._released_early.clear()
        self._wake.set()

    def released(self, attempts: Iterable[Attempt]) -> None:
        """Outcomes were written: the places those jobs held are free again."""
        for attempt in attempts:
            if attempt.job_id in self._unwritten:
                self._unwritten.discard(attempt.job_id)
            elif attempt.job_id in self._held:
                # Written before its slot let go of it (ack="sync" waits for the write).
                self._released_early.add(attempt.job_id)
        self._wake.set()

    def _room(self, free: int) -> int:
        # Never more than the global limit leaves, counting only what this node holds: a
        # cheap upper bound that spares the database claims that could only come back
        # empty. The claim function still decides, with every node's jobs counted.
        if self.global_limit is None:
            return free
        return min(free, self.global_limit - len(self._held) - len(self._unwritten))

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        # A claim normally takes milliseconds; one stuck behind a lock (and no
        # statement_timeout) would hold shutdown forever. It gets shutdown_timeout.
        if self._claim_scope is not None:
            self._claim_scope.deadline = anyio.current_time() + self._shutdown_timeout

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # One long-lived task per concurrency slot, fed through a stream: cheaper than a
        # task per job, and a slot's job is cancelled exactly like a task's would be.
        # asyncio's own queue and events here, not anyio's: these run once per job, and
        # anyio's detect-the-backend cost on each primitive was a quarter of worker CPU.
        handoff: asyncio.Queue[Row | ChunkBatch] = asyncio.Queue()
        async with anyio.create_task_group() as jobs:
            for _ in range(self.concurrency):
                jobs.start_soon(self._slot, handoff)
            task_status.started()
            backoff = 0.1
            while not self._stopping:
                # One claim asks for at most a slot-full, so with a lookahead the next
                # claim is already in flight while the slots work through this one.
                free = min(self.concurrency, self.concurrency + self.lookahead() - self._busy)
                if self.limited:
                    free = self._room(free)
                if self._chunks is not None and self._chunks:
                    # No room to claim more: partial chunks go now, or they would wait for
                    # places that only their own dispatch can free.
                    self._dispatch_chunks(handoff, everything=free <= 0)
                if free > 0 and not self._alive():
                    # Jobs claimed now could be rescued (and run twice) before our next
                    # heartbeat lands: wait for it instead.
                    if not self.skipped_unhealthy:
                        self._logger.warning(
                            "aqueue: queue %r: heartbeat overdue; not claiming until it lands",
                            self.queue,
                        )
                    self.skipped_unhealthy += 1
                    free = 0
                if free > 0:
                    # A wake-up arriving while the claim is in flight must not be lost: reset
                    # the event before claiming, not after.
                    self._wake = asyncio.Event()
                    if self._next_due <= anyio.current_time():
                        self._next_due = math.inf
                    claimed: list[Row] = []
                    try:
                        with anyio.CancelScope() as scope:
                            self._claim_scope = scope
                            if self._claim_unsure:
                                await self._adopt_lost_claims(handoff)
                            sent = time.monotonic()
                            claimed = await self._db.claim(
                                self.queue,
                                free,
                                self._kinds(),
                                self._node_id,
                                columns=self._claim_columns(),
                                limited=self.limited,
                            )
                            took = time.monotonic() - sent
                            self._claim_avg = (
                                took
                                if self._claim_avg is None
                                else 0.8 * self._claim_avg + 0.2 * took
                            )
                        self._claim_scope = None
                        backoff = 0.1
                        if scope.cancelled_caught:
                            self._logger.warning(
                                "aqueue: queue %r: claim still blocked after "
                                "shutdown_timeout=%ss; abandoned (jobs it may have claimed "
                                "are rescued as orphans)",
                                self.queue,
                                self._shutdown_timeout,
                            )
                            break
                    except DatabaseError as exc:
                        self._claim_scope = None
                        self._claim_unsure = True
                        self._logger.warning(
                            "aqueue: claim on queue %r failed (%s); retrying", self.queue, exc
                        )
                        with anyio.move_on_after(backoff):
                            await self._wake.wait()
                        backoff = min(backoff * 2, 5.0)
                        continue
                    self._hand_off(claimed, handoff)
                    if len(claimed) == free:
                        continue  # maybe more due; slots will free and wake us
                    if self.rated:
                        await self._wait_for_rate()
                elif self._wake.is_set():
                    self._wake = asyncio.Event()
                due = self._next_due
                if self._chunks is not None:
                    due = min(due, self._chunks.next_due())
                timeout = min(self._poll_interval, due - anyio.current_time())
                with anyio.move_on_after(max(timeout, 0.0)):
                    await self._wake.wait()
            self._hand_back_waiting(handoff)
            with anyio.move_on_after(self._shutdown_timeout):
                await self._idle.wait()
            if self._busy:
                self._logger.warning(
                    "aqueue: queue %r: %d job(s) still running after shutdown_timeout=%ss; "
                    "cancelling them",
                    self.queue,
                    self._busy,
                    self._shutdown_timeout,
                )
                # Hand the jobs back, not fail them: the cancellation is ours, not theirs.
                for running in self.running.values():
                    running.interrupted = True
            jobs.cancel_scope.cancel()

    async def _wait_for_rate(self) -> None:
        # The claim came back short, perhaps because the window is full: no notification
        # or finished job says when it has room again, so ask when its oldest start
        # leaves it, and sleep until then rather than poll.
        try:
            wait = await self._db.rate_wait(self.queue, self._kinds())
        except DatabaseError as exc:  # the poll_interval fallback still wakes us
            self._logger.warning("aqueue: queue %r: rate wait failed (%s)", self.queue, exc)
            return
        if wait is not None:
            self._next_due = min(self._next_due, anyio.current_time() + max(wait, 0.0))

    def _hand_off(self, rows: Sequence[Row], handoff: asyncio.Queue[Row | ChunkBatch]) -> None:
        self._busy += len(rows)
        if rows:
            self._idle = asyncio.Event() if self._idle.is_set() else self._idle
        chunks = self._chunks
        now = anyio.current_time()
        for row in rows:
            self._held.add(row["id"])
            self.waiting.add(row["id"])
            if chunks is not None and chunks.add(row, now, self.partition_limit):
                self._chunk_items += 1
            else:
                handoff.put_nowait(row)
        if chunks is not None and chunks:
            self._dispatch_chunks(handoff)

    def _dispatch_chunks(
        self, handoff: asyncio.Queue[Row | ChunkBatch], *, everything: bool = False
    ) -> None:
        assert self._chunks is not None
        for batch in self._chunks.ready(anyio.current_time(), everything=everything):
            handoff.put_nowait(batch)

    async def _adopt_lost_claims(self, handoff: asyncio.Queue[Row | ChunkBatch]) -> None:
        # What this worker holds is known synchronously: a slot hands a finished job to the
        # completer before letting go of it, so every job is in one set or the other.
        held = [*self._held, *self._outstanding()]
        adopted = await self._db.adopt_claims(self.queue, self._node_id, held)
        self._claim_unsure = False
        if adopted:
            self._logger.warning(
                "aqueue: queue %r: %d job(s) claimed by a statement whose reply was lost; "
                "running them now",
                self.queue,
                len(adopted),
            )
            # May exceed the free slots for a moment; the handoff queue absorbs it.
            self._hand_off(adopted, handoff)

    async def _slot(self, handoff: asyncio.Queue[Row | ChunkBatch]) -> None:
        while True:
            # One scope serves job after job; a job's cancel or timeout cancels it, the
            # executor records that and re-raises, and this `with` absorbs it. Then a fresh
            # scope. A shutdown's cancellation comes from outside and ends the slot.
            with anyio.CancelScope() as scope:
                while not scope.cancel_called:
                    row = await handoff.get()
                    if isinstance(row, ChunkBatch):
                        await self._run_chunk(row, scope)
                        continue
                    job_id = row["id"]
                    self.waiting.discard(job_id)
                    if job_id in self._cancel_waiting:
                        # Cancelled while it waited: it never runs, not even to a first await.
                        self._cancel_waiting.discard(job_id)
                        self._executor.cancel_unstarted(row)
                        self._finished(job_id)
                        continue
                    running = RunningJob(job_id, row["attempt"], scope)
                    self.running[job_id] = running
                    started = time.monotonic()
                    try:
                        await self._executor.run(row, running, sync_ack=self._sync_ack)
                    finally:
                        # Every attempt counts, timed-out and cancelled ones too: they are
                        # what make a queue's jobs long.
                        took = time.monotonic() - started
                        avg = self._run_avg
                        self._run_avg = took if avg is None else 0.8 * avg + 0.2 * took
                        del self.running[job_id]
                        self._finished(job_id)

    async def _run_chunk(self, batch: ChunkBatch, scope: anyio.CancelScope) -> None:
        assert self._chunk_executor is not None
        rows: list[Row] = []
        for row in batch.rows:
            job_id = row["id"]
            self.waiting.discard(job_id)
            if job_id in self._cancel_waiting:
                self._cancel_waiting.discard(job_id)
                self._executor.cancel_unstarted(row)
                self._chunk_items -= 1
                self._finished(job_id)
            else:
                rows.append(row)
        if not rows:
            return
        items = [ChunkItem(row["id"], row["attempt"], scope) for row in rows]
        for item in items:
            self.running[item.id] = item
        started = time.monotonic()
        try:
            await self._chunk_executor.run(
                batch.definition, rows, items, scope, sync_ack=self._sync_ack
            )
        finally:
            took = time.monotonic() - started
            avg = self._run_avg
            self._run_avg = took if avg is None else 0.8 * avg + 0.2 * took
            self._chunk_items -= len(items)
            for item in items:
                del self.running[item.id]
                self._finished(item.id)

    def _finished(self, job_id: int) -> None:
        self._held.discard(job_id)
        if job_id in self._released_early:
            self._released_early.discard(job_id)
        elif self.limited:
            self._unwritten.add(job_id)
        self._busy -= 1
        if not self._busy:
            self._idle.set()
        self._wake.set()

    def _hand_back_waiting(self, handoff: asyncio.Queue[Row | ChunkBatch]) -> None:
        # Claimed ahead and never started: give them back now rather than after the
        # running jobs finish, so another worker can take them at once.
        rows: list[Row] = list(self._chunks.drain()) if self._chunks is not None else []
        plain: list[Row] = []
        while not handoff.empty():
            item = handoff.get_nowait()
            if isinstance(item, ChunkBatch):
                rows.extend(item.rows)
            else:
                plain.append(item)
        self._chunk_items -= len(rows)
        for row in (*rows, *plain):
            self.waiting.discard(row["id"])
            self._cancel_waiting.discard(row["id"])
            self._executor.hand_back(row)
            self._finished(row["id"])
