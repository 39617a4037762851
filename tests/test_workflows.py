"""Workflows on real PostgreSQL: steps wait in ``pending`` and are promoted in the
transaction that ends their last dependency, failures cancel dependents transitively (or
let them run), bad graphs write nothing, and the backstop, cancel and retention hold."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import asyncpg
import pytest

import aqueue
from aqueue.db.params import Outcomes, outcome_row
from aqueue.testing import run_until_idle
from tests.support import eventually, schema_of


def _etl(app: aqueue.App, log: list[str]) -> dict[str, aqueue.JobDefinition[Any, Any]]:
    @app.job
    async def fetch(day: str) -> dict[str, Any]:
        log.append("fetch")
        return {"rows": [1, 2, 3], "day": day}

    @app.job
    async def clean(ctx: aqueue.JobContext) -> list[int]:
        log.append("clean")
        fetched = await ctx.dep_result("fetch")
        return [n * 10 for n in fetched["rows"]]

    @app.job
    async def load(ctx: aqueue.JobContext) -> int:
        log.append("load")
        return sum(await ctx.dep_result("clean"))

    @app.job(max_attempts=1)
    async def boom() -> None:
        log.append("boom")
        raise RuntimeError("boom")

    @app.job
    async def report(ctx: aqueue.JobContext) -> str:
        log.append("report")
        try:
            await ctx.dep_result("boom")
        except aqueue.DependencyFailed as exc:
            return f"without boom: {exc.state}"
        return "with boom"

    return {"fetch": fetch, "clean": clean, "load": load, "boom": boom, "report": report}


async def _count(app: aqueue.App, table: str) -> int:
    conn = await asyncpg.connect(app.url)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {schema_of(app)}.{table}"))
    finally:
        await conn.close()


async def test_a_chain_runs_in_order_and_passes_results(app: aqueue.App) -> None:
    log: list[str] = []
    jobs = _etl(app, log)
    wf = aqueue.Workflow("nightly-etl")
    # Added out of order on purpose: the graph, not the order of add(), decides.
    wf.add("load", jobs["load"].build(), deps=["clean"])
    wf.add("clean", jobs["clean"].build(), deps=["fetch"])
    wf.add("fetch", jobs["fetch"].build(day="2026-12-01"))
    run = await app.enqueue_workflow(wf)
    assert run.name == "nightly-etl"
    assert {name: job.state for name, job in run.jobs.items()} == {
        "fetch": aqueue.JobState.AVAILABLE,
        "clean": aqueue.JobState.PENDING,
        "load": aqueue.JobState.PENDING,
    }
    assert all(job.workflow_id == run.id and job.batch_id is None for job in run.jobs.values())
    assert run.jobs["clean"].step == "clean"

    await run_until_idle(app)
    assert log == ["fetch", "clean", "load"]
    status = await app.workflow_status(run.id)
    assert status.state == "completed" and status.kind == "workflow"
    assert status.steps["load"].result == 60
    assert status.steps["clean"].result == [10, 20, 30]
    # In order (the log): a step is claimed only after its dependency's outcome committed.
    assert all(job.attempt == 1 for job in status.jobs)


async def test_a_failed_dependency_cancels_dependents_transitively(app: aqueue.App) -> None:
    log: list[str] = []
    jobs = _etl(app, log)
    wf = aqueue.Workflow()
    wf.add("boom", jobs["boom"].build())
    wf.add("clean", jobs["clean"].build(), deps=["boom"])
    wf.add("load", jobs["load"].build(), deps=["clean"])
    wf.add("report", jobs["report"].build(), deps=["boom"], on_dep_failure="run")
    run = await app.enqueue_workflow(wf)
    await run_until_idle(app)
    status = await app.workflow_status(run.id)
    states = {name: job.state for name, job in status.steps.items()}
    assert states == {
        "boom": aqueue.JobState.DISCARDED,
        "clean": aqueue.JobState.CANCELLED,
        "load": aqueue.JobState.CANCELLED,
        "report": aqueue.JobState.COMPLETED,
    }
    assert sorted(log) == ["boom", "report"]
    assert status.steps["report"].result == "without boom: discarded"
    assert status.steps["load"].errors[-1]["type"] == "DependencyFailed"
    assert status.state == "failed"


async def test_a_long_cancel_cascade_is_a_loop_not_a_recursion(app: aqueue.App) -> None:
    # 300 levels: a trigger recursing once per level would exhaust PostgreSQL's stack.
    @app.job(max_attempts=1)
    async def fail() -> None:
        raise aqueue.Discard("no")

    @app.job
    async def step() -> None:
        raise AssertionError("must never run")

    wf = aqueue.Workflow("deep")
    wf.add("s0", fail.build())
    for i in range(1, 300):
        wf.add(f"s{i}", step.build(), deps=[f"s{i - 1}"])
    run = await app.enqueue_workflow(wf)
    await run_until_idle(app)
    status = await app.workflow_status(run.id)
    assert status.counts == {"discarded": 1, "cancelled": 299}


async def test_promotion_commits_with_the_dependency_outcome(app: aqueue.App) -> None:
    """Ending a dependency promotes its dependent inside the same transaction: visible to
    that transaction at once, to everyone else exactly at its commit."""
    jobs = _etl(app, [])
    wf = aqueue.Workflow()
    wf.add("fetch", jobs["fetch"].build(day="d"))
    wf.add("clean", jobs["clean"].build(), deps=["fetch"])
    run = await app.enqueue_workflow(wf)
    fetch_id, clean_id = run.jobs["fetch"].id, run.jobs["clean"].id
    table = f"{schema_of(app)}.jobs"
    writer = await asyncpg.connect(app.url)
    reader = await asyncpg.connect(app.url)
    state_sql = f"SELECT state::text FROM {table} WHERE id = $1"
    try:
        async with writer.transaction():
            await writer.execute(
                f"UPDATE {table} SET state = 'completed', finalized_at = now(), "
                "result = '{\"rows\": []}' WHERE id = $1",
                fetch_id,
            )
            assert await writer.fetchval(state_sql, clean_id) == "available"
            assert await reader.fetchval(state_sql, clean_id) == "pending"
        assert await reader.fetchval(state_sql, clean_id) == "available"
    finally:
        await writer.close()
        await reader.close()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda wf, j: None, "has no steps"),
        (lambda wf, j: wf.add("a", j.build(), deps=["nope"]), "depends on 'nope'"),
        (lambda wf, j: wf.add("a", j.build(), deps=["a"]), "depends on itself"),
        (
            lambda wf, j: (
                wf.add("a", j.build(), deps=["c"]),
                wf.add("b", j.build(), deps=["a"]),
                wf.add("c", j.build(), deps=["b"]),
                wf.add("free", j.build()),
            ),
            "form a cycle",
        ),
    ],
)
async def test_bad_graphs_raise_before_anything_is_written(
    app: aqueue.App, build: Any, message: str
) -> None:
    @app.job
    async def noop() -> None:
        pass

    wf = aqueue.Workflow("bad")
    build(wf, noop)
    with pytest.raises(aqueue.InvalidWorkflow, match=message):
        await app.enqueue_workflow(wf)
    assert await _count(app, "jobs") == 0
    assert await _count(app, "workflows") == 0


async def test_bad_steps_are_refused_when_added(app: aqueue.App) -> None:
    @app.job
    async def noop() -> None:
        pass

    wf = aqueue.Workflow()
    wf.add("a", noop.build())
    with pytest.raises(aqueue.InvalidWorkflow, match="two steps are named 'a'"):
        wf.add("a", noop.build())
    with pytest.raises(aqueue.InvalidWorkflow, match="on_dep_failure"):
        wf.add("b", noop.build(), on_dep_failure="ignore")  # type: ignore[arg-type]
    with pytest.raises(aqueue.InvalidWorkflow, match="not a str"):
        wf.add("c", noop.build(), deps="a")
    with pytest.raises(aqueue.InvalidWorkflow, match="unique"):
        wf.add("d", noop.options(unique=aqueue.Unique()).build())
    with pytest.raises(aqueue.InvalidWorkflow, match=r"expected a job from \.build"):
        wf.add("e", noop)  # type: ignore[arg-type]
    with pytest.raises(aqueue.InvalidOption, match="step name"):
        wf.add("", noop.build())
    assert wf.steps == ["a"]


async def test_enqueue_workflow_in_the_callers_transaction(app: aqueue.App) -> None:
    jobs = _etl(app, [])
    wf = aqueue.Workflow()
    wf.add("fetch", jobs["fetch"].build(day="d"))
    wf.add("clean", jobs["clean"].build(), deps=["fetch"])
    conn = await asyncpg.connect(app.url)
    try:
        tx = conn.transaction()
        await tx.start()
        await app.enqueue_workflow(wf, conn=conn)
        await tx.rollback()
        assert await _count(app, "jobs") == 0
        assert await _count(app, "job_deps") == 0
        async with conn.transaction():
            run = await app.enqueue_workflow(wf, conn=conn)
    finally:
        await conn.close()
    assert (await app.workflow_status(run.id)).counts == {"available": 1, "pending": 1}


async def test_cancel_workflow_cancels_what_has_not_ended(app: aqueue.App) -> None:
    jobs = _etl(app, [])
    wf = aqueue.Workflow()
    wf.add("fetch", jobs["fetch"].build(day="d"))
    wf.add("clean", jobs["clean"].build(), deps=["fetch"])
    wf.add("load", jobs["load"].build(), deps=["clean"])
    run = await app.enqueue_workflow(wf)
    assert await app.cancel_workflow(run.id) == 3
    status = await app.workflow_status(run.id)
    assert status.state == "cancelled"
    assert status.counts == {"cancelled": 3}
    assert await app.cancel_workflow(run.id) == 0
    with pytest.raises(aqueue.WorkflowNotFound):
        await app.cancel_workflow(run.id + 1000)
    with pytest.raises(aqueue.WorkflowNotFound):
        await app.workflow_status(run.id + 1000)


async def test_the_backstop_settles_a_step_whose_dependency_was_deleted(
    app: aqueue.App,
) -> None:
    jobs = _etl(app, [])
    wf = aqueue.Workflow()
    wf.add("fetch", jobs["fetch"].build(day="d"))
    wf.add("clean", jobs["clean"].build(), deps=["fetch"])
    wf.add("report", jobs["report"].build(), deps=["fetch"], on_dep_failure="run")
    run = await app.enqueue_workflow(wf)
    assert await app.delete(run.jobs["fetch"].id)
    assert await app.db.promote_stranded(100) == 2
    status = await app.workflow_status(run.id)
    assert status.steps["clean"].state == aqueue.JobState.CANCELLED
    assert status.steps["report"].state == aqueue.JobState.AVAILABLE
    assert await app.db.promote_stranded(100) == 0  # nothing left to settle


async def _waits_for_a_workflow_lock(conn: asyncpg.Connection) -> bool:
    """Whether a transaction of this database waits for an advisory (workflow) lock."""
    return bool(
        await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    )


async def test_the_backstop_takes_the_workflow_lock_before_any_row(
    app: aqueue.App, aqueue_database_url: str
) -> None:
    """Every settling locks a workflow before its pending rows (lock_workflows); the
    backstop too, or it could deadlock with an outcome settling the same workflow."""
    jobs = _etl(app, [])
    wf = aqueue.Workflow()
    wf.add("fetch", jobs["fetch"].build(day="d"))
    wf.add("clean", jobs["clean"].build(), deps=["fetch"])
    run = await app.enqueue_workflow(wf)
    assert await app.delete(run.jobs["fetch"].id)
    schema = schema_of(app)
    holder = await asyncpg.connect(aqueue_database_url)
    other = await asyncpg.connect(aqueue_database_url)
    try:
        locking = holder.transaction()
        await locking.start()
        await holder.execute(f"SELECT {schema}.lock_workflows($1)", [run.id])
        async with asyncio.TaskGroup() as tg:
            backstop = tg.create_task(app.db.promote_stranded(100))

            await eventually(
                lambda: _waits_for_a_workflow_lock(other),
                what="the backstop waiting on the workflow lock",
            )
            # It holds no row while it waits: an outcome could lock this one now.
            async with other.transaction():
                locked = await other.fetchval(
                    f"SELECT id FROM {schema}.jobs WHERE id = $1 FOR UPDATE NOWAIT",
                    run.jobs["clean"].id,
                )
                assert locked == run.jobs["clean"].id
            assert not backstop.done()
            await locking.commit()  # lets the backstop go on
        assert backstop.result() == 1
    finally:
        await holder.close()
        await other.close()
    status = await app.workflow_status(run.id)
    assert status.steps["clean"].state == aqueue.JobState.CANCELLED


async def test_the_leader_runs_the_backstop(make_app: Any) -> None:
    app = make_app(heartbeat_interval=0.2)
    async with app:
        await app.migrate()
        jobs = _etl(app, [])
        wf = aqueue.Workflow()
        wf.add("fetch", jobs["fetch"].build(day="d"))
        wf.add("clean", jobs["clean"].build(), deps=["fetch"])
        run = await app.enqueue_workflow(wf)
        await app.delete(run.jobs["fetch"].id)
        async with app.worker({"other": 1}):

            async def settled() -> bool:
                status = await app.workflow_status(run.id)
                return status.steps["clean"].state == aqueue.JobState.CANCELLED

            await eventually(settled, what="the stranded step settled")


async def test_cancel_and_retry_of_a_running_step_never_wait_for_its_workflow_lock(
    app: aqueue.App, aqueue_database_url: str
) -> None:
    """An outcome write locks the running step's row, then its workflow's lock (in the
    trigger). app.cancel and app.retry of a running step take no workflow lock, so they
    cannot take the two the other way round (a deadlock): they go on while another
    transaction holds the workflow's lock."""
    jobs = _etl(app, [])
    wf = aqueue.Workflow()
    wf.add("fetch", jobs["fetch"].build(day="d"))
    wf.add("clean", jobs["clean"].build(), deps=["fetch"])
    run = await app.enqueue_workflow(wf)
    [row] = await app.db.claim("default", 10, app.registry.kinds(), "a-node", columns="full")
    assert row["id"] == run.jobs["fetch"].id
    schema = schema_of(app)
    holder = await asyncpg.connect(aqueue_database_url)  # another settler of the workflow
    try:
        holding = holder.transaction()
        await holding.start()
        await holder.execute(f"SELECT {schema}.lock_workflows($1)", [run.id])
        with anyio.fail_after(10):
            flagged = await app.cancel(row["id"])
            with pytest.raises(aqueue.JobStateError):
                await app.retry(row["id"])
        assert flagged is not None and flagged.state is aqueue.JobState.RUNNING
        # Its outcome write waits for the workflow's lock, then settles the dependent.
        done = Outcomes([outcome_row(row["id"], row["attempt"], "completed", "1", None, None)])
        async with asyncio.TaskGroup() as tg:
            writing = tg.create_task(app.db.record_outcomes(done, columns=False))
            await eventually(
                lambda: _waits_for_a_workflow_lock(holder), what="the outcome write waiting"
            )
            await holding.commit()
        assert list(writing.result()) == [row["id"]]
    finally:
        await holder.close()
    status = await app.workflow_status(run.id)
    assert status.steps["fetch"].state == aqueue.JobState.COMPLETED
    assert status.steps["clean"].state == aqueue.JobState.AVAILABLE


