"""``aqueue.lifespan``: the App (and, if asked, a worker) for the lifespan of a web app."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

import aqueue


async def test_lifespan_opens_the_app_and_runs_a_worker(app: aqueue.App) -> None:
    @app.job
    async def double(n: int) -> int:
        return 2 * n

    await app.close()
    async with aqueue.lifespan(app):
        assert app.db.is_open
        job = await double.enqueue(n=21)
        done = await app.wait(job.id, timeout=10)
        assert done.result == 42
    assert not app.db.is_open


async def test_lifespan_without_a_worker_only_opens_the_app(app: aqueue.App) -> None:
    @app.job
    async def double(n: int) -> int:
        return 2 * n

    async with aqueue.lifespan(app, worker=False):
        job = await double.enqueue(n=1)
        with pytest.raises(TimeoutError):  # nothing runs it
            await app.wait(job.id, timeout=0.3)
    async with app:
        stored = await app.get_job(job.id)
    assert stored is not None and stored.state is aqueue.JobState.AVAILABLE


async def test_lifespan_is_a_fastapi_lifespan_as_it_is(app: aqueue.App) -> None:
    @app.job(queue="only")
    async def hello() -> str:
        return "hi"

    api = FastAPI(lifespan=aqueue.lifespan(app, queues={"only": 2}))
    for _ in range(2):  # each startup gets a lifespan of its own
        async with api.router.lifespan_context(api):
            job = await hello.enqueue()
            assert (await app.wait(job.id, timeout=10)).result == "hi"
        assert not app.db.is_open


async def test_one_lifespan_cannot_be_entered_twice(app: aqueue.App) -> None:
    span = aqueue.lifespan(app, worker=False)
    async with span:
        with pytest.raises(RuntimeError, match="already entered"):
            async with span:
                pass
