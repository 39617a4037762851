"""Rate limits on real PostgreSQL: never more starts in any window of ``per`` than the
rate allows, counted from the jobs' own ``attempted_at`` (the claim time the database
recorded), across several nodes and several real worker processes, per queue and per
partition key, together with the other limits, under both ack modes; workers wake when the
window frees a place; partitions still take turns; unlimited queues keep running."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

import aqueue
from aqueue.cli.format import queues_table
from tests.support import CLUSTER, eventually, schema_of

# The most starts any window [t, t + per) holds, t running over the starts themselves
# (a window holding the most starts can always be slid to begin at one of them). $2: only
# jobs of that key ('' for jobs without one); NULL: all.
BUSIEST_WINDOW = """
SELECT coalesce(max(c), 0) FROM (
    SELECT (SELECT count(*) FROM {jobs} AS o
            WHERE o.attempted_at >= r.attempted_at
              AND o.attempted_at < r.attempted_at + $1 * interval '1 second'
              AND ($2::text IS NULL OR coalesce(o.partition_key, '') = $2)) AS c
    FROM {jobs} AS r
    WHERE r.attempted_at IS NOT NULL AND ($2::text IS NULL OR coalesce(r.partition_key, '') = $2)
) AS counts
"""

#: A fast poll: idle workers claim all through a window, so a claim that counted too few
#: starts would be caught taking the place early.
POLL = 0.02

OVERLAP = """
SELECT coalesce(max(c), 0) FROM (
    SELECT (SELECT count(*) FROM {jobs} AS o
            WHERE o.attempted_at <= r.attempted_at AND o.finalized_at > r.attempted_at
              AND ($1::text IS NULL OR o.partition_key = $1)) AS c
    FROM {jobs} AS r WHERE $1::text IS NULL OR r.partition_key = $1
) AS counts
"""


async def busiest_window(app: aqueue.App, per: float, key: str | None = None) -> int:
    async with app.db.pool.acquire() as conn:
        sql = BUSIEST_WINDOW.format(jobs=f"{schema_of(app)}.jobs")
        count: int = await conn.fetchval(sql, per, key)
    return count


async def overlap(app: aqueue.App, key: str | None = None) -> int:
    async with app.db.pool.acquire() as conn:
        count: int = await conn.fetchval(OVERLAP.format(jobs=f"{schema_of(app)}.jobs"), key)
    return count


def _register(app: aqueue.App, seconds: float) -> None:
    @app.job(queue="api", partition_by="key")
    async def call(n: int, key: str | None = None) -> int:
        await anyio.sleep(seconds)
        return n


async def _nodes(
    make_app: Callable[..., aqueue.App],
    stack: AsyncExitStack,
    spec: aqueue.Queue,
    *,
    count: int = 3,
    seconds: float = 0.0,
    start: bool = True,
    **settings: float,
) -> aqueue.App:
    apps = [make_app(**{**CLUSTER, **settings}) for _ in range(count)]
    for app in apps:
        _register(app, seconds)
        await stack.enter_async_context(app)
    await apps[0].migrate()
    for app in apps if start else ():
        await stack.enter_async_context(app.worker({"api": spec}))
    return apps[0]


async def _completed(app: aqueue.App, jobs: int, queue: str = "api") -> bool:
    return (await app.queue_stats(queue))[queue].counts["completed"] == jobs


@pytest.mark.parametrize("ack", ["async", "sync"])
async def test_a_rate_holds_across_nodes_in_every_window(
    make_app: Callable[..., aqueue.App], ack: str
) -> None:
    per = 0.4
    spec = aqueue.Queue(concurrency=6, rate=aqueue.Rate(5, per=per), ack=ack)  # type: ignore[arg-type]
    async with AsyncExitStack() as stack:
        # Polling every 20 ms: claims at every moment of a window, not only when it frees.
        app = await _nodes(make_app, stack, spec, poll_interval=POLL)
        await app.enqueue_many([app.build("call", {"n": n}) for n in range(40)])
        await eventually(lambda: _completed(app, 40), what="40 jobs done")
        busiest = await busiest_window(app, per)
        async with app.db.pool.acquire() as conn:
            span = await conn.fetchval(
                f"SELECT extract(epoch FROM max(attempted_at) - min(attempted_at)) "
                f"FROM {schema_of(app)}.jobs"
            )
    # Three nodes of six slots could start 18 at once; the rate allows 5 per window, and
    # the windows were full (so the test could see one overflow).
    assert busiest == 5
    # 40 starts at 5 per window need at least 7 windows after the first.
    assert span >= 7 * per


async def test_workers_wake_when_the_window_frees_a_place_without_polling(
    make_app: Callable[..., aqueue.App],
) -> None:
    # Polling every 60 s and no job finishing to wake anyone: only the time the worker
    # asks for (when the oldest start leaves the window) can start the next ones.
    spec = aqueue.Queue(concurrency=4, rate=aqueue.Rate(2, per=0.3))
    async with AsyncExitStack() as stack:
        app = await _nodes(make_app, stack, spec, count=1, start=False, poll_interval=60.0)
        await app.enqueue_many([app.build("call", {"n": n}) for n in range(10)])
        worker = await stack.enter_async_context(app.worker({"api": spec}))
        producer = worker.producers["api"]
        claims = 0
        claim = producer._db.claim

        async def counted(*args: object, **kwargs: object) -> list[object]:
            nonlocal claims
            claims += 1
            return await claim(*args, **kwargs)  # type: ignore[arg-type]

        producer._db.claim = counted  # type: ignore[method-assign]
        await eventually(lambda: _completed(app, 10), timeout=30, what="10 jobs done")
        assert await busiest_window(app, 0.3) == 2
    # Five windows: a few claims per window (the one that fills it, the one that finds it
    # full, a finished job's wake-up), not a claim loop spinning on a full window.
    assert claims <= 40, claims


@pytest.mark.parametrize("ack", ["async", "sync"])
async def test_a_rate_per_partition_holds_per_key_and_keys_do_not_throttle_each_other(
    make_app: Callable[..., aqueue.App], ack: str
) -> None:
    per = 0.4
    rate = aqueue.Rate(3, per=per, per_partition=True)
    spec = aqueue.Queue(concurrency=8, rate=rate, ack=ack)  # type: ignore[arg-type]
    async with AsyncExitStack() as stack:
        app = await _nodes(make_app, stack, spec, count=2, poll_interval=POLL)
        builds = [app.build("call", {"n": n, "key": k}) for k in ("a", "b") for n in range(9)]
        builds += [app.build("call", {"n": 100 + n}) for n in range(9)]  # no key
        await app.enqueue_many(builds)
        await eventually(lambda: _completed(app, 27), what="27 jobs done")
        assert await busiest_window(app, per, "a") == 3
        assert await busiest_window(app, per, "b") == 3
        # Jobs without a key share one window of their own.
        assert await busiest_window(app, per, "") == 3
        # Each key had its own window: together they started more than one key's rate.
        assert await busiest_window(app, per) > 3


async def test_a_rate_with_a_global_limit_and_partitions_holds_all_three(
    make_app: Callable[..., aqueue.App],
) -> None:
    per = 0.4
    spec = aqueue.Queue(
        concurrency=6,
        global_limit=3,
        partition=aqueue.Partition(limit=1),
        rate=aqueue.Rate(4, per=per),
    )
    async with AsyncExitStack() as stack:
        app = await _nodes(make_app, stack, spec, count=3, seconds=0.05, poll_interval=POLL)
        keys = ["a", "b", "c", "d"]
        await app.enqueue_many(
            [app.build("call", {"n": n, "key": k}) for k in keys for n in range(6)]
        )
        await eventually(lambda: _completed(app, 24), what="24 jobs done")
        assert await busiest_window(app, per) <= 4
        assert await overlap(app) <= 3
        for key in keys:
            assert await overlap(app, key) == 1


async def test_partitions_still_take_turns_under_a_rate_per_partition(
    make_app: Callable[..., aqueue.App],
) -> None:
    spec = aqueue.Queue(concurrency=2, rate=aqueue.Rate(1000, per=60, per_partition=True))
    async with AsyncExitStack() as stack:
        app = await _nodes(make_app, stack, spec, count=1, start=False)
        await app.enqueue_many([app.build("call", {"n": n, "key": "big"}) for n in range(200)])
        small = await app.enqueue("call", {"n": 1000, "key": "small"})
        await stack.enter_async_context(app.worker({"api": spec}))
        done = await app.wait(small.id, timeout=20)
        async with app.db.pool.acquire() as conn:
            big_before = await conn.fetchval(
                f"SELECT count(*) FROM {schema_of(app)}.jobs "
                "WHERE partition_key = 'big' AND attempted_at < $1",
                done.attempted_at,
            )
    assert big_before <= 4


async def test_an_unlimited_queue_keeps_running_while_a_rate_limited_one_waits(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = make_app(**CLUSTER)
    _register(app, 0.0)

    @app.job(queue="free")
    async def quick(n: int) -> int:
        return n

    async with app:
        await app.migrate()
        await app.enqueue_many([app.build("call", {"n": n}) for n in range(3)])
        await app.enqueue_many([quick.build(n=n) for n in range(50)])
        spec = aqueue.Queue(concurrency=3, rate=aqueue.Rate(1, per=3600))
        async with app.worker({"api": spec, "free": 4}):
            await eventually(lambda: _completed(app, 50, "free"), what="50 free jobs done")
            stats = (await app.queue_stats("api"))["api"]
    # One start an hour: the limited queue waits with two jobs, the other ran all of its.
    assert (stats.counts["completed"], stats.counts["available"]) == (1, 2)
    assert (stats.rate_limit, stats.rate_per, stats.rate_per_partition) == (1, 3600.0, False)
    assert stats.rate_used == 1
    assert "rate 1/1 per 3600s" in queues_table([stats])  # aqueue queues list


async def test_a_paused_rate_limited_queue_starts_nothing_until_resumed(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = make_app(**CLUSTER)
    _register(app, 0.0)
    spec = aqueue.Queue(concurrency=4, rate=aqueue.Rate(3, per=0.3))
    async with app:
        await app.migrate()
        async with app.worker({"api": spec}) as worker:
            producer = worker.producers["api"]
            claims: list[int] = []
            claim = producer._db.claim

            async def counted(*args: object, **kwargs: object) -> list[object]:
                rows = await claim(*args, **kwargs)  # type: ignore[arg-type]
                claims.append(len(rows))
                return rows

            producer._db.claim = counted  # type: ignore[method-assign]
            await app.pause_queue("api", allow_unknown=True)
            await app.enqueue_many([app.build("call", {"n": n}) for n in range(6)])
            claims.clear()
            # Woken by its poll, the worker claims, and gets nothing.
            await eventually(lambda: len(claims) >= 2, what="claims of the paused queue")
            assert sum(claims) == 0
            assert await app.db.rate_wait("api", ["call"]) is None
            assert (await app.queue_stats("api"))["api"].counts["available"] == 6
            await app.resume_queue("api")
            await eventually(lambda: _completed(app, 6), what="6 jobs done after resume")
        assert await busiest_window(app, 0.3) == 3


async def test_expired_starts_are_pruned_and_a_removed_rate_stops_limiting(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = make_app(**CLUSTER)
    _register(app, 0.0)
    async with app:
        await app.migrate()
        await app.enqueue_many([app.build("call", {"n": n}) for n in range(4)])
        async with app.worker({"api": aqueue.Queue(rate=aqueue.Rate(2, per=0.2))}):
            await eventually(lambda: _completed(app, 4), what="4 jobs done")
        table = f"{schema_of(app)}.rate_starts"
        async with app.db.pool.acquire() as conn:
            assert await conn.fetchval(f"SELECT sum(starts) FROM {table}") >= 2
            await anyio.sleep(0.25)  # past the window: nothing left to count
            assert await app.db.prune_rate_starts() >= 1
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0
        # Declared without a rate: none is in force any more.
        await app.enqueue_many([app.build("call", {"n": n}) for n in range(10)])
        async with app.worker({"api": aqueue.Queue(concurrency=10)}):
            await eventually(lambda: _completed(app, 14), what="14 jobs done")
            stats = (await app.queue_stats("api"))["api"]
    assert stats.rate_limit is None and stats.rate_used is None


WORKER_MODULE = textwrap.dedent(
    """
    import os
    import aqueue

    app = aqueue.App(
        os.environ["AQUEUE_DATABASE_URL"], schema=os.environ["AQ_SCHEMA"], poll_interval=0.02,
        queues={"api": aqueue.Queue(concurrency=8, rate=aqueue.Rate(4, per=0.4))},
    )

    @app.job(queue="api")
    async def tick(n: int) -> int:
        return os.getpid()
    """
)


@pytest.fixture
def rate_workers(tmp_path: Path, aqueue_database_url: str) -> Iterator[Callable[[str], None]]:
    (tmp_path / "rated_worker.py").write_text(WORKER_MODULE)
    started: list[subprocess.Popen[bytes]] = []

    def start(schema: str) -> None:
        env = {
            **os.environ,
            "AQUEUE_DATABASE_URL": aqueue_database_url,
            "AQ_SCHEMA": schema,
            "PYTHONPATH": str(tmp_path),
        }
        started.append(
            subprocess.Popen(
                [sys.executable, "-m", "aqueue.cli", "worker", "rated_worker:app"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


async def test_a_rate_holds_across_real_worker_processes(
    make_app: Callable[..., aqueue.App], rate_workers: Callable[[str], None]
) -> None:
    app = make_app()

    @app.job(queue="api")
    async def tick(n: int) -> int:
        return n

    async with app:
        await app.migrate()

        async def nodes() -> bool:
            return len((await app.cluster_status()).nodes) == 3

        for _ in range(3):
            rate_workers(app.schema)
        await eventually(nodes, timeout=60, what="three worker processes up")
        await app.enqueue_many([tick.build(n=n) for n in range(40)])
        await eventually(lambda: _completed(app, 40), timeout=60, what="40 jobs done")
        async with app.db.pool.acquire() as conn:
            processes = await conn.fetchval(
                f"SELECT count(DISTINCT result) FROM {schema_of(app)}.jobs"
            )
        busiest = await busiest_window(app, 0.4)
    assert busiest == 4
    assert processes >= 2  # the starts really were spread over processes (each returns its pid)
