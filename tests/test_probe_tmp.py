from __future__ import annotations
import logging
import anyio
import aqueue
from aqueue.jobs import JobState


async def test_outer_cancel(app: aqueue.App) -> None:
    started = anyio.Event()
    release = anyio.Event()
    log = []

    @app.job
    async def blocker() -> str:
        started.set()
        try:
            await anyio.sleep(0.5)
        except BaseException as e:
            log.append(type(e).__name__)
            raise
        return "done"

    job = await blocker.enqueue()
    with anyio.move_on_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(app.run_worker)
            await started.wait()
            tg.cancel_scope.cancel()
    j = await app.get_job(job.id)
    print("STATE", j.state, j.attempt, j.errors, log)


async def test_nul_result(app: aqueue.App, caplog) -> None:
    @app.job
    async def nul() -> str:
        return "a\x00b"

    @app.job
    async def ok() -> int:
        return 1

    job = await nul.enqueue()
    async with app.worker():
        with anyio.move_on_after(3):
            j = await app.wait(job.id, timeout=3)
            print("NUL", j.state, j.errors)
        j2 = await ok.enqueue()
        with anyio.move_on_after(3):
            print("OK", (await app.wait(j2.id, timeout=3)).state)
    print("NULSTATE", (await app.get_job(job.id)).state)


async def test_hook_job(app: aqueue.App) -> None:
    got = []
    done = anyio.Event()

    @app.job
    async def f() -> int:
        return 1

    @app.after_process
    async def hook(job: aqueue.Job, outcome: aqueue.Outcome) -> None:
        got.append(job)
        done.set()

    job = await f.enqueue()
    async with app.worker():
        await done.wait()
    print("HOOKJOB", got)
