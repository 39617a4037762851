"""drain: N no-op jobs are waiting; one worker at concurrency C runs them all.

The clock starts just before the worker is started (its start-up is part of the cost a
user pays) and stops when the database says every job is finished: the in-process count
of executions reaching N only tells us to start polling the database every 2 ms, so the
outcome writes are inside the measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from common import Bench, Row, ScenarioResult, chunks, main_for, run_async, wait_for
from systems import make_system, select_systems

ENQUEUE_CHUNK = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs to drain (N)")
    parser.add_argument("--concurrency", type=int, default=100, help="worker concurrency (C)")


async def drain_once(system_name: str, url: str, jobs: int, concurrency: int) -> float:
    """One run on a fresh database; returns jobs/s."""
    system = make_system(system_name)
    await system.open(url)
    try:
        for part in chunks(range(jobs), ENQUEUE_CHUNK):
            await system.enqueue_many(part)
        if await system.remaining() != jobs:
            raise RuntimeError(f"expected {jobs} waiting jobs before the drain")
        executed = 0
        all_ran = asyncio.Event()

        def on_run(n: int) -> None:
            nonlocal executed
            executed += 1
            if executed >= jobs:
                all_ran.set()

        system.on_run = on_run
        # Generous: procrastinate runs ~0.5k jobs/s here.
        timeout = 60 + jobs / 100
        started = time.perf_counter()
        async with system.worker(concurrency):
            await asyncio.wait_for(all_ran.wait(), timeout)

            async def none_left() -> bool:
                return await system.remaining() == 0

            await wait_for(none_left, timeout=30)
            elapsed = time.perf_counter() - started
        return jobs / elapsed
    finally:
        await system.close()


def scenario(bench: Bench) -> ScenarioResult:
    jobs = 500 if bench.smoke else bench.args.jobs
    concurrency = bench.args.concurrency
    result = ScenarioResult(
        "drain",
        "drain: N waiting no-op jobs, one worker at concurrency C, until all are finished",
        {"jobs": jobs, "concurrency": concurrency, "runs": bench.runs},
    )
    systems = select_systems(bench.args.systems, result.notes)
    for name in systems:
        runs: list[float] = []
        for run in range(bench.runs):
            with bench.database(f"drain_{name}") as url:
                try:
                    rate = run_async(lambda url=url: drain_once(name, url, jobs, concurrency))
                except Exception as exc:
                    result.errors.append(f"{name} run {run + 1}: {type(exc).__name__}: {exc}")
                    continue
            bench.log(f"drain {name} run {run + 1}: {rate:,.0f} jobs/s")
            runs.append(rate)
        system = make_system(name)
        result.systems[name] = {"label": system.label, "config": system.config}
        if name == "aqueue":
            result.baseline = system.label
        result.rows.append(Row(system.label, "drain", "jobs/s", runs))
    return result


if __name__ == "__main__":
    sys.exit(main_for("drain", __doc__ or "", add_arguments, scenario))
