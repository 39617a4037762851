"""Real worker processes killed with SIGKILL: their jobs and persistent workers come back
on another node within 2 x node_ttl."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

import aqueue
from tests.support import eventually

NODE_TTL = 3.0
SETTINGS = {
    "poll_interval": 0.2,
    "heartbeat_interval": 0.25,
    "node_ttl": NODE_TTL,
    "leader_ttl": 1.0,
    "shutdown_timeout": 5.0,
}

WORKER_MODULE = textwrap.dedent(
    """
    import os
    import anyio
    import aqueue

    app = aqueue.App(os.environ["AQUEUE_DATABASE_URL"], schema=os.environ["AQ_SCHEMA"],
                     **{SETTINGS!r})

    @app.job
    async def stall(ctx: aqueue.JobContext) -> int:
        await anyio.sleep_forever()
        return ctx.attempt

    @app.persistent(name="feed")
    async def feed(ctx: aqueue.PersistentContext) -> None:
        await anyio.sleep_forever()
    """
).replace("{SETTINGS!r}", repr(SETTINGS))


@pytest.fixture
def worker_process(
    tmp_path: Path, aqueue_database_url: str
) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    (tmp_path / "killed_worker.py").write_text(WORKER_MODULE)
    started: list[subprocess.Popen[bytes]] = []

    def start(schema: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "AQUEUE_DATABASE_URL": aqueue_database_url,
            "AQ_SCHEMA": schema,
            "PYTHONPATH": str(tmp_path),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "aqueue.cli", "worker", "killed_worker:app", "-q", "default=2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


@contextmanager
def measured() -> Iterator[list[float]]:
    box: list[float] = []
    began = anyio.current_time()
    try:
        yield box
    finally:
        box.append(anyio.current_time() - began)


def survivor_app(make_app: Callable[..., aqueue.App]) -> tuple[aqueue.App, list[str]]:
    app = make_app(**SETTINGS)
    ran_on: list[str] = []

    @app.job
    async def stall(ctx: aqueue.JobContext) -> int:
        return ctx.attempt

    @app.persistent(name="feed")
    async def feed(ctx: aqueue.PersistentContext) -> None:
        ran_on.append(ctx.node_id)
        await anyio.sleep_forever()

    return app, ran_on


async def test_a_job_running_on_a_killed_worker_completes_elsewhere_with_attempt_2(
    make_app: Callable[..., aqueue.App],
    worker_process: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    app, _ = survivor_app(make_app)
    async with app:
        await app.migrate()
        proc = worker_process(app.schema)
        job = await app.enqueue("stall")

        async def running_elsewhere() -> bool:
            current = await app.get_job(job.id)
            return current is not None and current.state is aqueue.JobState.RUNNING

        await eventually(running_elsewhere, timeout=60, what="the job running in the child")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        with measured() as elapsed:
            async with app.worker({"default": 2}):
                done = await app.wait(job.id, timeout=60)
        assert done.state is aqueue.JobState.COMPLETED
        assert done.attempt == 2
        assert done.result == 2
        assert [e["type"] for e in done.errors] == ["NodeLost"]
        print(f"job rescued and run {elapsed[0]:.2f}s after kill -9 (node_ttl {NODE_TTL}s)")
        assert elapsed[0] < 2 * NODE_TTL, f"rescued and run after {elapsed[0]:.2f}s"


async def test_a_persistent_worker_moves_off_a_killed_node(
    make_app: Callable[..., aqueue.App],
    worker_process: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    app, ran_on = survivor_app(make_app)
    async with app:
        await app.migrate()
        proc = worker_process(app.schema)

        async def child_holds_feed() -> bool:
            status = await app.cluster_status()
            return any(lease.name == "persistent:feed:0" and lease.held for lease in status.leases)

        await eventually(child_holds_feed, timeout=60, what="the child holding the lease")
        async with app.worker({}) as worker:
            assert ran_on == []
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            with measured() as elapsed:
                await eventually(lambda: ran_on, timeout=60, what="a takeover")
            assert ran_on == [worker.node_id]
        print(f"persistent worker took over {elapsed[0]:.2f}s after kill -9")
        assert elapsed[0] < 2 * NODE_TTL, f"took over after {elapsed[0]:.2f}s"
