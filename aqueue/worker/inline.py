"""Running jobs with no database: ``App(testing="inline")`` and ``aqueue.testing.perform_job``.

Both run the real ``Executor`` on a row made in memory, so what a worker checks is checked
here by the same code: the arguments are validated again from their stored JSON, the
timeout is the same cancel scope's deadline, middleware wraps the call, and the outcome
is classified into the same closed set. Nothing is claimed and nothing is written. The
``after_process`` hooks are awaited in the caller's task right after each attempt: a
worker runs them in the background once the outcome is committed, but here there is no
commit to wait for, and a test wants them done by the time ``enqueue`` returns.

Inline mode runs each job to the end before ``enqueue`` returns:

- A failed attempt with attempts left is retried at once, without the backoff delay (a
  unit test has no clock worth waiting on), so the Job that comes back is final:
  completed, discarded or cancelled, with every attempt's error in ``errors``. Each
  attempt runs the hooks, as a worker would.
- A snooze ends the run: the Job comes back ``scheduled``. Running it again at once
  would loop forever on a job that snoozes until something outside it changes.
- ``scheduled_at``/``schedule_in``, ``conn=`` and the flow-control limits only say *when*
  a job may run; inline, it runs now, one job at a time in the caller's task, so no limit
  can be exceeded. ``conn=`` does not delay the run to the commit: the job runs even if
  the caller's transaction later rolls back.
- ``unique`` decides *whether* a job runs, from the jobs in the database. Inline mode has
  none to ask, so a unique enqueue raises ``InvalidOption`` instead of answering wrongly;
  workflows and batches, whose steps wait on each other in the database, are refused too
  (``ConfigurationError``, raised by the enqueue path).
- ``ctx.step`` records are kept in memory per job, so an inline retry gets them back.
- A kind this App does not define (``allow_unknown=True``) is recorded ``available``, as
  the database would hold it for a worker that knows it, and does not run.
"""

from __future__ import annotations

import builtins
import dataclasses
import itertools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import anyio
import pydantic_core

from ..context import JobContext
from ..db.database import Database
from ..db.queries import JOB_COLUMN_NAMES
from ..enqueue import ResolvedOptions
from ..errors import InvalidOption, JobNotFound
from ..jobs import Job, JobState, Outcome, job_from_row
from ..progress import HeldProgress
from ..steps import StepRecorder, run_step
from .attempt import Attempt
from .executor import Executor, RunningJob
from .hooks import call_hook, job_after
from .runtime import Runtime

if TYPE_CHECKING:
    from ..definition import JobDefinition, JobRequest

__all__ = ["ContextFactory", "InlineRunner"]

#: Builds the ``JobContext`` of an attempt, called as ``(job=, reporter=, steps=)``: the
#: App's, bound to itself (``ctx.app``) and its logger.
ContextFactory = Callable[..., JobContext]


