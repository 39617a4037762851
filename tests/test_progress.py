"""``ctx.progress``: recorded on the running job, visible to readers while it runs, refused
when out of range, without effect once its attempt is over, and per attempt on retries."""

from __future__ import annotations

import math
from datetime import datetime

import anyio
import pytest

import aqueue
from aqueue.cli.format import job_detail, progress_bar
from aqueue.db.queries import quote_ident
from aqueue.progress import NOTE_MAX, check_progress
from tests.support import eventually


async def _progress_at(app: aqueue.App, job_id: int) -> datetime | None:
    async with app.transaction() as conn:
        table = f"{quote_ident(app.schema)}.jobs"
        value: datetime | None = await conn.fetchval(
            f"SELECT progress_at FROM {table} WHERE id = $1", job_id
        )
        return value


async def _progress_of(app: aqueue.App, job_id: int) -> tuple[float | None, str | None]:
    job = await app.get_job(job_id)
    assert job is not None
    return job.progress, job.progress_note


async def test_progress_is_recorded_and_visible_while_the_job_runs(app: aqueue.App) -> None:
    step = anyio.Event()
    finish = anyio.Event()

    @app.job
    async def copy(ctx: aqueue.JobContext) -> None:
        assert await ctx.progress(0.25, "copied 1 of 4 files")
        await step.wait()
        assert await ctx.progress(0.75)
        await finish.wait()

    job = await copy.enqueue()
    async with app.worker(queues={"default": 1}):
        running = await eventually(
            lambda: _running_with_progress(app, job.id, 0.25), what="first report"
        )
        assert running.progress_note == "copied 1 of 4 files"
        shown = job_detail(running)
        assert "progress      [#####---------------]  25%  copied 1 of 4 files" in shown

        step.set()
        running = await eventually(lambda: _running_with_progress(app, job.id, 0.75))
        assert running.progress_note is None  # a report without a note clears the last one
        finish.set()
        done = await app.wait(job.id, timeout=10)
    assert done.state is aqueue.JobState.COMPLETED
    # The finished job keeps what its last attempt reported.
    assert (done.progress, done.progress_note) == (0.75, None)


async def _running_with_progress(
    app: aqueue.App, job_id: int, fraction: float
) -> aqueue.Job | None:
    job = await app.get_job(job_id)
    if job is not None and job.state is aqueue.JobState.RUNNING and job.progress == fraction:
        return job
    return None


@pytest.mark.parametrize(
    ("fraction", "note", "field"),
    [
        (-0.01, None, "fraction"),
        (1.01, None, "fraction"),
        (math.nan, None, "fraction"),
        (math.inf, None, "fraction"),
        (True, None, "fraction"),
        ("0.5", None, "fraction"),
        (None, None, "fraction"),
        (0.5, 7, "note"),
        (0.5, "x" * (NOTE_MAX + 1), "note"),
        (0.5, "bad\x00note", "note"),
    ],
)
def test_out_of_range_progress_names_the_field(fraction: object, note: object, field: str) -> None:
    with pytest.raises(aqueue.InvalidOption) as caught:
        check_progress(fraction, note)
    assert caught.value.field == field


def test_progress_bounds_are_accepted() -> None:
    assert check_progress(0, None) == (0.0, None)
    assert check_progress(1, "done") == (1.0, "done")
    assert check_progress(0.5, "x" * NOTE_MAX) == (0.5, "x" * NOTE_MAX)
    assert progress_bar(0.0) == "[--------------------]   0%"
    assert progress_bar(1.0) == "[####################] 100%"


async def test_invalid_progress_raises_in_the_job_and_writes_nothing(app: aqueue.App) -> None:
    seen: list[str] = []

    @app.job(max_attempts=1)
    async def bad(ctx: aqueue.JobContext) -> None:
        await ctx.progress(0.5)
        try:
            await ctx.progress(2.0)
        except aqueue.InvalidOption as exc:
            seen.append(exc.field)
        await ctx.progress(0.6, "\x00")

    job = await bad.enqueue()
    async with app.worker(queues={"default": 1}):
        done = await app.wait(job.id, timeout=10)
    assert seen == ["fraction"]
    assert done.state is aqueue.JobState.DISCARDED
    assert done.errors[-1]["type"] == "InvalidOption"
    assert "note" in done.errors[-1]["message"]
    assert done.progress == 0.5


