"""scale: 1, 2, 4 and 8 worker processes on one primary, directly and through PgBouncer.

Each run drains N jobs with K worker processes (the protocol of processes.py: all children
ready, then "go" at once, the clock stops when no job is unfinished) and reports:

- jobs/s;
- the most server connections in use on the database while draining (pg_stat_activity,
  sampled every 10 ms): what the primary pays per worker process;
- duplicate runs (every child reports what it ran; must be 0) and jobs not at attempt 1;
- WAL per job (``pg_current_wal_lsn`` before and after): enqueue, and claim + outcome;
- transactions committed per job while draining (pg_stat_database), and the jobs table's
  index size per job afterwards (bloat left by the updates).

Modes: ``direct`` (App(url), prepared statements cached), ``direct-unprepared`` (the same
server with ``pooler="transaction"``: the cost of unnamed statements without any pooler),
and ``pgbouncer`` (url = a PgBouncer in transaction mode with a server pool of
``--server-pool``, listen_url = the server). The machine has 2 cores, so past 2 processes
the numbers show contention, not scaling: the point is that nothing breaks and how many
server connections each layout costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from common import Bench, Row, ScenarioResult, main_for, run_async, wait_for
from processes import CHILD, LINE_LIMIT, _read_event, _send, enqueue_jobs

# The PgBouncer launcher the tests use (tests/bouncer.py), so both start it the same way.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.bouncer import Bouncer, find_pgbouncer

MODES = ("direct", "direct-unprepared", "pgbouncer")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs to drain (N)")
    parser.add_argument(
        "--concurrency", type=int, default=50, help="concurrency of each worker process (C)"
    )
    parser.add_argument("--processes", default="1,2,4,8", help="comma-separated process counts")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes")
    parser.add_argument("--server-pool", type=int, default=8, help="PgBouncer's default_pool_size")


@contextlib.contextmanager
def layout(mode: str, url: str, server_pool: int) -> Iterator[dict[str, Any]]:
    """(the children's url, their extra App keywords) for one mode."""
    if mode == "direct":
        yield {"url": url, "options": {}}
        return
    if mode == "direct-unprepared":
        yield {"url": url, "options": {"pooler": "transaction", "listen_url": url}}
        return
    binary = find_pgbouncer()
    if binary is None:
        raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer)")
    bouncer = Bouncer(binary, url, pool_size=server_pool)
    bouncer.start()
    try:
        yield {"url": bouncer.url, "options": {"pooler": "transaction", "listen_url": url}}
    finally:
        bouncer.close()


async def _wal(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))


