"""Runs one chunk (one call for many items) and classifies each item's outcome. No SQL.

Each item keeps its own row, so each gets its own ``Attempt``, built by the same
constructors a job's attempt is built by:

- an item whose stored arguments no longer validate is discarded alone
  (``InvalidJobArgs``) and the call runs with the others;
- the call returns ``None``: every item is ``completed`` with a null result;
- it returns a list of exactly one entry per item, in order: an entry that is an
  exception instance is that item's outcome as if a job had raised it (``Snooze``,
  ``Discard``, ``Cancel``, or a failure retried with the item's own backoff until its own
  ``max_attempts``); any other entry is the item's result (not JSON: discarded, as a
  job's would be);
- it returns anything else (a list of the wrong length included), or raises: every item
  gets that one outcome (a raised ``Snooze`` snoozes them all; an error is retried per
  item as usual);
- the call's timeout is the shortest of its items' (each item's ``timeout`` option, or
  the definition's): it bounds the call, and a timed-out call fails every item;
- shutdown interrupts the call like a job's: every item is handed back ``available``
  with the attempt refunded;
- an item ``app.cancel`` flagged while the call ran ends ``cancelled`` whatever the call
  gave it (the call is not interrupted for the others).

Middleware (``app.middleware``) wraps the call once per item, nested in item order, so
each item's attempt is wrapped as every job's is (tracing gets a span per item);
``call_next`` returns the call's value, the whole list.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import pydantic_core

from ..bounds import FLUSH_TIMEOUT
from ..errors import Cancel, Discard, InvalidJobArgs, JobTimeout, ResultNotJSON, Snooze
from ..jobs import JobState, has_job_columns, job_from_row
from ..validate import to_storable_json
from .attempt import Attempt, backoff_for
from .runtime import Runtime

if TYPE_CHECKING:
    from ..db.database import Row
    from ..definition import JobDefinition

__all__ = ["ChunkExecutor", "Item"]


class Item(Protocol):
    """What the executor reads of a running item (a ``ChunkItem``, or the executor's
    ``RunningJob`` when one row runs alone as a chunk of one)."""

    @property
    def id(self) -> int: ...
    @property
    def cancel_requested(self) -> bool: ...
    @property
    def interrupted(self) -> bool: ...


class ChunkExecutor:
    def __init__(self, runtime: Runtime, submit: Callable[[Attempt], None]) -> None:
        self._registry = runtime.registry
        self._submit = submit
        self._logger = runtime.logger

    def definition_of(self, kind: str) -> JobDefinition[Any, Any] | None:
        """The chunk definition of ``kind``, or None when it is not a chunk kind."""
        definition = self._registry.get(kind)
        return definition if definition is not None and definition.chunk is not None else None

    async def run(
        self,
        definition: JobDefinition[Any, Any],
        rows: Sequence[Row],
        items: Sequence[Item],
        scope: anyio.CancelScope,
        *,
        sync_ack: bool = False,
    ) -> None:
        """Run ``rows`` as one call inside their slot's ``scope``; with ``sync_ack``,
        return once every item's outcome is committed.

        A timeout cancels the scope and is re-raised for the slot to absorb; a shutdown's
        cancellation hands the items back and propagates."""
        started = time.monotonic()
        done: list[Attempt] = []
        runs: list[tuple[Row, Item]] = []
        values: list[Any] = []
        name = definition.chunk_parameter
        for row, item in zip(rows, items, strict=True):
            try:
                values.append(definition.schema.load(row["args"])[name])
            except InvalidJobArgs as exc:
                done.append(Attempt.discarded(row, definition, exc, 0.0))
                continue
            runs.append((row, item))
        if not runs:
            await self._finish(done, items, sync_ack)
            return
        timeout = _timeout(definition, [row for row, _ in runs])
        try:
            if timeout:
                scope.deadline = anyio.current_time() + timeout
            try:
                result = await self._call(definition, [row for row, _ in runs], values)
            finally:
                if timeout:
                    scope.deadline = math.inf
            done += self._outcomes(definition, runs, result, _since(started))
        except (Snooze, Discard, InvalidJobArgs, Cancel) as exc:
            done += [_outcome_of(row, definition, exc, _since(started)) for row, _ in runs]
        except Exception as exc:
            done += [_failed(row, definition, exc, _since(started)) for row, _ in runs]
        except anyio.get_cancelled_exc_class() as exc:
            duration = _since(started)
            if any(item.interrupted for _, item in runs):
                # Shutdown: the items did not fail; they go back unconsumed.
                done += [_handed_back(row, definition, duration, exc) for row, _ in runs]
            elif scope.cancel_called:
                timed_out = JobTimeout(f"chunk call exceeded its timeout of {timeout or 0:g}s")
                done += [_failed(row, definition, timed_out, duration) for row, _ in runs]
            elif _being_cancelled():
                # A cancellation from further out that no producer announced.
                done += [_handed_back(row, definition, duration, exc) for row, _ in runs]
            else:
                # A CancelledError the function raised itself, not a cancellation.
                done += [_failed(row, definition, exc, duration) for row, _ in runs]
                await self._finish(done, items, sync_ack)
                return
            self._submit_all(done, items)
            raise
        await self._finish(done, items, sync_ack)

    async def _call(
        self, definition: JobDefinition[Any, Any], rows: list[Row], values: list[Any]
    ) -> Any:
        fn = definition.fn
        name = definition.chunk_parameter
        middleware = self._registry.middleware
        if not middleware or not all(has_job_columns(row) for row in rows):  # see Executor._call
            return await fn(**{name: values})

        def call() -> Awaitable[Any]:
            return fn(**{name: values})

        # Each item's attempt is wrapped as a job's is: its middleware, outermost first,
        # and the first item's outermost of all.
        for row in reversed(rows):
            job = job_from_row(row)
            for layer in reversed(middleware):
                call = functools.partial(layer, job, call)
        return await call()

    def _outcomes(
        self,
        definition: JobDefinition[Any, Any],
        runs: list[tuple[Row, Item]],
        result: Any,
        duration: float,
    ) -> list[Attempt]:
        if result is None:
            return [Attempt.completed(row, definition, None, "null", duration) for row, _ in runs]
        if not isinstance(result, list | tuple) or len(result) != len(runs):
            count = len(result) if isinstance(result, list | tuple) else None
            got = f"{count} results" if count is not None else f"a {type(result).__name__}"
            wrong = ValueError(
                f"chunk job {definition.kind!r} returned {got} for {len(runs)} items: return "
                "None (all completed) or a list with one result or exception per item, in order"
            )
            return [_failed(row, definition, wrong, duration) for row, _ in runs]
        return [
            _outcome_of(row, definition, value, duration)
            for (row, _), value in zip(runs, result, strict=True)
        ]

    def _submit_all(self, attempts: list[Attempt], items: Sequence[Item]) -> None:
        cancelled = {item.id for item in items if item.cancel_requested}
        for attempt in attempts:
            if attempt.job_id in cancelled and attempt.state is not JobState.CANCELLED:
                # app.cancel flagged it while the call ran: cancelled, whatever it got.
                attempt = Attempt.cancelled(
                    attempt.row,
                    attempt.definition,
                    Cancel("cancelled by app.cancel"),
                    attempt.outcome.duration,
                )
            self._log(attempt)
            self._submit(attempt)

    async def _finish(self, attempts: list[Attempt], items: Sequence[Item], sync_ack: bool) -> None:
        if not sync_ack:
            self._submit_all(attempts, items)
            return
        for attempt in attempts:
            attempt.written = asyncio.Event()
        self._submit_all(attempts, items)
        try:
            for attempt in attempts:
                assert attempt.written is not None
                await attempt.written.wait()
        except anyio.get_cancelled_exc_class():
            # Shutdown: the outcomes are handed in, give their writes a bounded while.
            with anyio.CancelScope(shield=True), anyio.move_on_after(FLUSH_TIMEOUT):
                for attempt in attempts:
                    assert attempt.written is not None
                    await attempt.written.wait()
            raise

    def _log(self, attempt: Attempt) -> None:
        error = attempt.outcome.error
        if error is not None and attempt.state is not JobState.AVAILABLE:
            self._logger.info(
                "aqueue: job %s (%s) attempt %s -> %s: %s: %s",
                attempt.job_id,
                attempt.row["kind"],
                attempt.attempt,
                attempt.state,
                type(error).__name__,
                error,
            )


def _outcome_of(
    row: Row, definition: JobDefinition[Any, Any], value: Any, duration: float
) -> Attempt:
    """One item's outcome from what the call gave it: a result, or an exception."""
    if isinstance(value, Snooze):
        return Attempt.snoozed(row, definition, value.seconds, duration)
    if isinstance(value, Discard | InvalidJobArgs):
        return Attempt.discarded(row, definition, value, duration)
    if isinstance(value, Cancel):
        return Attempt.cancelled(row, definition, value, duration)
    if isinstance(value, BaseException):
        return _failed(row, definition, value, duration)
    try:
        text = to_storable_json(value)
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
        not_json = ResultNotJSON(
            f"chunk item result is not JSON-serialisable ({type(value).__name__}): {exc}"
        )
        return Attempt.discarded(row, definition, not_json, duration)
    return Attempt.completed(row, definition, value, text, duration)


def _failed(
    row: Row, definition: JobDefinition[Any, Any], error: BaseException, duration: float
) -> Attempt:
    return Attempt.failed(row, definition, error, duration, backoff_for(row, definition))


def _handed_back(
    row: Row, definition: JobDefinition[Any, Any], duration: float, error: BaseException
) -> Attempt:
    return Attempt.handed_back(row, definition, duration, error=error)


def _timeout(definition: JobDefinition[Any, Any], rows: list[Row]) -> float | None:
    timeouts = [t for t in (row["timeout"] or definition.defaults.timeout for row in rows) if t]
    return min(timeouts) if timeouts else None


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _since(started: float) -> float:
    return time.monotonic() - started
