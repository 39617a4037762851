"""The systems under test behind one small interface, so every scenario drives aqueue and
its peers through the same code path.

A system is bound to one fresh database. Its job is a no-op taking one integer ``n`` that
calls ``system.on_run(n)``: scenarios count executions or timestamp starts through that
hook, in the worker's own process, with no database work of their own inside the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import asyncpg

# Producer-side pool size, the same for every system: aqueue's default pool size.
PRODUCER_POOL = 10


class System(Protocol):
    name: str
    on_run: Callable[[int], None]

    @property
    def label(self) -> str: ...

    @property
    def config(self) -> str: ...

    async def open(self, url: str) -> None: ...

    async def close(self) -> None: ...

    async def enqueue_many(self, ns: Sequence[int]) -> None: ...

    async def enqueue_one(self, n: int) -> None: ...

    async def remaining(self) -> int: ...

    def worker(self, concurrency: int) -> contextlib.AbstractAsyncContextManager[None]: ...


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


class _Counter:
    """The measuring side of every system: a plain asyncpg connection of its own, so the
    scenario's polling never borrows (or is starved by) the system's pool."""

    def __init__(self) -> None:
        self._conn: asyncpg.Connection | None = None

    async def open(self, url: str) -> None:
        self._conn = await asyncpg.connect(url)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def fetchval(self, sql: str) -> Any:
        assert self._conn is not None
        return await self._conn.fetchval(sql)


class AqueueSystem:
    """aqueue through its public API only, with its default settings.

    ``job_sleep`` makes the job hold its slot for that long (``on_done`` fires after), for
    scenarios that need a worker's slots actually full (memory at high concurrency).
    """

    name = "aqueue"

    def __init__(self, **app_options: Any) -> None:
        #: Extra ``aqueue.App`` keywords (scale.py: ``listen_url``, ``pooler``).
        self.app_options = app_options
        self.on_run: Callable[[int], None] = lambda n: None
        self.on_done: Callable[[int], None] = lambda n: None
        self.job_sleep = 0.0
        self._counter = _Counter()
        self._app: Any = None
        self._noop: Any = None

    @property
    def label(self) -> str:
        return f"aqueue {_version('aqueue')}"

    @property
    def config(self) -> str:
        return (
            "App(url) with default settings (pool_size=10, completer_batch=1000); "
            "worker via app.worker(queues={'default': C}); enqueue via job.enqueue() / "
            "app.enqueue_many([job.build(...)])"
        )

    async def open(self, url: str) -> None:
        import aqueue

        self._app = aqueue.App(url, **self.app_options)
        system = self

        @self._app.job(name="noop")
        async def noop(n: int) -> None:
            system.on_run(n)
            if system.job_sleep:
                await asyncio.sleep(system.job_sleep)
                system.on_done(n)

        self._noop = noop
        await self._app.open()
        await self._app.migrate()
        await self._counter.open(url)

    async def close(self) -> None:
        await self._counter.close()
        if self._app is not None:
            await self._app.close()

    async def enqueue_many(self, ns: Sequence[int]) -> None:
        await self._app.enqueue_many([self._noop.build(n=n) for n in ns])

    async def enqueue_one(self, n: int) -> None:
        await self._noop.enqueue(n=n)

    async def remaining(self) -> int:
        count: int = await self._counter.fetchval(
            "SELECT count(*) FROM aqueue.jobs WHERE state <> 'completed'"
        )
        return count

    @contextlib.asynccontextmanager
    async def worker(self, concurrency: int) -> AsyncIterator[None]:
        async with self._app.worker(queues={"default": concurrency}):
            yield


def make_system(name: str) -> System:
    base, _, variant = name.partition(":")
    if name == "aqueue":
        return AqueueSystem()
    if base == "pgqueuer":
        from peers.pgqueuer_system import PgqueuerSystem

        return PgqueuerSystem(variant)
    if name == "procrastinate":
        from peers.procrastinate_system import ProcrastinateSystem

        return ProcrastinateSystem()
    raise ValueError(f"unknown system {name!r}")


def available(name: str) -> str | None:
    """None when ``name`` can run here, else why not (e.g. the peer is not installed)."""
    base = name.partition(":")[0]
    if base == "aqueue":
        return None
    try:
        importlib.metadata.version(base)
    except importlib.metadata.PackageNotFoundError:
        return f"{base} is not installed (pip install -e '.[bench]'); skipped"
    return None


def select_systems(spec: str, notes: list[str]) -> list[str]:
    """The systems named in ``spec`` that can run here; a note for each one skipped."""
    chosen = []
    for name in (part.strip() for part in spec.split(",")):
        if not name:
            continue
        reason = available(name)
        if reason is None:
            chosen.append(name)
        elif reason not in notes:
            notes.append(reason)
    return chosen
