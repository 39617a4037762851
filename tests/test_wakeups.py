"""How idle workers learn about new jobs: NOTIFY, reconnection of the LISTEN connection,
the polling fallback; and several nodes draining one queue without running a job twice."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import anyio
import pytest

import aqueue
from tests.support import eventually

SLOW_POLL = 30.0  # far longer than any wait below: a pick-up within seconds needs NOTIFY
SETTLE = 0.3  # lets an idle worker finish its post-job claim and go to sleep


async def listen_backends(app: aqueue.App) -> list[tuple[int, str]]:
    rows = await app.db.pool.fetch(
        "SELECT pid, query FROM pg_stat_activity "
        "WHERE application_name = 'aqueue-listen' AND datname = current_database()"
    )
    return [(row["pid"], row["query"]) for row in rows]


async def make_due(app: aqueue.App, job_id: int) -> None:
    """Make a scheduled job due with an UPDATE, which sends no notification."""
    await app.db.pool.execute(
        f'UPDATE "{app.schema}".jobs SET scheduled_at = now() WHERE id = $1', job_id
    )


async def test_notification_wakes_an_idle_worker(
    app: aqueue.App, make_app: Callable[..., aqueue.App]
) -> None:
    node = make_app(poll_interval=SLOW_POLL)

    @node.job
    async def ping(n: int) -> int:
        return n

    async with node, node.worker({"default": 2, "mail": 2}):
        for n, queue in enumerate(["default", "mail", "default", "mail"]):
            await anyio.sleep(SETTLE)
            # Enqueued by another node: the only link between the two is PostgreSQL.
            job = await app.enqueue("ping", {"n": n}, allow_unknown=True, queue=queue)
            done = await node.wait(job.id, timeout=5)
            assert (done.state, done.result) == (aqueue.JobState.COMPLETED, n)


async def test_transactional_enqueue_wakes_the_worker_at_commit(
    app: aqueue.App, make_app: Callable[..., aqueue.App]
) -> None:
    node = make_app(poll_interval=SLOW_POLL)
    ran = anyio.Event()

    @node.job
    async def after_commit() -> None:
        ran.set()

    async with node, node.worker():
        await anyio.sleep(SETTLE)
        async with app.db.pool.acquire() as conn, conn.transaction():
            job = await app.enqueue("after_commit", allow_unknown=True, conn=conn)
            with anyio.move_on_after(0.5):
                await ran.wait()
            assert not ran.is_set()  # invisible until the commit
        done = await node.wait(job.id, timeout=5)
    assert done.state is aqueue.JobState.COMPLETED


async def test_worker_reconnects_its_listen_connection(
    app: aqueue.App, make_app: Callable[..., aqueue.App], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aqueue")
    node = make_app(poll_interval=SLOW_POLL)

    @node.job
    async def ping(n: int) -> int:
        return n

    async with node, node.worker():
        first = await node.enqueue("ping", {"n": 0})
        assert (await node.wait(first.id, timeout=5)).state is aqueue.JobState.COMPLETED
        before = {pid for pid, _ in await listen_backends(app)}
        assert before, "the worker should hold a LISTEN connection"

        killed = await app.db.pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'aqueue-listen' AND datname = current_database()"
        )
        assert killed >= 1

        async def reconnected() -> bool:
            return any(
                pid not in before and query.startswith("LISTEN")
                for pid, query in await listen_backends(app)
            )

        await eventually(reconnected)
        for n in range(1, 4):
            await anyio.sleep(SETTLE)
            job = await app.enqueue("ping", {"n": n}, allow_unknown=True)
            done = await node.wait(job.id, timeout=5)
            assert (done.state, done.result) == (aqueue.JobState.COMPLETED, n)

    messages = [r.getMessage() for r in caplog.records if r.name == "aqueue"]
    assert any("LISTEN connection lost" in m for m in messages)
    assert any("re-established" in m for m in messages)


async def test_polling_finds_jobs_that_sent_no_notification(app: aqueue.App) -> None:
    @app.job
    async def late() -> str:
        return "polled"

    async with app.worker():  # poll_interval=0.2
        job = await late.options(schedule_in=3600).enqueue()
        await anyio.sleep(SETTLE)
        waiting = await app.get_job(job.id)
        assert waiting is not None and waiting.state is aqueue.JobState.SCHEDULED
        await make_due(app, job.id)
        done = await app.wait(job.id, timeout=5)
    assert (done.state, done.result) == (aqueue.JobState.COMPLETED, "polled")


async def test_without_notification_or_poll_a_due_job_waits(
    app: aqueue.App, make_app: Callable[..., aqueue.App]
) -> None:
    # The control for the test above: with polling effectively off, the UPDATE alone wakes
    # nobody; the next notification for the queue does, and the claim takes both jobs.
    node = make_app(poll_interval=SLOW_POLL)

    @node.job
    async def late(n: int) -> int:
        return n

    async with node, node.worker({"default": 4}):
        silent = await late.options(schedule_in=3600).enqueue(n=1)
        await anyio.sleep(SETTLE)
        await make_due(app, silent.id)
        await anyio.sleep(1.0)
        waiting = await app.get_job(silent.id)
        assert waiting is not None and waiting.state is aqueue.JobState.SCHEDULED
        loud = await late.enqueue(n=2)
        assert (await node.wait(loud.id, timeout=5)).state is aqueue.JobState.COMPLETED
        assert (await node.wait(silent.id, timeout=5)).state is aqueue.JobState.COMPLETED


async def test_four_nodes_drain_a_queue_running_each_job_once(
    app: aqueue.App, make_app: Callable[..., aqueue.App]
) -> None:
    runs: dict[int, int] = {}
    ran_on: dict[int, int] = {}
    total = 300

    async def count(ctx: aqueue.JobContext, n: int) -> int:
        runs[n] = runs.get(n, 0) + 1
        ran_on[n] = id(ctx.app)
        await anyio.sleep(0.005)
        return n

    nodes = [make_app() for _ in range(4)]
    for node in nodes:
        node.job(name="count")(count)
    app.job(name="count")(count)

    async with contextlib.AsyncExitStack() as stack:
        for node in nodes:
            await stack.enter_async_context(node)
            await stack.enter_async_context(node.worker({"default": 5}))
        jobs = await app.enqueue_many([app.build("count", {"n": n}) for n in range(total)])

        async def all_final() -> bool:
            return len(await app.list_jobs(state="completed", limit=1000)) == total

        await eventually(all_final, timeout=30)

    assert runs == {n: 1 for n in range(total)}
    finished = await app.list_jobs(limit=1000)
    assert len(finished) == total
    assert {job.id for job in finished} == {job.id for job in jobs}
    assert all(job.state is aqueue.JobState.COMPLETED for job in finished)
    assert all(job.attempt == 1 and job.errors == [] for job in finished)
    assert sorted(job.result for job in finished) == list(range(total))
    assert len(set(ran_on.values())) >= 2  # the nodes shared the work
