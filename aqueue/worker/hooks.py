"""Runs ``after_process`` hooks after outcomes are committed, off the completer's path.

Hooks may await (send a webhook, write elsewhere); they run in their own task group with
bounded concurrency so a slow hook never delays outcome writes. A hook that raises is
logged; the job is not touched. On shutdown, running hooks get ``grace`` seconds, then
are cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ..definition import AfterProcessHook
from ..jobs import Job, Outcome

__all__ = ["HookRunner"]


class HookRunner:
    def __init__(self, *, concurrency: int, grace: float, logger: logging.Logger) -> None:
        self._limit = anyio.Semaphore(concurrency)
        self._grace = grace
        self._logger = logger
        self._tg: TaskGroup | None = None
        self._closed = anyio.Event()
        self._in_flight = 0
        self._idle = anyio.Event()
        self._idle.set()

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
                for hook in hooks:
                    try:
                        await hook(job, outcome)
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
