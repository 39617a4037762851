"""limits: what flow control costs. N no-op jobs drained by one worker at concurrency C:
with no limit, with ``global_limit`` = C, with P partitions of limit 2 (keys spread
round-robin over the jobs), and pgqueuer with its per-entrypoint ``concurrency_limit`` = C
(its cluster-wide limit, the closest to ``global_limit``); the first two again with
``ack="sync"`` (what a synchronous outcome write costs); then a rate limit of R starts a
second, measured from the jobs' own claim times over the first 10 s. Each run on a fresh
database, same server; the modes take turns within each run (run 1 of every mode, then
run 2 ...), so a busy machine skews them alike.

Targets (issue 10): a global limit equal to the concurrency costs at most 10% of the
unlimited rate; 1,000 partitions of limit 2 drain at 0.7x unlimited or better; the global
limit drains at 2x or more pgqueuer's concurrency_limit; the measured start rate is within
2% of the configured rate.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.metadata
import sys
import time
from statistics import median as _median
from typing import Any

from common import Bench, Row, ScenarioResult, chunks, main_for, run_async
from systems import select_systems


def median(values: list[float]) -> float | None:
    return _median(values) if values else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs to drain (N)")
    parser.add_argument("--concurrency", type=int, default=100, help="worker concurrency (C)")
    parser.add_argument("--partitions", type=int, default=1000, help="partition keys (P)")
    parser.add_argument("--rate", type=int, default=1000, help="rate limit, starts/s (R)")
    parser.add_argument(
        "--no-pgqueuer",
        dest="pgqueuer",
        action="store_false",
        help="skip pgqueuer's concurrency_limit row",
    )
    parser.add_argument(
        "--no-sync", dest="sync", action="store_false", help="skip the ack='sync' rows"
    )


async def limited_once(url: str, jobs: int, concurrency: int, mode: str, size: int) -> float:
    """jobs/s of one drain (the start rate, for mode "rate"); ``size``: the partitions
    (mode "partitioned") or the starts per second (mode "rate")."""
    import aqueue

    app = aqueue.App(url)
    done = 0
    all_ran = asyncio.Event()

    @app.job(name="noop", partition_by="key")
    async def noop(n: int, key: str | None = None) -> None:
        nonlocal done
        done += 1
        if done >= jobs:
            all_ran.set()

    spec: Any
    if mode == "unlimited":
        spec = aqueue.Queue(concurrency=concurrency)
    elif mode == "unlimited_sync":
        spec = aqueue.Queue(concurrency=concurrency, ack="sync")
    elif mode == "global":
        spec = aqueue.Queue(concurrency=concurrency, global_limit=concurrency)
    elif mode == "global_sync":
        spec = aqueue.Queue(concurrency=concurrency, global_limit=concurrency, ack="sync")
    elif mode == "rate":
        spec = aqueue.Queue(concurrency=concurrency, rate=aqueue.Rate(size, per=1.0))
    else:
        spec = aqueue.Queue(concurrency=concurrency, partition=aqueue.Partition(limit=2))
    async with app:
        await app.migrate()
        for part in chunks(range(jobs), 1000):
            keyed = mode == "partitioned"
            await app.enqueue_many(
                [noop.build(n=n, key=f"k{n % size}" if keyed else None) for n in part]
            )
        started = time.perf_counter()
        async with app.worker({"default": spec}):
            await asyncio.wait_for(all_ran.wait(), 120 + jobs / 100)
            # Every outcome written, polled tightly (app.drain polls at poll_interval).
            while await app.db.queue_unfinished("default"):
                await asyncio.sleep(0.002)
            elapsed = time.perf_counter() - started
        if mode == "rate":
            return await _start_rate(app, RATE_WINDOW)
    return jobs / elapsed


#: Seconds over which the rate scenario measures the start rate.
RATE_WINDOW = 10.0


async def _start_rate(app: Any, window: float) -> float:
    """Starts per second in the first ``window`` seconds after the first start, read from
    the jobs' claim times (``attempted_at``)."""
    async with app.db.pool.acquire() as conn:
        starts: int = await conn.fetchval(
            f"SELECT count(*) FROM {app.db.schema}.jobs AS j, "
            f"(SELECT min(attempted_at) AS t0 FROM {app.db.schema}.jobs) AS first "
            "WHERE j.attempted_at >= first.t0 "
            "AND j.attempted_at < first.t0 + $1 * interval '1 second'",
            window,
        )
    return starts / window


