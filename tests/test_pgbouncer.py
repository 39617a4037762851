"""Everything through a real PgBouncer in transaction mode (Debian's, no prepared-statement
support): Apps on ``url`` = the bouncer with ``pooler="transaction"``, their LISTEN and
heartbeat connections on ``listen_url`` = the server itself."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

import aqueue
from aqueue.testing import unique_schema
from tests.bouncer import Bouncer
from tests.support import CLUSTER, eventually


@pytest.fixture
async def make_bounced(
    bouncer: Bouncer, aqueue_database_url: str
) -> AsyncIterator[Callable[..., aqueue.App]]:
    """Apps on one fresh schema, through the bouncer; the schema is dropped afterwards."""
    schema = unique_schema("pgb")
    apps: list[aqueue.App] = []

    def factory(**settings: Any) -> aqueue.App:
        app = aqueue.App(
            bouncer.url,
            schema=schema,
            listen_url=settings.pop("listen_url", aqueue_database_url),
            **{**CLUSTER, "pooler": "transaction", **settings},
        )
        apps.append(app)
        return app

    yield factory
    for app in apps:
        await app.close()
    cleanup = aqueue.App(aqueue_database_url, schema=schema)
    async with cleanup:
        await cleanup.db.drop_schema()


def echo_app(factory: Callable[..., aqueue.App], **settings: Any) -> aqueue.App:
    app = factory(**settings)

    @app.job
    async def echo(n: int) -> int:
        return n

    @app.job(max_attempts=2)
    async def fail() -> None:
        raise RuntimeError("boom")

    snoozed: set[int] = set()

    @app.job
    async def snooze_once(ctx: aqueue.JobContext) -> int:
        if ctx.job.id not in snoozed:
            snoozed.add(ctx.job.id)
            raise aqueue.Snooze(0.05)
        return ctx.attempt

    @app.job
    async def stall() -> None:
        await anyio.sleep_forever()

    @app.job(queue="other")
    async def other() -> None:
        pass

    return app


async def test_session_features_without_listen_url_name_the_setting(
    make_bounced: Callable[..., aqueue.App], bouncer: Bouncer
) -> None:
    app = echo_app(make_bounced, listen_url=None)
    assert app.listen_url == bouncer.url
    async with app:
        await app.migrate()
        job = await app.enqueue("echo", {"n": 1})  # statements need no session: fine
        with pytest.raises(aqueue.ConfigurationError, match="listen_url"):
            await app.wait(job.id, timeout=1)
        with pytest.raises(aqueue.ConfigurationError, match="pooler='transaction'"):
            async with app.worker({"default": 1}):
                pass


async def test_prepared_statements_through_the_bouncer_fail_naming_the_setting(
    make_bounced: Callable[..., aqueue.App],
) -> None:
    app = echo_app(make_bounced, pooler=None, pool_size=8)
    errors: list[aqueue.DatabaseError] = []

    async def one(n: int) -> None:
        try:
            await app.enqueue("echo", {"n": n})
            await app.list_jobs(limit=1)
        except aqueue.DatabaseError as exc:
            errors.append(exc)

    async with app:
        await app.migrate()
        for _round in range(20):  # which server answers is PgBouncer's choice: load it
            async with anyio.create_task_group() as tg:
                for n in range(50):
                    tg.start_soon(one, n)
            if errors:
                break
    assert errors, "asyncpg's cached statements never met a server that lacked them"
    assert "pooler='transaction'" in str(errors[0])


async def test_enqueue_claims_and_every_outcome(make_bounced: Callable[..., aqueue.App]) -> None:
    app = echo_app(make_bounced)
    async with app:
        await app.migrate()
        single = await app.enqueue("echo", {"n": 1})
        many = await app.enqueue_many([app.build("echo", {"n": n}) for n in range(2, 50)])
        failing = await app.enqueue("fail")
        snoozing = await app.enqueue("snooze_once")
        async with app.transaction() as conn:
            kept = await app.enqueue("echo", {"n": 100}, conn=conn)
        with pytest.raises(RuntimeError, match="rolled back"):
            async with app.transaction() as conn:
                await app.enqueue("echo", {"n": 101}, conn=conn)
                raise RuntimeError("rolled back")
        async with app.worker({"default": 5}):
            for job in [single, *many, kept]:
                done = await app.wait(job.id, timeout=20)
                assert done.state is aqueue.JobState.COMPLETED
                assert done.result == job.args["n"]
            assert (await app.wait(failing.id, timeout=20)).state is aqueue.JobState.DISCARDED
            snoozed = await app.wait(snoozing.id, timeout=20)
            assert snoozed.state is aqueue.JobState.COMPLETED and snoozed.result == 1
        assert [j.args["n"] for j in await app.list_jobs(kind="echo", limit=1000)] == [
            *range(1, 50),
            100,
        ]


async def test_cancel_and_pause_from_another_app(make_bounced: Callable[..., aqueue.App]) -> None:
    worker_app, admin = echo_app(make_bounced), echo_app(make_bounced)
    async with worker_app, admin:
        await admin.migrate()
        async with worker_app.worker({"default": 2, "other": 1}):
            job = await admin.enqueue("stall")

            async def running() -> bool:
                current = await admin.get_job(job.id)
                return current is not None and current.state is aqueue.JobState.RUNNING

            await eventually(running, what="the job running")
            await admin.cancel(job.id)
            assert (await admin.wait(job.id, timeout=10)).state is aqueue.JobState.CANCELLED

            assert await admin.pause_queue("default")
            waiting = await admin.enqueue("echo", {"n": 7})
            # Claims go on for the other queue; the paused one's job stays put meanwhile.
            control = await admin.enqueue("other")
            await admin.wait(control.id, timeout=10)
            await admin.wait((await admin.enqueue("other")).id, timeout=10)
            assert (await admin.get_job(waiting.id)).state is aqueue.JobState.AVAILABLE  # type: ignore[union-attr]
            assert await admin.resume_queue("default")
            assert (await admin.wait(waiting.id, timeout=10)).result == 7


async def test_leader_periodic_and_persistent_fail_over(
    make_bounced: Callable[..., aqueue.App],
) -> None:
    running: dict[str, int] = {}
    apps = [echo_app(make_bounced) for _ in range(2)]
    for app in apps:
        # Yearly: only run_on_start can enqueue during the test.
        app.periodic(
            app.registry.require("echo"), cron="0 0 1 1 *", kwargs={"n": 9}, run_on_start=True
        )

        @app.persistent(name="feed")
        async def feed(ctx: aqueue.PersistentContext) -> None:
            running[ctx.node_id] = running.get(ctx.node_id, 0) + 1
            try:
                await anyio.sleep_forever()
            finally:
                running[ctx.node_id] -= 1

    def leaders(workers: list[Any]) -> list[Any]:
        return [w for w in workers if w.leader is not None and w.leader.is_leader]

    def copies() -> int:
        return sum(running.values())

    async with AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app)
        await apps[0].migrate()
        workers = [await stack.enter_async_context(app.worker({"default": 2})) for app in apps]
        [first] = await eventually(lambda: leaders(workers), what="a leader")
        await eventually(lambda: first.periodic.enqueued == 1, what="the start run")
        await eventually(lambda: copies() == 1, what="one persistent copy")
        holder = next(node for node, n in running.items() if n)
        for worker in workers:
            if worker.node_id == holder:
                await worker.stop()
        await eventually(
            lambda: running.get(holder) == 0 and copies() == 1, what="the copy taken over"
        )
        await first.stop()
        [second] = await eventually(lambda: leaders(workers), what="a new leader")
        assert second is not first
        # A new tenure runs run_on_start again; each term's slot is unique, never doubled.
        await eventually(lambda: second.periodic.enqueued == 1, what="the new term's run")
        assert copies() <= 1
        ticks = await apps[0].list_jobs(kind="echo", limit=10)
        assert {j.args["n"] for j in ticks} == {9} and len(ticks) <= 2


async def test_a_global_limit_holds_through_the_bouncer(
    make_bounced: Callable[..., aqueue.App],
) -> None:
    # The limited claim takes a transaction-scoped advisory lock inside one statement:
    # nothing of it outlives the transaction, so a transaction pooler may move it freely.
    first, second = make_bounced(), make_bounced()
    running = 0
    most = 0

    for app in (first, second):

        @app.job(queue="api")
        async def call() -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await anyio.sleep(0.02)
            running -= 1

    spec = aqueue.Queue(concurrency=4, global_limit=2)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(first)
        await first.migrate()
        await stack.enter_async_context(second)
        await first.enqueue_many([first.build("call") for _ in range(30)])
        await stack.enter_async_context(first.worker({"api": spec}))
        await stack.enter_async_context(second.worker({"api": spec}))

        async def drained() -> bool:
            return (await first.queue_stats("api"))["api"].counts["completed"] == 30

        await eventually(drained, what="30 jobs through the bouncer")
    # Both workers run in this process, so one counter sees every job that runs: never
    # more than the limit at once, though eight slots could run them.
    assert most == 2
