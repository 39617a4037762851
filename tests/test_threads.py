"""Plain ``def`` jobs run in worker threads, bounded per worker; a timed-out thread keeps
its slot until it returns (aqueue/threads.py argues why)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.from_thread

import aqueue
from aqueue.jobs import JobState
from tests.support import eventually


async def test_def_job_runs_in_a_thread_with_its_context(app: aqueue.App) -> None:
    loop_thread = threading.get_ident()
    seen: dict[str, object] = {}

    @app.job
    def shout(ctx: aqueue.JobContext, word: str, times: int = 2) -> str:
        seen["thread"] = threading.get_ident()
        seen["attempt"] = ctx.attempt
        ctx.logger.info("shouting %s", word)
        return (word.upper() + "!") * times

    job = await shout.enqueue(word="hi")
    async with app.worker({"default": 2}):
        done = await app.wait(job.id, timeout=20)
    assert (done.state, done.result) == (JobState.COMPLETED, "HI!HI!")
    assert seen["thread"] != loop_thread and seen["attempt"] == 1


async def test_a_failing_def_job_is_retried_like_any(app: aqueue.App) -> None:
    @app.job(max_attempts=1)
    def broken() -> None:
        raise ValueError("nope")

    job = await broken.enqueue()
    async with app.worker({"default": 1}):
        done = await app.wait(job.id, timeout=20)
    assert done.state is JobState.DISCARDED
    assert (done.errors[-1]["type"], done.errors[-1]["message"]) == ("ValueError", "nope")


async def test_job_threads_bounds_the_threads_of_a_worker(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = make_app(job_threads=2)
    lock = threading.Lock()
    active = 0
    most = 0
    release = threading.Event()

    @app.job
    def block(n: int) -> int:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        try:
            release.wait(30)
        finally:
            with lock:
                active -= 1
        return n

    async with app:
        await app.migrate()
        jobs = await app.enqueue_many([block.build(n=i) for i in range(6)])
        async with app.worker({"default": 6}):

            async def all_claimed() -> bool:
                running = await app.list_jobs(state="running")
                return len(running) == 6 and active == 2

            # Six slots hold the six jobs; only two of them got a thread.
            await eventually(all_claimed, what="six running jobs, two threads")
            release.set()
            for job in jobs:
                assert (await app.wait(job.id, timeout=30)).state is JobState.COMPLETED
    assert most == 2


async def test_a_timed_out_thread_keeps_its_slot_until_it_returns(app: aqueue.App) -> None:
    deadline_seen = threading.Event()
    release = threading.Event()
    second_ran = threading.Event()

    @app.job(timeout=0.2, max_attempts=1)
    def stuck() -> str:
        # Runs past its timeout: sees, from the thread, that the attempt was timed out,
        # and goes on anyway (a thread cannot be interrupted).
        while not deadline_seen.is_set():
            try:
                anyio.from_thread.check_cancelled()
            except asyncio.CancelledError:
                deadline_seen.set()
            time.sleep(0.01)
        release.wait(30)
        return "late"

    @app.job
    def second() -> str:
        second_ran.set()
        return "ok"

    first = await stuck.enqueue()
    after = await second.enqueue()
    async with app.worker({"default": 1}):
        await eventually(deadline_seen.is_set, what="the timeout, seen from the thread")
        # The timeout passed, the thread still runs: its slot is still taken (the one
        # slot of the queue), so the next job has not started and no outcome is written.
        still = await app.get_job(first.id)
        assert still is not None and still.state is JobState.RUNNING
        assert not second_ran.is_set()
        release.set()
        timed_out = await app.wait(first.id, timeout=20)
        assert (await app.wait(after.id, timeout=20)).result == "ok"
    # Marked timed out, its late result dropped.
    assert timed_out.state is JobState.DISCARDED and timed_out.result is None
    assert timed_out.errors[-1]["type"] == "JobTimeout"


async def test_a_def_job_that_checks_stops_when_cancelled(app: aqueue.App) -> None:
    started = threading.Event()

    @app.job
    def polite() -> None:
        started.set()
        while True:
            anyio.from_thread.check_cancelled()
            time.sleep(0.01)

    job = await polite.enqueue()
    async with app.worker({"default": 1}):
        await eventually(started.is_set, what="the job's thread")
        await app.cancel(job.id)
        done = await app.wait(job.id, timeout=20)
    assert done.state is JobState.CANCELLED


async def test_middleware_wraps_a_def_job_like_any(app: aqueue.App) -> None:
    seen: list[str] = []

    @app.middleware
    async def around(job: aqueue.Job, call_next: Callable[[], Awaitable[object]]) -> object:
        seen.append(f"before {job.kind}")
        result = await call_next()
        seen.append(f"after {result!r}")
        return result

    @app.job
    def double(n: int) -> int:
        return n * 2

    job = await double.enqueue(n=21)
    async with app.worker({"default": 1}):
        done = await app.wait(job.id, timeout=20)
    assert done.result == 42 and seen == ["before double", "after 42"]
