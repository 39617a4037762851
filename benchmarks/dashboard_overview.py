"""How long the dashboard's pages take to render on a big table (issue 13: the overview in
< 200 ms with 1,000,000 finished jobs).

    .venv/bin/python benchmarks/dashboard_overview.py                  # 1,000,000 jobs
    .venv/bin/python benchmarks/dashboard_overview.py --jobs 20000     # a quick look

Fills a fresh schema on a throwaway durable PostgreSQL with finished jobs spread over the
retention week (1% discarded, five queues) plus a little waiting work, ANALYZEs it, then
renders pages through the ASGI application itself (routing, queries, template, no
network) and prints the median and worst of ``--runs`` renders per page, and the time of
each statement the overview runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aqueue
from aqueue.dashboard import create_app
from aqueue.db.browse import Browse
from aqueue.embedded import EmbeddedPostgres

FILL = """
INSERT INTO {schema}.jobs (kind, queue, state, args, attempt, max_attempts, scheduled_at,
                           created_at, attempted_at, finalized_at, result)
SELECT 'job_' || (g % 12), 'queue_' || (g % 5),
       CASE WHEN g % 100 = 0 THEN 'discarded' ELSE 'completed' END::{schema}.job_state,
       jsonb_build_object('n', g), 1, 3, t, t, t, t + interval '20 milliseconds', 'null'
FROM (SELECT g, now() - (g::float8 / $1) * interval '7 days' AS t
      FROM generate_series(1, $1) AS g) AS s
"""
WAITING = """
INSERT INTO {schema}.jobs (kind, queue, args)
SELECT 'job_' || (g % 12), 'queue_' || (g % 5), jsonb_build_object('n', g)
FROM generate_series(1, $1) AS g
"""


async def get(asgi: Any, path: str) -> tuple[int, int]:
    """One GET through the ASGI app in-process: (status, body bytes)."""
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }
    status = 0
    size = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))

    await asgi(scope, receive, send)
    return status, size


async def timed(fn: Callable[[], Awaitable[Any]], runs: int) -> list[float]:
    await fn()  # warm: prepared statements, template compilation
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def line(label: str, samples: list[float]) -> str:
    return f"  {label:<34} median {statistics.median(samples):8.1f} ms   max {max(samples):8.1f} ms"


async def main(args: argparse.Namespace, url: str) -> None:
    app = aqueue.App(url, schema="bench_dashboard")
    async with app:
        await app.db.drop_schema()
        await app.migrate()
        started = time.perf_counter()
        async with app.db.pool.acquire() as conn:
            await conn.execute(FILL.replace("{schema}", '"bench_dashboard"'), args.jobs)
            await conn.execute(WAITING.replace("{schema}", '"bench_dashboard"'), args.waiting)
            await conn.execute('ANALYZE "bench_dashboard".jobs')
        print(
            f"filled {args.jobs:,} finished + {args.waiting:,} waiting jobs "
            f"in {time.perf_counter() - started:.1f}s",
            file=sys.stderr,
        )
        asgi = create_app(app)
        browse = Browse(app.db)
        print(f"dashboard render times, {args.jobs:,} finished jobs, {args.runs} runs:")
        for label, path in [
            ("GET / (overview)", "/"),
            ("GET /jobs", "/jobs"),
            ("GET /jobs?state=discarded", "/jobs?state=discarded"),
            ("GET /jobs?before=500000", "/jobs?before=500000"),
            ("GET /queues/queue_1", "/queues/queue_1"),
            ("GET /cluster", "/cluster"),
        ]:
            status, _ = await get(asgi, path)
            assert status == 200, (path, status)
            print(line(label, await timed(lambda path=path: get(asgi, path), args.runs)))
        print("the overview's statements:")
        print(line("app.queue_stats()", await timed(app.queue_stats, args.runs)))
        print(line("browse.throughput()", await timed(browse.throughput, args.runs)))
        print(line("app.cluster_status()", await timed(app.cluster_status, args.runs)))
        await app.db.drop_schema()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="finished jobs to hold")
    parser.add_argument("--waiting", type=int, default=2_000, help="waiting jobs to hold")
    parser.add_argument("--runs", type=int, default=20, help="renders per page")
    parser.add_argument("--url", help="an existing PostgreSQL instead of a throwaway one")
    args = parser.parse_args()
    if args.url:
        asyncio.run(main(args, args.url))
        return
    with EmbeddedPostgres(durable=True) as server:
        asyncio.run(main(args, server.url))


if __name__ == "__main__":
    cli()
