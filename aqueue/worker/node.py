"""A worker process's row in the nodes table: registered first, refreshed, removed last.

The row is the node's claim to its running jobs: the leader rescues running jobs whose
node row expired. So the row is written before the first claim (``run`` reports ready
only then) and deleted after the last outcome is written. Heartbeats are one small
UPDATE every ``heartbeat_interval``; jobs themselves are never heartbeated.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskStatus

from ..db.database import Database
from ..errors import DatabaseError

__all__ = ["Node", "NodeConfig"]


@dataclass(frozen=True)
class NodeConfig:
    """What a node publishes about itself; ``digest`` covers what must agree cluster-wide."""

    queues: dict[str, int]
    kinds: list[str]
    #: Periodic schedules and persistent workers, by name; compared across nodes (drift).
    config: dict[str, Any]
    digest: str


class Node:
    def __init__(
        self,
        db: Database,
        node_id: str,
        node_config: NodeConfig,
        *,
        heartbeat_interval: float,
        ttl: float,
        logger: logging.Logger,
    ) -> None:
        self.id = node_id
        self.config = node_config
        self._db = db
        self._interval = heartbeat_interval
        self._ttl = ttl
        self._logger = logger
        #: Local clock time until which this node's row is surely alive.
        self.alive_until = 0.0

    async def _beat(self) -> bool:
        sent = anyio.current_time()
        created = await self._db.upsert_node(
            self.id,
            socket.gethostname(),
            os.getpid(),
            self._ttl,
            json.dumps(self.config.queues),
            self.config.kinds,
            json.dumps(self.config.config, sort_keys=True),
            self.config.digest,
        )
        self.alive_until = sent + self._ttl
        return created

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Register (failing if the database is unreachable), then heartbeat until cancelled;
        the row is deleted on the way out."""
        await self._beat()
        try:
            task_status.started()
            while True:
                await anyio.sleep(self._interval)
                try:
                    recreated = await self._beat()
                except Exception as exc:  # keep beating through outages and odd errors
                    self._logger.warning(
                        "aqueue: node %s: heartbeat failed: %s%s",
                        self.id[:8],
                        exc,
                        " (past node_ttl: its running jobs may be rescued elsewhere)"
                        if anyio.current_time() > self.alive_until
                        else "",
                    )
                    continue
                if recreated:
                    self._logger.warning(
                        "aqueue: node %s: its row had expired and was removed; registered "
                        "again (jobs it was running may have been rescued and run elsewhere)",
                        self.id[:8],
                    )
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                try:
                    await self._db.delete_node(self.id)
                except (DatabaseError, OSError) as exc:
                    self._logger.warning(
                        "aqueue: node %s: could not remove its row (it expires): %s",
                        self.id[:8],
                        exc,
                    )
