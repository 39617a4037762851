"""The contexts a user's code receives: ``JobContext`` (a job's first parameter when
annotated so) and ``PersistentContext`` (a persistent worker's only parameter).

These two are the only modules below the façade that name ``App``, and only as a type:
users reach their App through them. The runtime never calls into the App; it builds
these from factories the App hands it (see ``worker/runtime.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, overload

import anyio

from .jobs import Job
from .progress import ProgressReporter
from .steps import BatchInfo, StepRecorder

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .app import App

__all__ = ["JobContext", "PersistentContext"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class JobContext:
    """Passed to a job whose first parameter is annotated ``JobContext``."""

    job: Job
    app: App
    logger: logging.Logger
    #: Writes this attempt's progress (built by the App from its database, so neither the
    #: context nor the worker needs the App to reach it).
    reporter: ProgressReporter = field(repr=False, compare=False, kw_only=True)
    #: Reads and records this job's steps and dependencies (see ``aqueue/steps.py``).
    steps: StepRecorder = field(repr=False, compare=False, kw_only=True)
    #: For a batch's callback (``app.enqueue_batch(..., callback=...)``): its batch's jobs
    #: counted by final state. None for every other job.
    batch: BatchInfo | None = field(default=None, kw_only=True)

    @property
    def attempt(self) -> int:
        return self.job.attempt

    async def dep_result(self, name: str) -> Any:
        """The recorded result of dependency ``name`` of this workflow step.

        Raises ``DependencyFailed`` when that dependency ended ``discarded`` or
        ``cancelled`` (only a step with ``on_dep_failure="run"`` runs then), and
        ``InvalidWorkflow`` when this job is no workflow step or ``name`` is not one of
        its dependencies."""
        return await self.steps.dep_result(name)

    @overload
    async def step(
        self, name: str, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> T: ...

    @overload
    async def step(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

    async def step(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` (sync or async) once per job as step ``name``,
        recording its JSON result; a retried job gets the recorded result back without
        calling ``fn`` again (see ``aqueue/steps.py``). The result comes back as its JSON
        form (a model as a dict) every time, so the first attempt and the retry see the
        same value. ``ResultNotJSON`` when it cannot be recorded."""
        return await self.steps.step(name, fn, *args, **kwargs)

    async def progress(self, fraction: float, note: str | None = None) -> bool:
        """Record how far this attempt got: ``fraction`` from 0 to 1 and an optional short
        ``note`` ("copied 4 of 10 files"), shown by ``aqueue jobs show`` and the dashboard.

        One small UPDATE when the figures changed, nothing when they did not, so calling it
        every second is fine. Returns False, writing nothing, when this attempt is no longer
        the job's running one (it ended, or was rescued and claimed again). Raises
        ``InvalidOption`` naming the field for a fraction outside [0, 1] (or not finite)
        and for a note that is not a string, is over 500 characters or holds NUL.
        """
        return await self.reporter.report(fraction, note)


@dataclass(frozen=True)
class PersistentContext:
    """What a persistent worker receives: who it is and how to notice it must stop."""

    name: str
    #: Which of the ``replicas`` copies this is (0-based).
    replica: int
    #: The worker process (node) running it.
    node_id: str
    #: The lease's term: grows with every change of holder, usable as a fencing token.
    term: int
    logger: logging.Logger
    #: Set when this node lost the lease; the coroutine is being cancelled.
    lease_lost: anyio.Event
    app: App
