"""Exceptions raised by aqueue, and the three a job raises to choose its outcome.

The tree::

    AqueueError                      root of everything aqueue raises
     ├── ConfigurationError          bad App settings or job definition (also ValueError)
     │    └── DuplicateJobKind       two jobs registered under one kind
     ├── InvalidOption               an enqueue option out of range (also ValueError)
     ├── InvalidJobArgs              arguments fail validation (also ValueError)
     ├── UnknownJobKind              no job registered under that kind (also LookupError)
     ├── UnknownQueue                no job, pause or live worker names it (also LookupError)
     ├── JobNotFound                 no job has that id (also LookupError)
     ├── WorkflowNotFound            no workflow or batch has that id (also LookupError)
     ├── InvalidWorkflow             bad workflow: a cycle, an unknown step... (also ValueError)
     ├── DependencyFailed            ctx.dep_result: that dependency did not complete
     ├── JobStateError               the job's state forbids the operation
     ├── DatabaseError               PostgreSQL unreachable, or schema not migrated
     │    └── SchemaNotMigrated
     ├── AppNotOpen                  the App is used outside ``async with app``
     ├── EmbeddedPostgresError       the throwaway server cannot start (also RuntimeError)
     ├── JobTimeout                  recorded: the job ran past its timeout (also TimeoutError)
     └── ResultNotJSON               recorded: the result is not JSON (also TypeError)

    JobAction (Exception)            raised inside a job to pick its outcome
     ├── Snooze(seconds)             run again later; the attempt is not consumed
     ├── Discard(reason)             give up now: state ``discarded``
     └── Cancel(reason)              stop now: state ``cancelled``

Messages always name the field, kind or job at fault.
"""

from __future__ import annotations

from .bounds import MAX_DELAY

__all__ = [
    "AppNotOpen",
    "AqueueError",
    "Cancel",
    "ConfigurationError",
    "DatabaseError",
    "DependencyFailed",
    "Discard",
    "DuplicateJobKind",
    "EmbeddedPostgresError",
    "InvalidJobArgs",
    "InvalidOption",
    "InvalidWorkflow",
    "JobAction",
    "JobNotFound",
    "JobStateError",
    "JobTimeout",
    "ResultNotJSON",
    "SchemaNotMigrated",
    "Snooze",
    "UnknownJobKind",
    "UnknownQueue",
    "WorkflowNotFound",
]


class AqueueError(Exception):
    """Root of every exception aqueue raises."""


class ConfigurationError(AqueueError, ValueError):
    """An App setting or a job definition is invalid."""


