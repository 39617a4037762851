"""Leader election: one worker process of the cluster at a time runs the leader's duties.

Every worker process competes for the ``leader`` lease (see ``lease.py``): one statement
takes it when it is free or expired, the holder renews it every ``leader_ttl / 3``, and
a holder that cannot renew stops leading at its local deadline, before the lease can
expire in the database, so two leaders never act at once. On shutdown the leader
releases the lease and sends a notification; the others try at once, so a new leader is
in office within a round trip instead of a TTL. A crashed leader's lease lapses after
``leader_ttl``; the others retry every ``leader_ttl / 4``.

The duties (orphan rescue, retention, periodic enqueues) run as children of the tenure:
losing the lease cancels them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import anyio
from anyio.abc import TaskStatus

from ..cluster import LEADER_LEASE
from ..db.database import Database
from ..db.notifier import Notifier
from .lease import LeaseKeeper, Tenure

__all__ = ["Duty", "Leader"]

Duty = Callable[[Tenure], Awaitable[None]]


class Leader:
    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        node_id: str,
        *,
        ttl: float,
        duties: Sequence[Duty],
        logger: logging.Logger,
    ) -> None:
        self.node_id = node_id
        self._duties = list(duties)
        self._logger = logger
        self._keeper = LeaseKeeper(db, notifier, LEADER_LEASE, node_id, ttl, logger)

    @property
    def is_leader(self) -> bool:
        return self._keeper.tenure is not None

    @property
    def term(self) -> int | None:
        return None if self._keeper.tenure is None else self._keeper.tenure.term

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await self._keeper.run(self._lead)

    async def _lead(self, tenure: Tenure) -> None:
        self._logger.info("aqueue: node %s is the leader (term %d)", self.node_id[:8], tenure.term)
        try:
            async with anyio.create_task_group() as tg:
                # The tenure lasts until cancelled, even with no duties (a returning body
                # would release the lease and the node would take it again at once).
                tg.start_soon(anyio.sleep_forever)
                for duty in self._duties:
                    tg.start_soon(self._keep_running, duty, tenure)
        finally:
            self._logger.log(
                logging.WARNING if tenure.lost.is_set() else logging.INFO,
                "aqueue: node %s %s leadership (term %d)",
                self.node_id[:8],
                "lost" if tenure.lost.is_set() else "gave up",
                tenure.term,
            )

    async def _keep_running(self, duty: Duty, tenure: Tenure) -> None:
        # A duty's bug must not take the worker down, nor leave the cluster without it.
        while True:
            try:
                await duty(tenure)
                return
            except Exception:
                self._logger.exception("aqueue: leader duty %r failed; restarting it in 1s", duty)
                await anyio.sleep(1.0)
