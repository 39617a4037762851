"""``aqueue.testing``, the kit users test their own code with: each helper passes on what
it should and fails (AssertionError, or the error it documents) on what it should not."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from typing import Any

import anyio
import pytest

import aqueue
from aqueue.testing import (
    all_enqueued,
    assert_enqueued,
    drain_queue,
    isolated,
    perform_job,
    refute_enqueued,
    run_until_idle,
)

pytest_plugins = ["pytester"]

# -- assert_enqueued / refute_enqueued / all_enqueued ------------------------------------


def register(app: aqueue.App) -> tuple[Any, Any]:
    @app.job(queue="mail")
    async def send_email(to: str, subject: str, day: date | None = None) -> None: ...

    @app.job
    async def other(n: int) -> None: ...

    return send_email, other


async def test_assert_enqueued_matches_a_subset_of_the_arguments(app: aqueue.App) -> None:
    send_email, _ = register(app)
    job = await send_email.enqueue(to="a@example.com", subject="hi", day=date(2026, 12, 1))
    [found] = await assert_enqueued(app, send_email, args={"to": "a@example.com"})
    assert found.id == job.id
    # By kind name, by a configured job, by queue, with a value compared as stored JSON.
    await assert_enqueued(app, "send_email", queue="mail", count=1)
    await assert_enqueued(app, send_email.options(priority=3), args={"day": date(2026, 12, 1)})
    await assert_enqueued(app, send_email, state=aqueue.JobState.AVAILABLE)


async def test_assert_enqueued_fails_on_other_args_and_lists_what_was_enqueued(
    app: aqueue.App,
) -> None:
    send_email, _ = register(app)
    job = await send_email.enqueue(to="a@example.com", subject="hi")
    with pytest.raises(AssertionError) as info:
        await assert_enqueued(app, send_email, args={"to": "b@example.com"})
    message = str(info.value)
    assert "expected a job 'send_email' with args {'to': 'b@example.com'}, found 0." in message
    assert f"job {job.id} send_email (available) queue='mail'" in message
    assert "args['to']: 'a@example.com', expected 'b@example.com'" in message


async def test_assert_enqueued_fails_on_queue_state_missing_arg_and_count(
    app: aqueue.App,
) -> None:
    send_email, _ = register(app)
    await send_email.enqueue(to="a@example.com", subject="hi")
    with pytest.raises(AssertionError, match="queue: 'mail', expected 'bulk'"):
        await assert_enqueued(app, send_email, queue="bulk")
    with pytest.raises(AssertionError, match="state: 'available', expected 'completed'"):
        await assert_enqueued(app, send_email, state="completed")
    with pytest.raises(AssertionError, match=r"args\['cc'\]: missing"):
        await assert_enqueued(app, send_email, args={"cc": "x"})
    await send_email.enqueue(to="a@example.com", subject="again")
    with pytest.raises(AssertionError, match=r"expected 1 job\(s\) 'send_email'.*found 2"):
        await assert_enqueued(app, send_email, args={"to": "a@example.com"}, count=1)
    assert len(await assert_enqueued(app, send_email, count=2)) == 2
    with pytest.raises(ValueError, match="count"):
        await assert_enqueued(app, send_email, count=-1)


async def test_assert_enqueued_of_a_kind_never_enqueued_lists_the_other_jobs(
    app: aqueue.App,
) -> None:
    send_email, other = register(app)
    with pytest.raises(AssertionError, match="No job was enqueued"):
        await assert_enqueued(app, send_email)
    await other.enqueue(n=7)
    with pytest.raises(AssertionError) as info:
        await assert_enqueued(app, send_email)
    assert "no job of kind 'send_email' was enqueued" in str(info.value)
    assert "other (available) queue='default' args={'n': 7}" in str(info.value)


async def test_refute_enqueued_fails_when_a_matching_job_exists(app: aqueue.App) -> None:
    send_email, other = register(app)
    await refute_enqueued(app, send_email)
    await send_email.enqueue(to="a@example.com", subject="hi")
    await refute_enqueued(app, send_email, args={"to": "b@example.com"})
    await refute_enqueued(app, other)
    with pytest.raises(AssertionError, match=r"expected no job 'send_email'.*found 1"):
        await refute_enqueued(app, send_email, args={"to": "a@example.com"})


async def test_all_enqueued_filters_and_keeps_the_order(app: aqueue.App) -> None:
    send_email, other = register(app)
    first = await send_email.enqueue(to="a@example.com", subject="1")
    await other.enqueue(n=1)
    third = await send_email.enqueue(to="b@example.com", subject="2")
    assert [j.id for j in await all_enqueued(app, send_email)] == [first.id, third.id]
    assert [j.id for j in await all_enqueued(app, send_email, args={"subject": "2"})] == [third.id]
    assert len(await all_enqueued(app)) == 3
    assert await all_enqueued(app, "send_email", queue="default") == []
    with pytest.raises(TypeError, match="expected a job"):
        await all_enqueued(app, 42)  # type: ignore[arg-type]


# -- perform_job ------------------------------------------------------------------------


async def test_perform_job_runs_the_executor_and_the_hooks_without_a_row(
    app: aqueue.App,
) -> None:
    seen: list[tuple[int, str, Any]] = []

    @app.middleware
    async def wrap(job: aqueue.Job, call_next: Callable[[], Any]) -> Any:
        return {"wrapped": await call_next()}

    @app.job
    async def add(ctx: aqueue.JobContext, a: int, b: int) -> int:
        assert await ctx.progress(0.5, "half") is True  # kept in memory, no row to write
        return a + b

    @add.after_process
    async def hook(job: aqueue.Job, outcome: aqueue.Outcome) -> None:
        seen.append((job.attempt, job.state.value, outcome.result))

    outcome = await perform_job(add, 2, b="3")  # validated: "3" becomes 3
    assert outcome.state is aqueue.JobState.COMPLETED
    assert outcome.result == {"wrapped": 5}
    assert seen == [(1, "completed", {"wrapped": 5})]
    assert await app.list_jobs() == []  # nothing written
    with pytest.raises(aqueue.InvalidJobArgs):
        await perform_job(add, a="two", b=3)


async def test_perform_job_classifies_failures_timeouts_and_actions() -> None:
    app = aqueue.App(testing="inline")  # no database at all

    @app.job(max_attempts=3)
    async def flaky() -> None:
        raise ValueError("boom")

    @app.job(timeout=0.05)
    async def slow() -> None:
        await anyio.sleep(10)

    @app.job
    async def snoozes() -> None:
        raise aqueue.Snooze(30)

    @app.job
    async def gives_up() -> None:
        raise aqueue.Discard("bad input")

    failed = await perform_job(flaky)
    assert failed.state is aqueue.JobState.RETRYABLE and isinstance(failed.error, ValueError)
    last = await perform_job(flaky.options(max_attempts=1))
    assert last.state is aqueue.JobState.DISCARDED
    timed_out = await perform_job(slow)
    assert timed_out.state is aqueue.JobState.RETRYABLE
    assert isinstance(timed_out.error, aqueue.JobTimeout)
    snoozed = await perform_job(snoozes)
    assert snoozed.state is aqueue.JobState.SCHEDULED and snoozed.snoozed_for == 30
    assert (await perform_job(gives_up)).state is aqueue.JobState.DISCARDED


async def test_perform_job_refuses_what_is_not_a_registered_job() -> None:
    with pytest.raises(TypeError, match="perform_job"):
        await perform_job(print)  # type: ignore[arg-type]


# -- drain_queue ------------------------------------------------------------------------


async def test_drain_queue_runs_the_queue_with_retries_and_counts_outcomes(
    app: aqueue.App,
) -> None:
    tries: dict[str, int] = {}
    fast = aqueue.Backoff(base=60, jitter=0)  # due in a minute: only the drain makes it now

    @app.job(queue="mail", retry=fast, max_attempts=3)
    async def send(to: str) -> None:
        tries[to] = tries.get(to, 0) + 1
        if to == "flaky" and tries[to] < 2:
            raise RuntimeError("try again")
        if to == "broken":
            raise RuntimeError("never works")

    @app.job(queue="other")
    async def elsewhere() -> None: ...

    for to in ["a", "flaky", "broken"]:
        await send.enqueue(to=to)
    untouched = await elsewhere.enqueue()
    counts = await drain_queue(app, "mail")
    assert counts == {aqueue.JobState.COMPLETED: 2, aqueue.JobState.DISCARDED: 1}
    assert tries == {"a": 1, "flaky": 2, "broken": 3}
    job = await app.get_job(untouched.id)
    assert job is not None and job.state is aqueue.JobState.AVAILABLE
    assert await drain_queue(app, "mail") == {}  # nothing left to run


async def test_drain_queue_without_retries_leaves_failures_retryable(app: aqueue.App) -> None:
    @app.job(queue="mail", retry=aqueue.Backoff(base=60, jitter=0))
    async def fails() -> None:
        raise RuntimeError("no")

    await fails.enqueue()
    assert await drain_queue(app, "mail", with_retries=False) == {aqueue.JobState.RETRYABLE: 1}


async def test_drain_queue_runs_scheduled_jobs_only_when_asked(app: aqueue.App) -> None:
    ran: list[str] = []

    @app.job(queue="mail")
    async def later(name: str) -> None:
        ran.append(name)

    await later.options(schedule_in=3600).enqueue(name="tomorrow")
    assert await drain_queue(app, "mail") == {}
    assert ran == []
    assert await drain_queue(app, "mail", with_scheduled=True) == {aqueue.JobState.COMPLETED: 1}
    assert ran == ["tomorrow"]


async def test_drain_queue_runs_what_the_drained_jobs_enqueue(app: aqueue.App) -> None:
    @app.job(queue="mail")
    async def child(n: int) -> None: ...

    @app.job(queue="mail")
    async def parent() -> None:
        await child.enqueue(n=1)
        await child.enqueue(n=2)

    await parent.enqueue()
    assert await drain_queue(app, "mail") == {aqueue.JobState.COMPLETED: 3}


# -- run_until_idle, isolated, fixtures -------------------------------------------------


async def test_run_until_idle_waits_for_hooks(app: aqueue.App) -> None:
    hooked: list[int] = []

    @app.job
    async def work() -> None: ...

    @app.after_process
    async def hook(job: aqueue.Job, outcome: aqueue.Outcome) -> None:
        await anyio.sleep(0.05)
        hooked.append(job.id)

    job = await work.enqueue()
    await run_until_idle(app)
    assert hooked == [job.id]


async def test_isolated_moves_an_app_into_a_fresh_schema_and_back(
    aqueue_database_url: str,
) -> None:
    # Made with a URL nobody can reach: isolated points it at the test server.
    app = aqueue.App("postgresql://nobody@127.0.0.1:1/none", schema="home", poll_interval=0.2)

    @app.job
    async def ping() -> str:
        return "pong"

    schemas: list[str] = []
    for _ in range(2):
        async with isolated(app, url=aqueue_database_url) as same:
            assert same is app and app.db.is_open and app.schema not in ("home", *schemas)
            schemas.append(app.schema)
            job = await ping.enqueue()
            await run_until_idle(app)
            done = await app.get_job(job.id)
            assert done is not None and done.result == "pong"
            assert [j.id for j in await app.list_jobs()] == [job.id]  # nothing from before
        assert not app.db.is_open
        assert (app.schema, app.url) == ("home", "postgresql://nobody@127.0.0.1:1/none")
    probe = aqueue.App(aqueue_database_url)
    async with probe, probe.connection() as conn:
        left = await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1)", schemas
        )
    assert left == 0


async def test_isolated_survives_a_block_that_closes_the_app(aqueue_database_url: str) -> None:
    app = aqueue.App(aqueue_database_url)
    async with isolated(app):
        schema = app.schema
        async with aqueue.lifespan(app, worker=False):  # closes the App when it ends
            pass
        assert not app.db.is_open
    probe = aqueue.App(aqueue_database_url)
    async with probe, probe.connection() as conn:
        assert await conn.fetchval("SELECT to_regnamespace($1)", schema) is None


async def test_isolated_refuses_an_open_or_inline_app(app: aqueue.App) -> None:
    with pytest.raises(aqueue.ConfigurationError, match="open already"):
        async with isolated(app):
            pass
    with pytest.raises(aqueue.ConfigurationError, match="inline"):
        async with isolated(aqueue.App(testing="inline")):
            pass


async def test_aqueue_schema_fixture_gives_a_fresh_schema(
    aqueue_database_url: str, aqueue_schema: str
) -> None:
    app = aqueue.App(aqueue_database_url, schema=aqueue_schema)
    async with app:
        assert await app.migrate()  # fresh: every migration applies
        async with app.connection() as conn:
            tables = await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = $1", aqueue_schema
            )
    assert tables > 0


def test_aqueue_schema_fixture_drops_the_schema_after_the_test(
    pytester: pytest.Pytester, aqueue_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AQUEUE_TEST_DATABASE_URL", aqueue_database_url)
    record = pytester.path / "schema.txt"
    pytester.makepyfile(
        f"""
        import anyio
        import aqueue

        def test_uses_a_schema(aqueue_database_url, aqueue_schema):
            async def create():
                app = aqueue.App(aqueue_database_url, schema=aqueue_schema)
                async with app:
                    await app.migrate()
            anyio.run(create)
            with open({str(record)!r}, "w") as out:
                out.write(aqueue_schema)
        """
    )
    pytester.makeini(
        """
        [pytest]
        asyncio_default_fixture_loop_scope = function
        filterwarnings = ignore::pytest.PytestAssertRewriteWarning
        """
    )
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    schema = record.read_text()

    async def exists() -> bool:
        probe = aqueue.App(aqueue_database_url)
        async with probe, probe.connection() as conn:
            return bool(await conn.fetchval("SELECT to_regnamespace($1) IS NOT NULL", schema))

    assert schema.startswith("t_")
    assert anyio.run(exists) is False


def test_the_plugin_is_loaded_by_entry_point(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("aqueue")
    assert plugin is not None and plugin.__name__ == "aqueue.testing.plugin"


def test_hook_errors_in_perform_job_are_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = aqueue.App(testing="inline")

    @app.job
    async def fine() -> int:
        return 1

    @app.after_process
    async def broken(job: aqueue.Job, outcome: aqueue.Outcome) -> None:
        raise RuntimeError("hook failed")

    with caplog.at_level(logging.ERROR, logger="aqueue"):
        outcome = anyio.run(lambda: perform_job(fine))
    assert outcome.state is aqueue.JobState.COMPLETED
    assert "after_process hook" in caplog.text and "hook failed" in caplog.text
