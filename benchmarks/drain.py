"""drain: N no-op jobs are waiting; one worker at concurrency C runs them all.

The clock starts just before the worker is started (its start-up is part of the cost a
user pays) and stops when the database says every job is finished: the in-process count
of executions reaching N only tells us to start polling the database every 2 ms, so the
outcome writes are inside the measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from collections.abc import Callable

from common import Bench, CpuMeter, Row, ScenarioResult, chunks, main_for, run_async, wait_for
from systems import System, make_system, select_systems

ENQUEUE_CHUNK = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs to drain (N)")
    parser.add_argument("--concurrency", type=int, default=100, help="worker concurrency (C)")
    parser.add_argument(
        "--no-pgqueuer-nocap",
        dest="pgqueuer_nocap",
        action="store_false",
        help="skip the extra pgqueuer row without its per-process concurrency ceiling",
    )


async def drain_once(
    system_name: str,
    url: str,
    jobs: int,
    concurrency: int,
    server_pid: int | None = None,
    *,
    make: Callable[[str], System] = make_system,
) -> tuple[float, dict[str, float | None]]:
    """One run on a fresh database; returns jobs/s and the CPU used meanwhile. ``make``
    builds the system from its name (a variant of one, e.g. instrumented aqueue)."""
    system = make(system_name)
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
        meter = CpuMeter(server_pid)
        meter.start()
        started = time.perf_counter()
        async with system.worker(concurrency):
            await asyncio.wait_for(all_ran.wait(), timeout)

            async def none_left() -> bool:
                return await system.remaining() == 0

            await wait_for(none_left, timeout=30)
            elapsed = time.perf_counter() - started
            cpu = meter.stop()
        return jobs / elapsed, cpu
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
    if "pgqueuer" in systems and getattr(bench.args, "pgqueuer_nocap", True):
        systems.insert(systems.index("pgqueuer") + 1, "pgqueuer:nocap")
    for name in systems:
        runs: list[float] = []
        cpu_runs: list[dict[str, float | None]] = []
        for run in range(bench.runs):
            with bench.database(f"drain_{name.replace(':', '_')}") as url:
                try:
                    rate, cpu = run_async(
                        functools.partial(
                            drain_once, name, url, jobs, concurrency, bench.server.pid
                        )
                    )
                except Exception as exc:
                    result.errors.append(f"{name} run {run + 1}: {type(exc).__name__}: {exc}")
                    continue
            bench.log(f"drain {name} run {run + 1}: {rate:,.0f} jobs/s, {describe_cpu(cpu)}")
            runs.append(rate)
            cpu_runs.append(cpu)
        system = make_system(name)
        result.systems[name] = {"label": system.label, "config": system.config}
        if name == "aqueue":
            result.baseline = system.label
        result.rows.append(Row(system.label, "drain", "jobs/s", runs, extra={"cpu": cpu_runs}))
        if cpu_runs:
            result.notes.append(f"{system.label}: {describe_cpu(cpu_runs[-1])} (last run)")
    return result


def describe_cpu(cpu: dict[str, float | None]) -> str:
    client, server = cpu.get("client_cpu_pct"), cpu.get("server_cpu_pct")
    text = f"client CPU {client:.0f}% of a core" if client is not None else "client CPU ?"
    if server is not None:
        text += f", server CPU {server:.0f}%"
    return text


if __name__ == "__main__":
    sys.exit(main_for("drain", __doc__ or "", add_arguments, scenario))
