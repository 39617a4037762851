"""after_process hooks: which run, what they get, when they run, and what they cannot break."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pydantic
import pytest

import aqueue
from tests.support import eventually

Call = tuple[aqueue.Job, aqueue.Outcome]


class Recorder:
    """A hook that keeps every call and lets a test wait for the n-th one."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._changed = anyio.Event()

    async def __call__(self, job: aqueue.Job, outcome: aqueue.Outcome) -> None:
        self.calls.append((job, outcome))
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Call]:
        with anyio.fail_after(timeout):
            while len(self.calls) < count:
                await self._changed.wait()
        return self.calls


def as_hook(recorder: Recorder) -> Callable[[aqueue.Job, aqueue.Outcome], Awaitable[None]]:
    # Hooks must be 'async def' functions, not awaitable objects.
    async def hook(job: aqueue.Job, outcome: aqueue.Outcome) -> None:
        await recorder(job, outcome)

    return hook


class Report(pydantic.BaseModel):
    pages: int


async def test_global_and_per_kind_hooks_get_job_and_outcome(app: aqueue.App) -> None:
    returned = {"id": "r-1", "items": [1, 2]}
    model = Report(pages=3)
    everyone, only_a = Recorder(), Recorder()

    @app.job
    async def job_a() -> dict[str, Any]:
        await anyio.sleep(0.05)
        return returned

    @app.job
    async def job_b() -> Report:
        return model

    app.after_process(as_hook(everyone))
    job_a.after_process(as_hook(only_a))

    a = await job_a.enqueue()
    b = await job_b.enqueue()
    async with app.worker({"default": 2}):
        await everyone.wait_for(2)
        await only_a.wait_for(1)

    by_kind = {job.kind: (job, outcome) for job, outcome in everyone.calls}
    assert set(by_kind) == {"job_a", "job_b"}
    assert [job.id for job, _ in only_a.calls] == [a.id]  # the kind hook skips job_b

    job, outcome = by_kind["job_a"]
    assert isinstance(job, aqueue.Job) and isinstance(outcome, aqueue.Outcome)
    assert job.id == a.id
    assert outcome.state is aqueue.JobState.COMPLETED
    assert outcome.result is returned  # the object itself, not a database read-back
    assert outcome.error is None
    assert 0.05 <= outcome.duration < 5
    assert only_a.calls[0][1].result is returned

    job, outcome = by_kind["job_b"]
    assert job.id == b.id
    assert outcome.result is model  # the model, although the row stores {"pages": 3}
    stored = await app.get_job(b.id)
    assert stored is not None and stored.result == {"pages": 3}


async def test_hooks_run_once_per_attempt(app: aqueue.App) -> None:
    raised: list[BaseException] = []
    recorder = Recorder()

    @app.job(retry=aqueue.Backoff(base=0.02, jitter=0))
    async def flaky(ctx: aqueue.JobContext) -> str:
        if ctx.attempt < 3:
            raised.append(RuntimeError(f"attempt {ctx.attempt}"))
            raise raised[-1]
        return "ok"

    flaky.after_process(as_hook(recorder))
    job = await flaky.enqueue()
    async with app.worker():
        done = await app.wait(job.id, timeout=10)
        calls = await recorder.wait_for(3)

    assert done.state is aqueue.JobState.COMPLETED
    assert [(o.state, j.attempt) for j, o in calls] == [
        (aqueue.JobState.RETRYABLE, 1),
        (aqueue.JobState.RETRYABLE, 2),
        (aqueue.JobState.COMPLETED, 3),
    ]
    assert calls[0][1].error is raised[0] and calls[1][1].error is raised[1]
    assert calls[2][1].error is None and calls[2][1].result == "ok"
    assert len(recorder.calls) == 3  # and no more


