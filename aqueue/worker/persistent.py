"""Persistent workers: long-lived coroutines that run on at most ``replicas`` nodes at once.

Each replica of ``@app.persistent(name=..., replicas=N)`` is a lease named
``persistent:<name>:<index>``. Every worker process competes for every replica's lease
(see ``lease.py``); the holder runs the coroutine and keeps the lease while it restarts
it, so one replica never hops between nodes because of a crash loop.

- **Returns or raises**: restarted after ``restart_delay``, doubling up to
  ``restart_delay_max``; the delay resets once a run lasted longer than the cap. The
  restart count and last error are written to the lease row at each renewal
  (``cluster_status().leases[...].info``).
- **Shutdown**: the coroutine is cancelled (at an ``await``), the lease is released with a
  notification, and a waiting node takes over within a round trip.
- **Node death**: its leases lapse after ``leader_ttl``; another node takes over.
- **Fencing**: a holder that cannot renew stops at its local deadline, which falls before
  the lease's expiry in the database; ``ctx.lease_lost`` is set and the coroutine is
  cancelled, so at most ``replicas`` copies ever run cluster-wide.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from ..errors import ConfigurationError
from ..options import validate_registered_name
from .lease import LeaseKeeper, Tenure

if TYPE_CHECKING:
    from ..app import App
    from .notifier import Notifier

__all__ = ["PersistentContext", "PersistentDefinition", "PersistentSupervisor", "lease_name"]


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


PersistentFn = Callable[[PersistentContext], Awaitable[None]]


@dataclass(frozen=True)
class PersistentDefinition:
    name: str
    fn: PersistentFn
    replicas: int

    @classmethod
    def create(cls, fn: PersistentFn, name: str | None, replicas: int) -> PersistentDefinition:
        name = name if name is not None else getattr(fn, "__qualname__", None)
        if not isinstance(name, str):
            raise ConfigurationError("persistent: give the worker a name=")
        validate_registered_name("persistent name", name)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 1 <= replicas <= 1000:
            raise ConfigurationError(
                f"persistent {name!r}: replicas must be an integer from 1 to 1000, got {replicas!r}"
            )
        return cls(name, fn, replicas)

    def describe(self) -> dict[str, Any]:
        return {"replicas": self.replicas}


def lease_name(name: str, replica: int) -> str:
    return f"persistent:{name}:{replica}"


class PersistentSupervisor:
    """Runs one replica of one persistent worker whenever this node holds its lease."""

    def __init__(
        self,
        app: App,
        notifier: Notifier,
        definition: PersistentDefinition,
        replica: int,
        node_id: str,
    ) -> None:
        self.definition = definition
        self.replica = replica
        self.node_id = node_id
        self.restarts = 0
        self.last_error: str | None = None
        self.running_since: datetime | None = None
        self._app = app
        self._logger = app.logger
        self._keeper = LeaseKeeper(
            app.db,
            notifier,
            lease_name(definition.name, replica),
            node_id,
            app.settings.leader_ttl,
            app.logger,
            info=self.info,
        )

    @property
    def holding(self) -> bool:
        return self._keeper.tenure is not None

    def info(self) -> dict[str, Any]:
        return {
            "restarts": self.restarts,
            "last_error": self.last_error,
            "running_since": self.running_since.isoformat() if self.running_since else None,
        }

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await self._keeper.run(self._hold)

    async def _hold(self, tenure: Tenure) -> None:
        settings = self._app.settings
        label = f"{self.definition.name}[{self.replica}]"
        delay = settings.restart_delay
        self._logger.info(
            "aqueue: persistent %s starts on node %s (term %d)",
            label,
            self.node_id[:8],
            tenure.term,
        )
        try:
            while True:
                ctx = PersistentContext(
                    name=self.definition.name,
                    replica=self.replica,
                    node_id=self.node_id,
                    term=tenure.term,
                    logger=self._logger,
                    lease_lost=tenure.lost,
                    app=self._app,
                )
                started = anyio.current_time()
                self.running_since = datetime.now(UTC)
                try:
                    await self.definition.fn(ctx)
                except Exception as exc:
                    self.last_error = "".join(traceback.format_exception_only(exc)).strip()
                    self._logger.exception("aqueue: persistent %s failed", label)
                else:
                    self.last_error = None
                    self._logger.warning("aqueue: persistent %s returned", label)
                self.running_since = None
                self.restarts += 1
                if anyio.current_time() - started > settings.restart_delay_max:
                    delay = settings.restart_delay
                self._logger.info("aqueue: persistent %s restarts in %.1fs", label, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, settings.restart_delay_max)
        finally:
            self.running_since = None
            self._logger.info(
                "aqueue: persistent %s stopped on node %s (%s)",
                label,
                self.node_id[:8],
                "lease lost" if tenure.lost.is_set() else "released",
            )
