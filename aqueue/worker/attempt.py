"""How one attempt of a job ended: a closed set of outcomes, each made by one constructor.

=================  ===========  ==============================================  =======
constructor        state        when                                            attempt
=================  ===========  ==============================================  =======
``completed``      completed    the job returned a value that is JSON           counted
``failed``         retryable    it raised, attempts remain (backoff delay)      counted
``failed``         discarded    it raised on its last attempt                   counted
``discarded``      discarded    ``Discard``, bad stored args, a non-JSON result counted
``snoozed``        scheduled    ``Snooze(seconds)``                             refunded
``cancelled``      cancelled    ``Cancel``, or ``app.cancel`` (running or not)  counted
``handed_back``    available    shutdown interrupted it, or it never started    refunded
=================  ===========  ==============================================  =======

The completer writes an ``Attempt`` (``record_outcomes``); once committed, hooks get a
``Job`` made from it and its ``Outcome``. No SQL here.
"""

from __future__ import annotations

import asyncio
import json
import traceback
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..backoff import DEFAULT_BACKOFF, Backoff
from ..jobs import JobState, Outcome, new_outcome

if TYPE_CHECKING:
    from ..db.database import Row
    from ..definition import JobDefinition

__all__ = ["Attempt", "backoff_for", "error_record"]


def _storable_text(text: str) -> str:
    # jsonb rejects NUL characters and lone surrogates (e.g. a surrogate-escaped file name
    # in an OSError); an error message may hold either, so both are written out as escapes.
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def error_record(attempt: int, exc: BaseException, duration: float | None = None) -> str:
    """The JSON appended to ``Job.errors`` for an attempt that ended with ``exc`` after
    running ``duration`` seconds (``aqueue jobs show`` prints it)."""
    return json.dumps(
        {
            "attempt": attempt,
            "at": datetime.now(UTC).isoformat(),
            **({"duration": round(duration, 6)} if duration is not None else {}),
            "type": type(exc).__qualname__,
            "message": _storable_text(str(exc)),
            "traceback": _storable_text("".join(traceback.format_exception(exc))),
        }
    )


class Attempt:
    """One attempt's outcome, waiting for the completer to write it."""

    __slots__ = (
        "attempt",
        "committed",
        "definition",
        "delay",
        "error_json",
        "job_id",
        "outcome",
        "result_json",
        "row",
        "state",
        "written",
    )

    def __init__(
        self,
        row: Row,
        definition: JobDefinition[Any, Any] | None,
        state: JobState,
        outcome: Outcome,
        *,
        result_json: str | None = None,
        recorded: BaseException | None = None,
        delay: float | None = None,
    ) -> None:
        self.row = row
        self.job_id: int = row["id"]
        self.attempt: int = row["attempt"]
        self.definition = definition
        self.state = state
        self.outcome = outcome
        self.result_json = result_json
        self.error_json = (
            error_record(row["attempt"], recorded, outcome.duration)
            if recorded is not None
            else None
        )
        self.delay = delay
        #: The columns the outcome write changed (finalized_at, scheduled_at, attempt), set
        #: by the completer once the write is committed.
        self.committed: Row | None = None
        #: With ack="sync": set by the completer once it is done with this outcome.
        self.written: asyncio.Event | None = None

    @property
    def queue(self) -> str:
        return str(self.row["queue"])

    # -- the outcomes ---------------------------------------------------------------------

    @classmethod
    def completed(
        cls,
        row: Row,
        definition: JobDefinition[Any, Any] | None,
        result: Any,
        result_json: str,
        duration: float,
    ) -> Attempt:
        outcome = new_outcome(JobState.COMPLETED, result, None, duration)
        return cls(row, definition, JobState.COMPLETED, outcome, result_json=result_json)

    @classmethod
    def failed(
        cls,
        row: Row,
        definition: JobDefinition[Any, Any] | None,
        error: BaseException,
        duration: float,
        backoff: Backoff,
    ) -> Attempt:
        """Retried after the backoff delay, or discarded when out of attempts."""
        attempt = row["attempt"]
        if attempt >= row["max_attempts"]:
            return cls.discarded(row, definition, error, duration)
        outcome = new_outcome(JobState.RETRYABLE, None, error, duration)
        return cls(
            row,
            definition,
            JobState.RETRYABLE,
            outcome,
            recorded=error,
            delay=backoff.delay(attempt),
        )

    @classmethod
    def discarded(
        cls,
        row: Row,
        definition: JobDefinition[Any, Any] | None,
        error: BaseException,
        duration: float,
    ) -> Attempt:
        outcome = new_outcome(JobState.DISCARDED, None, error, duration)
        return cls(row, definition, JobState.DISCARDED, outcome, recorded=error)

    @classmethod
    def snoozed(
        cls,
        row: Row,
        definition: JobDefinition[Any, Any] | None,
        seconds: float,
        duration: float,
    ) -> Attempt:
        outcome = new_outcome(JobState.SCHEDULED, None, None, duration, seconds)
        return cls(row, definition, JobState.SCHEDULED, outcome, delay=seconds)

    @classmethod
    def cancelled(
        cls,
        row: Row,
        definition: JobDefinition[Any, Any] | None,
        reason: BaseException,
        duration: float,
        *,
        error: BaseException | None = None,
    ) -> Attempt:
        """``reason`` is recorded in ``Job.errors``; ``error`` (default: the reason) is
        what hooks see, e.g. the cancellation that stopped a running job."""
        outcome = new_outcome(JobState.CANCELLED, None, error or reason, duration)
        return cls(row, definition, JobState.CANCELLED, outcome, recorded=reason)

    @classmethod
    def handed_back(
        cls,
        row: Row,
        definition: JobDefinition[Any, Any] | None,
        duration: float,
        *,
        error: BaseException | None = None,
    ) -> Attempt:
        """Back to ``available`` with the attempt refunded; nothing recorded, no hooks."""
        outcome = new_outcome(JobState.AVAILABLE, None, error, duration)
        return cls(row, definition, JobState.AVAILABLE, outcome)


def backoff_for(row: Row, definition: JobDefinition[Any, Any] | None) -> Backoff:
    """The retry policy of a job's failed attempt: the one its enqueue set, else its
    definition's, else the default."""
    if row["retry"]:
        return Backoff.from_json(json.loads(row["retry"]))
    if definition is not None and definition.defaults.retry is not None:
        return definition.defaults.retry
    return DEFAULT_BACKOFF
