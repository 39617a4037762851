"""Workflows and batches under every ack mode and limit, on several nodes, and through a
worker process killed with SIGKILL: every step runs after its dependencies, every
callback exactly once, and no job is left ``available``, ``pending`` or ``running`` with
nothing left to wait for (the bug class of Oban Pro 1.3.1: with ``ack_async: false`` and
a ``global_limit``, workflow jobs stayed ``available`` forever)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import aqueue
from tests.support import CLUSTER, eventually, schema_of

SPECS: dict[str, Callable[[str], aqueue.Queue]] = {
    "unlimited": lambda ack: aqueue.Queue(concurrency=4, ack=ack),  # type: ignore[arg-type]
    "concurrency-1": lambda ack: aqueue.Queue(concurrency=1, ack=ack),  # type: ignore[arg-type]
    "global-1": lambda ack: aqueue.Queue(concurrency=4, global_limit=1, ack=ack),  # type: ignore[arg-type]
    "partition-1": lambda ack: aqueue.Queue(  # type: ignore[arg-type]
        concurrency=4, partition=aqueue.Partition(limit=1), ack=ack
    ),
    "global-2-partition-1": lambda ack: aqueue.Queue(  # type: ignore[arg-type]
        concurrency=4, global_limit=2, partition=aqueue.Partition(limit=1), ack=ack
    ),
    "rate-20-per-s": lambda ack: aqueue.Queue(  # type: ignore[arg-type]
        concurrency=4, rate=aqueue.Rate(20, per=1.0), ack=ack
    ),
    "global-1-rate-per-partition": lambda ack: aqueue.Queue(  # type: ignore[arg-type]
        concurrency=4, global_limit=1, rate=aqueue.Rate(10, per=1.0, per_partition=True), ack=ack
    ),
}

# What no job may be once the work is over.
STUCK = """
SELECT count(*) FROM {schema}.jobs WHERE state IN ('available', 'pending', 'running')
"""


def _register(app: aqueue.App, runs: list[tuple[str, int]]) -> dict[str, Any]:
    @app.job(queue="work", partition_by="tenant", max_attempts=2)
    async def step(ctx: aqueue.JobContext, name: str, tenant: str, fail: bool = False) -> str:
        runs.append((name, ctx.job.id))
        if fail:
            raise aqueue.Discard("planned failure")
        return name

    @app.job(queue="work", partition_by="tenant")
    async def summary(ctx: aqueue.JobContext, tenant: str) -> dict[str, int]:
        assert ctx.batch is not None
        runs.append(("callback", ctx.job.id))
        return dict(ctx.batch.counts)

    return {"step": step, "summary": summary}


async def _enqueue(app: aqueue.App, jobs: dict[str, Any]) -> tuple[list[int], list[int]]:
    step, summary = jobs["step"], jobs["summary"]
    workflows, batches = [], []
    for tenant in ("t1", "t2"):
        # A diamond with a failing branch that others survive ("run") or follow ("cancel").
        wf = aqueue.Workflow(f"diamond-{tenant}")
        wf.add("a", step.build(name="a", tenant=tenant))
        wf.add("b", step.build(name="b", tenant=tenant), deps=["a"])
        wf.add("c", step.build(name="c", tenant=tenant, fail=True), deps=["a"])
        wf.add("d", step.build(name="d", tenant=tenant), deps=["b", "c"], on_dep_failure="run")
        wf.add("e", step.build(name="e", tenant=tenant), deps=["c"])
        workflows.append((await app.enqueue_workflow(wf)).id)
        batch = await app.enqueue_batch(
            [step.build(name=f"m{n}", tenant=tenant, fail=n == 0) for n in range(6)],
            callback=summary.build(tenant=tenant),
        )
        batches.append(batch.id)
    return workflows, batches


async def _check(
    app: aqueue.App, workflows: list[int], batches: list[int], runs: list[tuple[str, int]]
) -> None:
    """States and order. The order is the order the jobs started in this process (all
    nodes are in it): a dependent can only be claimed after its dependency's outcome
    committed, which is after that dependency's function returned. (The database's now()
    cannot show this at millisecond scale: it is taken when a statement arrives, and its
    snapshot a moment later, so a claim can carry a time from before the commit it saw.)"""
    started = {job_id: index for index, (_, job_id) in enumerate(runs)}
    for wf_id in workflows:
        steps = (await app.workflow_status(wf_id)).steps
        assert {n: j.state.value for n, j in steps.items()} == {
            "a": "completed",
            "b": "completed",
            "c": "discarded",
            "d": "completed",
            "e": "cancelled",
        }
        for name, dep in (("b", "a"), ("c", "a"), ("d", "b"), ("d", "c")):
            assert started[steps[name].id] > started[steps[dep].id], (name, dep)
        assert steps["e"].id not in started
    for batch_id in batches:
        status = await app.workflow_status(batch_id)
        callback = status.steps["callback"]
        assert callback.result == {"completed": 5, "discarded": 1}
        members = [j.id for j in status.jobs if j.step is None]
        assert started[callback.id] > max(started[m] for m in members)


async def _stuck(app: aqueue.App) -> int:
    conn = await asyncpg.connect(app.url)
    try:
        return int(await conn.fetchval(STUCK.format(schema=schema_of(app))))
    finally:
        await conn.close()


@pytest.mark.parametrize("ack", ["async", "sync"])
@pytest.mark.parametrize("spec", list(SPECS))
async def test_every_combination_finishes(
    make_app: Callable[..., aqueue.App], spec: str, ack: str
) -> None:
    runs: list[tuple[str, int]] = []
    apps = [make_app(**CLUSTER) for _ in range(2)]
    async with AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app)
            jobs = _register(app, runs)
        await apps[0].migrate()
        workflows, batches = await _enqueue(apps[0], jobs)
        for app in apps:
            await stack.enter_async_context(app.worker({"work": SPECS[spec](ack)}))

        async def over() -> bool:
            return await _stuck(apps[0]) == 0

        await eventually(over, timeout=60, what="every job ended")
        await _check(apps[0], workflows, batches, runs)
    # Each job ran exactly once (Discard is final, so even the failing ones once).
    ids = [job_id for _, job_id in runs]
    assert len(ids) == len(set(ids)) == 2 * (4 + 6 + 1)
    assert sum(1 for name, _ in runs if name == "callback") == 2


WORKER_MODULE = textwrap.dedent(
    """
    import os
    import anyio
    import aqueue

    app = aqueue.App(os.environ["AQUEUE_DATABASE_URL"], schema=os.environ["AQ_SCHEMA"],
                     **{SETTINGS!r})
    RUNS = os.environ["AQ_SCHEMA"].join('""') + ".runs"

    async def clock(ctx):
        async with ctx.app.transaction() as conn:
            return await conn.fetchval("SELECT clock_timestamp()")

    async def ran(ctx, started):
        # Between the claim's commit and the outcome's: inside the job's true running time.
        async with ctx.app.transaction() as conn:
            await conn.execute(
                f"INSERT INTO {RUNS} VALUES ($1, $2, clock_timestamp())", ctx.job.id, started
            )

    @app.job(queue="work", partition_by="tenant", max_attempts=2)
    async def step(ctx: aqueue.JobContext, name: str, tenant: str, fail: bool = False) -> str:
        started = await clock(ctx)
        if name == "a" and os.environ.get("AQ_STALL"):
            await anyio.sleep_forever()  # killed here
        await ran(ctx, started)
        if fail:
            raise aqueue.Discard("planned failure")
        return name

    @app.job(queue="work", partition_by="tenant")
    async def summary(ctx: aqueue.JobContext, tenant: str) -> dict[str, int]:
        started = await clock(ctx)
        await ran(ctx, started)
        return dict(ctx.batch.counts)
    """
)


def _spawn(
    tmp_path: Path, url: str, schema: str, queue: str, stall: bool = False
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AQUEUE_DATABASE_URL": url,
        "AQ_SCHEMA": schema,
        "PYTHONPATH": str(tmp_path),
        "AQ_STALL": "1" if stall else "",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "aqueue.cli", "worker", "wf_worker:app", "-q", queue],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _write_module(tmp_path: Path, settings: dict[str, Any]) -> None:
    (tmp_path / "wf_worker.py").write_text(WORKER_MODULE.replace("{SETTINGS!r}", repr(settings)))


async def test_worker_processes_share_a_limit_of_one(
    make_app: Callable[..., aqueue.App], tmp_path: Path, aqueue_database_url: str
) -> None:
    """Three worker processes, one queue with global_limit=1 (the queue spec is stored by
    the first worker to start with it, here this test's App), ack="sync": the workflows
    and batches finish with nothing stuck, and never two of their jobs ran at once."""
    _write_module(tmp_path, dict(CLUSTER))
    runs: list[tuple[str, int]] = []
    app = make_app(**CLUSTER)
    jobs = _register(app, runs)
    async with app:
        await app.migrate()
        runs_table = f"{schema_of(app)}.runs"
        conn = await asyncpg.connect(app.url)
        try:
            await conn.execute(
                f"CREATE TABLE {runs_table} (id bigint, started timestamptz, ended timestamptz)"
            )
        finally:
            await conn.close()
        workflows, batches = await _enqueue(app, jobs)
        # Store the limit before any child claims (children started with a plain
        # concurrency would claim unlimited; the stored spec is what binds them all).
        # Paused meanwhile, so that this App's own worker claims nothing.
        await app.pause_queue("work")
        async with app.worker({"work": aqueue.Queue(concurrency=1, global_limit=1, ack="sync")}):
            limits = await app.queue_stats("work")
            assert limits["work"].global_limit == 1
        await app.resume_queue("work")
        procs = [_spawn(tmp_path, aqueue_database_url, app.schema, "work=3") for _ in range(3)]
        try:

            async def over() -> bool:
                return await _stuck(app) == 0

            await eventually(over, timeout=90, what="every job ended on the processes")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
        for batch_id in batches:
            status = await app.workflow_status(batch_id)
            assert status.steps["callback"].result == {"completed": 5, "discarded": 1}
        for wf_id in workflows:
            status = await app.workflow_status(wf_id)
            assert status.counts == {"completed": 3, "discarded": 1, "cancelled": 1}
        conn = await asyncpg.connect(app.url)
        try:
            ran = await conn.fetchval(f"SELECT count(*) FROM {runs_table}")
            overlap = await conn.fetchval(
                f"SELECT count(*) FROM {runs_table} AS a JOIN {runs_table} AS b "
                "ON a.id < b.id AND a.started < b.ended AND b.started < a.ended"
            )
        finally:
            await conn.close()
        assert ran == 2 * (4 + 6 + 1)  # every job that ran recorded its run
        assert overlap == 0


async def test_a_killed_worker_still_promotes_the_rescued_steps_dependents(
    make_app: Callable[..., aqueue.App], tmp_path: Path, aqueue_database_url: str
) -> None:
    settings = {**CLUSTER, "node_ttl": 2.0, "leader_ttl": 1.0}
    (tmp_path / "wf_worker.py").write_text(WORKER_MODULE.replace("{SETTINGS!r}", repr(settings)))
    runs: list[tuple[str, int]] = []
    app = make_app(**settings)
    jobs = _register(app, runs)
    async with app:
        await app.migrate()
        wf = aqueue.Workflow("killed")
        wf.add("a", jobs["step"].build(name="a", tenant="t"))
        wf.add("b", jobs["step"].build(name="b", tenant="t"), deps=["a"])
        run = await app.enqueue_workflow(wf)
        proc = _spawn(tmp_path, aqueue_database_url, app.schema, "work=2", stall=True)
        try:

            async def a_running() -> bool:
                job = await app.get_job(run.jobs["a"].id)
                return job is not None and job.state is aqueue.JobState.RUNNING

            await eventually(a_running, timeout=30, what="step a running in the child")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        async with app.worker({"work": 2}):

            async def over() -> bool:
                return (await app.workflow_status(run.id)).state == "completed"

            await eventually(over, timeout=60, what="the workflow completed after the rescue")
        status = await app.workflow_status(run.id)
        assert status.steps["a"].attempt == 2  # rescued, then run again here
        assert [name for name, _ in runs] == ["a", "b"]
        assert await _stuck(app) == 0
