"""End to end on real PostgreSQL: enqueue, run, record results, hooks."""

from __future__ import annotations

import anyio

import aqueue
from aqueue.jobs import JobState


async def test_job_runs_and_records_result(app: aqueue.App) -> None:
    @app.job
    async def add(a: int, b: int) -> int:
        return a + b

    job = await add.enqueue(a=2, b=3)
    assert job.state is JobState.AVAILABLE and job.args == {"a": 2, "b": 3}
    async with app.worker({"default": 2}):
        done = await app.wait(job.id, timeout=10)
    assert done.state is JobState.COMPLETED
    assert done.result == 5
    assert done.attempt == 1
    assert done.finalized_at is not None


async def test_two_hundred_jobs_four_slots_each_runs_once(app: aqueue.App) -> None:
    runs: dict[int, int] = {}

    @app.job
    async def count(n: int) -> None:
        runs[n] = runs.get(n, 0) + 1
        await anyio.sleep(0)

    jobs = await app.enqueue_many([count.build(n=i) for i in range(200)])
    async with app.worker({"default": 4}):
        for job in jobs:
            await app.wait(job.id, timeout=30)
    assert runs == {i: 1 for i in range(200)}
    assert all(j.state is JobState.COMPLETED for j in await app.list_jobs(limit=1000))
