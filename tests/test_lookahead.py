"""Claiming ahead: short jobs get claimed a round trip early; a job waiting for a slot can
be cancelled without running, and is handed back unstarted at shutdown."""

from __future__ import annotations

import anyio

import aqueue
from aqueue.worker.producer import Producer
from aqueue.worker.worker import Worker
from tests.support import eventually


async def test_lookahead_follows_claim_time_over_run_time(app: aqueue.App) -> None:
    worker = Worker(app, {"default": 100})
    producer = worker.producers["default"]
    assert producer.lookahead() == 0  # nothing measured yet: no lookahead
    producer._claim_avg, producer._run_avg = 0.002, 1.0  # long jobs
    assert producer.lookahead() == 0
    producer._claim_avg, producer._run_avg = 0.002, 0.0001  # a claim lasts 20 jobs
    assert producer.lookahead() == 100  # capped at the concurrency
    producer._claim_avg, producer._run_avg = 0.002, 0.01
    assert producer.lookahead() == 20


async def _start_with_one_waiting(
    app: aqueue.App, worker: Worker, gate: anyio.Event, ran: list[int]
) -> tuple[Producer, aqueue.Job, aqueue.Job]:
    producer = worker.producers["default"]
    # Short jobs first, so the worker has measured that a claim outlasts a job.
    quick = [await app.enqueue("record", {"n": n}) for n in range(20)]
    for job in quick:
        await app.wait(job.id, timeout=20)
    await eventually(lambda: producer.lookahead() >= 1, what="a lookahead")
    blocker = await app.enqueue("block")
    await eventually(lambda: blocker.id in producer.running, what="the blocker running")
    waiting = await app.enqueue("record", {"n": 100})
    await eventually(lambda: waiting.id in producer.waiting, what="a job claimed ahead")
    assert waiting.id not in producer.running
    ran.clear()
    return producer, blocker, waiting


def _jobs(app: aqueue.App, gate: anyio.Event, ran: list[int]) -> None:
    @app.job
    async def record(n: int) -> int:
        ran.append(n)
        return n

    @app.job
    async def block() -> str:
        await gate.wait()
        return "released"


async def test_a_job_cancelled_while_waiting_for_a_slot_never_runs(app: aqueue.App) -> None:
    gate = anyio.Event()
    ran: list[int] = []
    _jobs(app, gate, ran)
    async with app.worker({"default": 1}) as worker:
        producer, blocker, waiting = await _start_with_one_waiting(app, worker, gate, ran)
        await app.cancel(waiting.id)
        await eventually(lambda: waiting.id in producer._cancel_waiting, what="the flag")
        gate.set()
        cancelled = await app.wait(waiting.id, timeout=20)
        done = await app.wait(blocker.id, timeout=20)
    assert cancelled.state is aqueue.JobState.CANCELLED
    assert cancelled.errors[-1]["type"] == "Cancel"
    assert ran == []  # the function was never entered
    assert done.state is aqueue.JobState.COMPLETED


async def test_a_job_claimed_ahead_is_handed_back_at_once_on_shutdown(app: aqueue.App) -> None:
    gate = anyio.Event()
    ran: list[int] = []
    _jobs(app, gate, ran)
    async with app.worker({"default": 1}) as worker:
        _producer, blocker, waiting = await _start_with_one_waiting(app, worker, gate, ran)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.stop)

            async def handed_back() -> bool:
                job = await app.get_job(waiting.id)
                return job is not None and job.state is aqueue.JobState.AVAILABLE

            # Back while the blocker still runs: not after the graceful wait.
            await eventually(handed_back, what="the waiting job handed back")
            still = await app.get_job(blocker.id)
            assert still is not None and still.state is aqueue.JobState.RUNNING
            gate.set()
    back = await app.get_job(waiting.id)
    assert back is not None
    assert back.attempt == 0 and back.errors == []
    assert ran == []
    finished = await app.get_job(blocker.id)
    assert finished is not None and finished.state is aqueue.JobState.COMPLETED
