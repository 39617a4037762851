"""A worker process's row in the nodes table: registered first, refreshed, removed last.

The row is the node's claim to its running jobs: the leader rescues running jobs whose
node row expired. So the row is written before the first claim (``run`` reports ready
only then) and deleted after the last outcome is written. Heartbeats are one small
UPDATE every ``heartbeat_interval``; jobs themselves are never heartbeated.

The heartbeat has a connection of its own (over ``listen_url``), so jobs holding every
pooled connection cannot starve it, nor can other clients of a pooler in front of
PostgreSQL; with ``dedicated_heartbeat=False`` it shares the worker pool instead, which
jobs cannot hold either, one server connection fewer per process. It has a time limit,
so a hung connection is replaced instead of waited on. ``alive_until`` is the local time
until which the row is surely unexpired; producers claim only while it is comfortably
ahead, so a node that cannot heartbeat stops taking jobs before the leader could rescue
them.
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

from ..bounds import NODE_DELETE_TIMEOUT
from ..db.database import Database

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
        dedicated: bool = True,
    ) -> None:
        self.id = node_id
        self.config = node_config
        self._db = db
        self._interval = heartbeat_interval
        self._ttl = ttl
        self._logger = logger
        self._dedicated = dedicated
        #: Local clock time until which this node's row is surely alive.
        self.alive_until = 0.0
        self._conn: Any = None

    def alive(self) -> bool:
        """Whether the row stays unexpired for at least another heartbeat interval."""
        return self.alive_until - anyio.current_time() > self._interval

    async def _beat(self) -> bool:
        sent = anyio.current_time()
        try:
            with anyio.fail_after(max(self._ttl / 3, self._interval)):
                if self._conn is None and self._dedicated:
                    self._conn = await self._db.connect()
                lapsed = await self._db.upsert_node(
                    self.id,
                    socket.gethostname(),
                    os.getpid(),
                    self._ttl,
                    json.dumps(self.config.queues),
                    self.config.kinds,
                    json.dumps(self.config.config, sort_keys=True),
                    self.config.digest,
                    conn=self._conn,
                )
        except BaseException:
            await self._drop_connection()
            raise
        self.alive_until = sent + self._ttl
        return lapsed

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await self._db.disconnect(conn)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Register (failing if the database is unreachable), then heartbeat until cancelled;
        the row is deleted on the way out."""
        await self._beat()
        try:
            task_status.started()
            while True:
                await anyio.sleep(self._interval)
                try:
                    lapsed = await self._beat()
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
                if lapsed:
                    self._logger.warning(
                        "aqueue: node %s: its row had expired; registered again (jobs it "
                        "was running may have been rescued and run elsewhere)",
                        self.id[:8],
                    )
        finally:
            await self._drop_connection()
            with anyio.CancelScope(shield=True), anyio.move_on_after(NODE_DELETE_TIMEOUT):
                try:
                    await self._db.delete_node(self.id)
                except Exception as exc:
                    self._logger.warning(
                        "aqueue: node %s: could not remove its row (it expires): %s",
                        self.id[:8],
                        exc,
                    )
