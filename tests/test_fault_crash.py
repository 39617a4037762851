"""Fault injection: three worker processes drain 20,000 jobs while one of them is killed
with SIGKILL twice and restarted. Nothing may be lost, no effect may happen twice, and
the killed worker's jobs must come back within 2 x node_ttl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

import aqueue
from tests.support import eventually, schema_of

JOBS = 20_000
NODE_TTL = 2.0
SETTINGS = {
    "poll_interval": 0.2,
    "heartbeat_interval": 0.25,
    "node_ttl": NODE_TTL,
    "leader_ttl": 1.0,
    "shutdown_timeout": 5.0,
    "pool_size": 20,
}

WORKER_MODULE = textwrap.dedent(
    """
    import os
    import random
    import anyio
    import aqueue

    app = aqueue.App(os.environ["AQUEUE_DATABASE_URL"], schema=os.environ["AQ_SCHEMA"],
                     **SETTINGS)
    SCHEMA = os.environ["AQ_SCHEMA_SQL"]

    @app.job
    async def effect(ctx: aqueue.JobContext, n: int) -> int:
        # Long enough that a kill always finds jobs in flight.
        await anyio.sleep(random.uniform(0.0, 0.02))
        async with ctx.app.db.pool.acquire() as conn, conn.transaction():
            # Every execution is logged; the effect itself is keyed, so it happens once.
            await conn.execute(
                f"INSERT INTO {SCHEMA}.runs (job_id, attempt, pid) VALUES ($1, $2, $3)",
                ctx.job.id, ctx.attempt, os.getpid())
            await conn.execute(
                f"INSERT INTO {SCHEMA}.effects (job_id) VALUES ($1) ON CONFLICT DO NOTHING",
                ctx.job.id)
        return n
    """
).replace("**SETTINGS", "**" + repr(SETTINGS))


def _start(tmp_path: Path, url: str, app: aqueue.App) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AQUEUE_DATABASE_URL": url,
        "AQ_SCHEMA": app.schema,
        "AQ_SCHEMA_SQL": schema_of(app),
        "PYTHONPATH": str(tmp_path),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "aqueue.cli", "worker", "crash_worker:app", "-q", "default=50"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


async def test_kill_9_under_load_loses_nothing_and_doubles_no_effect(
    make_app: Callable[..., aqueue.App],
    aqueue_database_url: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    (tmp_path / "crash_worker.py").write_text(WORKER_MODULE)
    app = make_app(**SETTINGS)

    @app.job
    async def effect(n: int) -> int:
        raise AssertionError("runs in the worker processes only")

    async with app:
        await app.migrate()
        schema = schema_of(app)
        async with app.db.pool.acquire() as conn:
            await conn.execute(
                f"CREATE TABLE {schema}.runs (job_id bigint, attempt int, pid int, "
                "at timestamptz DEFAULT clock_timestamp())"
            )
            await conn.execute(f"CREATE TABLE {schema}.effects (job_id bigint PRIMARY KEY)")
        for start in range(0, JOBS, 5000):
            await app.enqueue_many([effect.build(n=n) for n in range(start, start + 5000)])
        processes.extend(_start(tmp_path, aqueue_database_url, app) for _ in range(3))

        async def finished() -> int:
            async with app.db.pool.acquire() as conn:
                return int(
                    await conn.fetchval(
                        f"SELECT count(*) FROM {schema}.jobs WHERE state = 'completed'"
                    )
                )

        kills: list[tuple[datetime, int]] = []
        for fraction in (0.25, 0.6):
            await eventually(
                lambda f=fraction: _at_least(finished, int(JOBS * f)),
                timeout=120,
                interval=0.05,
                what=f"{fraction:.0%} done",
            )
            victim = processes[0]
            async with app.db.pool.acquire() as conn:
                killed_at = await conn.fetchval("SELECT clock_timestamp()")
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=30)
            kills.append((killed_at, victim.pid))
            processes[0] = _start(tmp_path, aqueue_database_url, app)
            processes.append(victim)  # reaped by the fixture (already dead)

        await eventually(
            lambda: _at_least(finished, JOBS), timeout=180, interval=0.1, what="all done"
        )
        async with app.db.pool.acquire() as conn:
            states = dict(
                await conn.fetch(f"SELECT state::text, count(*) FROM {schema}.jobs GROUP BY 1")
            )
            effects = await conn.fetchval(f"SELECT count(*) FROM {schema}.effects")
            doubled_effects = await conn.fetchval(
                f"SELECT count(*) FROM (SELECT job_id FROM {schema}.runs "
                "GROUP BY job_id, attempt HAVING count(*) > 1) AS d"
            )
            rescued = await conn.fetch(
                f"SELECT id, attempt, errors FROM {schema}.jobs "
                'WHERE errors @> \'[{"type": "NodeLost"}]\''
            )
            killed_pids = [pid for _, pid in kills]
            ran_on_killed = await conn.fetchval(
                f"SELECT count(DISTINCT job_id) FROM {schema}.runs WHERE pid = ANY($1::int[])",
                killed_pids,
            )

    # Every job completed exactly once (its final transition), none lost or left running.
    assert states == {"completed": JOBS}
    # The keyed effect happened once per job, and no attempt of a job ran twice.
    assert effects == JOBS
    assert doubled_effects == 0
    # Kills caught jobs in flight; each came back as its next attempt ...
    assert ran_on_killed > 0
    assert len(rescued) > 0
    for row in rescued:
        assert row["attempt"] >= 2
    # ... within 2 x node_ttl of the kill that orphaned it.
    for row in rescued:
        for error in json.loads(row["errors"]):
            if error["type"] != "NodeLost":
                continue
            at = datetime.fromisoformat(error["at"])
            since = min((at - k).total_seconds() for k, _ in kills if k <= at)
            assert since <= 2 * NODE_TTL, f"job {row['id']} rescued {since:.2f}s after a kill"


async def _at_least(count: Callable[[], Awaitable[int]], target: int) -> bool:
    return await count() >= target
