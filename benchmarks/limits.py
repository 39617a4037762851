"""limits: what flow control costs. N no-op jobs drained by one worker at concurrency C:
with no limit, with ``global_limit`` = C, and with P partitions of limit 2 (keys spread
round-robin over the jobs), each run on a fresh database, same server, same run.

Targets (issue 10): a global limit equal to the concurrency costs at most 10% of the
unlimited rate; 1,000 partitions of limit 2 drain at 0.7x unlimited or better.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from typing import Any

from common import Bench, Row, ScenarioResult, chunks, main_for, run_async


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs to drain (N)")
    parser.add_argument("--concurrency", type=int, default=100, help="worker concurrency (C)")
    parser.add_argument("--partitions", type=int, default=1000, help="partition keys (P)")


async def limited_once(url: str, jobs: int, concurrency: int, mode: str, partitions: int) -> float:
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
    elif mode == "global":
        spec = aqueue.Queue(concurrency=concurrency, global_limit=concurrency)
    else:
        spec = aqueue.Queue(concurrency=concurrency, partition=aqueue.Partition(limit=2))
    async with app:
        await app.migrate()
        for part in chunks(range(jobs), 1000):
            keyed = mode == "partitioned"
            await app.enqueue_many(
                [noop.build(n=n, key=f"k{n % partitions}" if keyed else None) for n in part]
            )
        started = time.perf_counter()
        async with app.worker({"default": spec}):
            await asyncio.wait_for(all_ran.wait(), 120 + jobs / 100)
            # Every outcome written, polled tightly (app.drain polls at poll_interval).
            while await app.db.queue_unfinished("default"):
                await asyncio.sleep(0.002)
            elapsed = time.perf_counter() - started
    return jobs / elapsed


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
    result.baseline = labels["unlimited"]
    for mode, label in labels.items():
        runs: list[float] = []
        for run in range(bench.runs):
            with bench.database(f"limits_{mode}") as url:
                try:
                    rate = run_async(
                        functools.partial(
                            limited_once, url, jobs, args.concurrency, mode, partitions
                        )
                    )
                except Exception as exc:
                    result.errors.append(f"{mode} run {run + 1}: {type(exc).__name__}: {exc}")
                    continue
            bench.log(f"limits {mode} run {run + 1}: {rate:,.0f} jobs/s")
            runs.append(rate)
        result.systems[label] = {"label": label, "config": mode}
        result.rows.append(Row(label, "drain", "jobs/s", runs))
    return result


if __name__ == "__main__":
    sys.exit(main_for("limits", __doc__ or "", add_arguments, scenario))
