"""How a job's attempt ends: results, errors and retries, Snooze/Discard/Cancel, timeouts,
values that cannot be stored, arguments that no longer validate, kinds nobody knows."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

import anyio
import pydantic
import pytest

import aqueue
from tests.support import eventually

ERROR_KEYS = {"attempt", "at", "duration", "type", "message", "traceback"}
QUICK = aqueue.Backoff(base=0.02, jitter=0)


async def job_in_state(app: aqueue.App, job_id: int, state: aqueue.JobState) -> aqueue.Job:
    async def check() -> aqueue.Job | None:
        job = await app.get_job(job_id)
        return job if job is not None and job.state is state else None

    return await eventually(check)


async def stored_json_type(app: aqueue.App, job_id: int) -> str | None:
    sql = f'SELECT jsonb_typeof(result) FROM "{app.schema}".jobs WHERE id = $1'
    value: str | None = await app.db.pool.fetchval(sql, job_id)
    return value


class Receipt(pydantic.BaseModel):
    id: int
    tags: list[str]


# -- return values -------------------------------------------------------------------------


async def test_return_values_are_recorded_as_json(app: aqueue.App) -> None:
    values: dict[str, Any] = {
        "dict": {"message_id": "m-1", "n": 2, "nested": {"ok": True}},
        "list": [1, "two", None, 3.5],
        "none": None,
        "model": Receipt(id=7, tags=["a", "b"]),
        "text": "hello",
    }

    @app.job
    async def produce(which: str) -> Any:
        return values[which]

    jobs = {which: await produce.enqueue(which=which) for which in values}
    async with app.worker({"default": 5}):
        done = {which: await app.wait(job.id, timeout=10) for which, job in jobs.items()}

    for which, job in done.items():
        assert job.state is aqueue.JobState.COMPLETED, (which, job.errors)
        assert job.attempt == 1 and job.errors == [] and job.finalized_at is not None
    assert done["dict"].result == values["dict"]
    assert done["list"].result == values["list"]
    assert done["none"].result is None
    assert done["model"].result == {"id": 7, "tags": ["a", "b"]}
    assert done["text"].result == "hello"
    # Stored as JSON values, not as strings holding JSON.
    assert await stored_json_type(app, done["dict"].id) == "object"
    assert await stored_json_type(app, done["model"].id) == "object"
    assert await stored_json_type(app, done["list"].id) == "array"
    assert await stored_json_type(app, done["text"].id) == "string"


# -- errors and retries --------------------------------------------------------------------


async def test_failing_job_is_retried_and_each_failure_recorded(app: aqueue.App) -> None:
    attempts: list[int] = []

    @app.job(retry=QUICK)
    async def flaky(ctx: aqueue.JobContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError(f"boom on attempt {ctx.attempt}")
        return "third time lucky"

    job = await flaky.enqueue()
    async with app.worker({"default": 2}):
        done = await app.wait(job.id, timeout=10)

    assert done.state is aqueue.JobState.COMPLETED
    assert done.result == "third time lucky"
    assert attempts == [1, 2, 3]
    assert done.attempt == 3
    assert len(done.errors) == 2
    for number, error in enumerate(done.errors, start=1):
        assert set(error) == ERROR_KEYS
        assert error["attempt"] == number
        assert error["type"] == "RuntimeError"
        assert error["message"] == f"boom on attempt {number}"
        assert "RuntimeError: boom on attempt" in error["traceback"]
        assert "in flaky" in error["traceback"]  # the frame that raised
        at = datetime.fromisoformat(error["at"])
        assert done.finalized_at is not None and at.tzinfo is not None
        assert job.created_at <= at <= done.finalized_at


async def test_job_out_of_attempts_is_discarded(app: aqueue.App) -> None:
    runs: list[int] = []

    @app.job(max_attempts=3, retry=QUICK)
    async def doomed(ctx: aqueue.JobContext) -> None:
        runs.append(ctx.attempt)
        raise ValueError("never works")

    job = await doomed.enqueue()
    async with app.worker():
        done = await app.wait(job.id, timeout=10)

    assert done.state is aqueue.JobState.DISCARDED
    assert runs == [1, 2, 3]
    assert done.attempt == 3 and done.finalized_at is not None
    assert [e["attempt"] for e in done.errors] == [1, 2, 3]
    assert {e["type"] for e in done.errors} == {"ValueError"}


async def test_retryable_job_waits_in_retryable_state(app: aqueue.App) -> None:
    @app.job(retry=aqueue.Backoff(base=60, jitter=0))
    async def fails_once() -> None:
        raise RuntimeError("later")

    job = await fails_once.enqueue()
    async with app.worker():
        waiting = await job_in_state(app, job.id, aqueue.JobState.RETRYABLE)
    assert waiting.attempt == 1 and waiting.finalized_at is None
    assert [e["message"] for e in waiting.errors] == ["later"]


# -- Snooze, Discard, Cancel ---------------------------------------------------------------


async def test_snooze_reruns_without_consuming_attempts(app: aqueue.App) -> None:
    seen: list[tuple[int, float]] = []

    # max_attempts=1: a consumed attempt would discard the job on its second run.
    @app.job(max_attempts=1)
    async def napper(ctx: aqueue.JobContext) -> str:
        seen.append((ctx.attempt, anyio.current_time()))
        if len(seen) <= 3:
            raise aqueue.Snooze(0.2)
        return "rested"

    job = await napper.enqueue()
    async with app.worker():
        done = await app.wait(job.id, timeout=10)

    assert done.state is aqueue.JobState.COMPLETED, done.errors
    assert done.result == "rested"
    assert [attempt for attempt, _ in seen] == [1, 1, 1, 1]
    assert done.attempt == 1
    assert done.errors == []  # a snooze is not an error
    gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(seen)]
    assert all(gap >= 0.15 for gap in gaps), gaps  # the snooze delay was honoured


async def test_snoozed_job_is_scheduled_with_attempt_refunded(app: aqueue.App) -> None:
    @app.job
    async def sleepy() -> None:
        raise aqueue.Snooze(60)

    job = await sleepy.enqueue()
    async with app.worker():
        snoozed = await job_in_state(app, job.id, aqueue.JobState.SCHEDULED)
    assert snoozed.attempt == 0 and snoozed.errors == [] and snoozed.finalized_at is None
    assert snoozed.attempted_at is not None
    delay = (snoozed.scheduled_at - snoozed.attempted_at).total_seconds()
    assert 60 <= delay < 62


async def test_discard_ends_the_job_with_its_reason(app: aqueue.App) -> None:
    runs: list[int] = []

    @app.job(max_attempts=5)
    async def hopeless() -> None:
        runs.append(1)
        raise aqueue.Discard("address bounced")

    job = await hopeless.enqueue()
    async with app.worker():
        done = await app.wait(job.id, timeout=10)

    assert done.state is aqueue.JobState.DISCARDED
    assert len(runs) == 1  # not retried although attempts remain
    assert done.attempt == 1 and done.finalized_at is not None
    (error,) = done.errors
    assert set(error) == ERROR_KEYS
    assert (error["type"], error["message"], error["attempt"]) == ("Discard", "address bounced", 1)


async def test_cancel_raised_by_the_job_cancels_it(app: aqueue.App) -> None:
    runs: list[int] = []

    @app.job(max_attempts=5)
    async def quitter() -> None:
        runs.append(1)
        raise aqueue.Cancel("user went away")

    job = await quitter.enqueue()
    async with app.worker():
        done = await app.wait(job.id, timeout=10)

    assert done.state is aqueue.JobState.CANCELLED
    assert len(runs) == 1
    assert done.finalized_at is not None
    (error,) = done.errors
    assert (error["type"], error["message"]) == ("Cancel", "user went away")


# -- timeouts ------------------------------------------------------------------------------


async def test_timeout_cancels_the_job_and_counts_as_a_failure(app: aqueue.App) -> None:
    interrupted: list[int] = []

    @app.job(timeout=0.2, max_attempts=2, retry=QUICK)
    async def hangs(ctx: aqueue.JobContext) -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            interrupted.append(ctx.attempt)
            raise

    @app.job
    async def quick() -> str:
        return "still here"

    job = await hangs.enqueue()
    async with app.worker({"default": 1}):
        done = await app.wait(job.id, timeout=10)
        after = await app.wait((await quick.enqueue()).id, timeout=10)

    assert done.state is aqueue.JobState.DISCARDED
    assert interrupted == [1, 2]  # cancelled at its await, both attempts
    assert [e["type"] for e in done.errors] == ["JobTimeout", "JobTimeout"]
    assert all("timeout" in e["message"] and "0.2" in e["message"] for e in done.errors)
    assert (after.state, after.result) == (aqueue.JobState.COMPLETED, "still here")


async def test_timeout_given_per_enqueue(app: aqueue.App) -> None:
    @app.job
    async def maybe_slow(seconds: float) -> str:
        await anyio.sleep(seconds)
        return "finished"

    slow = await maybe_slow.options(timeout=0.2, max_attempts=1).enqueue(seconds=3600)
    fast = await maybe_slow.options(timeout=5).enqueue(seconds=0.01)
    async with app.worker({"default": 2}):
        slow_done = await app.wait(slow.id, timeout=10)
        fast_done = await app.wait(fast.id, timeout=10)

    assert slow_done.state is aqueue.JobState.DISCARDED
    assert [e["type"] for e in slow_done.errors] == ["JobTimeout"]
    assert (fast_done.state, fast_done.result) == (aqueue.JobState.COMPLETED, "finished")


# -- results that cannot be stored ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(object(), "object"), ({"handle": [object()]}, "dict"), ("nul\x00byte", "str")],
    ids=["object", "nested-object", "nul-character"],
)
async def test_unstorable_result_discards_the_job_and_worker_survives(
    app: aqueue.App, value: Any, type_name: str
) -> None:
    runs: list[int] = []

    @app.job(max_attempts=5)
    async def weird() -> Any:
        runs.append(1)
        return value

    @app.job
    async def normal(n: int) -> int:
        return n * 2

    bad = await weird.enqueue()
    async with app.worker({"default": 1}):
        bad_done = await app.wait(bad.id, timeout=10)
        good = [await normal.enqueue(n=n) for n in range(3)]
        good_done = [await app.wait(job.id, timeout=10) for job in good]

    assert bad_done.state is aqueue.JobState.DISCARDED
    assert len(runs) == 1  # side effects happened once; retrying would repeat them
    assert bad_done.result is None
    (error,) = bad_done.errors
    assert error["type"] == "ResultNotJSON"
    assert "not JSON-serialisable" in error["message"]
    assert f"({type_name})" in error["message"]
    assert [(j.state, j.result) for j in good_done] == [
        (aqueue.JobState.COMPLETED, n * 2) for n in range(3)
    ]


async def test_nan_and_infinity_in_a_result_are_stored_as_null(app: aqueue.App) -> None:
    @app.job
    async def ratios() -> dict[str, float]:
        return {"nan": math.nan, "inf": math.inf, "ok": 0.5}

    job = await ratios.enqueue()
    async with app.worker():
        done = await app.wait(job.id, timeout=10)
    assert done.state is aqueue.JobState.COMPLETED, done.errors
    assert done.result == {"nan": None, "inf": None, "ok": 0.5}


async def test_error_message_with_nul_character_is_recorded(app: aqueue.App) -> None:
    @app.job(max_attempts=1)
    async def binary() -> None:
        raise ValueError("bad byte \x00 in input")

    @app.job
    async def normal() -> str:
        return "ok"

    job = await binary.enqueue()
    async with app.worker({"default": 1}):
        done = await app.wait(job.id, timeout=10)
        after = await app.wait((await normal.enqueue()).id, timeout=10)
    assert done.state is aqueue.JobState.DISCARDED
    (error,) = done.errors
    assert error["type"] == "ValueError"
    assert error["message"] == "bad byte \\x00 in input"
    assert after.state is aqueue.JobState.COMPLETED


# -- backoff ---------------------------------------------------------------------------------


def retry_delay(job: aqueue.Job) -> float:
    """Seconds between the claim of the last attempt and the retry time written after it."""
    assert job.attempted_at is not None
    return (job.scheduled_at - job.attempted_at).total_seconds()


async def test_definition_backoff_and_per_enqueue_override(app: aqueue.App) -> None:
    @app.job(retry=aqueue.Backoff(base=30, jitter=0))
    async def unreliable() -> None:
        raise RuntimeError("nope")

    by_definition = await unreliable.enqueue()
    by_enqueue = await unreliable.options(retry=aqueue.Backoff(base=20, jitter=0)).enqueue()
    by_name = await app.enqueue("unreliable", retry=aqueue.Backoff(base=10, jitter=0))
    async with app.worker({"default": 3}):
        waiting = [
            await job_in_state(app, job.id, aqueue.JobState.RETRYABLE)
            for job in (by_definition, by_enqueue, by_name)
        ]

    delays = [retry_delay(job) for job in waiting]
    # The write happens a few milliseconds after the claim; allow a generous margin.
    assert 30 <= delays[0] < 31.5, delays
    assert 20 <= delays[1] < 21.5, delays
    assert 10 <= delays[2] < 11.5, delays


async def test_backoff_grows_exponentially_with_jitter_bounds(app: aqueue.App) -> None:
    @app.job
    async def unreliable() -> None:
        raise RuntimeError("nope")

    # attempt 1 -> 0.05 s, attempt 2 -> 0.05 * 40 = 2 s (+-10% jitter)
    job = await unreliable.options(retry=aqueue.Backoff(base=0.05, factor=40, jitter=0.1)).enqueue()
    async with app.worker():

        async def second_failure() -> aqueue.Job | None:
            found = await app.get_job(job.id)
            assert found is not None
            ok = found.state is aqueue.JobState.RETRYABLE and len(found.errors) == 2
            return found if ok else None

        waiting = await eventually(second_failure)
    assert waiting.attempt == 2
    assert 1.75 <= retry_delay(waiting) < 3.5


async def test_default_backoff_is_about_a_second_after_the_first_failure(app: aqueue.App) -> None:
    @app.job
    async def unreliable() -> None:
        raise RuntimeError("nope")

    job = await unreliable.enqueue()
    async with app.worker():
        waiting = await job_in_state(app, job.id, aqueue.JobState.RETRYABLE)
    assert 0.85 <= retry_delay(waiting) < 2.5


# -- arguments invalid at run time -----------------------------------------------------------


async def test_args_invalid_at_run_time_are_recorded_and_worker_survives(
    app: aqueue.App, make_app: Callable[..., aqueue.App]
) -> None:
    # An older deploy enqueues by name without knowing the new, stricter signature.
    async with make_app() as old_deploy:
        stale = await old_deploy.enqueue(
            "resize", {"width": "wide"}, allow_unknown=True, max_attempts=1
        )
        extra = await old_deploy.enqueue(
            "resize", {"width": 3, "height": 4}, allow_unknown=True, max_attempts=1
        )

    runs: list[int] = []

    @app.job
    async def resize(width: int) -> int:
        runs.append(width)
        return width * 10

    async with app.worker({"default": 1}):
        stale_done = await app.wait(stale.id, timeout=10)
        extra_done = await app.wait(extra.id, timeout=10)
        fine = await app.wait((await resize.enqueue(width=5)).id, timeout=10)

    assert runs == [5]  # the function never ran with bad arguments
    assert stale_done.state is aqueue.JobState.DISCARDED
    (error,) = stale_done.errors
    assert error["type"] == "InvalidJobArgs"
    assert "'resize'" in error["message"] and "width" in error["message"]
    assert extra_done.state is aqueue.JobState.DISCARDED
    assert "height" in extra_done.errors[0]["message"]
    assert (fine.state, fine.result) == (aqueue.JobState.COMPLETED, 50)


async def test_args_edited_in_the_database_are_validated_again(app: aqueue.App) -> None:
    @app.job(max_attempts=5, retry=QUICK)
    async def greet(name: str, times: int = 1) -> str:
        return name * times

    job = await greet.options(schedule_in=3600).enqueue(name="hi", times=2)
    await app.db.pool.execute(
        f'UPDATE "{app.schema}".jobs SET args = $2::jsonb, scheduled_at = now() WHERE id = $1',
        job.id,
        '{"times": "many"}',
    )
    async with app.worker():
        done = await app.wait(job.id, timeout=10)
    # Discarded at once: stored arguments do not get better by waiting (app.retry after a fix).
    assert (done.state, done.attempt) == (aqueue.JobState.DISCARDED, 1)
    assert [e["type"] for e in done.errors] == ["InvalidJobArgs"]
    message = done.errors[0]["message"]
    assert "name" in message and "times" in message  # both fields at fault are named


# -- kinds the worker does not know -----------------------------------------------------------


async def test_unknown_kind_is_not_claimed_until_a_worker_knows_it(
    app: aqueue.App, make_app: Callable[..., aqueue.App]
) -> None:
    @app.job
    async def known() -> str:
        return "known"

    # Enqueued first and with a better priority: a claim that did not filter by kind
    # would take it before the known job.
    mystery = await app.enqueue("mystery", {"x": 1}, allow_unknown=True, priority=-5)
    async with app.worker({"default": 4}):
        done = await app.wait((await known.enqueue()).id, timeout=10)
        assert done.state is aqueue.JobState.COMPLETED
        untouched = await app.get_job(mystery.id)
    assert untouched is not None
    assert (untouched.state, untouched.attempt, untouched.attempted_at) == (
        aqueue.JobState.AVAILABLE,
        0,
        None,
    )

    newer = make_app()

    @newer.job(name="mystery")
    async def mystery_job(x: int) -> int:
        return x + 41

    async with newer, newer.worker():
        solved = await newer.wait(mystery.id, timeout=10)
    assert (solved.state, solved.result, solved.attempt) == (aqueue.JobState.COMPLETED, 42, 1)
