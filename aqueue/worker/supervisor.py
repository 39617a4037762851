"""Runs one replica of a persistent worker whenever this node holds its lease (the
behaviour is described in ``aqueue/persistent.py``)."""

from __future__ import annotations

import traceback
from datetime import UTC, datetime
from typing import Any

import anyio
from anyio.abc import TaskStatus

from ..db.notifier import Notifier
from ..persistent import PersistentDefinition, lease_name
from .lease import LeaseKeeper, Tenure
from .runtime import Runtime

__all__ = ["PersistentSupervisor"]


class PersistentSupervisor:
    """Runs one replica of one persistent worker whenever this node holds its lease."""

    def __init__(
        self,
        runtime: Runtime,
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
        self._runtime = runtime
        self._logger = runtime.logger
        self._keeper = LeaseKeeper(
            runtime.db,
            notifier,
            lease_name(definition.name, replica),
            node_id,
            runtime.settings.leader_ttl,
            runtime.logger,
            info=self.info,
        )

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
        settings = self._runtime.settings
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
                ctx = self._runtime.persistent_context(
                    name=self.definition.name,
                    replica=self.replica,
                    node_id=self.node_id,
                    term=tenure.term,
                    lease_lost=tenure.lost,
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
