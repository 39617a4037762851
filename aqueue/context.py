"""The contexts a user's code receives: ``JobContext`` (a job's first parameter when
annotated so) and ``PersistentContext`` (a persistent worker's only parameter).

These two are the only modules below the façade that name ``App``, and only as a type:
users reach their App through them. The runtime never calls into the App; it builds
these from factories the App hands it (see ``worker/runtime.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from .jobs import Job
from .progress import ProgressReporter

if TYPE_CHECKING:
    from .app import App

__all__ = ["JobContext", "PersistentContext"]


@dataclass(frozen=True, slots=True)
class JobContext:
    """Passed to a job whose first parameter is annotated ``JobContext``."""

    job: Job
    app: App
    logger: logging.Logger
    #: Writes this attempt's progress (built by the App from its database, so neither the
    #: context nor the worker needs the App to reach it).
    reporter: ProgressReporter = field(repr=False, compare=False, kw_only=True)

    @property
    def attempt(self) -> int:
        return self.job.attempt

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
