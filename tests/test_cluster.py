"""Nodes, leader election, orphan rescue, retention and drift, with several Apps (nodes)
in one process on one schema."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import timedelta

import anyio
import pytest

import aqueue
from aqueue.worker.worker import Worker
from tests.support import CLUSTER, eventually, schema_of


def cluster_app(make_app: Callable[..., aqueue.App], **settings: object) -> aqueue.App:
    app = make_app(**{**CLUSTER, **settings})

    @app.job
    async def echo(n: int) -> int:
        return n

    return app


async def open_apps(stack: AsyncExitStack, apps: list[aqueue.App]) -> None:
    for app in apps:
        await stack.enter_async_context(app)
    await apps[0].migrate()


def leaders(workers: list[Worker]) -> list[Worker]:
    return [w for w in workers if w.leader is not None and w.leader.is_leader]


async def test_worker_registers_its_node_and_removes_it_on_stop(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = cluster_app(make_app)
    async with app:
        await app.migrate()
        async with app.worker({"default": 3, "mail": 2}) as worker:
            status = await app.cluster_status()
            [node] = status.nodes
            assert node.id == worker.node_id
            assert node.alive
            assert node.queues == {"default": 3, "mail": 2}
            assert "echo" in node.kinds
            first_beat = node.heartbeat_at

            async def beat_moved() -> bool:
                [n] = (await app.cluster_status()).nodes
                return n.heartbeat_at > first_beat

            await eventually(beat_moved, what="a heartbeat")
        assert (await app.cluster_status()).nodes == []


async def test_one_leader_at_a_time_through_stops_and_starts(
    make_app: Callable[..., aqueue.App],
) -> None:
    apps = [cluster_app(make_app) for _ in range(3)]
    overlaps: list[int] = []
    seen_leaders: set[str] = set()
    async with AsyncExitStack() as stack:
        await open_apps(stack, apps)
        workers: list[Worker] = []

        async def watch() -> None:
            # Each node's own view: a node acts as leader only while it believes it is one.
            while True:
                current = leaders(workers)
                if len(current) > 1:
                    overlaps.append(len(current))
                seen_leaders.update(w.node_id for w in current)
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            async with AsyncExitStack() as running:
                for app in apps:
                    workers.append(await running.enter_async_context(app.worker({"default": 1})))
                for _round in range(4):
                    [current] = await eventually(lambda: leaders(workers), what="a leader")
                    status = await apps[0].cluster_status()
                    assert status.leader is not None and status.leader.holder == current.node_id
                    # Stop the leader; the others elect a new one; then bring its node back.
                    index = workers.index(current)
                    await current.stop()
                    workers.pop(index)
                    await eventually(lambda: leaders(workers), what="a new leader")
                    restarted = apps[index % len(apps)]
                    workers.append(
                        await running.enter_async_context(restarted.worker({"default": 1}))
                    )
            tg.cancel_scope.cancel()
    assert overlaps == []
    assert len(seen_leaders) >= 4


async def test_a_stopping_leader_hands_over_at_once(make_app: Callable[..., aqueue.App]) -> None:
    # With a 60 s lease the others retry only every 15 s; a handover within a second came
    # through the release notification.
    apps = [cluster_app(make_app, leader_ttl=60.0) for _ in range(2)]
    async with AsyncExitStack() as stack:
        await open_apps(stack, apps)
        first = await stack.enter_async_context(apps[0].worker({"default": 1}))
        await eventually(lambda: first.leader is not None and first.leader.is_leader)
        second = await stack.enter_async_context(apps[1].worker({"default": 1}))
        assert second.leader is not None and not second.leader.is_leader
        started = anyio.current_time()
        await first.stop()
        await eventually(lambda: second.leader is not None and second.leader.is_leader)
        elapsed = anyio.current_time() - started
        assert elapsed < 1.0, f"handover took {elapsed:.2f}s"
        status = await apps[1].cluster_status()
        assert status.leader is not None and status.leader.holder == second.node_id
        assert status.leader.term >= 2


async def test_a_leader_that_cannot_renew_steps_down(make_app: Callable[..., aqueue.App]) -> None:
    app = cluster_app(make_app)
    async with app:
        await app.migrate()
        async with app.worker({"default": 1}) as worker:
            assert worker.leader is not None
            await eventually(lambda: worker.leader is not None and worker.leader.is_leader)
            # Another holder takes the lease (as if this node had been partitioned away).
            async with app.db.pool.acquire() as conn:
                await conn.execute(
                    f"UPDATE {schema_of(app)}.leases SET holder = 'elsewhere', "
                    "expires_at = now() + interval '1 hour' WHERE name = 'leader'"
                )
            await eventually(lambda: worker.leader is not None and not worker.leader.is_leader)


async def _mark_running_on(app: aqueue.App, job_id: int, node_id: str, attempt: int) -> None:
    async with app.db.pool.acquire() as conn:
        await conn.execute(
            f"UPDATE {schema_of(app)}.jobs SET state = 'running', attempt = $2, "
            "node_id = $3, attempted_at = now() WHERE id = $1",
            job_id,
            attempt,
            node_id,
        )


async def test_jobs_of_a_lost_node_are_rescued_and_run_again(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = cluster_app(make_app)
    async with app:
        await app.migrate()
        retried = await app.enqueue("echo", {"n": 1})
        exhausted = await app.enqueue("echo", {"n": 2}, max_attempts=1)
        cancelling = await app.enqueue("echo", {"n": 3})
        for job in (retried, exhausted, cancelling):
            await _mark_running_on(app, job.id, "gone-node", 1)
        await app.cancel(cancelling.id)  # flagged only: it is "running" elsewhere
        async with app.worker({"default": 2}) as worker:
            done = await app.wait(retried.id, timeout=20)
            assert done.state is aqueue.JobState.COMPLETED
            assert done.attempt == 2
            assert done.result == 1
            assert [e["type"] for e in done.errors] == ["NodeLost"]
            assert "stopped heartbeating" in done.errors[0]["message"]
            lost = await app.wait(exhausted.id, timeout=20)
            assert lost.state is aqueue.JobState.DISCARDED
            assert lost.attempt == 1
            cancelled = await app.wait(cancelling.id, timeout=20)
            assert cancelled.state is aqueue.JobState.CANCELLED
            assert worker.maintenance.rescued == 3


async def test_jobs_of_live_nodes_are_left_alone(make_app: Callable[..., aqueue.App]) -> None:
    app = cluster_app(make_app)
    gate = anyio.Event()
    started = anyio.Event()

    @app.job
    async def hold() -> str:
        started.set()
        await gate.wait()
        return "held"

    async with app:
        await app.migrate()
        async with app.worker({"default": 2}) as worker:
            job = await hold.enqueue()
            await started.wait()
            # Several rescue rounds pass while the job runs on this live node.
            await eventually(lambda: worker.leader is not None and worker.leader.is_leader)
            for _ in range(3):
                assert await worker.maintenance.rescue_once() == 0
            running = await app.get_job(job.id)
            assert running is not None and running.state is aqueue.JobState.RUNNING
            gate.set()
            finished = await app.wait(job.id, timeout=20)
            assert finished.state is aqueue.JobState.COMPLETED and finished.attempt == 1


async def test_retention_prunes_only_what_is_old_enough(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = cluster_app(make_app, retention=timedelta(hours=1), prune_interval=0.2)
    async with app:
        await app.migrate()
        jobs = [await app.enqueue("echo", {"n": n}) for n in range(6)]
        ids = [j.id for j in jobs]
        async with app.db.pool.acquire() as conn:
            q = schema_of(app)
            # Old finished jobs (one of each final state), a recent one, an old unfinished
            # one (retryable, last attempted long ago) and an untouched one.
            await conn.execute(
                f"UPDATE {q}.jobs AS j SET state = s.state::{q}.job_state, "
                "finalized_at = now() - make_interval(secs => s.age), "
                "attempted_at = now() - interval '2 hours' "
                "FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS s(id, state, age) "
                "WHERE j.id = s.id",
                ids[:5],
                ["completed", "cancelled", "discarded", "completed", "retryable"],
                [7200.0, 7200.0, 7200.0, 600.0, None],
            )
        async with app.worker({"other": 1}) as worker:
            await eventually(lambda: worker.maintenance.pruned >= 3, what="pruning")
            remaining = {j.id for j in await app.list_jobs(limit=100)}
        assert remaining == set(ids[3:])


async def test_drift_is_reported_naming_nodes_and_schedules(
    make_app: Callable[..., aqueue.App], caplog: pytest.LogCaptureFixture
) -> None:
    apps = [cluster_app(make_app) for _ in range(2)]
    for app, cron in zip(apps, ["0 9 * * *", "0 10 * * *"], strict=True):
        echo = app.registry.require("echo")
        app.periodic(echo, cron=cron, kwargs={"n": 1}, name="report")
    caplog.set_level(logging.WARNING, logger="aqueue")
    async with AsyncExitStack() as stack:
        await open_apps(stack, apps)
        workers = [await stack.enter_async_context(app.worker({"default": 1})) for app in apps]
        status = await eventually(lambda: _with_drift(apps[0]), what="drift in cluster_status")
        [drift] = status.drift
        assert drift.section == "periodic" and drift.name == "report"
        assert set(drift.by_node) == {w.node_id for w in workers}
        crons = {v["cron"] for v in drift.by_node.values()}
        assert crons == {"0 9 * * *", "0 10 * * *"}

        def warned() -> bool:
            return any("disagree" in r.getMessage() for r in caplog.records)

        await eventually(warned, what="a drift warning")
        message = next(r.getMessage() for r in caplog.records if "disagree" in r.getMessage())
        assert "'report'" in message
        for worker in workers:
            assert worker.node_id[:8] in message


async def _with_drift(app: aqueue.App) -> aqueue.ClusterStatus | None:
    status = await app.cluster_status()
    return status if status.drift else None


async def test_identical_nodes_show_no_drift(make_app: Callable[..., aqueue.App]) -> None:
    apps = [cluster_app(make_app) for _ in range(2)]
    for app in apps:
        app.periodic(app.registry.require("echo"), cron="0 9 * * *", kwargs={"n": 1})
    async with AsyncExitStack() as stack:
        await open_apps(stack, apps)
        for app in apps:
            await stack.enter_async_context(app.worker({"default": 1}))
        status = await apps[0].cluster_status()
        assert len(status.nodes) == 2
        assert len({n.digest for n in status.nodes}) == 1
        assert status.drift == []


async def test_a_node_whose_heartbeat_is_overdue_claims_nothing(
    make_app: Callable[..., aqueue.App],
) -> None:
    # Slow heartbeats, so the test controls when the next one lands.
    app = cluster_app(make_app, heartbeat_interval=3.0, node_ttl=30.0)
    async with app:
        await app.migrate()
        async with app.worker({"default": 2}) as worker:
            producer = worker.producers["default"]
            worker.node.alive_until = 0.0  # as if heartbeats had been failing
            job = await app.enqueue("echo", {"n": 7})
            await eventually(lambda: producer.skipped_unhealthy >= 2, what="skipped claims")
            waiting = await app.get_job(job.id)
            assert waiting is not None and waiting.state is aqueue.JobState.AVAILABLE
            # The next heartbeat lands and claiming resumes.
            done = await app.wait(job.id, timeout=20)
            assert done.state is aqueue.JobState.COMPLETED


async def test_every_new_tenure_gets_a_new_term(make_app: Callable[..., aqueue.App]) -> None:
    app = cluster_app(make_app)
    async with app:
        await app.migrate()
        db = app.db
        first = await db.acquire_lease("probe", "node-a", 30.0)
        assert first == 1
        assert await db.acquire_lease("probe", "node-a", 30.0, renewing=first) == first
        # The same holder starting over (it had given up locally) is a new tenure.
        second = await db.acquire_lease("probe", "node-a", 30.0)
        assert second == first + 1
        # Another node cannot take a held lease, nor renew one it does not hold.
        assert await db.acquire_lease("probe", "node-b", 30.0) is None
        assert await db.acquire_lease("probe", "node-b", 30.0, renewing=second) is None
        assert not await db.lease_free("probe")
        assert await db.release_lease("probe", "node-a")
        assert await db.lease_free("probe")
        # A renewal of a lease that lapsed is refused as a renewal: it comes back as a new term.
        assert await db.acquire_lease("probe", "node-b", 30.0) == second + 1
        assert await db.release_lease("probe", "node-b")
        assert await db.acquire_lease("probe", "node-b", 30.0, renewing=second + 1) == second + 2
