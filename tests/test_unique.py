"""Unique jobs: ``aqueue.Unique`` on ``@app.job`` and ``.options()``, enforced by PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

import anyio
import anyio.lowlevel
import pytest

import aqueue
from aqueue import JobState, Unique
from aqueue.testing import run_until_idle

WAITING_OR_RUNNING = ["pending", "scheduled", "available", "running", "retryable"]


async def _rows(app: aqueue.App, kind: str | None = None) -> list[aqueue.Job]:
    return await app.list_jobs(kind=kind, limit=100_000)


async def test_concurrent_enqueues_from_many_connections_make_one_row(
    make_app: Callable[..., aqueue.App],
) -> None:
    apps = [make_app(pool_size=12) for _ in range(5)]
    for each in apps:

        @each.job(unique=Unique())
        async def report(day: str) -> None: ...

        await each.open()
    await apps[0].migrate()
    go = anyio.Event()
    results: list[aqueue.Job] = []

    async def enqueue(app: aqueue.App) -> None:
        await go.wait()
        results.append(await app.enqueue("report", {"day": "2024-01-01"}))

    async with anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(enqueue, apps[n % len(apps)])
        await anyio.lowlevel.checkpoint()  # let every task reach go.wait()
        go.set()
    assert len(results) == 50
    assert len({job.id for job in results}) == 1
    assert sum(not job.duplicate for job in results) == 1
    assert len(await _rows(apps[0])) == 1
    # Another day is another job.
    other = await apps[1].enqueue("report", {"day": "2024-01-02"})
    assert not other.duplicate and other.id != results[0].id


async def test_duplicate_returns_the_existing_job(app: aqueue.App) -> None:
    @app.job(unique=Unique(), queue="mail", priority=3)
    async def send(to: str) -> None: ...

    first = await send.options(schedule_in=3600, tags=["a"]).enqueue(to="x@y")
    again = await send.options(priority=9).enqueue(to="x@y")
    assert not first.duplicate and first.state is JobState.SCHEDULED
    assert again.duplicate
    # The existing job as it is stored, not what the second call asked for.
    assert again.id == first.id
    assert again.priority == 3 and again.tags == ["a"] and again.state is JobState.SCHEDULED
    assert again.args == {"to": "x@y"} and again.queue == "mail"
    stored = await app.get_job(first.id)
    assert stored is not None and not stored.duplicate
    assert len(await _rows(app)) == 1


async def test_by_args_subset_and_false(app: aqueue.App) -> None:
    @app.job(unique=Unique(by_args=["account"]))
    async def sync(account: int, full: bool = False) -> None: ...

    @app.job(unique=Unique(by_args=False))
    async def rebuild(reason: str) -> None: ...

    a = await sync.enqueue(account=1)
    assert (await sync.enqueue(account=1, full=True)).duplicate
    assert not (await sync.enqueue(account=2)).duplicate
    assert not a.duplicate
    assert not (await rebuild.enqueue(reason="one")).duplicate
    assert (await rebuild.enqueue(reason="two")).duplicate
    # Different kinds never collide, even with equal arguments.
    assert len(await _rows(app)) == 3


async def test_by_queue(app: aqueue.App) -> None:
    @app.job(unique=Unique(by_queue=True))
    async def per_queue(n: int) -> None: ...

    @app.job(unique=Unique())
    async def any_queue(n: int) -> None: ...

    assert not (await per_queue.options(queue="a").enqueue(n=1)).duplicate
    assert not (await per_queue.options(queue="b").enqueue(n=1)).duplicate
    assert (await per_queue.options(queue="b").enqueue(n=1)).duplicate
    assert not (await any_queue.options(queue="a").enqueue(n=1)).duplicate
    dup = await any_queue.options(queue="b").enqueue(n=1)
    assert dup.duplicate and dup.queue == "a"


async def test_period_buckets_on_the_database_clock(app: aqueue.App) -> None:
    @app.job(unique=Unique(period=timedelta(hours=1)))
    async def hourly(n: int) -> None: ...

    @app.job(unique=Unique(period=1))
    async def every_second(n: int) -> None: ...

    first = await hourly.enqueue(n=1)
    assert (await hourly.enqueue(n=1)).duplicate
    assert (await hourly.enqueue(n=1)).id == first.id
    # A 1-second period: within a few seconds a new period starts and a new job is made.
    seen = {(await every_second.enqueue(n=1)).id}
    with anyio.fail_after(5):
        while len(seen) < 2:
            seen.add((await every_second.enqueue(n=1)).id)
            await anyio.sleep(0.05)
    assert len(await _rows(app, "every_second")) == 2


async def test_states_default_keeps_completed_and_releases_cancelled(app: aqueue.App) -> None:
    @app.job(unique=Unique())
    async def once(n: int) -> int:
        return n

    @app.job(unique=Unique(states=WAITING_OR_RUNNING))
    async def one_at_a_time(n: int) -> int:
        return n

    a = await once.enqueue(n=1)
    b = await one_at_a_time.enqueue(n=1)
    await run_until_idle(app)
    assert (await app.wait(a.id, timeout=5)).state is JobState.COMPLETED
    assert (await app.wait(b.id, timeout=5)).state is JobState.COMPLETED
    # Default states keep the key on completion ...
    again = await once.enqueue(n=1)
    assert again.duplicate and again.id == a.id and again.state is JobState.COMPLETED
    # ... excluding completed gives "at most one waiting or running".
    fresh = await one_at_a_time.enqueue(n=1)
    assert not fresh.duplicate and fresh.id != b.id
    # Cancelled (and discarded) jobs release their key by default.
    c = await once.enqueue(n=2)
    await app.cancel(c.id)
    d = await once.enqueue(n=2)
    assert not d.duplicate and d.id != c.id


async def test_running_job_holds_its_key(app: aqueue.App) -> None:
    started = anyio.Event()
    release = anyio.Event()

    @app.job(unique=Unique(states=WAITING_OR_RUNNING))
    async def long(n: int) -> None:
        started.set()
        await release.wait()

    job = await long.enqueue(n=1)
    async with app.worker({"default": 2}):
        with anyio.fail_after(10):
            await started.wait()
        dup = await long.enqueue(n=1)
        assert dup.duplicate and dup.id == job.id and dup.state is JobState.RUNNING
        release.set()
        await app.wait(job.id, timeout=10)
    assert not (await long.enqueue(n=1)).duplicate


async def test_enqueue_many_with_duplicates_inside_and_outside_the_batch(
    app: aqueue.App,
) -> None:
    @app.job(unique=Unique())
    async def item(n: int) -> None: ...

    @app.job
    async def plain(n: int) -> None: ...

    existing = await item.enqueue(n=2)
    jobs = await app.enqueue_many(
        [
            item.build(n=3),
            plain.build(n=1),
            item.build(n=2),
            item.build(n=3),
            plain.build(n=1),
            item.build(n=1),
        ]
    )
    assert [j.kind for j in jobs] == ["item", "plain", "item", "item", "plain", "item"]
    assert [j.args["n"] for j in jobs] == [3, 1, 2, 3, 1, 1]
    assert [j.duplicate for j in jobs] == [False, False, True, True, False, False]
    assert jobs[2].id == existing.id
    assert jobs[3].id == jobs[0].id
    assert jobs[1].id != jobs[4].id  # plain jobs are never deduplicated
    assert len(await _rows(app)) == 5
    for job in jobs:
        stored = await app.get_job(job.id)
        assert stored is not None and stored.args == job.args and stored.kind == job.kind


async def test_options_unique_and_turning_it_off(app: aqueue.App) -> None:
    @app.job
    async def free(n: int) -> None: ...

    @app.job(unique=Unique())
    async def strict(n: int) -> None: ...

    assert not (await free.options(unique=Unique()).enqueue(n=1)).duplicate
    assert (await free.options(unique=Unique()).enqueue(n=1)).duplicate
    assert not (await free.enqueue(n=1)).duplicate  # not unique without the option
    assert not (await strict.enqueue(n=1)).duplicate
    assert not (await strict.options(unique=False).enqueue(n=1)).duplicate
    assert (await app.enqueue("strict", {"n": 1})).duplicate
    assert not (await app.enqueue("strict", {"n": 1}, unique=False)).duplicate
    assert (await app.enqueue("free", {"n": 5}, unique=Unique())).duplicate is False


async def test_transactional_unique_enqueue(app: aqueue.App) -> None:
    @app.job(unique=Unique())
    async def tx(n: int) -> None: ...

    async with app.db.pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        first = await tx.options(conn=conn).enqueue(n=1)
        assert (await tx.options(conn=conn).enqueue(n=1)).duplicate
        await transaction.rollback()
    # The rolled-back job held nothing.
    again = await tx.enqueue(n=1)
    assert not again.duplicate and again.id != first.id


async def test_retry_that_would_take_a_held_key_back_is_refused(app: aqueue.App) -> None:
    @app.job(unique=Unique())
    async def job(n: int) -> None: ...

    old = await job.enqueue(n=1)
    await app.cancel(old.id)
    new = await job.enqueue(n=1)
    assert not new.duplicate
    with pytest.raises(aqueue.JobStateError, match=f"job {new.id} now holds its key"):
        await app.retry(old.id)
    stored = await app.get_job(old.id)
    assert stored is not None and stored.state is JobState.CANCELLED
    await app.delete(new.id)
    assert (await app.retry(old.id)).state is JobState.AVAILABLE


async def test_unique_job_runs_once_with_several_workers(
    make_app: Callable[..., aqueue.App],
) -> None:
    runs: list[int] = []
    apps = [make_app() for _ in range(3)]
    for each in apps:

        @each.job(unique=Unique())
        async def count(n: int) -> None:
            runs.append(n)

        await each.open()
    await apps[0].migrate()
    jobs = [await apps[i % 3].enqueue("count", {"n": 7}) for i in range(9)]
    async with apps[0].worker(), apps[1].worker(), apps[2].worker():
        done = await apps[0].wait(jobs[0].id, timeout=10)
    assert done.state is JobState.COMPLETED
    assert runs == [7]


def test_bad_unique_options_raise_before_anything_is_written() -> None:
    with pytest.raises(aqueue.InvalidOption, match=r"unique\.states: must include running"):
        Unique(states=["scheduled", "available", "retryable", "pending", "completed"])
    with pytest.raises(aqueue.InvalidOption, match=r"unique\.states: 'done' is not one of"):
        Unique(states=[*Unique().states, "done"])
    with pytest.raises(aqueue.InvalidOption, match=r"unique\.states"):
        Unique(states="available")
    with pytest.raises(aqueue.InvalidOption, match=r"unique\.period"):
        Unique(period=0)
    with pytest.raises(aqueue.InvalidOption, match=r"unique\.period"):
        Unique(period=timedelta(milliseconds=10))
    with pytest.raises(aqueue.InvalidOption, match=r"unique\.by_args"):
        Unique(by_args=[])
    with pytest.raises(aqueue.InvalidOption, match=r"unique\.by_args"):
        Unique(by_args="account")
    with pytest.raises(aqueue.InvalidOption, match=r"unique\.by_args: names a key twice"):
        Unique(by_args=["a", "a"])
    with pytest.raises(aqueue.InvalidOption, match=r"unique\.by_queue"):
        Unique(by_queue="yes")  # type: ignore[arg-type]
    assert Unique(states=[*Unique().states, "discarded"]).states_csv().endswith("discarded")


async def test_bad_unique_on_a_job_is_refused(app: aqueue.App) -> None:
    with pytest.raises(aqueue.InvalidOption, match=r"unique\.by_args: job 'f' has no argument"):

        @app.job(unique=Unique(by_args=["missing"]))
        async def f(present: int) -> None: ...

    @app.job
    async def g(present: int) -> None: ...

    @app.job
    async def h(**anything: int) -> None: ...

    with pytest.raises(aqueue.InvalidOption, match="'missing'"):
        g.options(unique=Unique(by_args=["missing"]))
    h.options(unique=Unique(by_args=["whatever"]))  # **kwargs takes any name
    with pytest.raises(aqueue.InvalidOption, match=r"unique: must be an aqueue\.Unique"):
        g.options(unique="yes")  # type: ignore[arg-type]
    assert await app.list_jobs() == []


async def test_a_duplicate_in_an_open_transaction_does_not_hold_up_the_worker(
    app: aqueue.App,
) -> None:
    started = anyio.Event()
    release = anyio.Event()

    @app.job(unique=Unique())
    async def busy(n: int) -> None:
        started.set()
        await release.wait()

    job = await busy.enqueue(n=1)
    async with app.worker({"default": 1}), app.db.pool.acquire() as conn:
        with anyio.fail_after(10):
            await started.wait()
        transaction = conn.transaction()
        await transaction.start()
        try:
            dup = await busy.options(conn=conn).enqueue(n=1)
            assert dup.duplicate and dup.id == job.id
            release.set()
            # The transaction is still open: the outcome write must not wait for it.
            done = await app.wait(job.id, timeout=5)
            assert done.state is JobState.COMPLETED
        finally:
            await transaction.rollback()


async def test_a_holder_that_lets_go_between_insert_and_read_is_replaced(
    app: aqueue.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.job(unique=Unique(states=WAITING_OR_RUNNING))
    async def racy(n: int) -> None: ...

    holder = await racy.enqueue(n=1)
    real = app.db.unique_holders
    calls = 0

    async def cancel_first(keys: list[str], conn: object = None) -> dict[str, object]:
        nonlocal calls
        calls += 1
        if calls == 1:  # the holder is cancelled right after the insert saw it
            await app.cancel(holder.id)
        return await real(keys, conn=conn)  # type: ignore[return-value]

    monkeypatch.setattr(app.db, "unique_holders", cancel_first)
    fresh = await racy.enqueue(n=1)
    assert calls == 1
    assert not fresh.duplicate and fresh.id != holder.id
    assert [j.state for j in await app.list_jobs()] == [JobState.CANCELLED, JobState.AVAILABLE]


# Big enough that unsorted batches do deadlock here (checked by removing the sort).
N_KEYS = 1000


async def test_concurrent_batches_sharing_keys_in_any_order_do_not_deadlock(
    make_app: Callable[..., aqueue.App],
) -> None:
    apps = [make_app() for _ in range(4)]
    for each in apps:

        @each.job(unique=Unique())
        async def shard(n: int) -> None: ...

        await each.open()
    await apps[0].migrate()
    go = anyio.Event()
    batches: list[list[aqueue.Job]] = []

    async def enqueue(app: aqueue.App, seed: int) -> None:
        order = list(range(N_KEYS))
        random.Random(seed).shuffle(order)
        await go.wait()
        batches.append(await app.enqueue_many([app.build("shard", {"n": n}) for n in order]))

    async with anyio.create_task_group() as tg:
        for seed in range(12):
            tg.start_soon(enqueue, apps[seed % len(apps)], seed)
        await anyio.lowlevel.checkpoint()
        go.set()
    assert len(batches) == 12
    ids_by_n: dict[int, set[int]] = {}
    for batch in batches:
        for job in batch:
            ids_by_n.setdefault(job.args["n"], set()).add(job.id)
    assert all(len(ids) == 1 for ids in ids_by_n.values()) and len(ids_by_n) == N_KEYS
    assert sum(not job.duplicate for batch in batches for job in batch) == N_KEYS
    assert len(await _rows(apps[0])) == N_KEYS
