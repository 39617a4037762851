"""``@app.middleware`` around every attempt, and ``app.transaction()`` for enqueues that
commit with the caller's own writes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import aqueue
from aqueue.testing import run_until_idle


async def test_middleware_wraps_every_attempt_outermost_first(app: aqueue.App) -> None:
    calls: list[str] = []

    @app.middleware
    async def outer(job: aqueue.Job, call_next: Callable[[], Awaitable[Any]]) -> Any:
        calls.append(f"outer-in:{job.kind}:{job.attempt}")
        result = await call_next()
        calls.append(f"outer-out:{result}")
        return result

    @app.middleware
    async def inner(job: aqueue.Job, call_next: Callable[[], Awaitable[Any]]) -> Any:
        calls.append(f"inner-in:{dict(job.args)}")
        return {"wrapped": await call_next()}

    @app.job
    async def double(n: int) -> int:
        calls.append("job")
        return n * 2

    job = await double.enqueue(n=21)
    await run_until_idle(app)
    done = await app.get_job(job.id)
    assert done is not None and done.state is aqueue.JobState.COMPLETED
    assert done.result == {"wrapped": 42}  # what the outermost middleware returned
    assert calls == [
        "outer-in:double:1",
        "inner-in:{'n': 21}",
        "job",
        "outer-out:{'wrapped': 42}",
    ]


async def test_what_middleware_raises_is_the_attempts_outcome(app: aqueue.App) -> None:
    @app.middleware
    async def refuse(job: aqueue.Job, call_next: Callable[[], Awaitable[Any]]) -> Any:
        if job.meta.get("tenant") == "blocked":
            raise aqueue.Discard("tenant is blocked")
        return await call_next()

    ran: list[str] = []

    @app.job
    async def work(tenant: str) -> None:
        ran.append(tenant)

    blocked = await work.options(meta={"tenant": "blocked"}).enqueue(tenant="blocked")
    allowed = await work.options(meta={"tenant": "ok"}).enqueue(tenant="ok")
    await run_until_idle(app)
    assert ran == ["ok"]
    first = await app.get_job(blocked.id)
    second = await app.get_job(allowed.id)
    assert first is not None and first.state is aqueue.JobState.DISCARDED
    assert first.errors[-1]["message"] == "tenant is blocked"
    assert second is not None and second.state is aqueue.JobState.COMPLETED


def test_middleware_must_be_async(app: aqueue.App) -> None:
    def not_async(job: aqueue.Job, call_next: Callable[[], Awaitable[Any]]) -> Any:
        return call_next()

    with pytest.raises(aqueue.ConfigurationError, match="async def"):
        app.middleware(not_async)  # type: ignore[type-var]


async def test_app_transaction_enqueues_only_what_commits(app: aqueue.App) -> None:
    @app.job
    async def note(text: str) -> None: ...

    with pytest.raises(RuntimeError, match="roll back"):
        async with app.transaction() as conn:
            await note.options(conn=conn).enqueue(text="rolled back")
            raise RuntimeError("roll back")
    assert await app.list_jobs() == []

    async with app.transaction() as conn:
        kept = await note.options(conn=conn).enqueue(text="kept")
    [job] = await app.list_jobs()
    assert job.id == kept.id and job.args == {"text": "kept"}


async def test_worker_can_still_be_built_from_the_app(app: aqueue.App) -> None:
    worker = aqueue.Worker(app, {"default": 1})
    assert worker.queues == {"default": 1}
    await worker.stop()  # never started: returns at once


async def test_enqueue_middleware_wraps_every_enqueue_call_and_adds_meta(
    app: aqueue.App,
) -> None:
    seen: list[tuple[str, int, bool]] = []

    @app.enqueue_middleware
    async def outer(call: aqueue.EnqueueCall, call_next: Any) -> list[aqueue.Job]:
        seen.append(("outer", len(call.requests), call.transactional))
        call.meta["origin"] = "outer"
        jobs: list[aqueue.Job] = await call_next()
        seen.append(("outer done", len(jobs), call.transactional))
        return jobs

    @app.enqueue_middleware
    async def inner(call: aqueue.EnqueueCall, call_next: Any) -> list[aqueue.Job]:
        seen.append(("inner", len(call.requests), call.transactional))
        call.meta["request_id"] = "r-1"
        result: list[aqueue.Job] = await call_next()
        return result

    @app.job(meta={"origin": "default", "team": "ops"})
    async def task(n: int) -> None: ...

    one = await task.enqueue(n=1)
    async with app.transaction() as conn:
        many = await app.enqueue_many([task.build(n=2), task.build(n=3)], conn=conn)
    assert seen == [
        ("outer", 1, False), ("inner", 1, False), ("outer done", 1, False),
        ("outer", 2, True), ("inner", 2, True), ("outer done", 2, True),
    ]  # fmt: skip
    # The middleware's meta is merged over the job's own; the row holds what the Job says.
    expected = {"origin": "outer", "team": "ops", "request_id": "r-1"}
    for job in [one, *many]:
        assert dict(job.meta) == expected
        stored = await app.get_job(job.id)
        assert stored is not None and dict(stored.meta) == expected


async def test_enqueue_middleware_that_raises_writes_nothing(app: aqueue.App) -> None:
    @app.enqueue_middleware
    async def refuse(call: aqueue.EnqueueCall, call_next: Any) -> list[aqueue.Job]:
        raise PermissionError("no enqueues today")

    @app.job
    async def task() -> None: ...

    with pytest.raises(PermissionError):
        await task.enqueue()
    assert await app.list_jobs() == []
