"""Admin calls on real PostgreSQL: get, list, cancel, retry, delete, wait."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import aqueue
from aqueue.jobs import JobState

BAD_IDS: list[Any] = [0, -1, True, "1", 1.5, None, 2**63]


async def test_get_job_returns_the_row_or_none(app: aqueue.App) -> None:
    @app.job
    async def thing(x: int) -> None: ...

    job = await thing.enqueue(x=1)
    assert await app.get_job(job.id) == job
    assert await app.get_job(job.id + 1000) is None


async def test_list_jobs_filters_limit_and_order(app: aqueue.App) -> None:
    @app.job
    async def alpha(n: int) -> None: ...

    @app.job
    async def beta(n: int) -> None: ...

    a1 = await alpha.enqueue(n=1)
    b1 = await beta.options(queue="other").enqueue(n=2)
    a2 = await alpha.options(queue="other").enqueue(n=3)
    b2 = await beta.options(schedule_in=3600).enqueue(n=4)
    a3 = await alpha.enqueue(n=5)
    await app.cancel(a3.id)

    def ids(jobs: list[aqueue.Job]) -> list[int]:
        return [j.id for j in jobs]

    assert ids(await app.list_jobs()) == [a1.id, b1.id, a2.id, b2.id, a3.id]
    assert ids(await app.list_jobs(kind="alpha")) == [a1.id, a2.id, a3.id]
    assert ids(await app.list_jobs(queue="other")) == [b1.id, a2.id]
    assert ids(await app.list_jobs(queue="other", kind="beta")) == [b1.id]
    assert ids(await app.list_jobs(state="available")) == [a1.id, b1.id, a2.id]
    assert ids(await app.list_jobs(state=JobState.SCHEDULED)) == [b2.id]
    assert ids(await app.list_jobs(state="cancelled", kind="alpha")) == [a3.id]
    assert ids(await app.list_jobs(state="completed")) == []
    assert ids(await app.list_jobs(state="available", queue="default", kind="alpha")) == [a1.id]
    assert ids(await app.list_jobs(queue="nope")) == []
    assert ids(await app.list_jobs(limit=2)) == [a1.id, b1.id]
    assert ids(await app.list_jobs(kind="alpha", limit=1)) == [a1.id]
    listed = await app.list_jobs(kind="beta")
    assert listed[1] == await app.get_job(b2.id)


async def test_list_jobs_default_limit_is_100(app: aqueue.App) -> None:
    @app.job
    async def many(n: int) -> None: ...

    jobs = await app.enqueue_many([many.build(n=i) for i in range(105)])
    listed = await app.list_jobs()
    assert [j.id for j in listed] == [j.id for j in jobs[:100]]
    assert len(await app.list_jobs(limit=1000)) == 105


async def test_list_jobs_rejects_bad_filters(app: aqueue.App) -> None:
    with pytest.raises(aqueue.InvalidOption, match=r"^state:.*'finished'") as info:
        await app.list_jobs(state="finished")
    assert info.value.field == "state" and isinstance(info.value, ValueError)
    bad_limits: list[Any] = [0, -5, True, 1.5, 100_001]
    for limit in bad_limits:
        with pytest.raises(aqueue.InvalidOption, match=r"^limit:"):
            await app.list_jobs(limit=limit)
    with pytest.raises(aqueue.InvalidOption, match=r"^queue:"):
        await app.list_jobs(queue="")
    with pytest.raises(aqueue.InvalidOption, match=r"^kind:"):
        await app.list_jobs(kind="")


async def test_cancel_waiting_jobs(app: aqueue.App) -> None:
    ran: list[int] = []

    @app.job
    async def victim(n: int) -> None:
        ran.append(n)

    waiting = await victim.enqueue(n=1)
    scheduled = await victim.options(schedule_in=0.2).enqueue(n=2)
    for job in (waiting, scheduled):
        cancelled = await app.cancel(job.id)
        assert cancelled is not None and cancelled.id == job.id
        assert cancelled.state is JobState.CANCELLED
        assert cancelled.finalized_at is not None
        assert [(e["type"], e["message"]) for e in cancelled.errors] == [
            ("Cancelled", "cancelled by app.cancel")
        ]
        assert await app.get_job(job.id) == cancelled
        # app.wait returns at once: the job is final.
        assert (await app.wait(job.id, timeout=1)).state is JobState.CANCELLED

    marker = await victim.options(schedule_in=0.3).enqueue(n=3)
    async with app.worker({"default": 4}):
        await app.wait(marker.id, timeout=10)
    assert ran == [3]  # the cancelled jobs never ran, even once the scheduled one was due


async def test_cancel_final_job_leaves_it_unchanged(app: aqueue.App) -> None:
    @app.job
    async def quick() -> str:
        return "ok"

    job = await quick.enqueue()
    async with app.worker({"default": 1}):
        done = await app.wait(job.id, timeout=10)
    assert done.state is JobState.COMPLETED
    after = await app.cancel(job.id)
    assert after == done
    assert await app.get_job(job.id) == done


async def test_cancel_missing_job_returns_none(app: aqueue.App) -> None:
    assert await app.cancel(12345) is None


async def test_retry_discarded_job_out_of_attempts_gets_one_more(app: aqueue.App) -> None:
    calls: list[int] = []

    @app.job(max_attempts=1)
    async def flaky(ctx: aqueue.JobContext) -> int:
        calls.append(ctx.attempt)
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")
        return ctx.attempt

    job = await flaky.enqueue()
    async with app.worker({"default": 1}):
        failed = await app.wait(job.id, timeout=10)
    assert failed.state is JobState.DISCARDED
    assert (failed.attempt, failed.max_attempts) == (1, 1)
    assert failed.errors[0]["message"] == "first attempt fails"

    retried = await app.retry(job.id)
    assert retried.state is JobState.AVAILABLE
    assert retried.finalized_at is None
    assert (retried.attempt, retried.max_attempts) == (1, 2)
    assert retried.errors == failed.errors  # history is kept

    async with app.worker({"default": 1}):
        done = await app.wait(job.id, timeout=10)
    assert done.state is JobState.COMPLETED and done.result == 2
    assert calls == [1, 2]


async def test_retry_cancelled_job_runs_it(app: aqueue.App) -> None:
    @app.job
    async def revived() -> str:
        return "ran"

    job = await revived.options(schedule_in=3600).enqueue()
    await app.cancel(job.id)
    retried = await app.retry(job.id)
    assert retried.state is JobState.AVAILABLE and retried.finalized_at is None
    assert retried.scheduled_at <= datetime.now(UTC)
    assert retried.max_attempts == job.max_attempts
    async with app.worker({"default": 1}):
        done = await app.wait(job.id, timeout=10)
    assert done.state is JobState.COMPLETED and done.result == "ran" and done.attempt == 1


async def test_retry_retryable_and_scheduled_jobs_run_now(app: aqueue.App) -> None:
    failed_once: set[str] = set()

    @app.job(retry=aqueue.Backoff(base=3600, jitter=0))
    async def slow_retry(name: str) -> str:
        if name not in failed_once:
            failed_once.add(name)
            raise ValueError("boom")
        return name

    job = await slow_retry.enqueue(name="r")
    later = await slow_retry.options(scheduled_at=datetime.now(UTC) + timedelta(hours=2)).enqueue(
        name="s"
    )
    failed_once.add("s")
    failed = anyio.Event()

    @slow_retry.after_process
    async def on_outcome(done: aqueue.Job, outcome: aqueue.Outcome) -> None:
        if done.id == job.id and outcome.state is JobState.RETRYABLE:
            failed.set()

    async with app.worker({"default": 2}):
        with anyio.fail_after(10):
            await failed.wait()
    current = await app.get_job(job.id)
    assert current is not None and current.state is JobState.RETRYABLE
    assert current.scheduled_at > datetime.now(UTC) + timedelta(minutes=50)
    for waiting in (job, later):
        retried = await app.retry(waiting.id)
        assert retried.state is JobState.AVAILABLE
        assert retried.scheduled_at <= datetime.now(UTC)
    async with app.worker({"default": 2}):
        done = await app.wait(job.id, timeout=10)
        done_later = await app.wait(later.id, timeout=10)
    assert (done.state, done.result, done.attempt) == (JobState.COMPLETED, "r", 2)
    assert (done_later.state, done_later.result) == (JobState.COMPLETED, "s")


async def test_retry_rejects_other_states_and_missing_jobs(app: aqueue.App) -> None:
    started = anyio.Event()
    release = anyio.Event()

    @app.job
    async def blocker() -> None:
        started.set()
        await release.wait()

    @app.job
    async def quick() -> None: ...

    waiting = await quick.enqueue()
    with pytest.raises(aqueue.JobStateError, match=f"job {waiting.id} is available"):
        await app.retry(waiting.id)

    done_job = await quick.enqueue()
    running = await blocker.enqueue()
    async with app.worker({"default": 3}):
        await app.wait(done_job.id, timeout=10)
        with anyio.fail_after(10):
            await started.wait()
        with pytest.raises(aqueue.JobStateError, match=f"job {running.id} is running"):
            await app.retry(running.id)
        release.set()
        await app.wait(running.id, timeout=10)
    with pytest.raises(aqueue.JobStateError, match=f"job {done_job.id} is completed"):
        await app.retry(done_job.id)
    assert (await app.get_job(done_job.id)).state is JobState.COMPLETED  # type: ignore[union-attr]

    with pytest.raises(LookupError, match="999999"):
        await app.retry(999999)


async def test_delete(app: aqueue.App) -> None:
    started = anyio.Event()
    release = anyio.Event()

    @app.job
    async def blocker() -> str:
        started.set()
        await release.wait()
        return "finished"

    @app.job
    async def other() -> None: ...

    waiting = await other.enqueue()
    assert await app.delete(waiting.id) is True
    assert await app.get_job(waiting.id) is None
    assert await app.delete(waiting.id) is False
    assert await app.delete(424242) is False

    running = await blocker.enqueue()
    async with app.worker({"default": 1}):
        with anyio.fail_after(10):
            await started.wait()
        with pytest.raises(aqueue.JobStateError, match=f"job {running.id} is running"):
            await app.delete(running.id)
        release.set()
        done = await app.wait(running.id, timeout=10)
    assert done.result == "finished"  # the refused delete did not disturb it
    assert await app.delete(running.id) is True
    assert await app.list_jobs() == []


async def test_wait_times_out_on_an_unfinished_job(app: aqueue.App) -> None:
    @app.job
    async def never_run() -> None: ...

    job = await never_run.enqueue()
    start = anyio.current_time()
    with pytest.raises(TimeoutError, match=str(job.id)):
        await app.wait(job.id, timeout=0.3)
    assert 0.25 <= anyio.current_time() - start < 5
    with pytest.raises(TimeoutError):
        await app.wait(job.id, timeout=0)
    assert (await app.get_job(job.id)).state is JobState.AVAILABLE  # type: ignore[union-attr]


async def test_wait_on_a_missing_job(app: aqueue.App) -> None:
    with pytest.raises(LookupError, match="777"):
        await app.wait(777, timeout=5)


async def test_wait_wakes_on_completion(app: aqueue.App) -> None:
    release = anyio.Event()

    @app.job
    async def gated() -> int:
        await release.wait()
        return 42

    job = await gated.enqueue()
    async with app.worker({"default": 1}):
        result: list[aqueue.Job] = []

        async def waiter() -> None:
            result.append(await app.wait(job.id, timeout=10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            tg.start_soon(waiter)
            await anyio.lowlevel.checkpoint()
            release.set()
    assert [j.result for j in result] == [42, 42]


@pytest.mark.parametrize("bad", BAD_IDS, ids=[repr(b) for b in BAD_IDS])
async def test_bad_job_ids_are_rejected(app: aqueue.App, bad: Any) -> None:
    calls: list[Callable[[Any], Awaitable[Any]]] = [
        app.get_job,
        app.cancel,
        app.retry,
        app.delete,
        app.wait,
    ]
    for call in calls:
        with pytest.raises(aqueue.InvalidOption, match=r"^job_id:") as info:
            await call(bad)
        assert isinstance(info.value, ValueError)


async def test_wait_rejects_a_bad_timeout(app: aqueue.App) -> None:
    @app.job
    async def t() -> None: ...

    job = await t.enqueue()
    for timeout in (-1, "5"):
        with pytest.raises(aqueue.InvalidOption, match=r"^timeout:"):
            await app.wait(job.id, timeout=timeout)  # type: ignore[arg-type]
