"""Batches on real PostgreSQL: the callback runs exactly once after every job of the batch
ended, whatever the order and the nodes, and sees the counts by final state."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import pytest

import aqueue
from aqueue.testing import run_until_idle
from tests.support import CLUSTER, eventually, schema_of


def _register(app: aqueue.App, seen: list[tuple[int, dict[str, int]]]) -> Any:
    @app.job(max_attempts=1)
    async def member(n: int) -> int:
        if n % 10 == 3:
            raise aqueue.Discard("threes fail")
        if n % 10 == 7:
            raise aqueue.Cancel("sevens stop")
        return n

    @app.job
    async def report(ctx: aqueue.JobContext, label: str) -> int:
        assert ctx.batch is not None
        seen.append((ctx.batch.id, dict(ctx.batch.counts)))
        return ctx.batch.total

    @app.job
    async def other(ctx: aqueue.JobContext) -> bool:
        return ctx.batch is None

    return member, report, other


async def test_the_callback_runs_once_after_all_and_sees_the_counts(app: aqueue.App) -> None:
    seen: list[tuple[int, dict[str, int]]] = []
    member, report, other = _register(app, seen)
    batch = await app.enqueue_batch(
        [member.build(n=n) for n in range(20)], callback=report.build(label="nightly")
    )
    assert len(batch.jobs) == 20 and batch.callback is not None
    assert batch.callback.state == aqueue.JobState.PENDING
    assert batch.callback.step == "callback" and batch.callback.batch_id == batch.id
    assert all(job.batch_id == batch.id and job.step is None for job in batch.jobs)
    lone = await other.enqueue()
    await run_until_idle(app)
    assert seen == [(batch.id, {"completed": 16, "discarded": 2, "cancelled": 2})]
    status = await app.workflow_status(batch.id)
    assert status.kind == "batch" and status.steps["callback"].result == 20
    assert (await app.wait(lone.id, timeout=5)).result is True


@pytest.mark.parametrize("size", [3, 200])
async def test_the_returned_jobs_are_the_rows_as_stored(app: aqueue.App, size: int) -> None:
    """Big groups build their Jobs while the insert runs (aqueue/overlap.py), small ones
    after it; either way each is what a read gives back."""

    @app.job
    async def member(n: int) -> int:
        return n

    @app.job
    async def done() -> None: ...

    later = member.options(schedule_in=600, tags=["t"])
    builds = [(later if n % 2 else member).build(n=n) for n in range(size)]
    batch = await app.enqueue_batch(builds, callback=done.build())
    assert batch.callback is not None
    for job in [*batch.jobs, batch.callback]:
        assert job == await app.get_job(job.id)
    assert [job.args["n"] for job in batch.jobs] == list(range(size))
    assert {job.batch_id for job in batch.jobs} == {batch.id}
    assert batch.callback.state is aqueue.JobState.PENDING


async def test_a_batch_without_callback_and_bad_batches(app: aqueue.App) -> None:
    seen: list[tuple[int, dict[str, int]]] = []
    member, report, _ = _register(app, seen)
    batch = await app.enqueue_batch([member.build(n=1), member.build(n=2)], name="pair")
    assert batch.callback is None and batch.name == "pair"
    await run_until_idle(app)
    assert (await app.workflow_status(batch.id)).state == "completed"
    with pytest.raises(aqueue.InvalidWorkflow, match="at least one job"):
        await app.enqueue_batch([], callback=report.build(label="x"))
    with pytest.raises(aqueue.InvalidWorkflow, match="list of jobs"):
        await app.enqueue_batch(member.build(n=1))  # type: ignore[arg-type]
    with pytest.raises(aqueue.InvalidWorkflow, match="callback"):
        await app.enqueue_batch([member.build(n=1)], callback=report)  # type: ignore[arg-type]
    conn = await asyncpg.connect(app.url)
    try:
        count = await conn.fetchval(f"SELECT count(*) FROM {schema_of(app)}.workflows")
    finally:
        await conn.close()
    assert count == 1


async def test_many_nodes_finishing_two_fan_ins_in_any_order(
    make_app: Callable[..., aqueue.App], caplog: pytest.LogCaptureFixture
) -> None:
    """Two 300-job batches, members interleaved, run by three nodes with batched outcome
    writes: each callback runs exactly once with the full count, and no outcome write
    deadlocks on the two callbacks' counters (they are locked in one order)."""
    seen: list[tuple[int, dict[str, int]]] = []
    apps = [make_app(**CLUSTER) for _ in range(3)]
    async with AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app)
            _register(app, seen)
        await apps[0].migrate()
        member = apps[0].registry.get("member")
        report = apps[0].registry.get("report")
        assert member is not None and report is not None
        first, second = await _two_batches(apps[0], member, report)
        for app in apps:
            await stack.enter_async_context(app.worker({"default": 20}))

        async def both_done() -> bool:
            states = [(await apps[0].workflow_status(b.id)).state for b in (first, second)]
            return len(seen) >= 2 and "running" not in states

        await eventually(both_done, timeout=60, what="both callbacks")
    expected = {"completed": 240, "discarded": 30, "cancelled": 30}
    assert sorted(seen) == [(first.id, expected), (second.id, expected)]
    # A deadlock would have failed an outcome write (then retried): none may happen.
    assert not [r for r in caplog.records if "deadlock" in r.getMessage().lower()]


async def _two_batches(app: aqueue.App, member: Any, report: Any) -> tuple[Any, Any]:
    conn = await asyncpg.connect(app.url)
    try:
        async with conn.transaction():
            # Enqueued together and unpaused together, so their members interleave.
            first = await app.enqueue_batch(
                [member.build(n=n) for n in range(300)],
                callback=report.build(label="a"),
                conn=conn,
            )
            second = await app.enqueue_batch(
                [member.build(n=n) for n in range(300)],
                callback=report.build(label="b"),
                conn=conn,
            )
            await conn.execute(
                f"UPDATE {schema_of(app)}.jobs SET scheduled_at = now() - (random() * interval "
                "'1 second') WHERE state = 'available'"
            )
    finally:
        await conn.close()
    return first, second
