"""pgqueuer, configured the way its performance-tuning guide recommends for throughput.

- Schema from ``Queries.install()`` (what ``pgq install`` runs) plus
  ``Queries.optimize_autovacuum()`` (``pgq autovac``: aggressive autovacuum, fillfactor 70).
- Durability stays ``durable`` (its default; the other levels make tables UNLOGGED, which
  would not be a like-for-like comparison with durable aqueue numbers).
- The worker (``QueueManager``) runs on a dedicated asyncpg connection, as the guide's tip
  says; producers use an ``AsyncpgPoolDriver`` over a pool.
- ``batch_size``: the guide says to raise it for short jobs, and ``max_concurrent_tasks``
  (our concurrency C) must be at least twice it, so ``batch_size = C // 2`` (capped to at
  least 1), i.e. the largest batch its own rule allows. Measured here: 10 -> ~2k jobs/s,
  25 -> ~4.5k, 50 -> ~7k (20k jobs, C=100).
- Variant ``pgqueuer:nocap`` leaves ``max_concurrent_tasks`` unset (pgqueuer's default:
  no per-process ceiling) with ``batch_size = C``. It is not the same workload (more than
  C jobs may be in flight) but it is pgqueuer's fastest setting here, so the drain
  scenario shows it too and a ratio against it is the conservative one.
- Variant ``pgqueuer:limit`` sets ``@entrypoint(concurrency_limit=C)``, pgqueuer's
  per-entrypoint limit enforced in SQL across workers (the limits scenario compares it
  with aqueue's ``global_limit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from typing import Any

import asyncpg

from systems import PRODUCER_POOL


def batch_size_for(concurrency: int) -> int:
    return max(1, concurrency // 2)


class PgqueuerSystem:
    def __init__(self, variant: str = "") -> None:
        if variant not in ("", "nocap", "limit"):
            raise ValueError(f"unknown pgqueuer variant {variant!r}")
        self.variant = variant
        self.name = f"pgqueuer:{variant}" if variant else "pgqueuer"
        self.on_run: Callable[[int], None] = lambda n: None
        self._url = ""
        self._pool: asyncpg.Pool | None = None
        self._producer: Any = None
        self._counter: asyncpg.Connection | None = None

    @property
    def label(self) -> str:
        suffix = {"": "", "nocap": " (no cap)", "limit": " (concurrency_limit=C)"}[self.variant]
        return f"pgqueuer {importlib.metadata.version('pgqueuer')}{suffix}"

    @property
    def config(self) -> str:
        if self.variant == "limit":
            return (
                "as pgqueuer, with @entrypoint(concurrency_limit=C): its per-entrypoint "
                "limit, enforced in SQL across all workers"
            )
        if self.variant == "nocap":
            return (
                "as pgqueuer, but run(batch_size=C) with max_concurrent_tasks unset "
                "(no per-process ceiling: may run more than C at once)"
            )
        return (
            "durable tables (default) + `pgq autovac` settings; QueueManager on a dedicated "
            "asyncpg connection (AsyncpgDriver); run(batch_size=C//2, max_concurrent_tasks=C); "
            f"producers: Queries over AsyncpgPoolDriver(pool max_size={PRODUCER_POOL}); "
            "enqueue(list...) for batches"
        )

    async def open(self, url: str) -> None:
        from pgqueuer.db import AsyncpgDriver, AsyncpgPoolDriver
        from pgqueuer.queries import Queries

        self._url = url
        conn = await asyncpg.connect(url)
        try:
            installer = Queries(AsyncpgDriver(conn))
            await installer.install()
            await installer.optimize_autovacuum()
        finally:
            await conn.close()
        self._pool = await asyncpg.create_pool(url, min_size=1, max_size=PRODUCER_POOL)
        self._producer = Queries(AsyncpgPoolDriver(self._pool))
        self._counter = await asyncpg.connect(url)

    async def close(self) -> None:
        if self._counter is not None:
            await self._counter.close()
        if self._pool is not None:
            await self._pool.close()

    async def enqueue_many(self, ns: Sequence[int]) -> None:
        await self._producer.enqueue(
            ["noop"] * len(ns), [str(n).encode() for n in ns], [0] * len(ns)
        )

    async def enqueue_one(self, n: int) -> None:
        await self._producer.enqueue("noop", str(n).encode())

    async def remaining(self) -> int:
        # pgqueuer deletes a job from its queue table once it is done (history goes to
        # pgqueuer_log), so whatever is left is not finished.
        assert self._counter is not None
        count: int = await self._counter.fetchval("SELECT count(*) FROM pgqueuer")
        return count

    @contextlib.asynccontextmanager
    async def worker(self, concurrency: int) -> AsyncIterator[None]:
        from pgqueuer import PgQueuer
        from pgqueuer.models import Job

        conn = await asyncpg.connect(self._url)
        pgq = PgQueuer.from_asyncpg_connection(conn)
        system = self

        limit = concurrency if self.variant == "limit" else 0

        @pgq.entrypoint("noop", concurrency_limit=limit)
        async def noop(job: Job) -> None:
            system.on_run(int(job.payload or b"0"))

        if self.variant == "nocap":
            batch_size, cap = concurrency, None
        else:
            batch_size, cap = batch_size_for(concurrency), concurrency
        task = asyncio.create_task(
            pgq.run(
                batch_size=batch_size,
                max_concurrent_tasks=cap,
                dequeue_timeout=timedelta(seconds=30),
            )
        )
        try:
            yield
        finally:
            pgq.shutdown.set()
            try:
                await asyncio.wait_for(task, 30)
            finally:
                await conn.close()