@pytest.mark.parametrize(
    ("action", "state"),
    [
        (aqueue.Discard("no"), aqueue.JobState.DISCARDED),
        (aqueue.Cancel("stop"), aqueue.JobState.CANCELLED),
        (aqueue.Snooze(60), aqueue.JobState.SCHEDULED),
        (KeyError("gone"), aqueue.JobState.RETRYABLE),
    ],
    ids=["discard", "cancel", "snooze", "error"],
)
async def test_hook_sees_every_kind_of_outcome(
    app: aqueue.App, action: Exception, state: aqueue.JobState
) -> None:
    recorder = Recorder()

    @app.job(retry=aqueue.Backoff(base=60))
    async def acts() -> None:
        raise action

    app.after_process(as_hook(recorder))
    job = await acts.enqueue()
    async with app.worker():
        ((hook_job, outcome),) = await recorder.wait_for(1)
    assert hook_job.id == job.id
    assert outcome.state is state and hook_job.state is state
    assert outcome.result is None
    if state is aqueue.JobState.SCHEDULED:
        assert outcome.error is None  # a snooze is not an error
    else:
        assert outcome.error is action


async def test_timeout_outcome_reaches_hook(app: aqueue.App) -> None:
    recorder = Recorder()

    @app.job(timeout=0.1, max_attempts=1)
    async def hangs() -> None:
        await anyio.sleep_forever()

    app.after_process(as_hook(recorder))
    await hangs.enqueue()
    async with app.worker():
        ((job, outcome),) = await recorder.wait_for(1)
    assert outcome.state is job.state is aqueue.JobState.DISCARDED
    assert type(outcome.error).__name__ == "JobTimeout"
    assert 0.1 <= outcome.duration < 5


async def test_hooks_run_after_the_outcome_is_committed(app: aqueue.App) -> None:
    seen: list[tuple[aqueue.JobState, aqueue.Job | None]] = []
    done_count = Recorder()

    @app.job(retry=aqueue.Backoff(base=60))
    async def varied(mode: str) -> str:
        if mode == "fail":
            raise RuntimeError("retry me later")
        if mode == "discard":
            raise aqueue.Discard("not wanted")
        return mode

    @app.after_process
    async def read_back(job: aqueue.Job, outcome: aqueue.Outcome) -> None:
        # Read through another connection: only committed data is visible there.
        seen.append((outcome.state, await app.get_job(job.id)))
        await done_count(job, outcome)

    for mode in ("ok", "fail", "discard"):
        await varied.enqueue(mode=mode)
    async with app.worker({"default": 3}):
        await done_count.wait_for(3)

    assert {state for state, _ in seen} == {
        aqueue.JobState.COMPLETED,
        aqueue.JobState.RETRYABLE,
        aqueue.JobState.DISCARDED,
    }
    for state, fresh in seen:
        assert fresh is not None
        assert fresh.state is state
        if state is aqueue.JobState.COMPLETED:
            assert fresh.result == "ok" and fresh.finalized_at is not None
        else:
            assert len(fresh.errors) == 1


