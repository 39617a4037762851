"""Cancelling running jobs from another node, and shutting workers down: graceful, hard,
repeated, and from an outer cancel scope."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

import aqueue


async def get(app: aqueue.App, job_id: int) -> aqueue.Job:
    job = await app.get_job(job_id)
    assert job is not None
    return job


async def running_jobs(app: aqueue.App) -> list[aqueue.Job]:
    return await app.list_jobs(state="running")


# -- app.cancel ------------------------------------------------------------------------------


async def test_cancel_from_another_node_interrupts_the_running_job(
    app: aqueue.App, make_app: Callable[..., aqueue.App]
) -> None:
    started = anyio.Event()
    got_cancelled = anyio.Event()
    reached_end: list[bool] = []

    @app.job
    async def long_task() -> str:
        started.set()
        try:
            await anyio.sleep(3600)
        except anyio.get_cancelled_exc_class():
            got_cancelled.set()
            raise
        reached_end.append(True)
        return "finished"

    @app.job
    async def other() -> str:
        return "other"

    job = await long_task.enqueue()
    async with app.worker({"default": 2}):
        await started.wait()
        async with make_app() as admin:  # another node: no worker, no shared memory
            now = await admin.cancel(job.id)
            # Running until its node stops it (or already cancelled, if that node was quick).
            assert now is not None
            assert now.state in (aqueue.JobState.RUNNING, aqueue.JobState.CANCELLED)
            with anyio.fail_after(5):
                await got_cancelled.wait()
            done = await admin.wait(job.id, timeout=5)
        assert (await app.wait(job.id, timeout=5)).state is aqueue.JobState.CANCELLED
        # The worker carries on.
        after = await app.wait((await other.enqueue()).id, timeout=5)

    assert done.state is aqueue.JobState.CANCELLED
    assert done.finalized_at is not None and done.result is None
    assert reached_end == []
    (error,) = done.errors
    assert error["type"] == "Cancel" and error["attempt"] == 1
    assert after.state is aqueue.JobState.COMPLETED
    assert await running_jobs(app) == []


async def test_cancel_is_delivered_when_the_job_next_awaits(app: aqueue.App) -> None:
    started = anyio.Event()
    proceed = anyio.Event()
    steps: list[str] = []

    @app.job
    async def stepwise() -> None:
        started.set()
        await proceed.wait()  # the test cancels while the job waits here
        steps.append("after-proceed")
        await anyio.sleep(3600)
        steps.append("never")

    job = await stepwise.enqueue()
    async with app.worker():
        await started.wait()
        await app.cancel(job.id)
        done = await app.wait(job.id, timeout=5)
    assert done.state is aqueue.JobState.CANCELLED
    assert steps == []  # cancelled at the await it was blocked on


# -- hard shutdown -----------------------------------------------------------------------------


async def test_job_outliving_shutdown_timeout_goes_back_to_available(
    app: aqueue.App, make_app: Callable[..., aqueue.App]
) -> None:
    started = anyio.Event()
    release = anyio.Event()
    cancelled_at: list[float] = []
    runs: list[int] = []

    async def stubborn(ctx: aqueue.JobContext) -> str:
        runs.append(ctx.attempt)
        started.set()
        try:
            await release.wait()
        except anyio.get_cancelled_exc_class():
            cancelled_at.append(anyio.current_time())
            raise
        return "done at last"

    short = make_app(shutdown_timeout=0.3)
    short.job(name="stubborn")(stubborn)
    app.job(name="stubborn")(stubborn)

    async with short:
        job = await short.enqueue("stubborn")
        async with short.worker():
            await started.wait()
            stop_began = anyio.current_time()
        stop_took = anyio.current_time() - stop_began

    assert len(cancelled_at) == 1
    assert cancelled_at[0] - stop_began >= 0.25  # it was given shutdown_timeout first
    assert stop_took < 3
    back = await get(app, job.id)
    assert back.state is aqueue.JobState.AVAILABLE
    assert back.attempt == 0  # the interrupted attempt was refunded
    assert back.errors == [] and back.finalized_at is None and back.result is None
    assert await running_jobs(app) == []

    release.set()
    async with app.worker():
        done = await app.wait(job.id, timeout=5)
    assert (done.state, done.result, done.attempt) == (aqueue.JobState.COMPLETED, "done at last", 1)
    assert runs == [1, 1]


async def test_graceful_shutdown_lets_a_running_job_finish(app: aqueue.App) -> None:
    started = anyio.Event()
    interrupted: list[bool] = []

    @app.job
    async def finishing() -> str:
        started.set()
        try:
            await anyio.sleep(0.5)  # well inside shutdown_timeout=5
        except anyio.get_cancelled_exc_class():
            interrupted.append(True)
            raise
        return "made it"

    @app.job
    async def late() -> None:
        pass

    job = await finishing.enqueue()
    async with app.worker() as worker:
        await started.wait()
        worker.request_stop()
        # Stop claiming comes first: this job must wait for the next worker.
        late_job = await late.enqueue()
    done = await get(app, job.id)
    assert (done.state, done.result) == (aqueue.JobState.COMPLETED, "made it")
    assert interrupted == []
    still_waiting = await get(app, late_job.id)
    assert (still_waiting.state, still_waiting.attempt) == (aqueue.JobState.AVAILABLE, 0)


# -- stop() ------------------------------------------------------------------------------------


async def test_stop_is_idempotent(app: aqueue.App) -> None:
    @app.job
    async def quick() -> int:
        return 1

    async with app.worker() as worker:
        done = await app.wait((await quick.enqueue()).id, timeout=5)
        assert done.state is aqueue.JobState.COMPLETED
        with anyio.fail_after(10):
            await worker.stop()
            await worker.stop()
            async with anyio.create_task_group() as tg:  # concurrent callers, too
                tg.start_soon(worker.stop)
                tg.start_soon(worker.stop)
        after_stop = await quick.enqueue()
    with anyio.fail_after(5):
        await worker.stop()  # after the block closed it as well
    assert worker.running_jobs == 0
    # A stopped worker claims nothing.
    assert (await get(app, after_stop.id)).state is aqueue.JobState.AVAILABLE


async def test_stop_on_a_worker_that_never_started(app: aqueue.App) -> None:
    worker = aqueue.Worker(app, {"default": 1})
    with anyio.fail_after(2):
        await worker.stop()
        await worker.stop()


# -- cancellation from outside -------------------------------------------------------------------


async def test_run_worker_cancelled_from_outside_shuts_down_gracefully(app: aqueue.App) -> None:
    started = anyio.Event()
    interrupted: list[bool] = []

    @app.job
    async def finishing() -> str:
        started.set()
        try:
            await anyio.sleep(0.3)
        except anyio.get_cancelled_exc_class():
            interrupted.append(True)
            raise
        return "finished"

    job = await finishing.enqueue()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:  # what the CLI does on SIGTERM
            tg.start_soon(app.run_worker, {"default": 2})
            await started.wait()
            tg.cancel_scope.cancel()

    done = await get(app, job.id)
    assert (done.state, done.result) == (aqueue.JobState.COMPLETED, "finished")
    assert interrupted == []
    assert await running_jobs(app) == []


async def test_run_worker_cancelled_with_a_stuck_job_leaves_nothing_running(
    app: aqueue.App, make_app: Callable[..., aqueue.App]
) -> None:
    started = anyio.Event()
    short = make_app(shutdown_timeout=0.2)

    @short.job
    async def stuck() -> None:
        started.set()
        await anyio.sleep_forever()

    async with short:
        job = await stuck.enqueue()
        with anyio.fail_after(10), anyio.move_on_after(30) as outer:
            async with anyio.create_task_group() as tg:
                tg.start_soon(short.run_worker)
                await started.wait()
                outer.cancel()

    back = await get(app, job.id)
    assert (back.state, back.attempt, back.errors) == (aqueue.JobState.AVAILABLE, 0, [])
    assert await running_jobs(app) == []


@pytest.mark.parametrize("unknown_jobs", [1, 20])
async def test_worker_keeps_running_with_unknown_kinds_in_its_queue(
    app: aqueue.App, unknown_jobs: int
) -> None:
    @app.job
    async def known(n: int) -> int:
        return n

    strangers = [
        await app.enqueue("from_a_newer_deploy", {"i": i}, allow_unknown=True, priority=-1)
        for i in range(unknown_jobs)
    ]
    async with app.worker({"default": 1}) as worker:
        for n in range(5):
            done = await app.wait((await known.enqueue(n=n)).id, timeout=5)
            assert (done.state, done.result) == (aqueue.JobState.COMPLETED, n)
        assert worker.running_jobs == 0
    for stranger in strangers:
        left = await get(app, stranger.id)
        assert (left.state, left.attempt, left.errors) == (aqueue.JobState.AVAILABLE, 0, [])
