"""Persistent workers: at most ``replicas`` copies cluster-wide, handover, restarts with
backoff, fencing, and workers that run only persistent workers."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextlib import AsyncExitStack

import anyio
import pytest

import aqueue
from aqueue.worker.worker import Worker
from tests.support import CLUSTER, eventually, schema_of


class Copies:
    """Which copies run right now, and every overlap seen (checked by the test, since a
    persistent worker's own exceptions are caught and restarted)."""

    def __init__(self) -> None:
        self.running: dict[tuple[str, int], list[str]] = {}
        self.overlaps: list[tuple[tuple[str, int], list[str]]] = []
        self.starts = 0
        self.cancelled = 0

    def holder(self, name: str = "feed", replica: int = 0) -> str | None:
        nodes = self.running.get((name, replica))
        return nodes[0] if nodes else None

    async def run(self, ctx: aqueue.PersistentContext) -> None:
        key = (ctx.name, ctx.replica)
        nodes = self.running.setdefault(key, [])
        nodes.append(ctx.node_id)
        if len(nodes) > 1:
            self.overlaps.append((key, list(nodes)))
        self.starts += 1
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        finally:
            nodes.remove(ctx.node_id)
            if not nodes:
                del self.running[key]


def persistent_app(
    make_app: Callable[..., aqueue.App], copies: Copies, replicas: int = 1, **settings: object
) -> aqueue.App:
    app = make_app(**{**CLUSTER, **settings})
    app.persistent(name="feed", replicas=replicas)(copies.run)
    return app


def test_registration_errors(make_app: Callable[..., aqueue.App]) -> None:
    app = make_app()

    def not_async(ctx: aqueue.PersistentContext) -> None:
        return None

    async def loop(ctx: aqueue.PersistentContext) -> None:
        return None

    with pytest.raises(aqueue.ConfigurationError, match="async def"):
        app.persistent(name="x")(not_async)  # type: ignore[arg-type]
    with pytest.raises(aqueue.ConfigurationError, match="replicas"):
        app.persistent(name="x", replicas=0)(loop)
    with pytest.raises(aqueue.ConfigurationError, match="persistent name"):
        app.persistent(name=" ")(loop)
    app.persistent(name="x")(loop)
    with pytest.raises(aqueue.ConfigurationError, match="already registered"):
        app.persistent(name="x")(loop)
    app.persistent()(loop)  # named after the function
    assert sorted(app.registry.persistent) == [loop.__qualname__, "x"]


async def test_one_copy_at_a_time_across_three_nodes_through_stops_and_starts(
    make_app: Callable[..., aqueue.App],
) -> None:
    copies = Copies()
    # A 60 s lease: waiting nodes retry every 15 s, so a takeover within a second proves
    # the release notification works.
    apps = [persistent_app(make_app, copies, leader_ttl=60.0) for _ in range(3)]
    takeovers: list[float] = []
    async with AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app)
        await apps[0].migrate()
        async with AsyncExitStack() as running:
            workers: dict[str, tuple[int, Worker]] = {}
            for index, app in enumerate(apps):
                worker = await running.enter_async_context(app.worker({}))
                workers[worker.node_id] = (index, worker)
            for _round in range(4):
                holder = await eventually(copies.holder)
                index, worker = workers.pop(holder)
                started = anyio.current_time()
                await worker.stop()
                await eventually(
                    lambda h=holder: copies.holder() not in (None, h), what="a takeover"
                )
                takeovers.append(anyio.current_time() - started)
                restarted = await running.enter_async_context(apps[index].worker({}))
                workers[restarted.node_id] = (index, restarted)
            assert copies.starts == 5  # the first, then one per takeover
    assert copies.overlaps == []
    # Stopping the rest hands the copy over again; every copy that started was cancelled.
    assert copies.running == {}
    assert copies.cancelled == copies.starts
    print("graceful takeovers (s):", [round(t, 3) for t in takeovers])
    assert max(takeovers) < 1.0, takeovers


async def test_replicas_run_on_distinct_leases(make_app: Callable[..., aqueue.App]) -> None:
    copies = Copies()
    apps = [persistent_app(make_app, copies, replicas=2) for _ in range(3)]
    async with AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app)
        await apps[0].migrate()
        for app in apps:
            await stack.enter_async_context(app.worker({}))
        await eventually(lambda: len(copies.running) == 2, what="two copies")
        assert set(copies.running) == {("feed", 0), ("feed", 1)}
        status = await apps[0].cluster_status()
        held = sorted(lease.name for lease in status.leases if lease.held)
        assert held == ["leader", "persistent:feed:0", "persistent:feed:1"]
    assert copies.overlaps == []


async def test_a_failing_copy_restarts_with_growing_delays(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = make_app(**{**CLUSTER, "restart_delay": 0.05, "restart_delay_max": 0.4})
    starts: list[float] = []

    @app.persistent(name="flaky")
    async def flaky(ctx: aqueue.PersistentContext) -> None:
        starts.append(anyio.current_time())
        raise ValueError(f"feed unavailable (start {len(starts)})")

    async with app:
        await app.migrate()
        async with app.worker({}):
            await eventually(lambda: len(starts) >= 6, what="six starts")

            async def lease_info() -> dict[str, object] | None:
                status = await app.cluster_status()
                [lease] = [x for x in status.leases if x.name == "persistent:flaky:0"]
                restarts = lease.info.get("restarts")
                return lease.info if isinstance(restarts, int) and restarts >= 3 else None

            info = await eventually(lease_info, what="restarts in the lease row")
            assert "ValueError: feed unavailable" in str(info["last_error"])
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # Delays double from 0.05 s and stop growing at 0.4 s.
    for gap, delay in zip(gaps, [0.05, 0.1, 0.2, 0.4, 0.4], strict=False):
        assert gap >= delay * 0.9, (gaps, delay)


async def test_a_copy_whose_lease_is_taken_is_cancelled(
    make_app: Callable[..., aqueue.App],
) -> None:
    copies = Copies()
    app = persistent_app(make_app, copies)
    lost = anyio.Event()

    @app.persistent(name="watcher")
    async def watcher(ctx: aqueue.PersistentContext) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            if ctx.lease_lost.is_set():
                lost.set()

    async with app:
        await app.migrate()
        async with app.worker({}):
            await eventually(lambda: ("feed", 0) in copies.running)

            async def watcher_held() -> bool:
                status = await app.cluster_status()
                return any(x.name == "persistent:watcher:0" and x.held for x in status.leases)

            await eventually(watcher_held, what="the watcher's lease")
            async with app.db.pool.acquire() as conn:
                # As if this node had been partitioned and its lease handed to another.
                await conn.execute(
                    f"UPDATE {schema_of(app)}.leases SET holder = 'elsewhere', term = term + 1, "
                    "expires_at = now() + interval '1 hour' WHERE name = 'persistent:watcher:0'"
                )
            with anyio.fail_after(20):
                await lost.wait()
            assert ("feed", 0) in copies.running  # the other copy keeps its own lease


async def test_a_worker_without_queues_needs_something_to_run(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = make_app()
    async with app:
        await app.migrate()
        with pytest.raises(aqueue.ConfigurationError, match="at least one queue"):
            async with app.worker({}):
                pass
