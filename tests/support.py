"""Small helpers shared by the cluster tests: waiting with a deadline, never sleeping blind."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

import aqueue
from aqueue.db.queries import quote_ident

T = TypeVar("T")

#: Cluster settings for tests: the real mechanisms, on a fast clock.
CLUSTER = {
    "poll_interval": 0.2,
    "heartbeat_interval": 0.2,
    "node_ttl": 1.5,
    "leader_ttl": 1.5,
    "shutdown_timeout": 5.0,
    "restart_delay": 0.05,
    "restart_delay_max": 0.4,
}


async def eventually(
    check: Callable[[], Awaitable[T | None] | T | None],
    *,
    timeout: float = 20.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll ``check`` (sync or async) until it returns something truthy, or fail."""
    with anyio.move_on_after(timeout):
        while True:
            value = check()
            if isinstance(value, Awaitable):
                value = await value
            if value:
                return value
            await anyio.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s")


def schema_of(app: aqueue.App) -> str:
    """The App's schema, quoted for SQL written by a test."""
    return quote_ident(app.schema)
