"""``App(testing="inline")``: enqueue runs the job at once in the caller's task, with no
database, through the real executor; what it cannot honour is refused, not faked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

import aqueue
from aqueue.testing import all_enqueued, assert_enqueued, refute_enqueued


def inline_app() -> aqueue.App:
    # A URL that could never be reached: nothing may connect.
    return aqueue.App("postgresql://nobody@127.0.0.1:1/none", testing="inline")


async def test_enqueue_runs_the_job_at_once_and_returns_it_final() -> None:
    app = inline_app()
    hooked: list[tuple[int, str, Any]] = []
    tasks: list[object] = []

    @app.job(queue="math", tags=["t"])
    async def add(ctx: aqueue.JobContext, a: int, b: int) -> int:
        tasks.append(anyio.get_current_task().id)
        await ctx.progress(1.0, "done")
        return a + b

    @app.after_process
    async def hook(job: aqueue.Job, outcome: aqueue.Outcome) -> None:
        hooked.append((job.id, job.state.value, outcome.result))

    async with app:  # opens nothing
        job = await add.enqueue(a=2, b=3)
    assert tasks == [anyio.get_current_task().id]  # in the caller's task
    assert job.state is aqueue.JobState.COMPLETED and job.result == 5
    assert (job.attempt, job.queue, list(job.tags)) == (1, "math", ["t"])
    assert job.finalized_at is not None and (job.progress, job.progress_note) == (1.0, "done")
    assert hooked == [(job.id, "completed", 5)]
    assert await app.get_job(job.id) == job
    assert await app.wait(job.id, timeout=1) == job
    assert await app.list_jobs(queue="math") == [job]
    assert await app.list_jobs(queue="other") == []


async def test_bad_arguments_raise_before_anything_runs() -> None:
    app = inline_app()
    ran: list[int] = []

    @app.job
    async def work(n: int) -> None:
        ran.append(n)

    with pytest.raises(aqueue.InvalidJobArgs):
        await work.enqueue(n="many")  # type: ignore[arg-type]
    with pytest.raises(aqueue.UnknownJobKind):
        await app.enqueue("nope", {})
    assert ran == [] and await app.list_jobs() == []


async def test_failures_are_retried_at_once_until_final() -> None:
    app = inline_app()
    attempts: list[int] = []

    @app.job(max_attempts=3, retry=aqueue.Backoff(base=3600))  # no delay is waited inline
    async def flaky(ctx: aqueue.JobContext, succeed_on: int) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < succeed_on:
            raise RuntimeError(f"attempt {ctx.attempt}")
        return "ok"

    done = await flaky.enqueue(succeed_on=2)
    assert done.state is aqueue.JobState.COMPLETED and done.result == "ok"
    assert attempts == [1, 2] and [e["message"] for e in done.errors] == ["attempt 1"]
    attempts.clear()
    gave_up = await flaky.enqueue(succeed_on=99)
    assert gave_up.state is aqueue.JobState.DISCARDED and gave_up.attempt == 3
    assert attempts == [1, 2, 3] and len(gave_up.errors) == 3


async def test_timeouts_discards_cancels_and_snoozes() -> None:
    app = inline_app()

    @app.job(timeout=0.05, max_attempts=1)
    async def slow() -> None:
        await anyio.sleep(10)

    @app.job
    async def refuses() -> None:
        raise aqueue.Cancel("not wanted")

    @app.job
    async def later() -> None:
        raise aqueue.Snooze(60)

    timed_out = await slow.enqueue()
    assert timed_out.state is aqueue.JobState.DISCARDED
    assert timed_out.errors[0]["type"] == "JobTimeout"
    assert (await refuses.enqueue()).state is aqueue.JobState.CANCELLED
    snoozed = await later.enqueue()
    # A snooze ends the run: the job waits, its attempt given back.
    assert snoozed.state is aqueue.JobState.SCHEDULED and snoozed.attempt == 0
    with pytest.raises(TimeoutError, match="scheduled"):
        await app.wait(snoozed.id, timeout=5)


async def test_middleware_wraps_inline_runs_and_jobs_can_enqueue_jobs() -> None:
    app = inline_app()
    order: list[str] = []

    @app.middleware
    async def around(job: aqueue.Job, call_next: Callable[[], Awaitable[Any]]) -> Any:
        order.append(f"in:{job.kind}")
        result = await call_next()
        order.append(f"out:{job.kind}")
        return result

    @app.enqueue_middleware
    async def tag(call: aqueue.EnqueueCall, call_next: Callable[[], Awaitable[Any]]) -> Any:
        call.meta["origin"] = "test"
        return await call_next()

    @app.job
    async def child(n: int) -> int:
        return n * 2

    @app.job
    async def parent(ctx: aqueue.JobContext) -> int:
        job = await child.enqueue(n=21)  # runs inline too, before this returns
        return int(job.result)

    done = await parent.enqueue()
    assert done.result == 42 and done.meta == {"origin": "test"}
    assert order == ["in:parent", "in:child", "out:child", "out:parent"]
    # The testing helpers read what an inline App ran.
    await assert_enqueued(app, child, args={"n": 21}, state="completed", count=1)
    await refute_enqueued(app, child, args={"n": 1})
    assert [j.kind for j in await all_enqueued(app)] == ["parent", "child"]


async def test_unique_is_refused_and_when_options_are_ignored() -> None:
    app = inline_app()
    ran: list[str] = []

    @app.job
    async def work(name: str) -> None:
        ran.append(name)

    with pytest.raises(aqueue.InvalidOption, match="unique"):
        await work.options(unique=aqueue.Unique()).enqueue(name="u")
    with pytest.raises(aqueue.InvalidOption, match="unique"):
        await app.enqueue_many(
            [work.build(name="a"), work.options(unique=aqueue.Unique()).build(name="b")]
        )
    assert ran == []  # nothing of a refused batch ran
    job = await work.options(schedule_in=3600, conn=object(), partition_key="p").enqueue(name="now")
    assert ran == ["now"] and job.state is aqueue.JobState.COMPLETED
    jobs = await app.enqueue_many([work.build(name="x"), work.build(name="y")])
    assert ran == ["now", "x", "y"] and len({j.id for j in jobs}) == 2


async def test_unknown_kinds_are_recorded_waiting() -> None:
    app = inline_app()
    job = await app.enqueue("elsewhere.Job", {"a": 1}, allow_unknown=True)
    assert job.state is aqueue.JobState.AVAILABLE and job.args == {"a": 1}
    await assert_enqueued(app, "elsewhere.Job", state="available")


async def test_what_needs_a_database_says_so() -> None:
    app = inline_app()
    with pytest.raises(aqueue.ConfigurationError, match="inline"):
        async with app.transaction():
            pass
    with pytest.raises(aqueue.ConfigurationError, match="inline"):
        async with app.connection():
            pass
    with pytest.raises(aqueue.ConfigurationError, match="inline"):
        async with app.worker():
            pass
    with pytest.raises(aqueue.ConfigurationError, match="inline"):
        await app.migrate()
    with pytest.raises(aqueue.JobNotFound):
        await app.wait(12345)
    async with aqueue.lifespan(app):  # no pool, no worker
        assert not app.db.is_open


def test_inline_needs_no_url_and_other_modes_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AQUEUE_DATABASE_URL", raising=False)
    assert aqueue.App(testing="inline").testing == "inline"
    with pytest.raises(aqueue.ConfigurationError, match="no database URL"):
        aqueue.App()
    with pytest.raises(aqueue.ConfigurationError, match="testing"):
        aqueue.App(testing="eager")  # type: ignore[arg-type]


async def test_a_cancelled_caller_cancels_the_inline_job() -> None:
    app = inline_app()
    started = anyio.Event()

    @app.job
    async def forever() -> None:
        started.set()
        await anyio.sleep_forever()

    with anyio.move_on_after(5) as outer:
        async with anyio.create_task_group() as tg:
            tg.start_soon(forever.enqueue)
            await started.wait()
            tg.cancel_scope.cancel()
    assert not outer.cancelled_caught  # the cancellation ended it, not the deadline
    [job] = await app.list_jobs()
    # Handed back, as a worker's shutdown would: waiting again, the attempt given back.
    assert job.state is aqueue.JobState.AVAILABLE and job.attempt == 0


async def test_workflows_and_batches_are_refused_before_anything_runs() -> None:
    app = inline_app()
    ran: list[str] = []

    @app.job
    async def step(name: str) -> None:
        ran.append(name)

    workflow = aqueue.Workflow("etl")
    workflow.add("fetch", step.build(name="fetch"))
    workflow.add("load", step.build(name="load"), deps=["fetch"])
    with pytest.raises(aqueue.ConfigurationError, match="inline mode cannot run a workflow"):
        await app.enqueue_workflow(workflow)
    with pytest.raises(aqueue.ConfigurationError, match="inline mode cannot run a batch"):
        await app.enqueue_batch([step.build(name="a")], callback=step.build(name="done"))
    assert ran == [] and await app.list_jobs() == []


async def test_steps_are_recorded_across_the_inline_retries() -> None:
    app = inline_app()
    charged: list[int] = []

    async def charge(order_id: int) -> dict[str, int]:
        charged.append(order_id)
        return {"receipt": order_id * 10}

    @app.job(max_attempts=3)
    async def checkout(ctx: aqueue.JobContext, order_id: int) -> int:
        receipt = await ctx.step("charge", charge, order_id)
        if ctx.attempt == 1:
            raise RuntimeError("shipping failed after the charge")
        return int(receipt["receipt"])

    done = await checkout.enqueue(order_id=7)
    assert done.state is aqueue.JobState.COMPLETED and done.result == 70
    assert charged == [7]  # the retry got the recorded step back instead of charging again
