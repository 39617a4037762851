"""Queue specs, fuzzed: random local concurrency, global limit, partition limit, rate and
ack mode, over random jobs (keys, durations) on one to three nodes. Whatever the spec,
the database's own record of each run (claimed at ``attempted_at``, place given back at
``finalized_at``) never shows a limit exceeded.

Derandomised and kept to a few examples (each one really runs its jobs) so the suite stays
fast; every example gets a queue of its own, so the specs stored for one never leak into
the next.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import aqueue
from aqueue.options import Options
from tests.support import CLUSTER, eventually, schema_of

EXAMPLES = 25
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Running jobs at one instant: of the queue ($2 NULL) or of one key.
OVERLAP = """
SELECT coalesce(max(c), 0) FROM (
    SELECT (SELECT count(*) FROM {jobs} AS o
            WHERE o.queue = $1 AND o.attempted_at <= r.attempted_at
              AND o.finalized_at > r.attempted_at
              AND ($2::text IS NULL OR o.partition_key = $2)) AS c
    FROM {jobs} AS r WHERE r.queue = $1 AND ($2::text IS NULL OR r.partition_key = $2)
) AS counts
"""

# Starts in the busiest window [t, t + per): of the queue ($3 NULL) or of one key ('' for
# jobs without a key).
WINDOW = """
SELECT coalesce(max(c), 0) FROM (
    SELECT (SELECT count(*) FROM {jobs} AS o
            WHERE o.queue = $1 AND o.attempted_at >= r.attempted_at
              AND o.attempted_at < r.attempted_at + $2 * interval '1 second'
              AND ($3::text IS NULL OR coalesce(o.partition_key, '') = $3)) AS c
    FROM {jobs} AS r
    WHERE r.queue = $1 AND ($3::text IS NULL OR coalesce(r.partition_key, '') = $3)
) AS counts
"""

KEYS = ["a", "b", "c"]


@dataclass(frozen=True)
class Spec:
    queue: aqueue.Queue
    nodes: int
    jobs: list[tuple[str | None, float]]


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    limit = st.none() | st.integers(1, 4)
    partition = draw(st.none() | st.integers(1, 3))
    rate = draw(
        st.none()
        | st.builds(
            aqueue.Rate,
            st.integers(2, 5),
            per=st.sampled_from([0.1, 0.2, 0.3]),
            per_partition=st.booleans(),
        )
    )
    queue = aqueue.Queue(
        concurrency=draw(st.integers(1, 4)),
        global_limit=draw(limit),
        partition=aqueue.Partition(limit=partition) if partition else None,
        rate=rate,
        ack=draw(st.sampled_from(["async", "sync"])),
    )
    jobs = draw(
        st.lists(
            st.tuples(st.sampled_from([None, *KEYS]), st.sampled_from([0.0, 0.01, 0.03])),
            min_size=1,
            max_size=20,
        )
    )
    return Spec(queue, draw(st.integers(1, 3)), jobs)


@dataclass
class Cluster:
    apps: list[aqueue.App]
    names: Callable[[], str]


@pytest.fixture
async def cluster(make_app: Callable[..., aqueue.App]) -> AsyncIterator[Cluster]:
    apps = [make_app(**{**CLUSTER, "poll_interval": 0.05}) for _ in range(3)]
    async with AsyncExitStack() as stack:
        for app in apps:

            @app.job(partition_by="key")
            async def call(n: int, seconds: float, key: str | None = None) -> int:
                await anyio.sleep(seconds)
                return n

            await stack.enter_async_context(app)
        await apps[0].migrate()
        counter = itertools.count()
        yield Cluster(apps, lambda: f"fuzz{next(counter)}")


async def _max(app: aqueue.App, sql: str, *args: Any) -> int:
    async with app.db.pool.acquire() as conn:
        count: int = await conn.fetchval(sql.format(jobs=f"{schema_of(app)}.jobs"), *args)
    return count


@FUZZ
@given(spec=specs())
async def test_no_spec_lets_a_limit_be_exceeded(cluster: Cluster, spec: Spec) -> None:
    name = cluster.names()
    first = cluster.apps[0]
    builds = [
        first.build(
            "call",
            {"n": n, "seconds": seconds, "key": key},
            options=Options(queue=name),
        )
        for n, (key, seconds) in enumerate(spec.jobs)
    ]
    async with AsyncExitStack() as stack:
        for app in cluster.apps[: spec.nodes]:
            await stack.enter_async_context(app.worker({name: spec.queue}))
        await first.enqueue_many(builds)

        async def done() -> bool:
            stats = (await first.queue_stats(name))[name]
            return stats.counts["completed"] == len(builds)

        await eventually(done, timeout=60, what=f"{len(builds)} jobs of {spec} done")
    queue = spec.queue
    if queue.global_limit is not None:
        assert await _max(first, OVERLAP, name, None) <= queue.global_limit
    if queue.partition is not None:
        for key in KEYS:
            assert await _max(first, OVERLAP, name, key) <= queue.partition.limit
    if queue.rate is not None:
        per, n = queue.rate.seconds, queue.rate.n
        scopes: list[str | None] = ["", *KEYS] if queue.rate.per_partition else [None]
        for scope in scopes:
            assert await _max(first, WINDOW, name, per, scope) <= n, (scope, spec)
    # Local concurrency bounds each node's slots; a node may also hold as many claimed
    # ahead, waiting for a slot (running, in the database's record).
    assert await _max(first, OVERLAP, name, None) <= 2 * queue.concurrency * spec.nodes
    event(f"limited={queue.limited} nodes={spec.nodes}")
