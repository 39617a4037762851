"""Worker processes draining through a real PgBouncer in transaction mode whose server
pool is smaller than their client connections, and a PgBouncer restart mid-drain.

Runs are counted in a side table over a direct connection, so that a restart of the
bouncer cannot fail the count itself: a job counted twice ran twice."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import aqueue
from aqueue.testing import unique_schema
from tests.bouncer import ROLE, SERVER_POOL, Bouncer
from tests.support import eventually, schema_of

WORKER_MODULE = textwrap.dedent(
    """
    import os
    import aqueue

    settings = dict(poll_interval=0.2, heartbeat_interval=0.5, node_ttl=10.0,
                    shutdown_timeout=10.0, pool_size=4, worker_pool_size=2)
    app = aqueue.App(os.environ["AQ_BOUNCER_URL"], schema=os.environ["AQ_SCHEMA"],
                     listen_url=os.environ["AQ_DIRECT_URL"], pooler="transaction", **settings)
    # Runs are counted on a direct connection: a bouncer restart must not fail the count.
    recorder = aqueue.App(os.environ["AQ_DIRECT_URL"], schema=os.environ["AQ_SCHEMA"])

    @app.job
    async def count(n: int) -> None:
        if not recorder.db.is_open:
            await recorder.open()
        async with recorder.transaction() as conn:
            await conn.execute(os.environ["AQ_RECORD_SQL"], n)
    """
)


def runs_table(app: aqueue.App) -> str:
    return f"{schema_of(app)}.runs"


async def create_runs(app: aqueue.App) -> None:
    async with app.transaction() as conn:
        await conn.execute(f"CREATE TABLE {runs_table(app)} (n int NOT NULL)")


async def run_counts(app: aqueue.App) -> tuple[int, int]:
    """(runs, distinct jobs run)."""
    async with app.transaction() as conn:
        row = await conn.fetchrow(f"SELECT count(*), count(DISTINCT n) FROM {runs_table(app)}")
    return int(row[0]), int(row[1])


async def bounced_backends(app: aqueue.App) -> int:
    """PgBouncer's server connections, counted on a direct connection."""
    async with app.transaction() as conn:
        return int(
            await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE usename = $1", ROLE)
        )


@pytest.fixture
def worker_processes(
    tmp_path: Path, bouncer: Bouncer, aqueue_database_url: str
) -> Iterator[Callable[[str, int], list[subprocess.Popen[bytes]]]]:
    (tmp_path / "bounced_worker.py").write_text(WORKER_MODULE)
    started: list[subprocess.Popen[bytes]] = []

    def start(schema: str, count: int) -> list[subprocess.Popen[bytes]]:
        env = {
            **os.environ,
            "AQ_BOUNCER_URL": bouncer.url,
            "AQ_DIRECT_URL": aqueue_database_url,
            "AQ_SCHEMA": schema,
            "AQ_RECORD_SQL": f'INSERT INTO "{schema}".runs (n) VALUES ($1)',
            "PYTHONPATH": str(tmp_path),
        }
        for _ in range(count):
            started.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "aqueue.cli",
                        "worker",
                        "bounced_worker:app",
                        "-q",
                        "default=20",
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        return started

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def drain_through(
    admin: aqueue.App,
    start: Callable[[str, int], list[subprocess.Popen[bytes]]],
    jobs: int,
    *,
    during: Callable[[], Any] | None = None,
) -> int:
    """Enqueue ``jobs`` counting jobs, drain them with three worker processes; returns the
    most pooled server connections seen."""

    @admin.job
    async def count(n: int) -> None: ...

    await create_runs(admin)
    for first in range(0, jobs, 5000):
        await admin.enqueue_many(
            [admin.build("count", {"n": n}) for n in range(first, min(first + 5000, jobs))]
        )
    procs = start(admin.schema, 3)
    most = 0

    async def done() -> bool:
        nonlocal most
        assert all(p.poll() is None for p in procs), "a worker process died"
        most = max(most, await bounced_backends(admin))
        runs, _ = await run_counts(admin)
        if during is not None and runs >= jobs // 3:
            during()
        return runs >= jobs and await admin.db.queues_idle(["default"], ["count"])

    await eventually(done, timeout=60, interval=0.1, what=f"{jobs} jobs run")
    runs, distinct = await run_counts(admin)
    assert (runs, distinct) == (jobs, jobs)  # nothing lost, nothing run twice
    stats = (await admin.queue_stats("default"))["default"]
    assert stats.counts.get("completed") == jobs
    return most


async def test_three_processes_drain_20000_jobs_through_a_smaller_server_pool(
    aqueue_database_url: str,
    worker_processes: Callable[[str, int], list[subprocess.Popen[bytes]]],
) -> None:
    admin = aqueue.App(aqueue_database_url, schema=unique_schema("pgb"))
    async with admin:
        await admin.migrate()
        try:
            most = await drain_through(admin, worker_processes, 20_000)
            # 3 x (4 + 2) pooled client connections shared at most SERVER_POOL servers.
            assert 0 < most <= SERVER_POOL
        finally:
            await admin.db.drop_schema()


async def test_a_pgbouncer_restart_mid_drain_loses_nothing(
    aqueue_database_url: str,
    bouncer: Bouncer,
    worker_processes: Callable[[str, int], list[subprocess.Popen[bytes]]],
) -> None:
    admin = aqueue.App(aqueue_database_url, schema=unique_schema("pgb"))
    restarts: list[int] = []

    def restart_once() -> None:
        if not restarts:
            restarts.append(1)
            bouncer.restart()

    async with admin:
        await admin.migrate()
        try:
            await drain_through(admin, worker_processes, 6000, during=restart_once)
            assert restarts == [1]
        finally:
            await admin.db.drop_schema()