async def test_hook_exception_is_logged_and_changes_nothing(
    app: aqueue.App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aqueue")
    later = Recorder()

    @app.job
    async def fine(n: int) -> int:
        return n

    @fine.after_process
    async def broken(job: aqueue.Job, outcome: aqueue.Outcome) -> None:
        raise RuntimeError(f"hook exploded on {job.id}")

    app.after_process(as_hook(later))

    first = await fine.enqueue(n=1)
    async with app.worker():
        await later.wait_for(1)  # the broken hook ran first and failed
        second = await fine.enqueue(n=2)
        await later.wait_for(2)  # hooks keep running for later jobs

    for job in (first, second):
        stored = await app.get_job(job.id)
        assert stored is not None
        assert (stored.state, stored.attempt, stored.errors) == (aqueue.JobState.COMPLETED, 1, [])
    failures = [r for r in caplog.records if r.name == "aqueue" and r.levelno >= logging.ERROR]
    assert len(failures) == 2
    for record, job in zip(failures, (first, second), strict=True):
        assert record.exc_info is not None and record.exc_info[0] is RuntimeError
        assert str(record.exc_info[1]) == f"hook exploded on {job.id}"
        assert str(job.id) in record.getMessage()
        assert "broken" in record.getMessage()  # names the hook


async def test_slow_hook_does_not_delay_other_jobs(app: aqueue.App) -> None:
    release = anyio.Event()
    hook_entered = anyio.Event()

    @app.job
    async def work(n: int) -> int:
        return n

    @app.after_process
    async def slow(job: aqueue.Job, outcome: aqueue.Outcome) -> None:
        if job.args["n"] == 0:
            hook_entered.set()
            await release.wait()

    first = await work.enqueue(n=0)
    # One slot: if the hook held the slot (or the completer), nothing else could finish.
    async with app.worker({"default": 1}):
        await hook_entered.wait()
        stored = await app.get_job(first.id)
        assert stored is not None and stored.state is aqueue.JobState.COMPLETED
        for n in range(1, 6):
            done = await app.wait((await work.enqueue(n=n)).id, timeout=5)
            assert (done.state, done.result) == (aqueue.JobState.COMPLETED, n)
        assert not release.is_set()  # the first hook is still blocked
        release.set()


async def test_hook_job_is_the_row_after_the_attempt(app: aqueue.App) -> None:
    compared: list[tuple[aqueue.Job, aqueue.Job | None]] = []
    recorder = Recorder()

    @app.job(retry=aqueue.Backoff(base=60, jitter=0))
    async def varied(mode: str) -> str:
        if mode == "fail":
            raise RuntimeError("retry me")
        if mode == "snooze":
            raise aqueue.Snooze(60)
        return "done"

    @app.after_process
    async def compare(job: aqueue.Job, outcome: aqueue.Outcome) -> None:
        compared.append((job, await app.get_job(job.id)))
        await recorder(job, outcome)

    jobs = {mode: await varied.enqueue(mode=mode) for mode in ("ok", "fail", "snooze")}
    async with app.worker({"default": 3}):
        await recorder.wait_for(3)

    by_mode = {job.args["mode"]: (job, fresh) for job, fresh in compared}
    for mode, (job, fresh) in by_mode.items():
        assert fresh is not None
        assert job.id == jobs[mode].id
        fields = (
            "state",
            "attempt",
            "scheduled_at",
            "finalized_at",
            "errors",
            "kind",
            "args",
            "queue",
            "max_attempts",
            "attempted_at",
        )
        assert {f: getattr(job, f) for f in fields} == {f: getattr(fresh, f) for f in fields}, mode

    ok, _ = by_mode["ok"]
    assert ok.state is aqueue.JobState.COMPLETED and ok.result == "done"
    assert ok.finalized_at is not None and ok.attempt == 1
    failed, _ = by_mode["fail"]
    assert failed.state is aqueue.JobState.RETRYABLE and failed.finalized_at is None
    assert [e["message"] for e in failed.errors] == ["retry me"]
    assert failed.attempted_at is not None
    assert (failed.scheduled_at - failed.attempted_at).total_seconds() >= 60
    snoozed, _ = by_mode["snooze"]
    assert snoozed.state is aqueue.JobState.SCHEDULED
    assert snoozed.attempt == 0  # refunded


async def test_hooks_of_jobs_finishing_during_shutdown_still_run(app: aqueue.App) -> None:
    started = anyio.Event()
    recorder = Recorder()

    @app.job
    async def last_one() -> str:
        started.set()
        await anyio.sleep(0.3)  # finishes while the worker is already stopping
        return "late"

    app.after_process(as_hook(recorder))
    job = await last_one.enqueue()
    async with app.worker():
        await started.wait()
    # Leaving the block waited for the job, its outcome write and then its hook.
    assert [(j.id, o.state, o.result) for j, o in recorder.calls] == [
        (job.id, aqueue.JobState.COMPLETED, "late")
    ]


async def test_observers_see_every_committed_attempt_and_cannot_break_it(
    app: aqueue.App, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, str, aqueue.JobState, float]] = []

    @app.observe
    def broken(queue: str, kind: str, outcome: aqueue.Outcome, wait: float) -> None:
        raise RuntimeError("observer bug")

    @app.observe
    def record(queue: str, kind: str, outcome: aqueue.Outcome, wait: float) -> None:
        seen.append((queue, kind, outcome.state, wait))

    @app.job(queue="q", max_attempts=1)
    async def fails() -> None:
        raise ValueError("no")

    @app.job(queue="q")
    async def works() -> None: ...

    bad = await fails.enqueue()
    good = await works.enqueue()
    async with app.worker(queues={"q": 2}):
        await app.wait(bad.id, timeout=10)
        done = await app.wait(good.id, timeout=10)
    assert done.state is aqueue.JobState.COMPLETED  # the broken observer changed nothing
    assert sorted((q, k, s) for q, k, s, _ in seen) == [
        ("q", "fails", aqueue.JobState.DISCARDED),
        ("q", "works", aqueue.JobState.COMPLETED),
    ]
    assert all(0 <= wait < 30 for *_, wait in seen)
    assert "observer" in caplog.text and "observer bug" in caplog.text


