"""The narrow set of things a worker's services are built from, instead of the App.

The worker runtime never calls into the façade: it gets the database, the registry,
the settings, a logger, the notifier, the enqueue path (for periodic jobs) and two
factories for the contexts user code receives. The App makes one ``Runtime`` and hands
it to every ``Worker``; tests can build one too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import anyio

from ..config import Settings
from ..context import JobContext, PersistentContext
from ..db.database import Database
from ..db.notifier import Notifier
from ..enqueue import Enqueuer
from ..jobs import Job
from ..registry import Registry

__all__ = ["HasRuntime", "PersistentContextFactory", "Runtime"]


class PersistentContextFactory(Protocol):
    def __call__(
        self, *, name: str, replica: int, node_id: str, term: int, lease_lost: anyio.Event
    ) -> PersistentContext: ...


@dataclass(frozen=True, slots=True)
class Runtime:
    db: Database
    registry: Registry
    settings: Settings
    logger: logging.Logger
    enqueuer: Enqueuer
    #: The process's LISTEN connection, opened on first use and shared.
    notifier: Callable[[], Awaitable[Notifier]]
    #: Builds a job's context (async: a batch callback's counts are read first).
    job_context: Callable[[Job], Awaitable[JobContext]]
    persistent_context: PersistentContextFactory


class HasRuntime(Protocol):
    """Anything that can hand out a runtime (the App does: ``aqueue.Worker(app, ...)``)."""

    @property
    def runtime(self) -> Runtime: ...
