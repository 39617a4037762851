"""Fault injection on a running server: connections killed with pg_terminate_backend,
statements stuck behind a held lock, a claim whose reply never arrived.

The session's server is shared, so every kill here is aimed at this test's own
connections: the LISTEN connection by its channel (one per schema), pool connections by
the application name of an App that is the only one alive while they are killed.
"""

from __future__ import annotations

import collections
import logging
import statistics
import time
from collections.abc import AsyncIterator, Callable

import anyio
import asyncpg
import pytest

import aqueue
from tests.support import eventually

SLOW_POLL = 30.0  # nothing below may rely on the poll fallback to be picked up in time


def with_setting(url: str, name: str, value: str) -> str:
    """The URL with a server setting added (asyncpg sends unknown URL parameters as such)."""
    return f"{url}{'&' if '?' in url else '?'}{name}={value}"


async def count_states(app: aqueue.App) -> dict[str, int]:
    rows = await app.db.pool.fetch(
        f'SELECT state::text AS state, count(*) AS n FROM "{app.schema}".jobs GROUP BY 1'
    )
    return {row["state"]: row["n"] for row in rows}


@pytest.fixture
async def admin(aqueue_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, outside any App: kills, locks, inspections."""
    conn = await asyncpg.connect(aqueue_database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def listen_pids(admin: asyncpg.Connection, app: aqueue.App) -> set[int]:
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'aqueue-listen' AND query = $1",
        f'LISTEN "{app.db.channel}"',
    )
    return {row["pid"] for row in rows}


async def pickup_latencies(
    app: aqueue.App, started: dict[int, float], numbers: range
) -> list[float]:
    """Enqueue one job at a time into an idle worker; seconds from enqueue to start."""
    latencies = []
    for n in numbers:
        sent = time.monotonic()
        await app.enqueue("timed", {"n": n})
        await eventually(lambda n=n: n in started, timeout=5, what=f"job {n} to start")
        latencies.append(started[n] - sent)
    return latencies


async def test_lost_listen_connection_recovers_with_normal_latency(
    make_app: Callable[..., aqueue.App],
    admin: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aqueue")
    app = make_app(poll_interval=SLOW_POLL)
    started: dict[int, float] = {}

    @app.job
    async def timed(n: int) -> None:
        started[n] = time.monotonic()

    async with app:
        await app.migrate()
        async with app.worker({"default": 2}):
            before = await pickup_latencies(app, started, range(10))
            [pid] = await listen_pids(admin, app)

            killed_at = time.monotonic()
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)

            async def reconnected() -> bool:
                return bool(await listen_pids(admin, app) - {pid})

            await eventually(reconnected, what="a new LISTEN connection")
            recovery = time.monotonic() - killed_at
            after = await pickup_latencies(app, started, range(10, 30))

    messages = [r.getMessage() for r in caplog.records if r.name == "aqueue"]
    assert any("LISTEN connection lost" in m for m in messages)
    assert any("LISTEN connection re-established" in m for m in messages)
    # Polling is 30 s: every pick-up within a second came from a notification.
    assert max(after) < 1.0, after
    assert statistics.median(after) <= max(3 * statistics.median(before), 0.05), (before, after)
    assert recovery < 2.0
    print(
        f"LISTEN re-established {recovery * 1000:.0f} ms after the kill; pick-up median "
        f"{statistics.median(before) * 1000:.1f} ms before, "
        f"{statistics.median(after) * 1000:.1f} ms after"
    )


async def test_pool_connections_killed_under_load_lose_nothing(
    make_app: Callable[..., aqueue.App], admin: asyncpg.Connection
) -> None:
    app = make_app(poll_interval=SLOW_POLL)
    runs: collections.Counter[int] = collections.Counter()

    @app.job
    async def work(n: int) -> int:
        runs[n] += 1
        await anyio.sleep(0.002)
        return n

    async with app:
        await app.migrate()
        async with app.worker({"default": 8}):
            await app.enqueue_many([work.build(n=n) for n in range(600)])
            kills = 0
            for threshold in (100, 250, 400):
                await eventually(lambda t=threshold: sum(runs.values()) >= t, timeout=20)
                # Every connection of this App: its pools (claims, outcome writes) and its
                # LISTEN connection, in the middle of whatever they are doing.
                kills += await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name IN ('aqueue', 'aqueue-worker', 'aqueue-listen') "
                    "AND datname = current_database()"
                )
            await eventually(lambda: len(runs) == 600, timeout=30, what="all jobs to run")

            async def all_final() -> bool:
                return await count_states(app) == {"completed": 600}

            await eventually(all_final, timeout=15, what="all outcomes written")
    assert kills >= 3
    assert sorted(runs) == list(range(600))
    assert [n for n, c in runs.items() if c > 1] == []


async def test_claim_whose_reply_was_lost_is_run_by_its_worker(
    make_app: Callable[..., aqueue.App],
    admin: asyncpg.Connection,
    aqueue_database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The claim's effect, committed, without the reply: a due job marked running under the
    # worker's node id. Then a claim that fails (a statement_timeout behind a held lock) so
    # the worker cannot know whether it committed.
    caplog.set_level(logging.INFO, logger="aqueue")
    # statement_timeout in the URL: asyncpg passes unknown URL parameters as server settings.
    app = aqueue.App(
        with_setting(aqueue_database_url, "statement_timeout", "200"),
        schema=make_app().schema,  # the fixture's schema, dropped after the test
        poll_interval=SLOW_POLL,
        shutdown_timeout=5.0,
    )
    ran = anyio.Event()

    @app.job
    async def lost() -> None:
        ran.set()

    async with app:
        await app.migrate()
        job = await lost.options(schedule_in=3600).enqueue()
        async with app.worker({"default": 2}) as worker:
            async with admin.transaction():
                await admin.execute(f'LOCK TABLE "{app.schema}".jobs IN ACCESS EXCLUSIVE MODE')
                await admin.execute(
                    f"UPDATE \"{app.schema}\".jobs SET state = 'running', attempt = 1, "
                    "node_id = $1, attempted_at = now() WHERE id = $2",
                    worker.node_id,
                    job.id,
                )
                worker.producers["default"].wake()

                def claim_timed_out() -> bool:
                    return any(
                        "claim on queue 'default' failed" in r.getMessage() for r in caplog.records
                    )

                await eventually(claim_timed_out, what="a claim to hit statement_timeout")
            with anyio.fail_after(5):
                await ran.wait()
            done = await app.wait(job.id, timeout=5)
    assert (done.state, done.attempt) == (aqueue.JobState.COMPLETED, 1)


def logged(caplog: pytest.LogCaptureFixture, text: str) -> Callable[[], bool]:
    return lambda: any(text in r.getMessage() for r in caplog.records if r.name == "aqueue")


async def test_statement_timeout_behind_a_held_lock_does_not_wedge_the_worker(
    make_app: Callable[..., aqueue.App],
    admin: asyncpg.Connection,
    aqueue_database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aqueue")
    app = aqueue.App(
        with_setting(aqueue_database_url, "statement_timeout", "300"),
        schema=make_app().schema,
        poll_interval=SLOW_POLL,
        shutdown_timeout=5.0,
    )
    started: set[int] = set()
    runs: collections.Counter[int] = collections.Counter()
    release = anyio.Event()

    @app.job
    async def slow(n: int) -> int:
        started.add(n)
        runs[n] += 1
        if n < 4:
            await release.wait()
        return n

    async with app:
        await app.migrate()
        async with app.worker({"default": 4}):
            await app.enqueue_many([slow.build(n=n) for n in range(12)])
            await eventually(lambda: len(started) == 4, what="four jobs to start")
            async with admin.transaction():
                # Held like a migration or a long ALTER would hold it: every statement on
                # the jobs table waits, and gives up after statement_timeout.
                await admin.execute(f'LOCK TABLE "{app.schema}".jobs IN ACCESS EXCLUSIVE MODE')
                release.set()  # four outcomes to write; four free slots to fill
                with anyio.fail_after(3):
                    with pytest.raises(aqueue.DatabaseError, match="57014"):
                        await slow.enqueue(n=99)
                await eventually(logged(caplog, "recording outcomes failed"), what="write retry")
                await eventually(logged(caplog, "claim on queue 'default' failed"), what="retry")
            unlocked = time.monotonic()
            await eventually(lambda: len(runs) == 12, what="the backlog to drain after unlock")
            drained = time.monotonic() - unlocked
            late = await slow.enqueue(n=12)
            with anyio.fail_after(5):
                assert (await app.wait(late.id)).state is aqueue.JobState.COMPLETED
            stopping = time.monotonic()
        stopped = time.monotonic() - stopping
        states = await count_states(app)

    assert states == {"completed": 13}
    assert max(runs.values()) == 1
    assert stopped < 1.0
    print(f"drained {drained:.2f}s after the lock was released; stopped in {stopped:.2f}s")


async def test_statements_blocked_without_a_timeout_do_not_hold_shutdown(
    make_app: Callable[..., aqueue.App],
    admin: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No statement_timeout: a claim and an outcome write wait on the lock indefinitely.
    # Stopping must still end, bounded by shutdown_timeout and the completer's flush timeout.
    caplog.set_level(logging.INFO, logger="aqueue")
    app = make_app(poll_interval=0.1, shutdown_timeout=1.0)
    release = anyio.Event()
    started = anyio.Event()

    @app.job
    async def gated() -> None:
        started.set()
        await release.wait()

    async with app:
        await app.migrate()
        job = await gated.enqueue()
        async with app.worker({"default": 2}) as worker:
            with anyio.fail_after(5):
                await started.wait()
            async with admin.transaction():
                await admin.execute(f'LOCK TABLE "{app.schema}".jobs IN ACCESS EXCLUSIVE MODE')
                release.set()

                async def both_blocked() -> bool:
                    # Inside a transaction pg_stat_activity is a snapshot taken once.
                    await admin.execute("SELECT pg_stat_clear_snapshot()")
                    return (
                        await admin.fetchval(
                            "SELECT count(*) FROM pg_stat_activity WHERE application_name IN "
                            "('aqueue', 'aqueue-worker') AND wait_event_type = 'Lock' "
                            "AND datname = current_database()"
                        )
                        >= 2
                    )

                await eventually(both_blocked, what="a claim and an outcome write to block")
                stopping = time.monotonic()
                with anyio.fail_after(15):
                    await worker.stop()
                stopped = time.monotonic() - stopping
        row = await app.get_job(job.id)

    assert logged(caplog, "claim still blocked after shutdown_timeout")()
    assert logged(caplog, "could not record 1 job outcomes before shutdown")()
    # The outcome was never written: the job stays running until orphan rescue.
    assert row is not None and row.state is aqueue.JobState.RUNNING
    assert stopped < 12.0, stopped
    print(f"worker stopped {stopped:.2f}s after stop() with two statements blocked")


async def test_rows_locked_by_another_transaction_do_not_stop_the_rest(
    app: aqueue.App, admin: asyncpg.Connection
) -> None:
    # A long transaction holding some waiting jobs (say, an admin UPDATE left open): claims
    # skip those rows and everything else keeps flowing, claimed and completed.
    ran: list[int] = []

    @app.job
    async def item(n: int) -> None:
        ran.append(n)

    held = await app.enqueue_many([item.build(n=n) for n in range(5)])
    lock = admin.transaction()
    await lock.start()
    try:
        await admin.execute(
            f'SELECT 1 FROM "{app.schema}".jobs WHERE id = ANY($1::bigint[]) FOR UPDATE',
            [job.id for job in held],
        )
        async with app.worker({"default": 4}):
            others = await app.enqueue_many([item.build(n=n) for n in range(5, 55)])
            for job in others:
                assert (await app.wait(job.id, timeout=10)).state is aqueue.JobState.COMPLETED
            assert sorted(ran) == list(range(5, 55))
            await lock.commit()  # releases the rows; the poll fallback finds them
            for job in held:
                assert (await app.wait(job.id, timeout=10)).state is aqueue.JobState.COMPLETED
    finally:
        if admin.is_in_transaction():
            await lock.rollback()
    assert sorted(ran) == list(range(55))


async def test_outcome_whose_reply_was_lost_still_runs_its_hooks_once(
    make_app: Callable[..., aqueue.App],
    admin: asyncpg.Connection,
    aqueue_database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The outcome write's effect, committed, without the reply: the row is made completed
    # exactly as the write would leave it, while the write itself times out behind a lock.
    # Its retry then finds nothing to change; the hooks must run anyway, once.
    caplog.set_level(logging.INFO, logger="aqueue")
    app = aqueue.App(
        with_setting(aqueue_database_url, "statement_timeout", "200"),
        schema=make_app().schema,
        poll_interval=SLOW_POLL,
        shutdown_timeout=5.0,
    )
    release = anyio.Event()
    hooked: list[tuple[int, aqueue.JobState, object]] = []

    @app.job
    async def gated() -> int:
        await release.wait()
        return 7

    @app.after_process
    async def hook(job: aqueue.Job, outcome: aqueue.Outcome) -> None:
        hooked.append((job.id, outcome.state, outcome.result))

    async with app:
        await app.migrate()
        job = await gated.enqueue()
        async with app.worker({"default": 1}):

            async def running() -> bool:
                found = await app.get_job(job.id)
                return found is not None and found.state is aqueue.JobState.RUNNING

            await eventually(running, what="the job to be claimed")
            async with admin.transaction():
                await admin.execute(f'LOCK TABLE "{app.schema}".jobs IN ACCESS EXCLUSIVE MODE')
                release.set()
                await eventually(logged(caplog, "recording outcomes failed"), what="a failed write")
                await admin.execute(
                    f"UPDATE \"{app.schema}\".jobs SET state = 'completed', result = '7', "
                    "finalized_at = now(), node_id = NULL WHERE id = $1",
                    job.id,
                )
            await eventually(lambda: bool(hooked), what="the hook")
            done = await app.wait(job.id, timeout=5)
    assert hooked == [(job.id, aqueue.JobState.COMPLETED, 7)]
    assert (done.state, done.result, done.attempt) == (aqueue.JobState.COMPLETED, 7, 1)
    assert not logged(caplog, "not applied")()
