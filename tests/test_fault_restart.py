"""Fault injection: PostgreSQL restarts and goes away under a running worker.

These tests stop and restart a server, so they use a dedicated throwaway PostgreSQL for
this module (not the session's, which every other test shares). The worker process is
never restarted: its pool, its LISTEN connection and its services must recover alone.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import anyio
import pytest

import aqueue
from aqueue.embedded import EmbeddedPostgres
from aqueue.testing import unique_schema

# Long enough that nothing in these tests is picked up by the poll fallback: a job that
# runs within seconds was woken by a notification or by the recheck after a reconnect.
SLOW_POLL = 30.0


async def poll_until(
    predicate: Callable[[], bool],
    *,
    timeout: float = 10.0,
    describe: Callable[[], Awaitable[str]] | None = None,
) -> None:
    with anyio.move_on_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)
        return
    detail = await describe() if describe is not None else ""
    raise AssertionError(f"condition not met within {timeout}s {detail}")


async def unfinished(app: aqueue.App) -> str:
    rows = await app.db.pool.fetch(
        f'SELECT id, state::text AS state, attempt FROM "{app.schema}".jobs '
        "WHERE state <> 'completed' ORDER BY id LIMIT 20"
    )
    return f"states {await count_states(app)}; first unfinished {[tuple(r) for r in rows]}"


async def count_states(app: aqueue.App) -> dict[str, int]:
    rows = await app.db.pool.fetch(
        f'SELECT state::text AS state, count(*) AS n FROM "{app.schema}".jobs GROUP BY 1'
    )
    return {row["state"]: row["n"] for row in rows}


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres() as pg:
        yield pg


@pytest.fixture
async def fault_app(server: EmbeddedPostgres) -> AsyncIterator[aqueue.App]:
    app = aqueue.App(
        server.url,
        schema=unique_schema("f"),
        poll_interval=SLOW_POLL,
        shutdown_timeout=5.0,
        connect_timeout=2.0,
    )
    async with app:
        await app.migrate()
        yield app
        await app.db.drop_schema()


async def stop_server(server: EmbeddedPostgres) -> None:
    """``pg_ctl stop -m fast``: SIGINT to the postmaster, then wait for it to exit."""
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGINT)
    with anyio.fail_after(15):
        while server.pid is not None:
            await anyio.sleep(0.01)


async def test_postgres_restart_mid_run_loses_nothing(
    server: EmbeddedPostgres, fault_app: aqueue.App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aqueue")
    app = fault_app
    runs: collections.Counter[int] = collections.Counter()

    @app.job
    async def work(n: int) -> int:
        runs[n] += 1
        await anyio.sleep(0.005)
        return n

    async with app.worker({"default": 8}):
        await app.enqueue_many([work.build(n=n) for n in range(300)])
        await poll_until(lambda: sum(runs.values()) >= 60)

        # `pg_ctl restart -m fast`: clients are disconnected, in-flight statements fail.
        started = time.monotonic()
        await anyio.to_thread.run_sync(server.restart)
        restarted = time.monotonic()

        # The pool recovers by itself: an enqueue right after the restart succeeds.
        await app.enqueue_many([work.build(n=n) for n in range(300, 600)])
        await poll_until(
            lambda: all(runs[n] for n in range(600)), timeout=30, describe=lambda: unfinished(app)
        )
        drained = time.monotonic()

        # Notifications resume: with polling at 30 s, a prompt pick-up needs a NOTIFY.
        late = await work.enqueue(n=600)
        with anyio.fail_after(5):
            done = await app.wait(late.id)
        assert done.state is aqueue.JobState.COMPLETED

    states = await count_states(app)
    assert states == {"completed": 601}, states
    assert sorted(runs) == list(range(601))
    assert [n for n, c in runs.items() if c > 1] == []
    messages = [r.getMessage() for r in caplog.records if r.name == "aqueue"]
    assert any("LISTEN connection re-established" in m for m in messages)
    adopted = sum("reply was lost" in m for m in messages)
    print(
        f"restart took {restarted - started:.2f}s; backlog drained "
        f"{drained - restarted:.2f}s after it; lost claim replies recovered: {adopted}"
    )


async def test_outage_enqueue_fails_fast_and_everything_recovers(
    server: EmbeddedPostgres, fault_app: aqueue.App
) -> None:
    app = fault_app
    runs: collections.Counter[int] = collections.Counter()

    @app.job
    async def work(n: int) -> int:
        runs[n] += 1
        return n

    async with app.worker({"default": 4}):
        first = await work.enqueue(n=0)
        with anyio.fail_after(5):
            await app.wait(first.id)
        # Due during the outage: no notification will ever announce them.
        await app.enqueue_many([work.options(schedule_in=0.5).build(n=n) for n in range(1, 21)])

        await stop_server(server)
        down = time.monotonic()
        failures = 0
        # Enqueues during the outage raise DatabaseError promptly, never hang; keep the
        # server down until the scheduled jobs above are overdue.
        while failures < 3 or time.monotonic() - down < 1.0:
            with anyio.fail_after(app.settings.connect_timeout + 3):
                with pytest.raises(aqueue.DatabaseError, match="PostgreSQL at"):
                    await work.enqueue(n=-1)
                with pytest.raises(aqueue.DatabaseError, match="PostgreSQL at"):
                    await app.get_job(first.id)
            failures += 1
            await anyio.sleep(0.05)  # pacing only: each attempt above already failed

        await anyio.to_thread.run_sync(server.start)
        up = time.monotonic()
        # The pool serves again at once; the producer, which failed claims meanwhile, and
        # the reconnected LISTEN connection pick up both the overdue jobs and a new one.
        after = await work.enqueue(n=21)
        await poll_until(
            lambda: all(runs[n] for n in range(22)), timeout=20, describe=lambda: unfinished(app)
        )
        recovered = time.monotonic() - up
        with anyio.fail_after(5):
            assert (await app.wait(after.id)).state is aqueue.JobState.COMPLETED

    assert await count_states(app) == {"completed": 22}
    assert sorted(runs) == list(range(22)), runs
    assert max(runs.values()) == 1
    print(f"{failures} enqueue(s) failed during the outage; recovered {recovered:.2f}s after")
