"""The leader's housekeeping: rescue orphaned jobs, prune old ones, report drift.

- **Rescue**, every ``heartbeat_interval``: a job ``running`` on a node whose row expired
  (or is gone) goes back to ``retryable`` (``discarded`` when out of attempts,
  ``cancelled`` when a cancel was requested) with a ``NodeLost`` error, and the queue's
  workers are woken. A node expires ``node_ttl`` after its last heartbeat, so a killed
  worker's jobs are back within ``node_ttl + heartbeat_interval`` (less than 2 x
  ``node_ttl``) when the leader survives, or ``leader_ttl`` later when it was the leader.
- **Retention**, every ``prune_interval``: completed, cancelled and discarded jobs older
  than ``retention`` are deleted in batches of ``PRUNE_BATCH`` (bounded work per round so
  a huge backlog never holds locks for long), plus node rows dead for a while and old
  periodic occurrences (the latest of each schedule is kept: catch-up needs it) and the
  starts no rate window counts any more.
  Workflows and batches go whole, once every job of theirs ended before ``retention``.
- **Backstop**, every ``heartbeat_interval``: pending workflow steps none of whose
  dependencies is unfinished are settled (promoted, or cancelled when one failed). The
  trigger that promotes them commits with their last dependency's outcome, so this finds
  only steps whose dependency was deleted by hand; it is what makes "no step waits
  forever" hold even then.
- **Drift**: the live nodes' configuration digests are compared; a difference is logged
  once each time it changes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio

from ..cluster import NodeInfo, find_drift
from ..config import Settings
from ..db.database import Database
from ..db.workflow_store import GROUP_LOCKS
from .lease import Tenure

__all__ = ["Maintenance"]

RESCUE_BATCH = 1000
PRUNE_BATCH = 1000
#: At most this many prune batches per round; the rest waits for the next round.
PRUNE_ROUNDS = 20


class Maintenance:
    def __init__(self, db: Database, settings: Settings, logger: logging.Logger) -> None:
        self._db = db
        self._settings = settings
        self._logger = logger
        self._last_drift: str | None = None
        self.rescued = 0
        self.pruned = 0

    async def run(self, tenure: Tenure) -> None:
        """Runs while ``tenure`` lasts (cancelled when it ends)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._every, self._settings.heartbeat_interval, self.rescue_once)
            tg.start_soon(self._every, self._settings.heartbeat_interval, self.check_drift)
            tg.start_soon(self._every, self._settings.heartbeat_interval, self.backstop_once)
            tg.start_soon(self._every, self._settings.prune_interval, self.prune_once)

    async def _every(self, interval: float, step: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                await step()
            except Exception as exc:  # the next round retries; never stop maintaining
                self._logger.warning("aqueue: maintenance step failed: %s", exc)
            await anyio.sleep(interval)

    async def rescue_once(self) -> int:
        total = 0
        while True:
            rows = await self._db.rescue_orphans(RESCUE_BATCH)
            if rows:
                self._logger.warning(
                    "aqueue: rescued %d job(s) running on lost nodes: %s",
                    len(rows),
                    ", ".join(f"{row['id']} -> {row['state']}" for row in rows[:20])
                    + (" ..." if len(rows) > 20 else ""),
                )
            total += len(rows)
            if len(rows) < RESCUE_BATCH:
                break
        self.rescued += total
        # Dead rows stay visible in cluster_status for a while, then go.
        await self._db.delete_expired_nodes(max(60.0, self._settings.node_ttl * 4))
        return total

    async def prune_once(self) -> int:
        total = 0
        for _ in range(PRUNE_ROUNDS):
            deleted = await self._db.prune_jobs(self._settings.retention, PRUNE_BATCH)
            total += deleted
            if deleted < PRUNE_BATCH:
                break
        for _ in range(PRUNE_ROUNDS):
            # A round locks every workflow it prunes: GROUP_LOCKS at most (see there).
            pruned = await self._db.prune_workflows(self._settings.retention, GROUP_LOCKS)
            if pruned < GROUP_LOCKS:
                break
        await self._db.prune_periodic_runs(self._settings.retention)
        await self._db.prune_rate_starts()
        if total:
            self._logger.info("aqueue: pruned %d finished jobs past retention", total)
        self.pruned += total
        return total

    async def backstop_once(self) -> int:
        total = 0
        while True:
            # A round locks the workflows of the jobs it settles: GROUP_LOCKS at most.
            moved = await self._db.promote_stranded(GROUP_LOCKS)
            total += moved
            if moved < GROUP_LOCKS:
                break
        if total:
            self._logger.warning(
                "aqueue: settled %d workflow step(s) whose dependencies had all ended "
                "without promoting them (a dependency deleted?)",
                total,
            )
        return total

    async def check_drift(self) -> None:
        nodes = [NodeInfo.from_row(row) for row in await self._db.list_nodes()]
        drift = find_drift(nodes)
        by_id = {n.id: n for n in nodes}
        report = "\n".join(d.describe(by_id) for d in drift)
        if report != self._last_drift:
            if drift:
                self._logger.warning(
                    "aqueue: nodes disagree on periodic/persistent configuration; the schedule "
                    "depends on which node leads:\n%s",
                    report,
                )
            elif self._last_drift:
                self._logger.info("aqueue: node configurations agree again")
            self._last_drift = report
