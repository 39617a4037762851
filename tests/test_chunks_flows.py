"""Chunk items inside batches and workflows, under both ack modes and with limits: an
item is a job row like any other, so its outcome ends a batch and promotes a workflow's
dependents in the same write."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import aqueue
from tests.support import schema_of

SPECS: dict[str, dict[str, Any]] = {
    "none": {},
    "global_limit=1": {"global_limit": 1},
    "partition_limit=1": {"partition": aqueue.Partition(limit=1)},
}


def spec(ack: str, limits: str) -> dict[str, int | aqueue.Queue]:
    return {"default": aqueue.Queue(concurrency=10, ack=ack, **SPECS[limits])}  # type: ignore[arg-type]


async def _unfinished(app: aqueue.App) -> int:
    async with app.db.pool.acquire() as conn:
        count: int = await conn.fetchval(
            f"SELECT count(*) FROM {schema_of(app)}.jobs "
            "WHERE state NOT IN ('completed', 'cancelled', 'discarded')"
        )
    return count


@pytest.mark.parametrize("ack", ["async", "sync"])
@pytest.mark.parametrize("limits", sorted(SPECS))
async def test_a_batch_of_chunk_items_calls_back_once(
    app: aqueue.App, ack: str, limits: str
) -> None:
    calls: list[list[int]] = []
    reports: list[tuple[int, int]] = []

    @app.job(chunk=aqueue.Chunk(size=4, timeout=0.1), max_attempts=1, partition_by=lambda a: "k")
    async def item(ns: list[int]) -> list[object]:
        calls.append(ns)
        return [aqueue.Discard("odd") if n % 5 == 4 else n for n in ns]

    @app.job
    async def report(ctx: aqueue.JobContext) -> str:
        batch = ctx.batch
        assert batch is not None
        reports.append((batch.completed, batch.discarded))
        return f"{batch.completed}/{batch.total}"

    batch = await app.enqueue_batch([item.build(n) for n in range(10)], callback=report.build())
    assert batch.callback is not None
    async with app.worker(spec(ack, limits)):
        done = await app.wait(batch.callback.id, timeout=30)
        assert await _unfinished(app) == 0
    assert done.state is aqueue.JobState.COMPLETED and done.result == "8/10"
    assert reports == [(8, 2)]  # exactly once
    assert sorted(n for ns in calls for n in ns) == list(range(10))
    if limits != "none":  # a limit of one: each item alone, never left waiting
        assert all(len(ns) == 1 for ns in calls)


@pytest.mark.parametrize("ack", ["async", "sync"])
@pytest.mark.parametrize("limits", ["none", "global_limit=1"])
async def test_chunk_items_as_workflow_steps(app: aqueue.App, ack: str, limits: str) -> None:
    calls: list[list[str]] = []

    @app.job
    async def fetch() -> str:
        return "fetched"

    @app.job(chunk=aqueue.Chunk(size=2, timeout=0.1))
    async def clean(names: list[str]) -> list[str]:
        calls.append(names)
        return [name.upper() for name in names]

    @app.job
    async def load(ctx: aqueue.JobContext) -> str:
        return f"{await ctx.dep_result('a')}+{await ctx.dep_result('b')}"

    wf = aqueue.Workflow("etl")
    wf.add("fetch", fetch.build())
    wf.add("a", clean.build("a"), deps=["fetch"])
    wf.add("b", clean.build("b"), deps=["fetch"])
    wf.add("load", load.build(), deps=["a", "b"])
    run = await app.enqueue_workflow(wf)
    async with app.worker(spec(ack, limits)):
        with anyio.fail_after(30):
            done = await app.wait(run.jobs["load"].id, timeout=30)
        assert await _unfinished(app) == 0
    assert done.state is aqueue.JobState.COMPLETED and done.result == "A+B"
    assert sorted(name for names in calls for name in names) == ["a", "b"]
    status = await app.workflow_status(run.id)
    assert status.state == "completed"
