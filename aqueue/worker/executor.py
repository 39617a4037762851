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

import json
import logging
import math
import re
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import pydantic_core

from ..errors import Cancel, Discard, InvalidJobArgs, JobTimeout, ResultNotJSON, Snooze
from ..jobs import JobContext, JobState, Outcome
from ..options import Backoff

if TYPE_CHECKING:
    from ..app import App
    from ..db.database import Row
    from ..definition import JobDefinition

__all__ = ["CompletedAttempt", "Executor", "RunningJob"]

DEFAULT_BACKOFF = Backoff()


class RunningJob:
    """A job this process is executing: its identity and how to cancel it."""

    __slots__ = ("attempt", "cancel_requested", "id", "scope")

    def __init__(self, job_id: int, attempt: int, scope: anyio.CancelScope) -> None:
        self.id = job_id
        self.attempt = attempt
        self.scope = scope
        self.cancel_requested = False

    def request_cancel(self) -> None:
        self.cancel_requested = True
        self.scope.cancel()


class CompletedAttempt:
    """An attempt's outcome, waiting for the completer to write it."""

    __slots__ = (
        "committed",
        "definition",
        "delay",
        "error_json",
        "outcome",
        "queue",
        "result_json",
        "row",
        "state",
    )

    def __init__(
        self,
        row: Row,
        definition: JobDefinition[Any, Any] | None,
        state: JobState,
        outcome: Outcome,
        result_json: str | None,
        error_json: str | None,
        delay: float | None,
    ) -> None:
        self.row = row
        self.definition = definition
        self.state = state
        self.outcome = outcome
        self.result_json = result_json
        self.error_json = error_json
        self.delay = delay
        self.queue: str = row["queue"]
        #: The columns the outcome write changed (finalized_at, scheduled_at, attempt), set
        #: by the completer once the write is committed.
        self.committed: Row | None = None

    @property
    def job_id(self) -> int:
        return int(self.row["id"])

    @property
    def attempt(self) -> int:
        return int(self.row["attempt"])


# A JSON ``\u0000`` escape (not an escaped backslash followed by "u0000"): jsonb rejects it.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def to_storable_json(value: Any) -> str:
    """JSON text PostgreSQL's jsonb accepts; ``ValueError`` for what it would reject.

    NaN and infinities become ``null`` (pydantic's JSON default; ``NaN`` is not JSON), and
    strings holding NUL characters are refused, so a bad result never fails a whole batch
    of outcome writes.
    """
    text = pydantic_core.to_json(value, inf_nan_mode="null").decode()
    if _JSON_NUL.search(text):
        raise ValueError("it contains a NUL character (\\u0000), which PostgreSQL cannot store")
    return text


def _storable_text(text: str) -> str:
    # jsonb rejects NUL characters and lone surrogates (e.g. a surrogate-escaped file name
    # in an OSError); an error message may hold either, so both are written out as escapes.
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def error_record(attempt: int, exc: BaseException) -> str:
    return json.dumps(
        {
            "attempt": attempt,
            "at": datetime.now(UTC).isoformat(),
            "type": type(exc).__qualname__,
            "message": _storable_text(str(exc)),
            "traceback": _storable_text("".join(traceback.format_exception(exc))),
        }
    )