async def pgqueuer_once(url: str, jobs: int, concurrency: int) -> float:
    from drain import drain_once

    rate, _ = await drain_once("pgqueuer:limit", url, jobs, concurrency)
    return rate


def scenario(bench: Bench) -> ScenarioResult:
    args = bench.args
    jobs = 500 if bench.smoke else args.jobs
    partitions = 50 if bench.smoke else args.partitions
    result = ScenarioResult(
        "limits",
        "limits: drain of N no-op jobs, one worker at concurrency C, with and without limits",
        {
            "jobs": jobs,
            "concurrency": args.concurrency,
            "partitions": partitions,
            "runs": bench.runs,
        },
    )
    labels = {
        "unlimited": "aqueue, no limit",
        "global": f"aqueue, global_limit={args.concurrency}",
        "partitioned": f"aqueue, {partitions} partitions of limit 2",
    }
    if args.sync:
        labels["unlimited_sync"] = "aqueue, no limit, ack=sync"
        labels["global_sync"] = f"aqueue, global_limit={args.concurrency}, ack=sync"
    notes: list[str] = []
    if args.pgqueuer and not select_systems("pgqueuer", notes):
        result.notes.extend(notes)
    elif args.pgqueuer:
        version = importlib.metadata.version("pgqueuer")
        labels["pgqueuer"] = f"pgqueuer {version}, concurrency_limit={args.concurrency}"
    rate = 20 if bench.smoke else args.rate
    rate_jobs = int(rate * (RATE_WINDOW + 2))
    labels["rate"] = f"aqueue, Rate({rate}, per=1s)"
    result.params["rate"] = rate
    result.baseline = labels["unlimited"]
    measured: dict[str, list[float]] = {mode: [] for mode in labels}
    for run in range(bench.runs):
        for mode in labels:
            with bench.database(f"limits_{mode}") as url:
                if mode == "pgqueuer":
                    once = functools.partial(pgqueuer_once, url, jobs, args.concurrency)
                elif mode == "rate":
                    once = functools.partial(
                        limited_once, url, rate_jobs, args.concurrency, mode, rate
                    )
                else:
                    once = functools.partial(
                        limited_once, url, jobs, args.concurrency, mode, partitions
                    )
                try:
                    value = run_async(once)
                except Exception as exc:
                    result.errors.append(f"{mode} run {run + 1}: {type(exc).__name__}: {exc}")
                    continue
            bench.log(f"limits {mode} run {run + 1}: {value:,.0f} jobs/s")
            measured[mode].append(value)
    for mode, label in labels.items():
        result.systems[label] = {"label": label, "config": mode}
        metric = "start rate" if mode == "rate" else "drain"
        result.rows.append(Row(label, metric, "jobs/s", measured[mode]))
    global_rate, pgq_rate = median(measured["global"]), median(measured.get("pgqueuer", []))
    if global_rate and pgq_rate:
        result.notes.append(
            f"global_limit vs pgqueuer concurrency_limit (medians, same run): "
            f"{global_rate / pgq_rate:.2f}x"
        )
    measured_rate = median(measured["rate"])
    if measured_rate:
        result.notes.append(
            f"rate: {measured_rate:,.1f} starts/s measured over {RATE_WINDOW:g} s against "
            f"{rate} configured ({measured_rate / rate:.3f}x)"
        )
    return result


if __name__ == "__main__":
    sys.exit(main_for("limits", __doc__ or "", add_arguments, scenario))
