"""Writes attempt outcomes in batches, then hands them to hooks.

Executors ``submit`` synchronously (no await, so a job being cancelled can still hand in
its outcome). The loop takes everything pending, up to ``batch_size``, and writes it
with one statement; whatever arrives meanwhile forms the next batch, so batches grow
with load and latency stays one round trip when idle.

The completer outlives the producers: the worker closes it only after every job has
stopped, and ``run`` returns once the buffer is empty. A failed write is retried with
backoff (outcomes are never dropped) until the final flush's deadline passes; jobs whose
outcome could not be written stay ``running`` and are rescued as orphans.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from ..bounds import FLUSH_TIMEOUT
from ..db.params import Outcomes, outcome_row
from ..errors import DatabaseError
from ..jobs import JobState
from .attempt import Attempt

if TYPE_CHECKING:
    from ..db.database import Database, Row

__all__ = ["Completer"]

#: The most outcome text one statement carries (PostgreSQL's jsonb values end at 256 MiB);
#: a bigger batch is written as several statements.
MAX_DOCUMENT = 64 * 1024 * 1024
#: Immediate tries of a write that PostgreSQL ended to break a deadlock, before the usual
#: retries with backoff.
DEADLOCK_RETRIES = 3


def _row(item: Attempt) -> str:
    return outcome_row(
        item.job_id, item.attempt, item.state.value, item.result_json, item.error_json, item.delay
    )


def _by_size(batch: list[Attempt]) -> list[list[Attempt]]:
    parts: list[list[Attempt]] = [[]]
    size = 0
    for item in batch:
        weight = len(item.result_json or "") + len(item.error_json or "")
        if parts[-1] and size + weight > MAX_DOCUMENT:
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += weight
    return parts


class Completer:
    def __init__(
        self,
        db: Database,
        *,
        batch_size: int,
        on_committed: Callable[[list[Attempt]], None],
        logger: logging.Logger,
        on_written: Callable[[list[Attempt]], None] = lambda attempts: None,
        flush_timeout: float = FLUSH_TIMEOUT,
        columns_wanted: Callable[[], bool] = lambda: True,
    ) -> None:
        self._db = db
        self._batch_size = batch_size
        self._on_committed = on_committed
        self._on_written = on_written
        self._logger = logger
        self._flush_timeout = flush_timeout
        #: Whether an outcome's write must return the columns it changed (for hooks);
        #: asked per write, so hooks registered on a running App still get them.
        self._columns_wanted = columns_wanted
        self._pending: list[Attempt] = []
        self._writing: list[Attempt] = []
        self._has_items = anyio.Event()
        self._closing = False
        self._flush_deadline = math.inf
        self._write_scope: anyio.CancelScope | None = None

    def submit(self, item: Attempt) -> None:
        self._pending.append(item)
        self._has_items.set()

    def holding(self) -> list[int]:
        """Ids of jobs whose outcome is not written yet: their rows still say ``running``."""
        return [item.job_id for item in (*self._writing, *self._pending)]

    def close(self) -> None:
        """Flush what is pending, then let ``run`` return."""
        self._closing = True
        self._flush_deadline = anyio.current_time() + self._flush_timeout
        # A write already in flight may be stuck behind a lock with no statement_timeout
        # to end it; it gets the same deadline, or the worker could never stop.
        if self._write_scope is not None:
            self._write_scope.deadline = self._flush_deadline
        self._has_items.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await self._loop()
        finally:
            # Nothing more will be written: no ack="sync" slot may wait for it.
            for item in self._pending:
                if item.written is not None:
                    item.written.set()

    async def _loop(self) -> None:
        while True:
            await self._has_items.wait()
            if not self._pending:
                if self._closing:
                    return
                self._has_items = anyio.Event()
                continue
            batch = self._pending[: self._batch_size]
            del self._pending[: self._batch_size]
            if not self._pending and not self._closing:
                self._has_items = anyio.Event()
            self._writing = batch
            try:
                for part in _by_size(batch):
                    await self._write(part)
            finally:
                self._writing = []
                for item in batch:  # ack="sync" slots wait for this, whatever happened
                    if item.written is not None:
                        item.written.set()
                self._on_written(batch)

    async def _write(self, batch: list[Attempt]) -> None:
        rows = Outcomes([_row(item) for item in batch])
        delay = 0.05
        unsure = False  # a try failed: it may have committed with its reply lost
        deadlocks = 0
        while True:
            try:
                # Shielded: a write in flight must finish (or fail) as a whole, even when the
                # worker is being torn down around it; only the flush deadline ends it.
                with anyio.CancelScope(shield=True, deadline=self._flush_deadline) as scope:
                    self._write_scope = scope
                    applied = await self._db.record_outcomes(rows, columns=self._columns_wanted())
                self._write_scope = None
                if scope.cancelled_caught:
                    raise DatabaseError(f"no answer within flush_timeout={self._flush_timeout}s")
                break
            except DatabaseError as exc:
                self._write_scope = None
                if exc.sqlstate == "40P01" and deadlocks < DEADLOCK_RETRIES:
                    # PostgreSQL ended this write to break a deadlock with an admin call
                    # (app.cancel of a job claimed as it ran): rolled back, nothing applied,
                    # and the other side has gone on. Again at once, without a warning.
                    deadlocks += 1
                    self._logger.info("aqueue: an outcome write met a deadlock; writing again")
                    continue
                if exc.deterministic and not unsure:
                    # The same statement would fail again, forever: find the outcome at
                    # fault instead (halving), and store the job's failure in its place.
                    await self._isolate(batch, exc)
                    return
                unsure = True
                if anyio.current_time() >= self._flush_deadline:
                    self._logger.error(
                        "aqueue: could not record %d job outcomes before shutdown (%s); "
                        "those jobs stay running until rescued as orphans",
                        len(batch),
                        exc,
                    )
                    return
                self._logger.warning("aqueue: recording outcomes failed (%s); retrying", exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if unsure and len(applied) != len(batch):
            applied.update(await self._applied_earlier(batch, applied))
        committed = []
        for item in batch:
            if item.job_id in applied:
                item.committed = applied[item.job_id]
                committed.append(item)
        if len(committed) != len(batch):
            self._logger.info(
                "aqueue: %d outcome(s) not applied: job no longer running this attempt "
                "(rescued, or deleted)",
                len(batch) - len(committed),
            )
        self._on_committed(committed)

    async def _isolate(self, batch: list[Attempt], exc: DatabaseError) -> None:
        if len(batch) > 1:
            middle = len(batch) // 2
            await self._write(batch[:middle])
            await self._write(batch[middle:])
            return
        [item] = batch
        if item.state is JobState.DISCARDED and item.result_json is None:
            self._logger.error(
                "aqueue: job %s: even its failure could not be stored (%s); it stays running "
                "until rescued as an orphan",
                item.job_id,
                exc,
            )
            return
        self._logger.error(
            "aqueue: job %s: its outcome could not be stored (%s); discarding it", item.job_id, exc
        )
        stored = DatabaseError(f"the attempt's outcome could not be stored: {exc}", exc.sqlstate)
        await self._write([Attempt.discarded(item.row, item.definition, stored, 0.0)])

    async def _applied_earlier(
        self, batch: list[Attempt], applied: dict[int, Row | None]
    ) -> dict[int, Row | None]:
        # Without this, hooks of an outcome whose first write committed but lost its reply
        # (PostgreSQL restarting, a dropped connection) would never run.
        missing = [item for item in batch if item.job_id not in applied]
        rows: list[Row] = []
        try:
            with anyio.CancelScope(shield=True, deadline=self._flush_deadline):
                rows = await self._db.outcomes_in_place(
                    [item.job_id for item in missing],
                    [item.attempt for item in missing],
                    [item.state.value for item in missing],
                )
        except DatabaseError as exc:
            self._logger.warning("aqueue: could not check %d outcomes (%s)", len(missing), exc)
        if rows:
            self._logger.info(
                "aqueue: %d outcome(s) found written by an earlier try whose reply was lost",
                len(rows),
            )
        return {row["id"]: row for row in rows}