async def _commits(conn: asyncpg.Connection) -> int:
    """Transactions committed in this database so far (every session's, once flushed)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(
        await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    )


async def drain(
    url: str, child_url: str, options: dict[str, Any], processes: int, jobs: int, concurrency: int
) -> dict[str, Any]:
    direct = await asyncpg.connect(url)
    try:
        wal_start = await _wal(direct)
        await enqueue_jobs(url, jobs)
        wal_enqueued = await _wal(direct)
        children = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                str(CHILD),
                "--url",
                child_url,
                "--concurrency",
                str(concurrency),
                "--app-options",
                json.dumps(options),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=LINE_LIMIT,
            )
            for _ in range(processes)
        ]
        most = 0
        try:
            for proc in children:
                await _read_event(proc, 60)

            async def none_left() -> bool:
                nonlocal most
                row = await direct.fetchrow(
                    "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname ="
                    " current_database() AND pid <> pg_backend_pid()) AS conns,"
                    " (SELECT count(*) FROM aqueue.jobs WHERE state <> 'completed') AS left"
                )
                most = max(most, row["conns"])
                return bool(row["left"] == 0)

            commits_start = await _commits(direct)
            started = time.perf_counter()
            for proc in children:
                await _send(proc, "go")
            await wait_for(none_left, timeout=60 + jobs / 100, interval=0.01)
            elapsed = time.perf_counter() - started
            wal_drained = await _wal(direct)
            for proc in children:
                await _send(proc, "stop")
            reports = [await _read_event(proc, 60) for proc in children]
            for proc in children:
                await asyncio.wait_for(proc.wait(), 30)
            # The children have exited, so their backends flushed their statistics; not
            # PgBouncer's, which live on (PostgreSQL flushes an idle backend's after 10 s).
            commits = await _commits(direct) - commits_start
            through_bouncer = "listen_url" in options and child_url != url
            retried = await direct.fetchval("SELECT count(*) FROM aqueue.jobs WHERE attempt <> 1")
            index_bytes = await direct.fetchval("SELECT pg_indexes_size('aqueue.jobs')")
        finally:
            for proc in children:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    finally:
        await direct.close()
    seen = Counter(n for report in reports for n in report["ran"])
    return {
        "rate": jobs / elapsed,
        "seconds": elapsed,
        "server_connections": most,
        "duplicates": sum(count - 1 for count in seen.values() if count > 1),
        "missing": jobs - len(seen),
        "attempt_not_1": retried,
        "wal_enqueue_per_job": (wal_enqueued - wal_start) / jobs,
        "wal_drain_per_job": (wal_drained - wal_enqueued) / jobs,
        "index_bytes_per_job": index_bytes / jobs,
        # Claims, outcome writes, heartbeats, leases, the sampling query: per job drained.
        "commits_per_job": None if through_bouncer else commits / jobs,
        "per_process_jobs": [len(report["ran"]) for report in reports],
    }


async def single_enqueues(child_url: str, options: dict[str, Any], count: int) -> float:
    """Milliseconds per ``job.enqueue()`` one after another: where a statement's round
    trips show (a drain batches them away)."""
    from systems import AqueueSystem

    system = AqueueSystem(**options)
    await system.open(child_url)
    try:
        for n in range(20):  # warm: connections, statement cache, type codecs
            await system.enqueue_one(n)
        started = time.perf_counter()
        for n in range(count):
            await system.enqueue_one(n)
        return (time.perf_counter() - started) * 1000 / count
    finally:
        await system.close()


def scenario(bench: Bench) -> ScenarioResult:
    args = bench.args
    jobs = 300 if bench.smoke else args.jobs
    counts = [1, 2] if bench.smoke else [int(p) for p in args.processes.split(",") if p.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "pgbouncer" in modes and find_pgbouncer() is None:
        modes.remove("pgbouncer")
        bench.log("scale: pgbouncer is not installed; its mode is skipped")
    result = ScenarioResult(
        "scale",
        "scale: K worker processes on one primary, direct and through PgBouncer",
        {
            "jobs": jobs,
            "concurrency_per_process": args.concurrency,
            "processes": counts,
            "modes": modes,
            "server_pool": args.server_pool,
            "runs": bench.runs,
        },
    )
    for mode in modes:
        for k in counts:
            rates: list[float] = []
            details: list[dict[str, Any]] = []
            for run in range(bench.runs):
                with bench.database(f"scale_{k}") as url:
                    try:
                        with layout(mode, url, args.server_pool) as where:
                            info = run_async(
                                functools.partial(
                                    drain,
                                    url,
                                    where["url"],
                                    where["options"],
                                    k,
                                    jobs,
                                    args.concurrency,
                                )
                            )
                    except Exception as exc:
                        result.errors.append(f"{mode} x{k} run {run + 1}: {exc!r}")
                        continue
                bench.log(
                    f"scale {mode} x{k} run {run + 1}: {info['rate']:,.0f} jobs/s, "
                    f"{info['server_connections']} server connections, duplicates "
                    f"{info['duplicates']}, missing {info['missing']}, WAL/job "
                    f"{info['wal_enqueue_per_job']:.0f} + {info['wal_drain_per_job']:.0f} B, "
                    f"commits/job {info['commits_per_job'] or 0:.3f}, index bytes/job "
                    f"{info['index_bytes_per_job']:.0f}"
                )
                if info["duplicates"] or info["missing"] or info["attempt_not_1"]:
                    result.errors.append(
                        f"{mode} x{k} run {run + 1}: {info['duplicates']} duplicates, "
                        f"{info['missing']} missing, {info['attempt_not_1']} attempt <> 1"
                    )
                rates.append(info["rate"])
                details.append(info)
            label = f"aqueue {mode} x{k}"
            last = details[-1] if details else {}
            note = (
                f"conns={last['server_connections']} dup={last['duplicates']} "
                f"wal/job={last['wal_enqueue_per_job']:.0f}+{last['wal_drain_per_job']:.0f}B"
                if last
                else ""
            )
            result.rows.append(
                Row(label, "drain", "jobs/s", rates, note=note, extra={"runs": details})
            )
        latencies: list[float] = []
        for _run in range(bench.runs):
            with bench.database("scale_one") as url, layout(mode, url, args.server_pool) as where:
                latencies.append(
                    run_async(
                        functools.partial(
                            single_enqueues,
                            where["url"],
                            where["options"],
                            200 if bench.smoke else 2000,
                        )
                    )
                )
        result.rows.append(
            Row(f"aqueue {mode}", "single enqueue", "ms", latencies, higher_is_better=False)
        )
    return result


if __name__ == "__main__":
    sys.exit(main_for("scale", __doc__ or "", add_arguments, scenario))
