"""procrastinate, through its documented async API.

- ``App(connector=PsycopgConnector(conninfo=url, ...))``; schema from
  ``schema_manager.apply_schema_async()`` (what ``procrastinate schema --apply`` runs).
- Worker: ``app.run_worker_async(concurrency=C, listen_notify=True, wait=True)``, the
  docs' way to run jobs concurrently (asynchronous sub-workers), stopped by cancelling it.
- Its psycopg pool would default to 4 connections, which C sub-workers (each claiming with
  its own round trip) would queue on; the pool is sized to C (capped at 50 to stay well
  inside max_connections), which is what the sub-worker design needs to run C at once.
  Measured here (3k jobs, C=100): pool 10 -> ~280 jobs/s, 25 -> ~310, 50 -> ~320.
- psycopg's C implementation (``psycopg[binary]``, psycopg's advice for speed): the pure
  Python one ran procrastinate's drain ~1.5x slower here.
- Producers share the same connector; its pool is ``PRODUCER_POOL`` (10) when only
  enqueuing, as for the other systems.
- Batched enqueue: ``task.batch_defer_async(*kwargs)``; single: ``task.defer_async(n=...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg

from systems import PRODUCER_POOL

MAX_POOL = 50


def pool_size_for(concurrency: int) -> int:
    return max(4, min(concurrency, MAX_POOL))


class ProcrastinateSystem:
    name = "procrastinate"

    def __init__(self) -> None:
        self.on_run: Callable[[int], None] = lambda n: None
        self._url = ""
        self._app: Any = None
        self._task: Any = None
        self._counter: asyncpg.Connection | None = None
        self._pool_size = PRODUCER_POOL

    @property
    def label(self) -> str:
        return f"procrastinate {importlib.metadata.version('procrastinate')}"

    @property
    def config(self) -> str:
        return (
            "PsycopgConnector (psycopg pool sized to the worker's concurrency, capped at "
            f"{MAX_POOL}; {PRODUCER_POOL} when only enqueuing; psycopg C build); "
            "run_worker_async(concurrency=C, listen_notify=True); batch_defer_async for "
            "batches, defer_async for single"
        )

    async def open(self, url: str, pool_size: int = PRODUCER_POOL) -> None:
        self._url = url
        self._pool_size = pool_size
        await self._open_app(pool_size)
        await self._app.schema_manager.apply_schema_async()
        self._counter = await asyncpg.connect(url)

    async def _open_app(self, pool_size: int) -> None:
        from procrastinate import App, PsycopgConnector

        app = App(connector=PsycopgConnector(conninfo=self._url, min_size=1, max_size=pool_size))
        system = self

        @app.task(name="noop", queue="default")
        async def noop(n: int) -> None:
            system.on_run(n)

        self._task = noop
        await app.open_async()
        self._app = app

    async def close(self) -> None:
        if self._counter is not None:
            await self._counter.close()
        if self._app is not None:
            await self._app.close_async()

    async def enqueue_many(self, ns: Sequence[int]) -> None:
        await self._task.batch_defer_async(*({"n": n} for n in ns))

    async def enqueue_one(self, n: int) -> None:
        await self._task.defer_async(n=n)

    async def remaining(self) -> int:
        assert self._counter is not None
        count: int = await self._counter.fetchval(
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        )
        return count

    @contextlib.asynccontextmanager
    async def worker(self, concurrency: int) -> AsyncIterator[None]:
        wanted = pool_size_for(concurrency)
        if wanted != self._pool_size:
            # The pool is the connector's: reopen the app with one sized for the worker.
            await self._app.close_async()
            self._pool_size = wanted
            await self._open_app(wanted)
        task = asyncio.create_task(
            self._app.run_worker_async(
                concurrency=concurrency,
                wait=True,
                listen_notify=True,
                install_signal_handlers=False,
            )
        )
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 30)