class HeldSteps(StepRecorder):
    """``ctx.step`` with the records kept in memory, per job: a retried attempt (inline
    mode retries at once) gets a recorded step's result back without running it again,
    as it would from the database."""

    __slots__ = ("_records",)

    def __init__(self, db: Database, job: Job, records: dict[str, str]) -> None:
        super().__init__(db, job)
        self._records = records

    async def _run(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        recorded = self._records.get(name)
        if recorded is None:
            _, recorded = await run_step(self._job.id, name, fn, args, kwargs)
            self._records[name] = recorded
        return pydantic_core.from_json(recorded)


class InlineRunner:
    """Runs jobs in the caller's task through the real executor; keeps every job it was
    given (``jobs``) for ``app.get_job``, ``app.wait`` and ``aqueue.testing``."""

    def __init__(self, runtime: Runtime, context: ContextFactory) -> None:
        self._runtime = runtime
        self._context = context
        self._ids = itertools.count(1)
        self._jobs: dict[int, Job] = {}
        self._steps: dict[int, dict[str, str]] = {}  # job id -> step name -> result JSON

    @property
    def jobs(self) -> builtins.list[Job]:
        """Every job enqueued inline, oldest first, as it is now."""
        return sorted(self._jobs.values(), key=lambda job: job.id)

    async def get(self, job_id: int) -> Job | None:
        """``app.get_job`` in inline mode."""
        return self._jobs.get(job_id)

    async def list(
        self, *, state: JobState | str | None, queue: str | None, kind: str | None, limit: int
    ) -> builtins.list[Job]:
        """``app.list_jobs`` over the jobs enqueued inline."""
        return [
            job
            for job in self.jobs
            if (state is None or job.state == state)
            and (queue is None or job.queue == queue)
            and (kind is None or job.kind == kind)
        ][:limit]

    async def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """``app.wait``: inline, a job is as final as it will get once enqueue returned, so
        waiting longer cannot change it and a job that is not final times out at once."""
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if not job.state.is_final:
            raise TimeoutError(f"job {job_id} is {job.state} (inline mode runs no worker)")
        return job

    async def enqueue(
        self, requests: Sequence[JobRequest], resolved: Sequence[ResolvedOptions]
    ) -> builtins.list[Job]:
        """Run each request to its end, in order; nothing runs if one of them asks for
        what inline mode cannot honour."""
        for request, opts in zip(requests, resolved, strict=True):
            if opts.unique is not None:
                raise InvalidOption(
                    "unique",
                    f"job {request.kind!r}: inline mode cannot honour unique jobs (the "
                    "database decides what is a duplicate); test this path on a database "
                    "(aqueue.testing.isolated)",
                )
        return [
            await self._run(request, opts) for request, opts in zip(requests, resolved, strict=True)
        ]

    async def perform(self, request: JobRequest) -> Outcome:
        """One attempt of ``request`` (attempt 1 of its ``max_attempts``) and its hooks,
        recorded nowhere: ``aqueue.testing.perform_job``."""
        definition = self._runtime.registry.require(request.kind)
        row = self._row(request, _resolve(definition, request), next(self._ids))
        attempt, _ = await self._attempt({**row, "state": "running", "attempt": 1}, definition)
        return attempt.outcome

    async def _run(self, request: JobRequest, opts: ResolvedOptions) -> Job:
        job_id = next(self._ids)
        row = self._row(request, opts, job_id)
        self._jobs[job_id] = job_from_row(row)
        definition = self._runtime.registry.get(request.kind)
        if definition is None:
            return self._jobs[job_id]
        errors: list[str] = []
        number = 0
        while True:
            number += 1
            running = {
                **row,
                "state": "running",
                "attempt": number,
                "attempted_at": datetime.now(UTC),
                "errors": f"[{','.join(errors)}]" if errors else None,
            }
            self._jobs[job_id] = job_from_row(running)
            try:
                attempt, reporter = await self._attempt(running, definition)
            except anyio.get_cancelled_exc_class():
                # The caller was cancelled: the attempt is handed back, as on shutdown.
                self._jobs[job_id] = job_from_row(
                    {**running, "state": "available", "attempt": number - 1}
                )
                raise
            job = self._jobs[job_id] = _job_after(attempt, reporter)
            if attempt.state is not JobState.RETRYABLE:
                return job
            assert attempt.error_json is not None  # a failed attempt records its error
            errors.append(attempt.error_json)

    async def _attempt(
        self, row: dict[str, Any], definition: JobDefinition[Any, Any]
    ) -> tuple[Attempt, HeldProgress]:
        reporter = HeldProgress()
        done: list[Attempt] = []
        records = self._steps.setdefault(row["id"], {})

        async def context(job: Job) -> JobContext:
            steps = HeldSteps(self._runtime.db, job, records)
            return self._context(job=job, reporter=reporter, steps=steps)

        runtime = dataclasses.replace(self._runtime, job_context=context)
        executor = Executor(runtime, done.append)
        # The executor sets the job's timeout as this scope's deadline and re-raises the
        # cancellation it caused, which the scope absorbs; any other cancellation (the
        # caller's) goes on out of it, with the attempt handed back.
        with anyio.CancelScope() as scope:
            await executor.run(cast(Any, row), RunningJob(row["id"], row["attempt"], scope))
        [attempt] = done
        job = _job_after(attempt, reporter)
        registry = self._runtime.registry
        for hook in registry.hooks_for(definition):
            try:
                await call_hook(registry.hook_wrappers, hook, job, attempt.outcome)
            except Exception:
                self._runtime.logger.exception(
                    "aqueue: after_process hook %s failed for job %s (%s)",
                    getattr(hook, "__qualname__", hook),
                    job.id,
                    job.kind,
                )
        return attempt, reporter

    def _row(self, request: JobRequest, opts: ResolvedOptions, job_id: int) -> dict[str, Any]:
        """The row a database would hold for this job, waiting to run."""
        now = datetime.now(UTC)
        due = opts.scheduled_at
        if due is None:
            due = now + timedelta(seconds=opts.schedule_in or 0)
        return {
            **dict.fromkeys(JOB_COLUMN_NAMES),  # what a claim reads, None unless set here
            "id": job_id,
            "kind": request.kind,
            "queue": opts.queue,
            "state": "scheduled" if due > now else "available",
            "args": request.args_json,
            "priority": opts.priority,
            "attempt": 0,
            "max_attempts": opts.max_attempts,
            "scheduled_at": due,
            "created_at": now,
            "attempted_at": None,
            "finalized_at": None,
            "errors": None,
            "result": None,
            "tags": opts.tags,
            "meta": opts.meta_json,
            "progress": None,
            "progress_note": None,
            "progress_attempt": None,
            "timeout": opts.timeout,
            "retry": opts.retry_json,
        }


def _resolve(definition: JobDefinition[Any, Any], request: JobRequest) -> ResolvedOptions:
    return ResolvedOptions(definition.defaults.merged(request.options), request.options)


def _job_after(attempt: Attempt, reporter: HeldProgress) -> Job:
    """The job once ``attempt`` ended, as the outcome write would have left its row."""
    job = job_after(attempt)
    now = datetime.now(UTC)
    changes: dict[str, Any] = {}
    if attempt.state.is_final:
        changes["finalized_at"] = now
    elif attempt.state is JobState.SCHEDULED:  # snoozed: the attempt is given back
        changes["attempt"] = job.attempt - 1
        changes["scheduled_at"] = now + timedelta(seconds=attempt.delay or 0)
    elif attempt.state is JobState.RETRYABLE:
        changes["scheduled_at"] = now + timedelta(seconds=attempt.delay or 0)
    if reporter.last is not None:
        changes["progress"], changes["progress_note"] = reporter.last
    return dataclasses.replace(job, **changes)