def test_an_async_observer_is_refused(app: aqueue.App) -> None:
    async def not_sync(queue: str, kind: str, outcome: aqueue.Outcome, wait: float) -> None: ...

    with pytest.raises(aqueue.ConfigurationError):
        app.observe(not_sync)  # type: ignore[arg-type]


@pytest.mark.parametrize("wait", [True, False])
async def test_an_observer_keeps_claims_lean_and_gets_the_wait(app: aqueue.App, wait: bool) -> None:
    seen: list[float | None] = []
    assert app.registry.claim_columns() == "bare"  # nothing to observe: no times read

    @app.observe(wait=wait)
    def record(queue: str, kind: str, outcome: aqueue.Outcome, wait: float | None) -> None:
        seen.append(wait)

    @app.job
    async def plain() -> None: ...

    assert app.registry.claim_columns() == "lean"
    job = await plain.options(queue="limited").enqueue()
    other = await plain.enqueue()
    queues = {"default": 1, "limited": aqueue.Queue(concurrency=1, global_limit=1)}
    async with app.worker(queues=queues):
        await app.wait(job.id, timeout=10)
        await app.wait(other.id, timeout=10)
        await eventually(lambda: len(seen) == 2, what="the observer called twice")
    # Through the plain claim and the limited one alike, without the full rows.
    assert all(w is not None and 0 <= w < 30 for w in seen), seen


async def test_hooks_and_middleware_registered_while_a_worker_runs(app: aqueue.App) -> None:
    """They apply to the jobs claimed from then on. One claimed before (without the
    columns of a Job: nothing needed them) runs and ends as usual, and the worker runs on."""
    go = anyio.Event()
    started = anyio.Event()

    @app.job
    async def slow() -> None:
        started.set()
        await go.wait()

    @app.job
    async def later() -> None: ...

    hooked: list[int] = []
    wrapped: list[int] = []
    async with app.worker({"default": 2}):
        first = await slow.enqueue()
        with anyio.fail_after(10):
            await started.wait()

        @app.after_process
        async def hook(job: aqueue.Job, outcome: aqueue.Outcome) -> None:
            hooked.append(job.id)

        @app.middleware
        async def around(job: aqueue.Job, call_next: Any) -> Any:
            wrapped.append(job.id)
            return await call_next()

        go.set()
        assert (await app.wait(first.id, timeout=10)).state is aqueue.JobState.COMPLETED
        second = await later.enqueue()
        assert (await app.wait(second.id, timeout=10)).state is aqueue.JobState.COMPLETED
        await eventually(lambda: hooked == [second.id], what="the hook of the later job")
    assert wrapped == [second.id]
