"""Holding one named lease in PostgreSQL: take it, renew it, lose it safely, give it back.

A tenure is the time this node holds the lease. The database decides who holds it (one
statement takes or renews it, see ``acquire_lease``); this process decides when to stop
acting as holder by a local deadline: ``ttl`` minus a safety margin after it *sent* its
last successful renewal. The server's expiry is ``ttl`` after it *ran* that statement, so
the local deadline passes first by at least the margin: a holder that cannot reach the
database stops (fencing) before anyone else can take over. The margin absorbs a late
event loop and clock-rate differences; it cannot absorb a process frozen for longer than
it (a suspended VM), which is why each tenure also has a ``term`` (higher for every new
tenure) that holders can pass to other systems as a fencing token.

Waiting nodes look with a plain read first and write only when the lease is free, so
polling for a held lease costs no WAL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from ..bounds import RELEASE_TIMEOUT

if TYPE_CHECKING:
    from ..db.database import Database
    from ..db.notifier import Notifier

__all__ = ["LeaseKeeper", "Tenure"]


@dataclass
class Tenure:
    """One uninterrupted holding of a lease."""

    name: str
    term: int
    #: Set when the lease is lost (renewal refused or impossible); the body is then cancelled.
    lost: anyio.Event = field(default_factory=anyio.Event)


class LeaseKeeper:
    """Competes for one lease and runs ``body`` for as long as each tenure lasts.

    ``run`` loops until cancelled: wait until the lease can be taken (retrying every
    ``ttl / 4``, or at once when its holder announces a release), run ``body(tenure)``
    while renewing every ``ttl / 3``; when the lease is lost, set ``tenure.lost`` and
    cancel the body; when ``run`` is cancelled (shutdown), cancel the body and release
    the lease so another node takes it at once. A body that returns ends the tenure and
    releases the lease too.
    """

    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        name: str,
        holder: str,
        ttl: float,
        logger: logging.Logger,
        *,
        info: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.tenure: Tenure | None = None
        self._db = db
        self._notifier = notifier
        self._logger = logger
        self._info = info
        self._released = anyio.Event()

    def _info_json(self) -> str | None:
        if self._info is None:
            return None
        return json.dumps(self._info(), default=str)

    def _wake(self) -> None:
        self._released.set()

    @property
    def margin(self) -> float:
        """How much earlier than the database this node gives the lease up."""
        return min(self.ttl / 5, 1.0)

    async def _try_acquire(self, renewing: int | None) -> tuple[int | None, bool, float]:
        """(term or None when another node holds it, whether the database answered, sent).

        ``renewing`` is the term of the tenure being extended, or None for a new tenure,
        which always gets a new term, even from this same holder."""
        sent = anyio.current_time()
        try:
            if renewing is None and not await self._db.lease_free(self.name):
                return None, True, sent
            term = await self._db.acquire_lease(
                self.name, self.holder, self.ttl, self._info_json(), renewing
            )
        except Exception as exc:  # any database trouble: not holding, try again later
            self._logger.warning("aqueue: lease %s: cannot reach the database: %s", self.name, exc)
            return None, False, sent
        return term, True, sent

    async def run(self, body: Callable[[Tenure], Awaitable[None]]) -> None:
        try:
            with self._notifier.lease_subscription(self.name, self._wake):
                while True:
                    term, _, sent = await self._try_acquire(None)
                    if term is None:
                        with anyio.move_on_after(self.ttl / 4):
                            await self._released.wait()
                        self._released = anyio.Event()
                        continue
                    tenure = Tenure(self.name, term)
                    await self._hold(tenure, sent + self.ttl - self.margin, body)
        finally:
            # Stopped while an acquisition was in flight: it may have committed, and the
            # others should not wait out the lease (a no-op unless this node holds it).
            await self._release()

    async def _release(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_TIMEOUT):
            try:
                await self._db.release_lease(self.name, self.holder, self._info_json())
            except Exception as exc:
                self._logger.warning(
                    "aqueue: lease %s: release failed (it expires on its own): %s",
                    self.name,
                    exc,
                )

    async def _hold(
        self, tenure: Tenure, deadline: float, body: Callable[[Tenure], Awaitable[None]]
    ) -> None:
        self.tenure = tenure
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._renew, tenure, deadline, tg.cancel_scope)
                await body(tenure)
                tg.cancel_scope.cancel()
        finally:
            self.tenure = None
            if not tenure.lost.is_set():
                await self._release()

    async def _renew(self, tenure: Tenure, deadline: float, scope: anyio.CancelScope) -> None:
        interval = self.ttl / 3
        next_at = anyio.current_time() + interval
        while True:
            # Never sleep past the deadline: a retry must not stretch the tenure.
            await anyio.sleep(max(0.0, min(next_at, deadline) - anyio.current_time()))
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                term, answered, sent = await self._try_acquire(tenure.term)
                if term == tenure.term:
                    deadline = sent + self.ttl - self.margin
                    next_at = sent + interval
                    continue
                if not answered and anyio.current_time() < deadline:
                    next_at = anyio.current_time() + self.ttl / 10
                    continue
            # Lost: another node holds it, it lapsed and was taken anew (a new term), or the
            # database stayed out of reach until the local deadline.
            self._logger.warning(
                "aqueue: lease %s (term %d) lost; stopping its holder", self.name, tenure.term
            )
            tenure.lost.set()
            scope.cancel()
            return
