"""Flow control on real PostgreSQL: cluster-wide limits hold under any interleaving of
claims from several nodes (overlap measured in SQL from the jobs' own start and end
times), partitions are served round-robin, ack="sync" commits each outcome before the slot
is reused, the limits in force live in the database, and bad specs fail before anything
is written."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import timedelta

import anyio
import asyncpg
import pytest

import aqueue
from tests.support import CLUSTER, eventually, schema_of

OVERLAP = """
SELECT coalesce(max(c), 0) FROM (
    SELECT (SELECT count(*) FROM {runs} AS o
            WHERE o.started <= r.started AND o.ended > r.started
              AND ($1::text IS NULL OR o.key = $1)) AS c
    FROM {runs} AS r WHERE $1::text IS NULL OR r.key = $1
) AS counts
"""


@pytest.fixture
async def runs(aqueue_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(aqueue_database_url, min_size=1, max_size=8)
    assert pool is not None
    yield pool
    await pool.close()


def _register(app: aqueue.App, table: str, pool: asyncpg.Pool, seconds: float) -> None:
    @app.job(queue="api", partition_by="key")
    async def call(n: int, key: str | None = None) -> None:
        started = await pool.fetchval("SELECT clock_timestamp()")
        await anyio.sleep(seconds)
        await pool.execute(
            f"INSERT INTO {table} (n, key, started, ended) VALUES ($1, $2, $3, clock_timestamp())",
            n,
            key,
            started,
        )


async def _nodes(
    make_app: Callable[..., aqueue.App],
    stack: AsyncExitStack,
    pool: asyncpg.Pool,
    spec: aqueue.Queue,
    *,
    count: int = 3,
    seconds: float = 0.03,
    start: bool = True,
) -> tuple[aqueue.App, str]:
    """``count`` Apps (nodes) on one schema with the ``call`` job and a ``runs`` table it
    writes to; their workers started unless ``start`` is False."""
    apps = [make_app(**CLUSTER) for _ in range(count)]
    first = apps[0]
    await stack.enter_async_context(first)
    await first.migrate()
    table = f"{schema_of(first)}.runs"
    await pool.execute(
        f"CREATE TABLE {table} (n int, key text, started timestamptz, ended timestamptz)"
    )
    for app in apps:
        _register(app, table, pool, seconds)
        if app is not first:
            await stack.enter_async_context(app)
    for app in apps if start else ():
        await stack.enter_async_context(app.worker({"api": spec}))
    return first, table


async def _finished(app: aqueue.App, jobs: int) -> bool:
    stats = (await app.queue_stats("api"))["api"]
    return stats.counts["completed"] == jobs


@pytest.mark.parametrize("ack", ["async", "sync"])
async def test_global_limit_holds_across_nodes(
    make_app: Callable[..., aqueue.App], runs: asyncpg.Pool, ack: str
) -> None:
    spec = aqueue.Queue(concurrency=6, global_limit=3, ack=ack)  # type: ignore[arg-type]
    async with AsyncExitStack() as stack:
        app, table = await _nodes(make_app, stack, runs, spec)
        await app.enqueue_many([app.build("call", {"n": n}) for n in range(60)])
        await eventually(lambda: _finished(app, 60), what="60 jobs done")
        overlap = await runs.fetchval(OVERLAP.format(runs=table), None)
    # Three nodes of six slots each could run 18 at once; the limit allows 3, and the
    # jobs are long enough for every node to try.
    assert overlap == 3


@pytest.mark.parametrize("ack", ["async", "sync"])
async def test_partition_limit_holds_per_key_and_jobs_without_a_key_are_not_limited(
    make_app: Callable[..., aqueue.App], runs: asyncpg.Pool, ack: str
) -> None:
    spec = aqueue.Queue(concurrency=8, partition=aqueue.Partition(limit=1), ack=ack)  # type: ignore[arg-type]
    async with AsyncExitStack() as stack:
        app, table = await _nodes(make_app, stack, runs, spec, count=2)
        builds = [
            app.build("call", {"n": n, "key": "acme" if n % 2 else "globex"}) for n in range(30)
        ]
        builds += [app.build("call", {"n": 100 + n}) for n in range(10)]  # no key
        await app.enqueue_many(builds)
        await eventually(lambda: _finished(app, 40), what="40 jobs done")
        assert await runs.fetchval(OVERLAP.format(runs=table), "acme") == 1
        assert await runs.fetchval(OVERLAP.format(runs=table), "globex") == 1
        keyless = await runs.fetchval(
            f"SELECT count(*) FROM {table} AS r WHERE r.key IS NULL AND EXISTS ("
            f"SELECT 1 FROM {table} AS o WHERE o.key IS NULL AND o.n <> r.n "
            "AND o.started < r.ended AND o.ended > r.started)"
        )
    assert keyless > 0  # jobs without a key ran side by side: not partition-limited


async def test_a_small_tenant_is_not_starved_by_a_big_backlog(
    make_app: Callable[..., aqueue.App], runs: asyncpg.Pool
) -> None:
    spec = aqueue.Queue(concurrency=2, partition=aqueue.Partition(limit=2))
    async with AsyncExitStack() as stack:
        app, table = await _nodes(make_app, stack, runs, spec, count=1, seconds=0.01, start=False)
        await app.enqueue_many([app.build("call", {"n": n, "key": "big"}) for n in range(200)])
        small = await app.enqueue("call", {"n": 1000, "key": "small"})
        await stack.enter_async_context(app.worker({"api": spec}))
        done = await app.wait(small.id, timeout=20)
        big_before = await runs.fetchval(
            f"SELECT count(*) FROM {table} WHERE key = 'big' AND started < $1",
            done.attempted_at,
        )
    # Round-robin: the small tenant's job starts within the first rounds, not after the
    # big tenant's 200.
    assert big_before <= 4


async def test_sync_ack_commits_each_outcome_before_the_slot_is_reused(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = make_app()
    seen: list[aqueue.JobState] = []

    @app.job(queue="sync")
    async def step(n: int, previous: int = 0) -> int:
        if previous:
            job = await app.get_job(previous)
            assert job is not None
            seen.append(job.state)
        return n

    async with app:
        await app.migrate()
        first = await step.enqueue(n=1)
        second = await step.enqueue(n=2, previous=first.id)
        async with app.worker({"sync": aqueue.Queue(concurrency=1, ack="sync")}):
            await app.wait(second.id, timeout=10)
    assert seen == [aqueue.JobState.COMPLETED]


async def test_a_cancelled_job_gives_its_place_back(make_app: Callable[..., aqueue.App]) -> None:
    app = make_app(**CLUSTER)
    started = anyio.Event()

    @app.job(queue="one")
    async def hold() -> None:
        started.set()
        await anyio.sleep_forever()

    @app.job(queue="one")
    async def quick() -> str:
        return "ran"

    async with app:
        await app.migrate()
        blocker = await hold.enqueue()
        after = await quick.enqueue()
        # Two slots locally, one place cluster-wide.
        async with app.worker({"one": aqueue.Queue(concurrency=2, global_limit=1)}):
            with anyio.fail_after(10):
                await started.wait()
            job = await app.get_job(after.id)
            assert job is not None and job.state is aqueue.JobState.AVAILABLE
            await app.cancel(blocker.id)
            done = await app.wait(after.id, timeout=10)
    assert done.result == "ran"


async def test_limits_in_force_live_in_the_database_and_drift_is_reported(
    make_app: Callable[..., aqueue.App],
) -> None:
    first, second = make_app(**CLUSTER), make_app(**CLUSTER)
    for app in (first, second):

        @app.job(queue="api")
        async def call() -> None: ...

    async with first, second:
        await first.migrate()
        async with (
            first.worker({"api": aqueue.Queue(global_limit=5)}),
            second.worker({"api": aqueue.Queue(global_limit=7)}),
        ):
            # The last worker to start decides.
            async with first.db.pool.acquire() as conn:
                stored = await conn.fetchval(
                    f"SELECT global_limit FROM {schema_of(first)}.queues WHERE name = 'api'"
                )
            assert stored == 7
            stats = (await first.queue_stats("api"))["api"]
            assert (stats.global_limit, stats.partition_limit) == (7, None)
            status = await eventually(lambda: _drift(first), what="drift between the two nodes")
    [drift] = status
    assert (drift.section, drift.name) == ("queues", "api")
    assert sorted(v["global_limit"] for v in drift.by_node.values()) == [5, 7]


async def _drift(app: aqueue.App) -> list[aqueue.Drift]:
    return (await app.cluster_status()).drift


def test_bad_specs_name_the_field() -> None:
    for kwargs, field in [
        ({"global_limit": 0}, "global_limit"),
        ({"global_limit": 10_001}, "global_limit"),
        ({"concurrency": 0}, "concurrency"),
        ({"ack": "later"}, "ack"),
        ({"partition": 2}, "partition"),
        ({"rate": 100}, "rate"),
    ]:
        with pytest.raises(aqueue.ConfigurationError, match=field):
            aqueue.Queue(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(aqueue.ConfigurationError, match=r"partition\.limit"):
        aqueue.Partition(limit=0)
    for per in (0, -1, float("inf"), float("nan"), timedelta(0), timedelta(days=367), "1m"):
        with pytest.raises(aqueue.ConfigurationError, match=r"rate\.per"):
            aqueue.Rate(10, per=per)  # type: ignore[arg-type]
    for n in (0, 10_001, 2.5, True):
        with pytest.raises(aqueue.ConfigurationError, match=r"rate\.n"):
            aqueue.Rate(n, per=1)  # type: ignore[arg-type]
    with pytest.raises(aqueue.ConfigurationError, match=r"rate\.per_partition"):
        aqueue.Rate(10, per=1, per_partition="yes")  # type: ignore[arg-type]
    assert aqueue.Rate(10_000, per=timedelta(days=366)).seconds == 366 * 86400
    with pytest.raises(aqueue.ConfigurationError, match="queues"):
        aqueue.App("postgresql://u@h/d", queues={"api": "lots"})  # type: ignore[dict-item]


async def test_bad_partition_keys_fail_before_anything_is_written(app: aqueue.App) -> None:
    with pytest.raises(aqueue.ConfigurationError, match="partition_by='tenant'"):

        @app.job(partition_by="tenant")
        async def wrong(customer: str) -> None: ...

    @app.job(partition_by=lambda args: args["customer"]["id"])
    async def nested(customer: dict[str, object]) -> None: ...

    @app.job(partition_by="customer")
    async def by_name(customer: str) -> None: ...

    with pytest.raises(aqueue.InvalidOption, match="partition_key"):
        nested.build(customer={"id": ["not", "a", "key"]})
    with pytest.raises(aqueue.InvalidOption, match="partition_key"):
        by_name.options(partition_key="x" * 201)
    with pytest.raises(aqueue.InvalidOption, match="partition_key"):
        await by_name.enqueue(customer="")
    assert await app.list_jobs() == []
    job = await by_name.options(partition_key="explicit").enqueue(customer="acme")
    async with app.db.pool.acquire() as conn:
        key = await conn.fetchval(
            f"SELECT partition_key FROM {schema_of(app)}.jobs WHERE id = $1", job.id
        )
    assert key == "explicit"  # the option wins over partition_by


async def test_partitions_take_turns_when_places_are_fewer_than_keys(
    make_app: Callable[..., aqueue.App], runs: asyncpg.Pool
) -> None:
    # One place at a time: without a rotation the first key in order would run all its
    # jobs before any other key got one.
    spec = aqueue.Queue(concurrency=1, partition=aqueue.Partition(limit=5))
    async with AsyncExitStack() as stack:
        app, table = await _nodes(make_app, stack, runs, spec, count=1, seconds=0.0, start=False)
        keys = ["a", "b", "c", "d", "e", "f"]
        await app.enqueue_many(
            [app.build("call", {"n": n, "key": key}) for key in keys for n in range(5)]
        )
        await stack.enter_async_context(app.worker({"api": spec}))
        await eventually(lambda: _finished(app, 30), what="30 jobs done")
        order = [row[0] for row in await runs.fetch(f"SELECT key FROM {table} ORDER BY started")]
    assert sorted(order[:6]) == keys  # every key once before any key twice
    assert sorted(order[6:12]) == keys


async def test_jobs_without_a_key_and_keyed_jobs_take_turns(
    make_app: Callable[..., aqueue.App], runs: asyncpg.Pool
) -> None:
    # One place at a time: neither jobs without a key nor keyed ones may take them all.
    spec = aqueue.Queue(concurrency=1, partition=aqueue.Partition(limit=5))
    async with AsyncExitStack() as stack:
        app, table = await _nodes(make_app, stack, runs, spec, count=1, seconds=0.0, start=False)
        await app.enqueue_many([app.build("call", {"n": n}) for n in range(6)])
        await app.enqueue_many([app.build("call", {"n": 10 + n, "key": "k"}) for n in range(6)])
        await stack.enter_async_context(app.worker({"api": spec}))
        await eventually(lambda: _finished(app, 12), what="12 jobs done")
        order = [row[0] for row in await runs.fetch(f"SELECT key FROM {table} ORDER BY started")]
    assert order[:6].count("k") == 3  # alternating, not six of one kind first


async def test_a_partition_parameter_left_out_takes_its_default(app: aqueue.App) -> None:
    @app.job(partition_by="customer")
    async def report(day: str, customer: str = "shared") -> None: ...

    job = await report.enqueue(day="monday")
    async with app.db.pool.acquire() as conn:
        key = await conn.fetchval(
            f"SELECT partition_key FROM {schema_of(app)}.jobs WHERE id = $1", job.id
        )
    assert key == "shared"


async def test_obliterating_a_limited_queue_keeps_its_limits(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = make_app(**CLUSTER)

    @app.job(queue="api")
    async def call() -> None: ...

    async with app:
        await app.migrate()
        async with app.worker({"api": aqueue.Queue(global_limit=3)}):
            pass
        await call.enqueue()
        await app.obliterate_queue("api")
        stats = (await app.queue_stats("api"))["api"]
    assert stats.global_limit == 3
