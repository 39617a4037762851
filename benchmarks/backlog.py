"""backlog: does the claim degrade with queue depth? Drain rate of the first M jobs with a
small backlog (10k) and a deep one (1M) waiting, aqueue only.

The backlog is written straight into aqueue's jobs table with one
``INSERT ... SELECT generate_series`` (seconds, where a million enqueue calls would take
minutes), then ``VACUUM ANALYZE`` as autovacuum would eventually do, so the run starts
from a settled table rather than from a million never-read rows. The measurement itself
goes through the real worker: the clock runs from starting the worker until the database
shows M completed jobs.

After each run the table/index sizes, dead tuples and an ``EXPLAIN ANALYZE`` of aqueue's
claim statement (rolled back) are recorded, to show index bloat if there is any.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import time
from typing import Any

import asyncpg

from common import Bench, Row, ScenarioResult, main_for, run_async, wait_for
from systems import AqueueSystem

STATS_SQL = """
SELECT pg_relation_size('aqueue.jobs') AS table_bytes,
       pg_relation_size('aqueue.jobs_claim_idx') AS claim_index_bytes,
       pg_indexes_size('aqueue.jobs') AS all_indexes_bytes,
       (SELECT n_dead_tup FROM pg_stat_user_tables
         WHERE schemaname = 'aqueue' AND relname = 'jobs') AS dead_tuples,
       (SELECT n_live_tup FROM pg_stat_user_tables
         WHERE schemaname = 'aqueue' AND relname = 'jobs') AS live_tuples
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--measure",
        type=int,
        default=20_000,
        help="jobs whose drain is timed (M; capped at the backlog size)",
    )
    parser.add_argument("--backlogs", default="10000,1000000", help="comma-separated backlog sizes")
    parser.add_argument("--concurrency", type=int, default=100, help="worker concurrency (C)")


async def build_backlog(url: str, size: int) -> float:
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        await conn.execute(
            "INSERT INTO aqueue.jobs (kind, queue, args) "
            "SELECT 'noop', 'default', jsonb_build_object('n', g) "
            "FROM generate_series(1, $1::int) AS g",
            size,
        )
        await conn.execute("VACUUM ANALYZE aqueue.jobs")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def table_stats(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(STATS_SQL)
        return dict(row) if row else {}
    finally:
        await conn.close()


async def explain_claim(url: str, limit: int) -> dict[str, Any]:
    """EXPLAIN ANALYZE of aqueue's own claim statement, inside a rolled-back transaction.

    Reads the statement from aqueue's internals, which the engine engineer may reshape:
    any failure is recorded instead of failing the benchmark.
    """
    try:
        from aqueue.db.queries import Queries

        statement = Queries("aqueue").claim
        sql = statement.sql
        conn = await asyncpg.connect(url)
        try:
            tx = conn.transaction()
            await tx.start()
            try:
                raw = await conn.fetchval(
                    f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}",
                    *statement.args(queue="default", limit=limit, kinds=["noop"], node_id="x"),
                )
            finally:
                await tx.rollback()
        finally:
            await conn.close()
        plan = json.loads(raw)[0] if isinstance(raw, str) else raw[0]
        top = plan["Plan"]
        return {
            "execution_ms": plan.get("Execution Time"),
            "planning_ms": plan.get("Planning Time"),
            "shared_hit_blocks": top.get("Shared Hit Blocks"),
            "shared_read_blocks": top.get("Shared Read Blocks"),
        }
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


async def backlog_once(url: str, backlog: int, measure: int, concurrency: int) -> dict[str, Any]:
    system = AqueueSystem()
    await system.open(url)  # migrates: the table must exist before the bulk insert
    try:
        build_seconds = await build_backlog(url, backlog)
        before = await table_stats(url)
        executed = 0
        enough = asyncio.Event()

        def on_run(n: int) -> None:
            nonlocal executed
            executed += 1
            if executed >= measure:
                enough.set()

        system.on_run = on_run
        counter = await asyncpg.connect(url)
        try:

            async def measured_done() -> bool:
                done: int = await counter.fetchval(
                    "SELECT count(*) FROM aqueue.jobs WHERE state = 'completed'"
                )
                return done >= measure

            started = time.perf_counter()
            async with system.worker(concurrency):
                await asyncio.wait_for(enough.wait(), 300)
                await wait_for(measured_done, timeout=30)
                elapsed = time.perf_counter() - started
        finally:
            await counter.close()
        after = await table_stats(url)
        plan = await explain_claim(url, concurrency)
        return {
            "rate": measure / elapsed,
            "build_seconds": build_seconds,
            "before": before,
            "after": after,
            "claim_explain_after": plan,
        }
    finally:
        await system.close()


def scenario(bench: Bench) -> ScenarioResult:
    args = bench.args
    if bench.smoke:
        backlogs, measure = [1_000, 20_000], 500
    else:
        backlogs = [int(part) for part in args.backlogs.split(",") if part.strip()]
        measure = args.measure
    result = ScenarioResult(
        "backlog",
        "backlog: drain rate of the first M jobs with a small vs a deep backlog (aqueue)",
        {
            "backlogs": backlogs,
            "measure": measure,
            "concurrency": args.concurrency,
            "runs": bench.runs,
        },
    )
    system = AqueueSystem()
    result.systems["aqueue"] = {"label": system.label, "config": system.config}
    for backlog in backlogs:
        timed = min(measure, backlog)
        label = f"aqueue, {backlog:,} waiting"
        runs: list[float] = []
        details: list[dict[str, Any]] = []
        for run in range(bench.runs):
            with bench.database(f"backlog_{backlog}") as url:
                try:
                    info = run_async(
                        functools.partial(backlog_once, url, backlog, timed, args.concurrency)
                    )
                except Exception as exc:
                    result.errors.append(
                        f"backlog {backlog} run {run + 1}: {type(exc).__name__}: {exc}"
                    )
                    continue
            bench.log(
                f"backlog {backlog:,} run {run + 1}: {info['rate']:,.0f} jobs/s "
                f"(built in {info['build_seconds']:.1f}s; claim after: "
                f"{info['claim_explain_after'].get('execution_ms')} ms)"
            )
            runs.append(info["rate"])
            details.append(info)
        result.rows.append(
            Row(label, f"drain first {timed:,}", "jobs/s", runs, extra={"runs": details})
        )
        last = details[-1] if details else {}
        if last:
            after = last["after"]
            result.notes.append(
                f"{backlog:,} waiting: claim index {after.get('claim_index_bytes', 0) / 1e6:.1f}"
                f" MB after the drain (was {last['before'].get('claim_index_bytes', 0) / 1e6:.1f}"
                f" MB), dead tuples {after.get('dead_tuples')}, claim of {args.concurrency} "
                f"takes {last['claim_explain_after'].get('execution_ms')} ms (EXPLAIN ANALYZE)"
            )
    # The ratio column compares each backlog with the smallest one: deep / small.
    if len(result.rows) > 1 and result.rows[0].median:
        for row in result.rows[1:]:
            if row.median:
                result.notes.append(
                    f"{row.system}: {row.median / result.rows[0].median:.2f}x the rate of "
                    f"{result.rows[0].system} (target >= 0.8x)"
                )
    return result


if __name__ == "__main__":
    sys.exit(main_for("backlog", __doc__ or "", add_arguments, scenario))
