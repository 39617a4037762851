"""Resumable steps (``ctx.step``) on real PostgreSQL: a completed step is recorded under
(job, name) and a retried job gets its result back without running it again; names, not
positions, identify steps; results must be JSON; a stale attempt records nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import aqueue
from aqueue.steps import StepRecorder
from aqueue.testing import run_until_idle


async def test_a_retry_skips_completed_steps(app: aqueue.App) -> None:
    calls: list[str] = []

    async def charge(order: int) -> dict[str, Any]:
        calls.append(f"charge {order}")
        return {"charge_id": f"ch_{order}"}

    def receipt(charge_id: str) -> str:  # a plain function works too
        calls.append(f"receipt {charge_id}")
        if calls.count(f"receipt {charge_id}") == 1:
            raise ConnectionError("mail server down")
        return "sent"

    @app.job(retry=aqueue.Backoff(base=0.01, max_delay=0.01, jitter=0))
    async def checkout(ctx: aqueue.JobContext, order: int) -> str:
        charged = await ctx.step("charge", charge, order)
        return await ctx.step("receipt", receipt, charged["charge_id"])

    job = await checkout.enqueue(order=7)
    async with app.worker():
        done = await app.wait(job.id, timeout=10)
    assert done.state == aqueue.JobState.COMPLETED and done.result == "sent"
    assert done.attempt == 2
    # Charged once, although the job ran twice; the failed step ran again.
    assert calls == ["charge 7", "receipt ch_7", "receipt ch_7"]
    steps = await app.db.job_steps([job.id])
    assert [(r["name"], r["attempt"]) for r in steps] == [("charge", 1), ("receipt", 2)]


async def test_steps_run_concurrently_by_name(app: aqueue.App) -> None:
    calls: list[str] = []

    async def part(name: str, gate: asyncio.Event | None = None) -> str:
        calls.append(name)
        return name.upper()

    @app.job(max_attempts=2, retry=aqueue.Backoff(base=0.01, max_delay=0.01, jitter=0))
    async def fan(ctx: aqueue.JobContext) -> list[str]:
        # The order differs per attempt: positions would mix the results up, names do not.
        names = ["a", "b", "c"] if ctx.attempt == 1 else ["c", "a", "b"]
        results = await asyncio.gather(*(ctx.step(n, part, n) for n in names))
        if ctx.attempt == 1:
            raise RuntimeError("retry me")
        # The same step twice in one attempt: one run, one record.
        again = await asyncio.gather(ctx.step("d", part, "d"), ctx.step("d", part, "d"))
        return [*results, *again]

    job = await fan.enqueue()
    async with app.worker():
        done = await app.wait(job.id, timeout=10)
    assert done.result == ["C", "A", "B", "D", "D"]
    assert sorted(calls) == ["a", "b", "c", "d"]


async def test_a_result_that_is_not_json_is_an_error_and_records_nothing(
    app: aqueue.App,
) -> None:
    seen: list[BaseException] = []

    @app.job(max_attempts=1)
    async def bad(ctx: aqueue.JobContext) -> None:
        try:
            await ctx.step("obj", lambda: object())
        except aqueue.ResultNotJSON as exc:
            seen.append(exc)
            raise

    job = await bad.enqueue()
    await run_until_idle(app)
    assert (await app.wait(job.id, timeout=5)).state == aqueue.JobState.DISCARDED
    assert len(seen) == 1 and "step 'obj'" in str(seen[0])
    assert await app.db.job_steps([job.id]) == []


async def test_bad_names_and_a_stale_attempt(app: aqueue.App) -> None:
    @app.job
    async def noop() -> None:
        pass

    job = await noop.enqueue()
    recorder = StepRecorder(app.db, job)  # attempt 0: not the job's running attempt
    with pytest.raises(aqueue.InvalidOption, match="step name"):
        await recorder.step("", lambda: 1)
    with pytest.raises(aqueue.InvalidOption, match="fn"):
        await recorder.step("x", 42)  # type: ignore[arg-type]
    # A step run by an attempt that is not running is not recorded (a late writer
    # must not speak for the next attempt); the caller still gets its value.
    assert await recorder.step("late", lambda: {"v": 1}) == {"v": 1}
    assert await app.db.job_steps([job.id]) == []


async def test_dep_result_outside_a_workflow_is_an_error(app: aqueue.App) -> None:
    errors: list[str] = []

    @app.job(max_attempts=1)
    async def lonely(ctx: aqueue.JobContext) -> None:
        try:
            await ctx.dep_result("fetch")
        except aqueue.InvalidWorkflow as exc:
            errors.append(str(exc))

    @app.job
    async def fetch() -> int:
        return 1

    @app.job(max_attempts=1)
    async def reader(ctx: aqueue.JobContext) -> None:
        for name in ("nothing", "sibling"):
            try:
                await ctx.dep_result(name)
            except aqueue.InvalidWorkflow as exc:
                errors.append(str(exc))

    await lonely.enqueue()
    wf = aqueue.Workflow()
    wf.add("sibling", fetch.build())
    wf.add("reader", reader.build())
    await app.enqueue_workflow(wf)
    await run_until_idle(app)
    assert len(errors) == 3
    assert sum("is not a workflow step: it has no dependencies" in e for e in errors) == 1
    assert sum(e.endswith("has no step 'nothing'") for e in errors) == 1
    assert sum("'sibling' is not a dependency of step 'reader'" in e for e in errors) == 1
