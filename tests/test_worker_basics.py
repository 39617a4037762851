"""End to end on real PostgreSQL: enqueue, run, record results, hooks."""

from __future__ import annotations

import anyio
import anyio.lowlevel

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
        await anyio.lowlevel.checkpoint()

    jobs = await app.enqueue_many([count.build(n=i) for i in range(200)])
    async with app.worker({"default": 4}):
        for job in jobs:
            await app.wait(job.id, timeout=30)
    assert runs == {i: 1 for i in range(200)}
    assert all(j.state is JobState.COMPLETED for j in await app.list_jobs(limit=1000))


async def test_wait_with_zero_timeout_returns_a_final_job(app: aqueue.App) -> None:
    @app.job
    async def one() -> int:
        return 1

    job = await one.enqueue()
    async with app.worker({"default": 1}):
        await app.wait(job.id, timeout=10)
    done = await app.wait(job.id, timeout=0)
    assert done.state is JobState.COMPLETED


async def test_errors_in_the_worker_block_come_out_unwrapped(app: aqueue.App) -> None:
    @app.job
    async def never() -> None:
        await anyio.sleep_forever()

    job = await never.enqueue()
    try:
        async with app.worker({"default": 1}):
            await app.wait(job.id, timeout=0.3)
    except TimeoutError as exc:
        assert str(job.id) in str(exc)
    else:
        raise AssertionError("app.wait should have timed out")


async def test_arguments_invalid_at_run_time_discard_the_job(app: aqueue.App) -> None:
    job = await app.enqueue("strict", {"n": "not a number"}, allow_unknown=True)

    @app.job
    async def strict(n: int) -> int:
        return n

    async with app.worker({"default": 1}):
        done = await app.wait(job.id, timeout=10)
    assert done.state is JobState.DISCARDED
    assert done.attempt == 1
    assert done.errors[-1]["type"] == "InvalidJobArgs"
    assert "n" in done.errors[-1]["message"]