class InvalidOption(AqueueError, ValueError):
    """An enqueue option (priority, max_attempts, schedule, ...) is out of range."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class InvalidJobArgs(AqueueError, ValueError):
    """A job's arguments do not match its function's signature."""

    def __init__(self, kind: str, errors: list[tuple[str, str]]) -> None:
        details = "; ".join(f"{field}: {msg}" for field, msg in errors)
        super().__init__(f"invalid arguments for job {kind!r}: {details}")
        self.kind = kind
        self.errors = errors

    @property
    def fields(self) -> list[str]:
        return [field for field, _ in self.errors]


class UnknownJobKind(AqueueError, LookupError):
    """No job is registered under this kind (or alias)."""

    def __init__(self, kind: str, known: list[str] | None = None, *, hint: str = "") -> None:
        if known:
            hint = f"registered kinds: {', '.join(sorted(known))}"
        super().__init__(f"unknown job kind {kind!r}" + (f"; {hint}" if hint else ""))
        self.kind = kind

    def __str__(self) -> str:
        # LookupError would otherwise repr() the message, quoting it twice.
        return str(self.args[0])


class UnknownQueue(AqueueError, LookupError):
    """No job, queue setting or live worker names this queue."""

    def __init__(self, queue: str) -> None:
        super().__init__(
            f"unknown queue {queue!r}: no job, pause or live worker names it "
            "(queue names are case-sensitive)"
        )
        self.queue = queue

    def __str__(self) -> str:
        return str(self.args[0])


class JobNotFound(AqueueError, LookupError):
    """No job has this id (it never existed, or it was deleted or pruned)."""

    def __init__(self, job_id: int, detail: str = "does not exist") -> None:
        super().__init__(f"job {job_id} {detail}")
        self.job_id = job_id

    def __str__(self) -> str:
        return str(self.args[0])


class WorkflowNotFound(AqueueError, LookupError):
    """No workflow or batch has this id (it never existed, or retention removed it)."""

    def __init__(self, workflow_id: int) -> None:
        super().__init__(f"workflow or batch {workflow_id} does not exist")
        self.workflow_id = workflow_id

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidWorkflow(AqueueError, ValueError):
    """A workflow or batch cannot be enqueued as given: a cycle, a dependency on no step,
    two steps of one name, no steps, or a step option workflows do not support. Raised
    before anything is written."""


class DependencyFailed(AqueueError):
    """``ctx.dep_result(name)``: that dependency ended ``discarded`` or ``cancelled`` (a
    step with ``on_dep_failure="run"`` runs anyway and may catch this)."""

    def __init__(self, step: str, state: str) -> None:
        super().__init__(f"dependency {step!r} ended {state}, with no result")
        self.step = step
        self.state = state

    def __str__(self) -> str:
        return str(self.args[0])


class DuplicateJobKind(ConfigurationError):
    """Two jobs (or a job and an alias) claim one kind."""


class JobStateError(AqueueError):
    """The job's current state does not allow the requested operation."""


class DatabaseError(AqueueError):
    """PostgreSQL could not be reached or answered with an error aqueue cannot handle.

    ``sqlstate`` is the server's error code when it answered with one (None for a lost
    connection)."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate

    @property
    def deterministic(self) -> bool:
        """The statement itself is at fault (bad data, a size limit): retrying it as it is
        would fail the same way."""
        return self.sqlstate is not None and self.sqlstate[:2] in ("22", "54")


class SchemaNotMigrated(DatabaseError):
    """aqueue's tables are missing: run ``aqueue migrate`` or ``await app.migrate()``."""


class AppNotOpen(AqueueError):
    """The App's pool is not open: use ``async with app:`` (or ``await app.open()``)."""


class EmbeddedPostgresError(AqueueError, RuntimeError):
    """No PostgreSQL binaries are available, or the throwaway server could not be started."""


class JobTimeout(AqueueError, TimeoutError):
    """The job ran longer than its ``timeout`` (recorded in ``Job.errors``, then retried)."""


class ResultNotJSON(AqueueError, TypeError):
    """The job returned a value that cannot be stored as JSON (the job is discarded)."""


class JobAction(Exception):
    """Base of the exceptions a job raises to choose its outcome."""


class Snooze(JobAction):
    """Run the job again after ``seconds``; the attempt is not consumed."""

    def __init__(self, seconds: float = 0.0) -> None:
        # PostgreSQL's timestamps end: at most bounds.MAX_DELAY (a thousand years).
        if (
            not isinstance(seconds, int | float)
            or isinstance(seconds, bool)
            or not 0 <= seconds <= MAX_DELAY
        ):
            raise ValueError(
                f"Snooze seconds must be a number from 0 to 1000 years, got {seconds!r}"
            )
        super().__init__(f"snoozed for {seconds}s")
        self.seconds = float(seconds)


class Discard(JobAction):
    """Stop retrying: the job ends ``discarded`` with ``reason`` recorded as its error."""

    def __init__(self, reason: str = "discarded by the job") -> None:
        super().__init__(reason)
        self.reason = reason


class Cancel(JobAction):
    """Stop the job: it ends ``cancelled`` with ``reason`` recorded as its error."""

    def __init__(self, reason: str = "cancelled by the job") -> None:
        super().__init__(reason)
        self.reason = reason