class Executor:
    def __init__(
        self, app: App, submit: Callable[[CompletedAttempt], None], logger: logging.Logger
    ) -> None:
        self._app = app
        self._submit = submit
        self._logger = logger
        self.stopping_hard = False

    async def run(self, row: Row, running: RunningJob) -> None:
        """Run one job inside its slot's cancel scope (``running.scope``).

        A cancellation of that scope (``app.cancel``, or the deadline set here for the
        job's ``timeout``) is recorded and then re-raised, so the slot's scope absorbs it;
        a shutdown's cancellation hands the job back and propagates further.
        """
        definition = self._app.registry.get(row["kind"])
        attempt = running.attempt
        scope = running.scope
        started = time.monotonic()
        result: Any = None
        result_json: str | None = None
        error: BaseException | None = None
        snooze: float | None = None
        state = JobState.COMPLETED
        timeout: float | None = None
        try:
            if definition is None:
                # Claims filter on known kinds, so this only happens if the registry changed.
                raise LookupError(f"no job registered for kind {row['kind']!r}")
            kwargs = definition.schema.load(row["args"])
            timeout = row["timeout"] or definition.defaults.timeout
            if running.cancel_requested:
                scope.cancel()
            if timeout:
                scope.deadline = anyio.current_time() + timeout
            try:
                if definition.schema.wants_context:
                    ctx = JobContext(
                        job=self._app.job_from_row(row), app=self._app, logger=self._logger
                    )
                    result = await definition.fn(ctx, **kwargs)
                else:
                    result = await definition.fn(**kwargs)
            finally:
                if timeout:
                    scope.deadline = math.inf
            try:
                result_json = to_storable_json(result)
            except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
                # The job's side effects happened; retrying would repeat them for a
                # value that can never be stored, so the job is discarded, not retried.
                error = ResultNotJSON(
                    f"job returned a value that is not JSON-serialisable "
                    f"({type(result).__name__}): {exc}"
                )
                state, result = JobState.DISCARDED, None
        except Snooze as exc:
            state, error, snooze = JobState.SCHEDULED, None, exc.seconds
        except Discard as exc:
            state, error = JobState.DISCARDED, exc
        except Cancel as exc:
            state, error = JobState.CANCELLED, exc
        except InvalidJobArgs as exc:
            # The stored arguments will not change by waiting; `app.retry` after a fix.
            state, error = JobState.DISCARDED, exc
        except Exception as exc:
            state, error = JobState.RETRYABLE, exc
        except anyio.get_cancelled_exc_class() as exc:
            if self.stopping_hard:
                self._finish(
                    row, definition, JobState.AVAILABLE, None, None, None, exc, started, None
                )
                raise
            if running.cancel_requested:
                self._finish(
                    row,
                    definition,
                    JobState.CANCELLED,
                    None,
                    None,
                    Cancel("cancelled by app.cancel"),
                    exc,
                    started,
                    None,
                )
                raise
            if scope.cancel_called:
                error = JobTimeout(f"job exceeded its timeout of {timeout or 0:g}s")
                self._finish_failure(row, definition, attempt, error, started)
                raise
            # A CancelledError the job raised itself, not a cancellation: a failure.
            state, error = JobState.RETRYABLE, exc

        if state is JobState.RETRYABLE:
            assert error is not None
            self._finish_failure(row, definition, attempt, error, started)
        else:
            self._finish(row, definition, state, result, result_json, error, error, started, snooze)

    def hand_back(self, row: Row) -> None:
        """A claimed job that never started (shutdown): back to ``available``, attempt
        refunded, like a job interrupted by shutdown."""
        definition = self._app.registry.get(row["kind"])
        self._finish(
            row, definition, JobState.AVAILABLE, None, None, None, None, time.monotonic(), None
        )

    def cancel_unstarted(self, row: Row) -> None:
        """A claimed job cancelled by ``app.cancel`` before a slot took it."""
        cancel = Cancel("cancelled by app.cancel")
        definition = self._app.registry.get(row["kind"])
        self._finish(
            row, definition, JobState.CANCELLED, None, None, cancel, cancel, time.monotonic(), None
        )

    def _finish_failure(
        self,
        row: Row,
        definition: JobDefinition[Any, Any] | None,
        attempt: int,
        error: BaseException,
        started: float,
    ) -> None:
        if attempt >= row["max_attempts"]:
            self._finish(
                row, definition, JobState.DISCARDED, None, None, error, error, started, None
            )
        else:
            delay = self._backoff(row, definition).delay(attempt)
            self._finish(
                row, definition, JobState.RETRYABLE, None, None, error, error, started, delay
            )

    def _backoff(self, row: Row, definition: JobDefinition[Any, Any] | None) -> Backoff:
        if row["retry"]:
            return Backoff.from_json(json.loads(row["retry"]))
        if definition is not None and definition.defaults.retry is not None:
            return definition.defaults.retry
        return DEFAULT_BACKOFF

    def _finish(
        self,
        row: Row,
        definition: JobDefinition[Any, Any] | None,
        state: JobState,
        result: Any,
        result_json: str | None,
        recorded: BaseException | None,
        error: BaseException | None,
        started: float,
        delay: float | None,
    ) -> None:
        duration = time.monotonic() - started
        if error is not None and state is not JobState.AVAILABLE:
            self._logger.info(
                "aqueue: job %s (%s) attempt %s -> %s: %s: %s",
                row["id"],
                row["kind"],
                row["attempt"],
                state,
                type(error).__name__,
                error,
            )
        outcome = Outcome(
            state=state,
            result=result,
            error=error,
            duration=duration,
            snoozed_for=delay if state is JobState.SCHEDULED else None,
        )
        error_json = error_record(row["attempt"], recorded) if recorded is not None else None
        self._submit(
            CompletedAttempt(row, definition, state, outcome, result_json, error_json, delay)
        )
