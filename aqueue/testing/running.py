"""Running jobs in a test: ``perform_job`` (one attempt, no database row), ``drain_queue``
(a queue's jobs until none is left to run) and ``run_until_idle`` (a worker until the
App's queues are idle)."""

from __future__ import annotations

import collections
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import anyio

from ..admin import LIST_LIMIT_MAX
from ..app import App
from ..definition import ConfiguredJob, JobDefinition
from ..errors import ConfigurationError
from ..flow import Queue
from ..jobs import Job, JobState, Outcome
from ..worker.inline import InlineRunner

__all__ = ["drain_queue", "perform_job", "run_until_idle"]

#: The concurrency ``drain_queue`` runs a queue with when the App declares none for it.
_DRAIN_CONCURRENCY = 10


async def perform_job(
    job: JobDefinition[Any, Any] | ConfiguredJob[Any, Any], /, *args: Any, **kwargs: Any
) -> Outcome:
    """Run one attempt of ``job`` with these arguments, as a worker would, and return how
    it ended; no job row is written and nothing is claimed.

    It goes through the worker's own executor: the arguments are validated (bad ones raise
    ``InvalidJobArgs`` here, as ``enqueue`` would), the job's ``timeout`` is enforced,
    middleware wraps the call, the outcome is classified (``Snooze``, ``Discard``,
    ``Cancel``, an exception on attempt 1 of ``max_attempts``) and the ``after_process``
    hooks run before it returns. ``send_email.options(max_attempts=1, timeout=2)`` sets
    options for the attempt. A job taking a ``JobContext`` gets one whose
    ``ctx.progress`` is checked and kept in memory. Example::

        outcome = await perform_job(send_email, to="ada@example.com", subject="hi")
        assert outcome.state is aqueue.JobState.COMPLETED
        assert outcome.result == {"message_id": "m-1"}
    """
    if not isinstance(job, JobDefinition | ConfiguredJob):
        raise TypeError(f"perform_job: expected a job made with @app.job, got {job!r}")
    runner = getattr(job.definition.inserter, "runner", None)
    if not isinstance(runner, InlineRunner):
        raise ConfigurationError(f"perform_job: {job!r} is not registered on an aqueue.App")
    return await runner.perform(job.build(*args, **kwargs))


async def drain_queue(
    app: App,
    queue: str,
    *,
    with_scheduled: bool = False,
    with_retries: bool = True,
    timeout: float = 30.0,
) -> dict[JobState, int]:
    """Run the jobs of ``queue`` with a real worker until none is left to run; returns how
    many of the jobs that ran ended in each state (``{JobState.COMPLETED: 3, ...}``).

    Jobs that jobs of the queue enqueue there run too. ``with_retries`` (default) runs a
    failed job's retries at once instead of after its backoff delay, until it is
    completed or out of attempts (``discarded``); without it a failed job stays
    ``retryable``. ``with_scheduled`` also runs jobs scheduled for later (snoozed ones
    included) at once. Jobs of kinds the App does not define, and the jobs of a paused
    queue, are not run. ``TimeoutError`` after ``timeout`` seconds (a job that snoozes
    forever, with ``with_scheduled``). Example::

        await signup(email="ada@example.com")
        assert await drain_queue(app, "mail") == {aqueue.JobState.COMPLETED: 1}
    """
    if app.testing == "inline":
        raise ConfigurationError("drain_queue: an inline App runs each job when it is enqueued")
    kinds = app.registry.kinds()
    waiting = {JobState.SCHEDULED} if with_scheduled else set()
    if with_retries:
        waiting.add(JobState.RETRYABLE)
    before = {job.id: job.attempted_at for job in await _jobs_of(app, queue)}
    spec: int | Queue = app.worker_queues().get(queue, _DRAIN_CONCURRENCY)
    with anyio.fail_after(timeout):
        async with app.worker({queue: spec}):
            while True:
                while not await app.db.queues_idle([queue], kinds):  # noqa: ASYNC110 - the db
                    await anyio.sleep(0.01)
                later = [
                    job
                    for job in await _jobs_of(app, queue)
                    if job.state in waiting and job.kind in kinds
                ]
                if not later:
                    break
                for job in later:  # due now; each retry wakes the worker
                    await app.retry(job.id)
    ran: collections.Counter[JobState] = collections.Counter(
        job.state for job in await _jobs_of(app, queue) if _ran(job, before)
    )
    return dict(ran)


def _ran(job: Job, before: Mapping[int, datetime | None]) -> bool:
    return job.attempted_at is not None and before.get(job.id) != job.attempted_at


async def _jobs_of(app: App, queue: str) -> list[Job]:
    jobs = await app.list_jobs(queue=queue, limit=LIST_LIMIT_MAX)
    if len(jobs) == LIST_LIMIT_MAX:
        raise AssertionError(
            f"drain_queue reads at most {LIST_LIMIT_MAX} jobs of a queue, and more exist"
        )
    return jobs


async def run_until_idle(
    app: App, queues: Mapping[str, int | Queue] | None = None, *, timeout: float = 30.0
) -> None:
    """Run a worker until none of the jobs in ``queues`` is due or running; ``queues``
    defaults to the App's worker queues (``app.worker_queues()``).

    Jobs scheduled in the future, and jobs of a paused queue, are not waited for. Raises
    ``TimeoutError`` if the queues do not become idle within ``timeout`` seconds. The
    worker stops gracefully before it returns, so the ``after_process`` hooks of the jobs
    that ran are done too. Example::

        job = await send_email.enqueue(to="ada@example.com", subject="hi")
        await run_until_idle(app)
        done = await app.get_job(job.id)
        assert done is not None and done.state is aqueue.JobState.COMPLETED
    """
    queues = app.worker_queues(queues)
    with anyio.fail_after(timeout):
        async with app.worker(queues):
            kinds = app.registry.kinds()
            while not await app.db.queues_idle(list(queues), kinds):  # noqa: ASYNC110 - polls the db
                await anyio.sleep(0.01)