async def test_an_unchanged_report_is_not_written_again(app: aqueue.App) -> None:
    reported = anyio.Event()
    again = anyio.Event()
    finish = anyio.Event()

    @app.job
    async def steady(ctx: aqueue.JobContext) -> None:
        await ctx.progress(0.5, "half")
        reported.set()
        await again.wait()
        assert await ctx.progress(0.5, "half")  # same figures: no write, still applies
        await finish.wait()

    job = await steady.enqueue()
    async with app.worker(queues={"default": 1}):
        with anyio.fail_after(10):
            await reported.wait()
        first = await _progress_at(app, job.id)
        assert first is not None
        again.set()
        finish.set()
        await app.wait(job.id, timeout=10)
        assert await _progress_at(app, job.id) == first


async def test_a_late_report_after_the_attempt_ended_changes_nothing(app: aqueue.App) -> None:
    contexts: list[aqueue.JobContext] = []

    @app.job
    async def quick(ctx: aqueue.JobContext) -> None:
        contexts.append(ctx)
        await ctx.progress(0.4, "partway")

    job = await quick.enqueue()
    async with app.worker(queues={"default": 1}):
        await app.wait(job.id, timeout=10)
    assert await contexts[0].progress(0.9, "too late") is False
    assert await _progress_of(app, job.id) == (0.4, "partway")


async def test_a_report_from_an_attempt_claimed_again_elsewhere_changes_nothing(
    app: aqueue.App,
) -> None:
    reported = anyio.Event()
    moved_on = anyio.Event()
    late: list[bool] = []

    @app.job
    async def slow(ctx: aqueue.JobContext) -> None:
        await ctx.progress(0.3)
        reported.set()
        await moved_on.wait()
        late.append(await ctx.progress(0.99, "zombie"))

    job = await slow.enqueue()
    async with app.worker(queues={"default": 1}):
        with anyio.fail_after(10):
            await reported.wait()
        # What an orphan rescue followed by another node's claim leaves on the row: still
        # running, one attempt further. This attempt is now a zombie.
        async with app.transaction() as conn:
            table = f"{quote_ident(app.schema)}.jobs"
            await conn.execute(f"UPDATE {table} SET attempt = attempt + 1 WHERE id = $1", job.id)
        # The new attempt has reported nothing yet.
        assert await _progress_of(app, job.id) == (None, None)
        moved_on.set()
        await eventually(lambda: late, what="the zombie's report")
    assert late == [False]
    assert await _progress_of(app, job.id) == (None, None)


async def test_a_retry_starts_without_the_last_attempts_progress(app: aqueue.App) -> None:
    second = anyio.Event()
    finish = anyio.Event()
    seen: list[float | None] = []

    @app.job(max_attempts=3)
    async def flaky(ctx: aqueue.JobContext) -> None:
        seen.append(ctx.job.progress)
        if ctx.attempt == 1:
            await ctx.progress(0.5, "failed here")
            raise RuntimeError("boom")
        second.set()
        await finish.wait()
        await ctx.progress(1.0)

    job = await flaky.enqueue()
    async with app.worker(queues={"default": 1}):
        failed = await eventually(lambda: _in_state(app, job.id, aqueue.JobState.RETRYABLE))
        # Between attempts the job shows how far the failed attempt got.
        assert (failed.progress, failed.progress_note) == (0.5, "failed here")
        await app.retry(job.id)
        with anyio.fail_after(10):
            await second.wait()
        assert await _progress_of(app, job.id) == (None, None)
        finish.set()
        done = await app.wait(job.id, timeout=10)
    assert seen == [None, None]
    assert (done.attempt, done.progress, done.progress_note) == (2, 1.0, None)


async def _in_state(app: aqueue.App, job_id: int, state: aqueue.JobState) -> aqueue.Job | None:
    job = await app.get_job(job_id)
    return job if job is not None and job.state is state else None
