"""A worker process holding chunk items (a running call and a list still gathering) is
killed with SIGKILL: its items are rescued like any orphaned job and run again, each
item on its own, on another node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import aqueue
from tests.support import CLUSTER, eventually, schema_of

WORKER_MODULE = textwrap.dedent(
    """
    import os
    import anyio
    import aqueue

    app = aqueue.App(os.environ["AQUEUE_DATABASE_URL"], schema=os.environ["AQ_SCHEMA"],
                     **SETTINGS)

    @app.job(chunk=aqueue.Chunk(size=3, timeout=600), name="index")
    async def index(items: list[int]) -> None:
        await anyio.sleep_forever()   # killed while it runs
    """
).replace("**SETTINGS", "**" + repr(CLUSTER))


async def _states(app: aqueue.App) -> dict[str, int]:
    async with app.db.pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT state::text AS state, count(*) AS n FROM {schema_of(app)}.jobs GROUP BY 1"
        )
    return {row["state"]: row["n"] for row in rows}


@pytest.mark.parametrize("ack", ["async", "sync"])
async def test_items_of_a_killed_worker_are_rescued_and_run_again(
    make_app: Callable[..., aqueue.App], aqueue_database_url: str, tmp_path: Path, ack: str
) -> None:
    (tmp_path / "chunk_worker.py").write_text(WORKER_MODULE)
    app = make_app(**CLUSTER)
    calls: list[list[int]] = []

    @app.job(chunk=aqueue.Chunk(size=3, timeout=0.2), name="index", retry=aqueue.Backoff(base=0.1))
    async def index(items: list[int]) -> list[int]:
        calls.append(items)
        return [n * 2 for n in items]

    async with app:
        await app.migrate()
        jobs = await app.enqueue_many([index.build(n) for n in range(4)])
        env = {
            **os.environ,
            "AQUEUE_DATABASE_URL": aqueue_database_url,
            "AQ_SCHEMA": app.schema,
            "PYTHONPATH": str(tmp_path),
        }
        # Concurrency 5: one call of 3 runs, and the fourth item waits in a list (room for
        # one more, and a timeout of 600 s).
        victim = subprocess.Popen(
            [sys.executable, "-m", "aqueue.cli", "worker", "chunk_worker:app", "-q", "default=5"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await eventually(
                lambda: _states_are(app, {"running": 4}), timeout=60, what="all 4 claimed"
            )
        finally:
            victim.send_signal(signal.SIGKILL)
            await anyio.to_thread.run_sync(victim.wait)
        async with app.worker({"default": aqueue.Queue(concurrency=4, ack=ack)}):  # type: ignore[arg-type]
            done = [await app.wait(job.id, timeout=60) for job in jobs]
    assert [job.state for job in done] == [aqueue.JobState.COMPLETED] * 4
    assert [job.result for job in done] == [0, 2, 4, 6]
    assert all(job.attempt == 2 for job in done)  # the killed attempt counted, once
    assert sorted(n for items in calls for n in items) == [0, 1, 2, 3]


async def _states_are(app: aqueue.App, expected: dict[str, int]) -> bool:
    return await _states(app) == expected
