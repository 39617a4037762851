"""Deploy safety and job control: aliases, rename_kind, kind-aware claiming across versions,
pause / resume, queue_stats, drain and obliterate, on real PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

import aqueue
from aqueue import JobState
from aqueue.testing import run_until_idle


async def _insert_node(
    app: aqueue.App,
    node_id: str,
    kinds: list[str],
    queues: dict[str, int],
    *,
    alive: bool = True,
) -> None:
    """A row of the nodes table as a worker of the cluster code writes it."""
    async with app.db.pool.acquire() as conn:
        await conn.execute(
            f'INSERT INTO "{app.schema}".nodes (id, host, pid, expires_at, queues, kinds) '
            "VALUES ($1, 'test', 1, now() + make_interval(secs => $2), $3::jsonb, $4)",
            node_id,
            60.0 if alive else -60.0,
            json.dumps(queues),
            kinds,
        )


async def _stays(app: aqueue.App, job_ids: list[int], state: JobState, seconds: float) -> None:
    """Assert the jobs stay in ``state`` for ``seconds`` (several poll intervals)."""
    deadline = anyio.current_time() + seconds
    while anyio.current_time() < deadline:
        for job_id in job_ids:
            job = await app.get_job(job_id)
            assert job is not None and job.state is state, job
        await anyio.sleep(0.05)


# -- aliases and rename_kind -----------------------------------------------------------------


async def test_job_enqueued_under_an_old_kind_runs_via_its_alias(
    make_app: Callable[..., aqueue.App],
) -> None:
    old_version = make_app()

    @old_version.job(name="billing.charge")
    async def charge_v1(amount: int) -> int:
        raise AssertionError("the old code must not run")

    new_version = make_app()

    @new_version.job(name="payments.charge", aliases=["billing.charge"])
    async def charge(amount: int) -> int:
        return amount * 2

    async with old_version, new_version:
        await old_version.migrate()
        job = await charge_v1.options(schedule_in=0).enqueue(amount=21)
        assert job.kind == "billing.charge"
        await run_until_idle(new_version)
        done = await new_version.wait(job.id, timeout=10)
    assert done.state is JobState.COMPLETED and done.result == 42
    assert done.kind == "billing.charge"  # the row keeps its kind; the alias routed it


async def test_rename_kind_moves_waiting_jobs_and_leaves_running_ones(
    make_app: Callable[..., aqueue.App],
) -> None:
    worker_app = make_app()
    started = anyio.Event()
    release = anyio.Event()

    @worker_app.job(name="old_kind", queue="slow")
    async def blocking(n: int) -> int:
        started.set()
        await release.wait()
        return n

    admin = make_app()

    @admin.job(name="new_kind", aliases=["old_kind"])
    async def renamed(n: int) -> int:
        return n

    async with worker_app, admin:
        await admin.migrate()
        running = await blocking.enqueue(n=0)
        async with worker_app.worker({"slow": 1}):
            with anyio.fail_after(10):
                await started.wait()
            waiting = [
                await worker_app.enqueue("old_kind", {"n": 1}),
                await worker_app.enqueue("old_kind", {"n": 2}, queue="other"),
                await worker_app.enqueue("old_kind", {"n": 3}, schedule_in=3600),
            ]
            retryable = await worker_app.enqueue("old_kind", {"n": 4}, queue="other")
            async with admin.db.pool.acquire() as conn:
                await conn.execute(
                    f"UPDATE \"{admin.schema}\".jobs SET state = 'retryable' WHERE id = $1",
                    retryable.id,
                )
            finished = await worker_app.enqueue("old_kind", {"n": 5}, queue="other")
            await worker_app.cancel(finished.id)
            # Small batches: the walk over ids must still move everything.
            report = await admin.control.rename_kind("old_kind", "new_kind", batch_size=2)
            assert report.moved == 4 and report.running == 1
            for job in [*waiting, retryable]:
                moved = await admin.get_job(job.id)
                assert moved is not None and moved.kind == "new_kind", moved
                assert moved.state is job.state or job.id == retryable.id
            still = await admin.get_job(running.id)
            assert still is not None and still.kind == "old_kind"
            assert still.state is JobState.RUNNING
            cancelled = await admin.get_job(finished.id)
            assert cancelled is not None and cancelled.kind == "old_kind"
            # Nothing left to move: a second run moves nothing and is not an error.
            assert await admin.rename_kind("old_kind", "new_kind") == 0
            release.set()
            done = await worker_app.wait(running.id, timeout=10)
        assert done.state is JobState.COMPLETED and done.kind == "old_kind"


async def test_rename_kind_is_safe_while_workers_run(make_app: Callable[..., aqueue.App]) -> None:
    """Old-kind jobs are claimed by an old worker while the rename walks them: every job runs
    exactly once, under one kind or the other."""
    ran: list[tuple[str, int]] = []
    old_app = make_app()

    @old_app.job(name="v1")
    async def v1(n: int) -> None:
        ran.append(("v1", n))

    new_app = make_app()

    @new_app.job(name="v2")
    async def v2(n: int) -> None:
        ran.append(("v2", n))

    async with old_app, new_app:
        await old_app.migrate()
        jobs = await old_app.enqueue_many([v1.build(n=i) for i in range(300)])
        async with old_app.worker({"default": 5}), new_app.worker({"default": 5}):
            moved = await new_app.rename_kind("v1", "v2", batch_size=7)
            with anyio.fail_after(30):
                for job in jobs:
                    await new_app.wait(job.id)
    assert sorted(n for _, n in ran) == list(range(300))
    assert sum(1 for kind, _ in ran if kind == "v2") == moved


async def test_rename_kind_bad_input(app: aqueue.App) -> None:
    @app.job
    async def known(n: int = 0) -> None: ...

    job = await app.enqueue("ghost_kind", {}, allow_unknown=True)
    with pytest.raises(aqueue.UnknownJobKind, match=r"'nowhere'.*no job or alias"):
        await app.rename_kind("ghost_kind", "nowhere")
    with pytest.raises(aqueue.UnknownJobKind, match="'typo'; no job of that kind exists"):
        await app.rename_kind("typo", "known")
    with pytest.raises(aqueue.InvalidOption, match="new: is the same kind"):
        await app.rename_kind("known", "known")
    with pytest.raises(aqueue.InvalidOption, match="old: must be a non-empty string"):
        await app.rename_kind("", "known")
    with pytest.raises(aqueue.InvalidOption, match="batch_size"):
        await app.rename_kind("ghost_kind", "known", batch_size=0)
    stored = await app.get_job(job.id)
    assert stored is not None and stored.kind == "ghost_kind"
    # A name that looks like SQL is only ever a parameter.
    with pytest.raises(aqueue.UnknownJobKind):
        await app.rename_kind("x'; DELETE FROM jobs; --", "known")
    assert len(await app.list_jobs()) == 1
    # A kind only a live worker knows is accepted; so is any kind with allow_unknown.
    await _insert_node(app, "n1", ["elsewhere"], {"default": 1})
    assert await app.rename_kind("ghost_kind", "elsewhere") == 1
    assert await app.rename_kind("elsewhere", "anything", allow_unknown=True) == 1
    assert await app.rename_kind("anything", "known") == 1


# -- kind-aware claiming across versions -----------------------------------------------------


async def test_old_and_new_workers_share_a_queue(make_app: Callable[..., aqueue.App]) -> None:
    ran_on: dict[tuple[str, int], str] = {}
    old = make_app()
    new = make_app()

    @old.job(name="a")
    async def a_old(n: int) -> None:
        ran_on[("a", n)] = "old"

    @new.job(name="a")
    async def a_new(n: int) -> None:
        ran_on[("a", n)] = "new"

    @new.job(name="b")
    async def b_new(n: int) -> None:
        ran_on[("b", n)] = "new"

    async with old, new:
        await old.migrate()
        async with old.worker({"default": 20}), new.worker({"default": 2}):
            jobs = await new.enqueue_many(
                [b_new.build(n=i) if i % 2 else a_new.build(n=i) for i in range(200)]
            )
            with anyio.fail_after(30):
                done = [await new.wait(job.id) for job in jobs]
    assert all(job.state is JobState.COMPLETED for job in done)
    assert all(job.attempt == 1 and not job.errors for job in done)  # zero failures
    assert {where for (kind, _), where in ran_on.items() if kind == "b"} == {"new"}
    assert len(ran_on) == 200


# -- pause and resume ------------------------------------------------------------------------


async def test_pause_stops_claims_on_every_node_and_resume_restarts_them(
    make_app: Callable[..., aqueue.App],
) -> None:
    # A long poll interval: only resume's wake-up can get the jobs claimed in time.
    nodes = [make_app(poll_interval=60.0) for _ in range(3)]
    ran: list[int] = []
    for each in nodes:

        @each.job(queue="mail")
        async def send(n: int) -> None:
            ran.append(n)

        @each.job(queue="other")
        async def other(n: int) -> None: ...

        await each.open()
    await nodes[0].migrate()
    admin = nodes[0]
    await admin.enqueue("send", {"n": -1})
    assert await admin.pause_queue("mail") is True
    assert await admin.pause_queue("mail") is False  # already paused
    async with (
        nodes[0].worker({"mail": 5, "other": 1}),
        nodes[1].worker({"mail": 5}),
        nodes[2].worker({"mail": 5}),
    ):
        jobs = [await nodes[i % 3].enqueue("send", {"n": i}) for i in range(9)]
        # An unpaused queue on the same workers still runs.
        control_job = await admin.enqueue("other", {"n": 0})
        await admin.wait(control_job.id, timeout=10)
        await _stays(admin, [j.id for j in jobs], JobState.AVAILABLE, 1.0)
        for node in nodes:  # the claim itself refuses, whoever runs it
            assert await node.db.claim("mail", 10, ["send"], "probe", columns="full") == []
        stats = (await admin.queue_stats())["mail"]
        assert stats.paused and stats.paused_at is not None and stats.counts["available"] == 10
        assert await admin.resume_queue("mail") is True
        with anyio.fail_after(5):
            for job in jobs:
                await admin.wait(job.id)
    assert sorted(ran) == list(range(-1, 9))
    assert await admin.resume_queue("mail") is False  # not paused any more


async def test_pause_survives_a_restart(make_app: Callable[..., aqueue.App]) -> None:
    first = make_app()

    @first.job
    async def work() -> None: ...

    async with first:
        await first.migrate()
        await first.pause_queue("default", allow_unknown=True)
        job = await work.enqueue()
    restarted = make_app()  # the same code in a new process

    @restarted.job(name="work")
    async def work_again() -> None: ...

    async with restarted:
        assert (await restarted.queue_stats("default"))["default"].paused
        async with restarted.worker({"default": 2}):
            await _stays(restarted, [job.id], JobState.AVAILABLE, 0.6)
            await restarted.resume_queue("default")
            done = await restarted.wait(job.id, timeout=5)
    assert done.state is JobState.COMPLETED


async def test_unknown_and_odd_queue_names(app: aqueue.App) -> None:
    calls: dict[str, Callable[[Any], Awaitable[object]]] = {
        "pause_queue": lambda q: app.pause_queue(q),
        "resume_queue": lambda q: app.resume_queue(q),
        "drain": lambda q: app.drain(q, timeout=1),
        "obliterate_queue": lambda q: app.obliterate_queue(q),
        "queue_stats": lambda q: app.queue_stats(q),
    }
    for label, call in calls.items():
        with pytest.raises(aqueue.UnknownQueue, match="unknown queue 'nope'") as info:
            await call("nope")
        assert info.value.queue == "nope" and isinstance(info.value, LookupError), label
        with pytest.raises(aqueue.InvalidOption, match="queue: must be a non-empty string"):
            await call("")
        with pytest.raises(aqueue.InvalidOption, match="queue"):
            await call(3)
    # Names are parameters: a quote or a semicolon is just part of a name.
    odd = "x'); DROP TABLE jobs; --"
    assert await app.pause_queue(odd, allow_unknown=True) is True
    stats = await app.queue_stats()
    assert list(stats) == [odd] and stats[odd].paused
    assert await app.resume_queue(odd) is True
    assert await app.list_jobs() == []
    # A queue a live worker works is known even before its first job.
    await _insert_node(app, "n1", ["k"], {"fresh": 2})
    assert await app.pause_queue("fresh") is True
    await _insert_node(app, "n2", ["k"], {"gone": 2}, alive=False)
    with pytest.raises(aqueue.UnknownQueue):
        await app.pause_queue("gone")


# -- queue_stats -----------------------------------------------------------------------------


async def test_queue_stats_counts_ages_nodes_and_unrunnable_jobs(app: aqueue.App) -> None:
    # No worker runs here (a running worker records its own node): the node rows are
    # written by hand, and "running" is a claim made on behalf of node "n-run".
    @app.job(queue="q")
    async def a(n: int) -> None: ...

    @app.job(queue="q")
    async def b(n: int) -> None: ...

    claimed = await a.enqueue(n=0)
    assert [row["id"] for row in await app.db.claim("q", 1, ["a"], "n-run", columns="full")] == [
        claimed.id
    ]
    await app.pause_queue("q")
    await a.enqueue(n=1)
    await b.enqueue(n=1)
    await b.enqueue(n=2)
    await b.options(schedule_in=3600).enqueue(n=3)
    await app.enqueue("from_the_future", {}, queue="q", allow_unknown=True)
    stats = (await app.queue_stats())["q"]
    assert stats.counts[JobState.RUNNING] == 1 and stats.running == 1
    assert stats.counts[JobState.AVAILABLE] == 4 and stats.counts["scheduled"] == 1
    assert stats.waiting == 5 and stats.paused
    assert stats.running_by_node == {"n-run": 1}
    assert stats.oldest_available_age is not None and 0 <= stats.oldest_available_age < 60
    # No live node: nothing can run anything that waits.
    assert stats.unrunnable == {"a": 1, "b": 3, "from_the_future": 1}
    assert stats.nodes == 0
    # An old node (kinds a), a new one (a, b) on another queue, a dead one knowing all.
    await _insert_node(app, "old", ["a"], {"q": 5})
    await _insert_node(app, "other_queue", ["a", "b"], {"elsewhere": 5})
    await _insert_node(app, "dead", ["a", "b", "from_the_future"], {"q": 5}, alive=False)
    stats = (await app.queue_stats("q"))["q"]
    assert stats.unrunnable == {"b": 3, "from_the_future": 1} and stats.nodes == 1
    await _insert_node(app, "new", ["a", "b"], {"q": 5})
    all_stats = await app.queue_stats()
    assert set(all_stats) == {"q", "elsewhere"}
    assert all_stats["q"].unrunnable == {"from_the_future": 1}
    assert all_stats["q"].nodes == 2
    assert all_stats["elsewhere"].nodes == 1 and all_stats["elsewhere"].waiting == 0
    assert all_stats["elsewhere"].oldest_available_age is None
    assert all_stats["elsewhere"].counts == {state: 0 for state in JobState}


# -- drain and obliterate --------------------------------------------------------------------


async def test_drain_waits_for_waiting_and_running_jobs(app: aqueue.App) -> None:
    release = anyio.Event()

    @app.job(queue="v1")
    async def step(n: int) -> None:
        if n == 0:
            await release.wait()

    jobs = await app.enqueue_many([step.build(n=i) for i in range(20)])
    async with app.worker({"v1": 4}):
        with pytest.raises(TimeoutError, match=r"queue 'v1' still has .* waiting or running"):
            await app.drain("v1", timeout=0.5)
        release.set()
        await app.drain("v1", timeout=10)
        for job in jobs:
            stored = await app.get_job(job.id)
            assert stored is not None and stored.state is JobState.COMPLETED
    await app.drain("v1", timeout=0)  # nothing left: returns at once
    with pytest.raises(aqueue.InvalidOption, match="timeout"):
        await app.drain("v1", timeout=-1)


async def test_obliterate_refuses_while_running_unless_forced(app: aqueue.App) -> None:
    started = anyio.Event()
    cancelled = anyio.Event()

    @app.job(queue="v1")
    async def hang(n: int) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    @app.job(queue="v2")
    async def keep(n: int) -> None: ...

    running = await hang.enqueue(n=0)
    kept = await keep.options(schedule_in=3600).enqueue(n=0)
    async with app.worker({"v1": 1}):
        with anyio.fail_after(10):
            await started.wait()
        await hang.enqueue(n=1)
        await hang.options(schedule_in=60).enqueue(n=2)
        with pytest.raises(aqueue.JobStateError, match="queue 'v1' has 1 running job"):
            await app.obliterate_queue("v1")
        assert len(await app.list_jobs(queue="v1")) == 3  # nothing was deleted
        assert await app.obliterate_queue("v1", force=True) == 3
        with anyio.fail_after(10):
            await cancelled.wait()  # the forced delete told the worker to cancel the run
    assert await app.get_job(running.id) is None
    assert await app.list_jobs(queue="v1") == []
    assert [j.id for j in await app.list_jobs()] == [kept.id]
    with pytest.raises(aqueue.UnknownQueue):
        await app.queue_stats("v1")  # gone without a trace


async def test_obliterate_without_running_jobs_in_batches(app: aqueue.App) -> None:
    @app.job(queue="old")
    async def old(n: int) -> None: ...

    await app.enqueue_many([old.build(n=i) for i in range(25)])
    await app.pause_queue("old")
    deleted = await app.control.obliterate_queue("old", batch_size=10)
    assert deleted == 25
    assert await app.list_jobs() == []
    # The pause is a setting of its own and stays.
    assert (await app.queue_stats())["old"].paused
    with pytest.raises(aqueue.InvalidOption, match="force"):
        await app.obliterate_queue("old", force="yes")  # type: ignore[arg-type]


async def test_run_until_idle_does_not_wait_for_a_paused_queue(app: aqueue.App) -> None:
    @app.job
    async def held() -> None: ...

    job = await held.enqueue()
    await app.pause_queue("default")
    await run_until_idle(app, timeout=5)  # returns: nothing here can run
    stored = await app.get_job(job.id)
    assert stored is not None and stored.state is JobState.AVAILABLE
    await app.resume_queue("default")
    await run_until_idle(app, timeout=5)
    stored = await app.get_job(job.id)
    assert stored is not None and stored.state is JobState.COMPLETED
