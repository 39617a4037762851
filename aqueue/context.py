"""The contexts a user's code receives: ``JobContext`` (a job's first parameter when
annotated so) and ``PersistentContext`` (a persistent worker's only parameter).

These two are the only modules below the façade that name ``App``, and only as a type:
users reach their App through them. The runtime never calls into the App; it builds
these from factories the App hands it (see ``worker/runtime.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from .jobs import Job

if TYPE_CHECKING:
    from .app import App

__all__ = ["JobContext", "PersistentContext"]


@dataclass(frozen=True, slots=True)
class JobContext:
    """Passed to a job whose first parameter is annotated ``JobContext``."""

    job: Job
    app: App
    logger: logging.Logger

    @property
    def attempt(self) -> int:
        return self.job.attempt


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
