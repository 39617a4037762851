"""enqueue: how fast jobs get in, with no worker running.

- single: K producer tasks each awaiting one enqueue after another (a web app's request
  handlers); N jobs in all.
- batched: one producer inserting N jobs in batches of B through the system's bulk API.

Each mode of each system runs on a fresh database, so table size and dead tuples from one
never slow another. The clock covers the enqueue calls only.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time

from common import Bench, Row, ScenarioResult, chunks, main_for, run_async
from systems import make_system, select_systems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per batched run (N)")
    parser.add_argument(
        "--single-jobs", type=int, default=5_000, help="jobs per single-enqueue run"
    )
    parser.add_argument(
        "--producers",
        type=int,
        default=10,
        help="concurrent producer tasks for single enqueues (K)",
    )
    parser.add_argument("--batch", type=int, default=1000, help="jobs per batched call (B)")


async def single_once(system_name: str, url: str, jobs: int, producers: int) -> float:
    system = make_system(system_name)
    await system.open(url)
    try:
        # Warm-up: the first call of each connection prepares statements; not measured.
        await asyncio.gather(*(system.enqueue_one(-1) for _ in range(producers)))
        counter = iter(range(jobs))

        async def producer() -> None:
            for n in counter:
                await system.enqueue_one(n)

        started = time.perf_counter()
        await asyncio.gather(*(producer() for _ in range(producers)))
        elapsed = time.perf_counter() - started
        if await system.remaining() != jobs + producers:
            raise RuntimeError("not every enqueued job is in the database")
        return jobs / elapsed
    finally:
        await system.close()


async def batched_once(system_name: str, url: str, jobs: int, batch: int) -> float:
    system = make_system(system_name)
    await system.open(url)
    try:
        await system.enqueue_many([-1] * min(batch, 10))
        started = time.perf_counter()
        for part in chunks(range(jobs), batch):
            await system.enqueue_many(part)
        elapsed = time.perf_counter() - started
        return jobs / elapsed
    finally:
        await system.close()


def scenario(bench: Bench) -> ScenarioResult:
    args = bench.args
    jobs = 1000 if bench.smoke else args.jobs
    single_jobs = 300 if bench.smoke else args.single_jobs
    result = ScenarioResult(
        "enqueue",
        "enqueue: single awaited enqueues from K tasks; batched inserts of B jobs per call",
        {
            "batched_jobs": jobs,
            "batch": args.batch,
            "single_jobs": single_jobs,
            "producers": args.producers,
            "runs": bench.runs,
        },
    )
    for name in select_systems(args.systems, result.notes):
        system = make_system(name)
        result.systems[name] = {"label": system.label, "config": system.config}
        if name == "aqueue":
            result.baseline = system.label
        for mode in ("batched", "single"):
            runs: list[float] = []
            for run in range(bench.runs):
                with bench.database(f"enq_{mode}_{name}") as url:
                    try:
                        if mode == "batched":
                            once = functools.partial(batched_once, name, url, jobs, args.batch)
                        else:
                            once = functools.partial(
                                single_once, name, url, single_jobs, args.producers
                            )
                        rate = run_async(once)
                    except Exception as exc:
                        result.errors.append(
                            f"{name} {mode} run {run + 1}: {type(exc).__name__}: {exc}"
                        )
                        continue
                bench.log(f"enqueue {mode} {name} run {run + 1}: {rate:,.0f} jobs/s")
                runs.append(rate)
            metric = f"enqueue {mode}"
            result.rows.append(Row(system.label, metric, "jobs/s", runs))
    # Group the table by metric, so ratios sit next to what they compare.
    result.rows.sort(key=lambda row: row.metric)
    return result


if __name__ == "__main__":
    sys.exit(main_for("enqueue", __doc__ or "", add_arguments, scenario))
