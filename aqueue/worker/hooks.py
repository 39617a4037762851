"""Runs ``after_process`` hooks after outcomes are committed, off the completer's path.

Hooks may await (send a webhook, write elsewhere); they run in their own task group with
bounded concurrency so a slow hook never delays outcome writes. A hook that raises is
logged; the job is not touched. On shutdown, running hooks get ``grace`` seconds, then
are cancelled.

Observers (``app.observe``, what metrics use) are the cheap case: synchronous calls made
right here, once per committed attempt, with the queue, kind, outcome and wait read off
the claimed row. No ``Job`` is built and no task started for them: a task and a Job per
attempt cost more than a no-op job does. Every claim, lean or full, reads the two times
the wait is made of.

``registry.hook_wrappers`` (tracing's hook spans) go around each hook run, outermost
first; without any, a hook is awaited as it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ..definition import AfterProcessHook
from ..jobs import Job, JobState, Outcome, has_job_columns, job_from_row
from ..registry import HookWrapper, Observer, Registry
from .attempt import Attempt

__all__ = ["HookRunner", "call_hook", "job_after"]


def job_after(attempt: Attempt) -> Job:
    """The job as it is once ``attempt``'s outcome is committed, without a re-read: the
    claimed row overlaid with the outcome and the columns the write changed."""
    job = job_from_row(
        attempt.row,
        state=attempt.state,
        result=attempt.outcome.result,
        error_json=attempt.error_json,
    )
    committed = attempt.committed
    if committed is None:
        return job
    return dataclasses.replace(
        job,
        attempt=committed["attempt"],
        scheduled_at=committed["scheduled_at"],
        finalized_at=committed["finalized_at"],
    )


async def call_hook(
    wrappers: Sequence[HookWrapper], hook: AfterProcessHook, job: Job, outcome: Outcome
) -> None:
    """One hook run, inside the hook wrappers (``app.hook_wrapper``: tracing's hook
    spans), the first registered outermost. The worker and inline mode both run hooks so."""
    if not wrappers:
        await hook(job, outcome)
        return
    call: Callable[[], Awaitable[Any]] = functools.partial(hook, job, outcome)
    for wrap in reversed(wrappers):
        call = functools.partial(wrap, hook, job, outcome, call)
    await call()


class HookRunner:
    def __init__(
        self, registry: Registry, *, concurrency: int, grace: float, logger: logging.Logger
    ) -> None:
        self._registry = registry
        self._limit = anyio.Semaphore(concurrency)
        self._grace = grace
        self._logger = logger
        self._tg: TaskGroup | None = None
        self._closed = anyio.Event()
        self._in_flight = 0
        self._idle = anyio.Event()
        self._idle.set()

    def committed(self, attempts: Sequence[Attempt]) -> None:
        """Run the hooks of attempts whose outcome was just committed (once per attempt).

        A job handed back (shutdown) had no attempt that counts: no hooks."""
        observers = self._registry.observers
        if observers:
            self._observe(observers, attempts)
        if not self._registry.has_hooks():
            return
        for attempt in attempts:
            if attempt.state is JobState.AVAILABLE:
                continue
            hooks = self._registry.hooks_for(attempt.definition)
            # A job claimed before any hook existed has not the columns of a Job, nor the
            # write's: hooks registered while a worker runs see the jobs it claims after.
            if hooks and attempt.committed is not None and has_job_columns(attempt.row):
                self.dispatch(hooks, job_after(attempt), attempt.outcome)

    def _observe(self, observers: Sequence[Observer], attempts: Sequence[Attempt]) -> None:
        for attempt in attempts:
            if attempt.state is JobState.AVAILABLE:
                continue
            row = attempt.row
            wait: float | None = None
            with contextlib.suppress(KeyError):  # a lean claim's row has no times
                wait = max(0.0, (row["attempted_at"] - row["scheduled_at"]).total_seconds())
            for observer in observers:
                try:
                    observer(row["queue"], row["kind"], attempt.outcome, wait)
                except Exception:
                    self._logger.exception(
                        "aqueue: observer %s failed for job %s (%s)",
                        getattr(observer, "__qualname__", observer),
                        attempt.job_id,
                        row["kind"],
                    )

    def dispatch(self, hooks: Sequence[AfterProcessHook], job: Job, outcome: Outcome) -> None:
        if self._tg is None:
            raise RuntimeError("HookRunner.dispatch called before run() started")
        self._in_flight += 1
        if self._idle.is_set():
            self._idle = anyio.Event()
        self._tg.start_soon(self._call, hooks, job, outcome)

    async def _call(self, hooks: Sequence[AfterProcessHook], job: Job, outcome: Outcome) -> None:
        try:
            async with self._limit:
                wrappers = self._registry.hook_wrappers
                for hook in hooks:
                    try:
                        await call_hook(wrappers, hook, job, outcome)
                    except Exception:
                        self._logger.exception(
                            "aqueue: after_process hook %s failed for job %s (%s)",
                            getattr(hook, "__qualname__", hook),
                            job.id,
                            job.kind,
                        )
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    def close(self) -> None:
        self._closed.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await self._closed.wait()
            with anyio.move_on_after(self._grace):
                await self._idle.wait()
            tg.cancel_scope.cancel()
        self._tg = None
