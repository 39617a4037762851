"""How many server connections one worker process uses, and that jobs holding every
connection of the App's pool cannot stall the worker's own coordination."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import anyio

import aqueue
from tests.support import CLUSTER, eventually


async def connections_by_name(observer: aqueue.App) -> dict[str, int]:
    async with observer.transaction() as conn:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = await conn.fetch(
            "SELECT application_name, count(*) AS n FROM pg_stat_activity "
            "WHERE application_name LIKE 'aqueue%' AND datname = current_database() "
            "AND pid <> pg_backend_pid() GROUP BY application_name"
        )
    return {row["application_name"]: row["n"] for row in rows}


async def test_one_worker_process_stays_within_its_budget(
    make_app: Callable[..., aqueue.App],
) -> None:
    observer = make_app()
    counts: list[dict[str, int]] = []
    for dedicated in (True, False):
        app = make_app(**CLUSTER, pool_size=3, worker_pool_size=2, dedicated_heartbeat=dedicated)

        @app.job
        async def echo(n: int) -> int:
            return n

        async with observer, app:
            await observer.migrate()
            async with app.worker({"default": 20}):
                jobs = await app.enqueue_many([echo.build(n=n) for n in range(500)])
                await app.wait(jobs[-1].id, timeout=20)
                seen = await connections_by_name(observer)
                counts.append(seen)
        # The observer's own pool is 'aqueue' too; it holds one connection here.
        assert seen.get("aqueue", 0) <= 3 + 1
        assert seen.get("aqueue-worker", 0) <= 2
        assert seen.get("aqueue-listen") == 1
        assert seen.get("aqueue-heartbeat", 0) == (1 if dedicated else 0)
    print("server connections by kind (dedicated heartbeat, shared):", counts)


async def test_jobs_holding_the_whole_pool_do_not_stall_coordination(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = make_app(**CLUSTER, pool_size=2)
    observer = make_app()
    holding: list[int] = []
    release = anyio.Event()

    @app.job(queue="hold")
    async def hold(n: int) -> None:
        # Each job keeps one of the App pool's two connections, as a long job would.
        async with app.transaction():
            holding.append(n)
            await release.wait()

    @app.job
    async def quick(n: int) -> int:
        return n

    async def lease_and_beat() -> tuple[datetime, datetime]:
        status = await observer.cluster_status()
        [node] = status.nodes
        assert status.leader is not None
        return status.leader.renewed_at, node.heartbeat_at

    async with app, observer:
        await app.migrate()
        async with app.worker({"hold": 2, "default": 2}) as worker:
            await eventually(lambda: worker.leader is not None and worker.leader.is_leader)
            assert worker.leader is not None
            term = worker.leader.term
            for n in range(2):
                await hold.enqueue(n=n)
            await eventually(lambda: len(holding) == 2, what="both jobs holding a connection")
            renewed, beat = await lease_and_beat()
            # Longer than leader_ttl and node_ttl: both must be renewed meanwhile, and jobs
            # claimed and completed, all without a connection of the App's pool.
            for n in range(5):
                job = await observer.enqueue("quick", {"n": n}, allow_unknown=True)
                done = await observer.wait(job.id, timeout=10)
                assert done.result == n

            async def outlived_both_ttls() -> bool:
                later_renewed, later_beat = await lease_and_beat()
                return later_renewed - renewed > timedelta(
                    seconds=CLUSTER["leader_ttl"]
                ) and later_beat - beat > timedelta(seconds=CLUSTER["node_ttl"])

            await eventually(outlived_both_ttls, what="renewals past leader_ttl and node_ttl")
            assert worker.leader.is_leader and worker.leader.term == term
            assert (await observer.queue_stats("hold"))["hold"].counts.get("running") == 2
            release.set()
            await observer.drain("hold", timeout=10)