async def test_an_outcome_write_ended_by_a_deadlock_is_written_again_at_once(
    app: aqueue.App, aqueue_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A transaction holding a step's workflow lock and then locking the step's row (an
    admin call that saw the step still waiting) deadlocks with the step's outcome write,
    and PostgreSQL ends the write. The completer writes it again at once, with no warning."""
    started = anyio.Event()
    release = anyio.Event()

    @app.job
    async def step() -> int:
        started.set()
        await release.wait()
        return 1

    @app.job(queue="later")
    async def after() -> None: ...

    wf = aqueue.Workflow()
    wf.add("only", step.build())
    wf.add("next", after.build(), deps=["only"])  # its promotion takes the workflow's lock
    run = await app.enqueue_workflow(wf)
    job_id = run.jobs["only"].id
    schema = schema_of(app)
    admin = await asyncpg.connect(aqueue_database_url)
    caplog.set_level("INFO", logger="aqueue")
    try:
        async with app.worker({"default": 1}):
            with anyio.fail_after(10):
                await started.wait()
            locking = admin.transaction()
            await locking.start()
            await admin.execute(f"SELECT {schema}.lock_workflows($1)", [run.id])
            release.set()  # the outcome write locks the row, then waits for the lock
            await eventually(
                lambda: _waits_for_a_workflow_lock(admin), what="the outcome write waiting"
            )
            locked = await admin.fetchval(
                f"SELECT id FROM {schema}.jobs WHERE id = $1 FOR UPDATE", job_id
            )  # the deadlock: PostgreSQL ends the write, which waited first
            assert locked == job_id
            await locking.commit()
            done = await app.wait(job_id, timeout=10)
    finally:
        await admin.close()
    assert done.state is aqueue.JobState.COMPLETED and done.result == 1
    assert (await app.workflow_status(run.id)).steps["next"].state is aqueue.JobState.AVAILABLE
    messages = [record.getMessage() for record in caplog.records]
    assert any("met a deadlock" in message for message in messages), messages
    assert not any("recording outcomes failed" in message for message in messages), messages


async def test_retention_never_deletes_a_job_retried_meanwhile(
    app: aqueue.App, aqueue_database_url: str
) -> None:
    """A retry takes its workflow's lock (as app.retry does) and retention takes it
    before it reads: a job brought back while its workflow is being pruned stays."""

    @app.job
    async def plain() -> None:
        pass

    wf = aqueue.Workflow()
    wf.add("only", plain.build())
    run = await app.enqueue_workflow(wf)
    await run_until_idle(app)
    schema = schema_of(app)
    retrier = await asyncpg.connect(aqueue_database_url)
    try:
        retrying = retrier.transaction()
        await retrying.start()
        await retrier.execute(f"SELECT {schema}.lock_workflows($1)", [run.id])
        await retrier.execute(
            f"UPDATE {schema}.jobs SET state = 'available', finalized_at = NULL WHERE id = $1",
            run.jobs["only"].id,
        )
        async with asyncio.TaskGroup() as tg:
            pruning = tg.create_task(app.db.prune_workflows(0.0, 100))
            await eventually(
                lambda: _waits_for_a_workflow_lock(retrier),
                what="retention waiting on the workflow lock",
            )
            await retrying.commit()
        assert pruning.result() == 0
    finally:
        await retrier.close()
    assert (await app.workflow_status(run.id)).counts == {"available": 1}
    await run_until_idle(app)
    assert await app.db.prune_workflows(0.0, 100) == 1  # once it has ended again


async def test_retention_removes_finished_workflows_whole(app: aqueue.App) -> None:
    jobs = _etl(app, [])

    @app.job
    async def plain() -> None:
        pass

    wf = aqueue.Workflow()
    wf.add("fetch", jobs["fetch"].build(day="d"))
    wf.add("clean", jobs["clean"].build(), deps=["fetch"])
    done = await app.enqueue_workflow(wf)
    await plain.enqueue()
    await run_until_idle(app)
    open_wf = aqueue.Workflow("still-open")
    open_wf.add("fetch", jobs["fetch"].build(day="d"))
    open_wf.add("boom", jobs["boom"].build(), deps=["fetch"])
    still = await app.enqueue_workflow(open_wf)
    # The open workflow's first step ends long ago; its second has not ended.
    conn = await asyncpg.connect(app.url)
    try:
        await conn.execute(
            f"UPDATE {schema_of(app)}.jobs SET state = 'completed', finalized_at = now() "
            "WHERE id = $1",
            still.jobs["fetch"].id,
        )
        await conn.execute(
            f"UPDATE {schema_of(app)}.jobs SET finalized_at = now() - interval '2 hours' "
            "WHERE finalized_at IS NOT NULL"
        )
        await conn.execute(
            f"UPDATE {schema_of(app)}.workflows SET created_at = now() - interval '3 hours'"
        )
    finally:
        await conn.close()
    # Plain job pruning leaves workflow jobs alone; workflow pruning takes whole ones.
    assert await app.db.prune_jobs(3600, 100) == 1
    assert await app.db.prune_workflows(3600, 100) == 1
    with pytest.raises(aqueue.WorkflowNotFound):
        await app.workflow_status(done.id)
    assert (await app.workflow_status(still.id)).counts == {"completed": 1, "available": 1}
    assert await _count(app, "job_deps") == 1


async def test_list_workflows_pages_newest_first(app: aqueue.App) -> None:
    jobs = _etl(app, [])
    ids = []
    for n in range(3):
        wf = aqueue.Workflow(f"wf-{n}")
        wf.add("fetch", jobs["fetch"].build(day="d"))
        ids.append((await app.enqueue_workflow(wf)).id)
    listed = await app.list_workflows(limit=2)
    assert [w.id for w in listed] == [ids[2], ids[1]]
    assert listed[0].name == "wf-2" and listed[0].counts == {"available": 1}
    assert listed[0].state == "running"
    more = await app.list_workflows(before=listed[-1].id)
    assert [w.id for w in more] == [ids[0]]
    assert await app.list_workflows(kind="batch") == []
    with pytest.raises(aqueue.InvalidOption, match="kind"):
        await app.list_workflows(kind="dag")  # type: ignore[arg-type]


async def test_a_failed_dependency_cannot_be_retried_its_dependents_were_settled(
    app: aqueue.App,
) -> None:
    log: list[str] = []
    jobs = _etl(app, log)

    @app.job
    async def after_boom(ctx: aqueue.JobContext) -> None:
        await ctx.dep_result("boom")

    wf = aqueue.Workflow()
    wf.add("boom", jobs["boom"].build())
    wf.add("clean", after_boom.build(), deps=["boom"])
    wf.add("report", jobs["report"].build(), deps=["boom"], on_dep_failure="run")
    run = await app.enqueue_workflow(wf)
    await run_until_idle(app)
    with pytest.raises(aqueue.JobStateError, match="dependents were already settled"):
        await app.retry(run.jobs["boom"].id)
    # A cancelled step without dependents of its own can be run again by hand.
    retried = await app.retry(run.jobs["clean"].id)
    assert retried.state == aqueue.JobState.AVAILABLE
    await run_until_idle(app)
    clean = (await app.workflow_status(run.id)).steps["clean"]
    # Its dependency still failed: DependencyFailed discards at once (waiting cannot help).
    assert clean.state == aqueue.JobState.DISCARDED
    assert clean.errors[-1]["type"] == "DependencyFailed" and clean.attempt == 1


async def test_a_step_cannot_be_retried_before_its_dependencies_end(app: aqueue.App) -> None:
    jobs = _etl(app, [])
    wf = aqueue.Workflow()
    wf.add("fetch", jobs["fetch"].build(day="d"))
    wf.add("clean", jobs["clean"].build(), deps=["fetch"])
    run = await app.enqueue_workflow(wf)
    assert (await app.cancel(run.jobs["clean"].id)) is not None
    with pytest.raises(aqueue.JobStateError, match="dependencies have not all ended"):
        await app.retry(run.jobs["clean"].id)


async def test_steps_of_a_unique_kind_are_refused(app: aqueue.App) -> None:
    @app.job(unique=aqueue.Unique())
    async def once() -> None:
        pass

    wf = aqueue.Workflow()
    wf.add("a", once.build())
    with pytest.raises(aqueue.InvalidWorkflow, match="unique"):
        await app.enqueue_workflow(wf)
    assert await _count(app, "jobs") == 0


async def test_rename_kind_moves_pending_steps(app: aqueue.App) -> None:
    jobs = _etl(app, [])

    @app.job(name="clean.v2")
    async def clean_v2() -> None:
        pass

    wf = aqueue.Workflow()
    wf.add("fetch", jobs["fetch"].build(day="d"))
    wf.add("clean", jobs["clean"].build(), deps=["fetch"])
    run = await app.enqueue_workflow(wf)
    report = await app.rename_kind("clean", "clean.v2")
    assert report == 1  # jobs moved
    assert (await app.workflow_status(run.id)).steps["clean"].kind == "clean.v2"


async def test_wide_cancels_and_cascades_stay_bounded(app: aqueue.App) -> None:
    """A batch of 2,500 is cancelled in rounds (one transaction); a failed root cancels a
    3,000-wide fan-out in one statement. Both finish, with every job accounted for."""

    @app.job(max_attempts=1)
    async def fail() -> None:
        raise aqueue.Discard("no")

    @app.job
    async def leaf(n: int = 0) -> None:
        raise AssertionError("must not run")

    batch = await app.enqueue_batch([leaf.build(n=n) for n in range(2500)], callback=leaf.build())
    assert await app.cancel_workflow(batch.id) == 2501
    assert (await app.workflow_status(batch.id)).counts == {"cancelled": 2501}
    wf = aqueue.Workflow("wide")
    wf.add("root", fail.build())
    for n in range(3000):
        wf.add(f"s{n}", leaf.build(n=n), deps=["root"])
    run = await app.enqueue_workflow(wf)
    await run_until_idle(app)
    assert (await app.workflow_status(run.id)).counts == {"discarded": 1, "cancelled": 3000}


async def test_two_settling_transactions_of_one_workflow_wait_and_settle_right(
    app: aqueue.App,
) -> None:
    """A discarded a1 cancels q and r, then s (q's dependent), while d's completion counts
    down s and r, both transactions open at once: the second waits for the first (the
    workflow's lock, taken before any pending row) and every step ends as it must. (The
    interleaving that deadlocked without that lock is inside single statements, so this
    test shows the waiting and the outcome, not the deadlock itself.)"""
    jobs = _etl(app, [])
    fetch = jobs["fetch"]
    wf = aqueue.Workflow()
    wf.add("a1", fetch.build(day="a1"))
    wf.add("d", fetch.build(day="d"))
    wf.add("q", fetch.build(day="q"), deps=["a1"])
    wf.add("s", fetch.build(day="s"), deps=["q", "d"])
    wf.add("r", fetch.build(day="r"), deps=["a1", "d"])
    run = await app.enqueue_workflow(wf)
    ids = {name: job.id for name, job in run.jobs.items()}
    table = f"{schema_of(app)}.jobs"
    end = (
        f"UPDATE {table} SET state = $2::text::{schema_of(app)}.job_state, "
        "finalized_at = now() WHERE id = $1"
    )
    first = await asyncpg.connect(app.url)
    second = await asyncpg.connect(app.url)
    try:
        tx = first.transaction()
        await tx.start()
        await first.execute(end, ids["d"], "completed")
        waiting = asyncio.ensure_future(second.execute(end, ids["a1"], "discarded"))
        await eventually(
            lambda: first.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid = $1",
                second.get_server_pid(),
            ),
            what="the second transaction waiting for the first",
        )
        await tx.commit()
        await asyncio.wait_for(waiting, 10)
    finally:
        await first.close()
        await second.close()
    status = await app.workflow_status(run.id)
    assert {n: j.state.value for n, j in status.steps.items()} == {
        "a1": "discarded",
        "d": "completed",
        "q": "cancelled",
        "s": "cancelled",
        "r": "cancelled",
    }
