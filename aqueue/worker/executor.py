"""Runs one claimed job and classifies how it ended. No SQL here.

Cancellation has three sources, told apart so each gets its own outcome:

- ``app.cancel`` (any node, via NOTIFY): the cancel scope of the job's slot is cancelled
  with ``cancel_requested`` set -> ``cancelled``;
- the job's ``timeout``: the same scope's deadline passes -> an error, retried like any;
- worker shutdown: the producer cancels the task group the slots run in. The slot's scope
  does not catch that; it reaches the ``except`` for the cancellation class, where
  the job is handed back as ``available`` with its attempt refunded, and the cancellation
  propagates (never swallowed).

Each slot reuses one cancel scope across jobs until a cancel or timeout trips it (see
producer.py): entering and leaving a fresh anyio scope per job cost more than the job.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import pydantic_core

from ..bounds import FLUSH_TIMEOUT
from ..errors import (
    Cancel,
    DependencyFailed,
    Discard,
    InvalidJobArgs,
    JobTimeout,
    ResultNotJSON,
    Snooze,
    UnknownJobKind,
)
from ..jobs import JobState, has_job_columns, job_from_row
from ..validate import to_storable_json
from .attempt import Attempt, backoff_for
from .chunk_executor import ChunkExecutor
from .runtime import Runtime

if TYPE_CHECKING:
    from ..db.database import Row
    from ..definition import JobDefinition

__all__ = ["Executor", "RunningJob", "to_storable_json"]


class RunningJob:
    """A job this process is executing: its identity and how to cancel it.

    ``interrupted`` is set by the job's producer when its shutdown grace is over, right
    before it cancels its slots: the cancellation that follows hands the job back."""

    __slots__ = ("attempt", "cancel_requested", "id", "interrupted", "scope")

    def __init__(self, job_id: int, attempt: int, scope: anyio.CancelScope) -> None:
        self.id = job_id
        self.attempt = attempt
        self.scope = scope
        self.cancel_requested = False
        self.interrupted = False

    def request_cancel(self) -> None:
        self.cancel_requested = True
        self.scope.cancel()


class Executor:
    def __init__(self, runtime: Runtime, submit: Callable[[Attempt], None]) -> None:
        self._registry = runtime.registry
        self._job_context = runtime.job_context
        self._submit = submit
        self._logger = runtime.logger
        # A chunk job's row that reaches here runs alone, as a chunk of one (inline mode,
        # perform_job); a worker's producer gathers such rows into chunks instead.
        self._chunk = ChunkExecutor(runtime, submit)

    async def run(self, row: Row, running: RunningJob, *, sync_ack: bool = False) -> None:
        """Run one job inside its slot's cancel scope (``running.scope``); with
        ``sync_ack``, return only once its outcome is committed (the slot waits).

        A cancellation of that scope (``app.cancel``, or the deadline set here for the
        job's ``timeout``) is recorded and then re-raised, so the slot's scope absorbs it;
        a shutdown's cancellation hands the job back and propagates further.
        """
        definition = self._registry.get(row["kind"])
        scope = running.scope
        if definition is not None and definition.chunk is not None:
            await self._chunk.run(definition, [row], [running], scope, sync_ack=sync_ack)
            return
        started = time.monotonic()
        timeout: float | None = None
        try:
            if definition is None:
                # Claims filter on known kinds, so this only happens if the registry changed.
                raise UnknownJobKind(row["kind"], hint="this worker has no job of that kind")
            kwargs = definition.schema.load(row["args"])
            timeout = row["timeout"] or definition.defaults.timeout
            if running.cancel_requested:
                scope.cancel()
            if timeout:
                scope.deadline = anyio.current_time() + timeout
            try:
                result = await self._call(row, definition, kwargs)
            finally:
                if timeout:
                    scope.deadline = math.inf
            try:
                result_json = to_storable_json(result)
            except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
                # The job's side effects happened; retrying would repeat them for a
                # value that can never be stored, so the job is discarded, not retried.
                not_json = ResultNotJSON(
                    f"job returned a value that is not JSON-serialisable "
                    f"({type(result).__name__}): {exc}"
                )
                attempt = Attempt.discarded(row, definition, not_json, _since(started))
            else:
                attempt = Attempt.completed(row, definition, result, result_json, _since(started))
        except Snooze as exc:
            attempt = Attempt.snoozed(row, definition, exc.seconds, _since(started))
        except (Discard, InvalidJobArgs, DependencyFailed) as exc:
            # Bad stored arguments will not change by waiting, nor will a dependency that
            # ended failed; `app.retry` after a fix.
            attempt = Attempt.discarded(row, definition, exc, _since(started))
        except Cancel as exc:
            attempt = Attempt.cancelled(row, definition, exc, _since(started))
        except Exception as exc:
            attempt = self._failed(row, definition, exc, started)
        except anyio.get_cancelled_exc_class() as exc:
            if running.interrupted:
                self._done(Attempt.handed_back(row, definition, _since(started), error=exc))
            elif running.cancel_requested:
                reason = Cancel("cancelled by app.cancel")
                self._done(Attempt.cancelled(row, definition, reason, _since(started), error=exc))
            elif scope.cancel_called:
                timed_out = JobTimeout(f"job exceeded its timeout of {timeout or 0:g}s")
                self._done(self._failed(row, definition, timed_out, started))
            elif _being_cancelled():
                # A cancellation from further out that no producer announced (its task
                # group torn down by an error): the job did not fail, so it goes back.
                self._done(Attempt.handed_back(row, definition, _since(started), error=exc))
            else:
                # A CancelledError the job raised itself, not a cancellation: a failure.
                attempt = self._failed(row, definition, exc, started)
                await self._finish(attempt, sync_ack)
                return
            raise
        await self._finish(attempt, sync_ack)

    async def _call(
        self, row: Row, definition: JobDefinition[Any, Any], kwargs: dict[str, Any]
    ) -> Any:
        fn = definition.fn
        wants_context = definition.schema.wants_context
        middleware = self._registry.middleware
        # The common case: no Job record is built at all. A row claimed before middleware
        # was registered has not the columns for one: middleware registered while a
        # worker runs wraps the jobs it claims from then on.
        if not middleware or not has_job_columns(row):
            if wants_context:
                return await fn(await self._job_context(job_from_row(row)), **kwargs)
            return await fn(**kwargs)
        job = job_from_row(row)

        async def innermost() -> Any:
            if wants_context:
                return await fn(await self._job_context(job), **kwargs)
            return await fn(**kwargs)

        call: Callable[[], Awaitable[Any]] = innermost
        # Outermost first: the first registered middleware sees the call first.
        for layer in reversed(middleware):
            call = functools.partial(layer, job, call)
        return await call()

    async def _finish(self, attempt: Attempt, sync_ack: bool) -> None:
        if not sync_ack:
            self._done(attempt)
            return
        attempt.written = asyncio.Event()
        self._done(attempt)
        try:
            await attempt.written.wait()
        except anyio.get_cancelled_exc_class():
            # Shutdown: the outcome is handed in, give its write a bounded while (a job
            # whose outcome is never written stays running and is rescued).
            with anyio.CancelScope(shield=True), anyio.move_on_after(FLUSH_TIMEOUT):
                await attempt.written.wait()
            raise

    def hand_back(self, row: Row) -> None:
        """A claimed job that never started (shutdown): back to ``available``, attempt
        refunded, like a job interrupted by shutdown."""
        self._done(Attempt.handed_back(row, self._registry.get(row["kind"]), 0.0))

    def cancel_unstarted(self, row: Row) -> None:
        """A claimed job cancelled by ``app.cancel`` before a slot took it."""
        definition = self._registry.get(row["kind"])
        self._done(Attempt.cancelled(row, definition, Cancel("cancelled by app.cancel"), 0.0))

    def _failed(
        self,
        row: Row,
        definition: JobDefinition[Any, Any] | None,
        error: BaseException,
        started: float,
    ) -> Attempt:
        return Attempt.failed(row, definition, error, _since(started), backoff_for(row, definition))

    def _done(self, attempt: Attempt) -> None:
        error = attempt.outcome.error
        if error is not None and attempt.outcome.state is not JobState.AVAILABLE:
            # A discarded job will not run again by itself: someone has to look at it.
            self._logger.log(
                logging.WARNING if attempt.outcome.state is JobState.DISCARDED else logging.INFO,
                "aqueue: job %s (%s) attempt %s -> %s: %s: %s",
                attempt.row["id"],
                attempt.row["kind"],
                attempt.row["attempt"],
                attempt.state,
                type(error).__name__,
                error,
            )
        self._submit(attempt)


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _since(started: float) -> float:
    return time.monotonic() - started
