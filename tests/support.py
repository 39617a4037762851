"""Small helpers shared by the tests: waiting with a deadline (never sleeping blind), and
serving an ASGI app on a real port."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

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


@contextlib.asynccontextmanager
async def served(asgi: Any) -> AsyncIterator[str]:
    """Serve ``asgi`` with uvicorn on a free loopback port; yields the base URL.

    The server is always shut down gracefully, even when the test body fails: a uvicorn
    server cancelled mid-flight (what a failing task-group body would do to it) leaves
    the next server of the same event loop unable to answer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    import uvicorn  # a dev dependency (the dashboard extra): only tests that serve need it

    server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", lifespan="off"))
    stopped = anyio.Event()

    async def run() -> None:
        try:
            await server.serve([sock])
        finally:
            stopped.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await eventually(lambda: server.started, what="uvicorn started")
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
                with anyio.CancelScope(shield=True), anyio.fail_after(10):
                    await stopped.wait()
    finally:
        sock.close()
