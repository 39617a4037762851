"""chunks: N no-op items run in chunks of S against N plain no-op jobs, same server, same
run, each on a fresh database. One worker drains what is waiting; the clock runs from
the worker's start to the database saying every job is finished (outcome writes
included). The chunk rows run at concurrency C and at C x 10 (a chunk queue wants
concurrency >= size: items hold places while they gather); the plain rows at the same two.

Target (issue 11): chunks of 100 drain no-op items at 2x the plain jobs' rate or better
(best chunk row against best plain row).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time

from common import Bench, CpuMeter, Row, ScenarioResult, chunks, main_for, run_async


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs / items to drain (N)")
    parser.add_argument("--concurrency", type=int, default=100, help="worker concurrency (C)")
    parser.add_argument("--size", type=int, default=100, help="chunk size (S)")


async def drain_once(
    url: str, jobs: int, concurrency: int, size: int | None, server_pid: int | None
) -> tuple[float, dict[str, float | None]]:
    """One drain: jobs/s, and the CPU seconds the worker's process and the server used."""
    import aqueue

    app = aqueue.App(url)
    done = 0
    all_ran = asyncio.Event()

    def ran(count: int) -> None:
        nonlocal done
        done += count
        if done >= jobs:
            all_ran.set()

    # Each mode registers its one kind, so the plain rows run exactly as without chunks.
    if size is None:

        @app.job(name="noop")
        async def noop(n: int) -> None:
            ran(1)

        build = functools.partial(noop.build)
    else:

        @app.job(name="noop_items", chunk=aqueue.Chunk(size=size, timeout=0.05))
        async def noop_items(items: list[int]) -> None:
            ran(len(items))

        build = functools.partial(noop_items.build)

    async with app:
        await app.migrate()
        for part in chunks(range(jobs), 1000):
            await app.enqueue_many([build(n) for n in part])
        meter = CpuMeter(server_pid)
        meter.start()
        started = time.perf_counter()
        async with app.worker({"default": concurrency}):
            await asyncio.wait_for(all_ran.wait(), 120 + jobs / 100)
            while await app.db.queue_unfinished("default"):
                await asyncio.sleep(0.002)
            elapsed = time.perf_counter() - started
            cpu = meter.stop()
    return jobs / elapsed, cpu


def scenario(bench: Bench) -> ScenarioResult:
    args = bench.args
    jobs = 2_000 if bench.smoke else args.jobs
    result = ScenarioResult(
        "chunks",
        "chunks: drain of N no-op items in chunks of S against N plain no-op jobs",
        {"jobs": jobs, "concurrency": args.concurrency, "size": args.size, "runs": bench.runs},
    )
    wide = args.concurrency * 10
    modes: list[tuple[str, int, int | None]] = [
        (f"aqueue, plain jobs, C={args.concurrency}", args.concurrency, None),
        (f"aqueue, plain jobs, C={wide}", wide, None),
        (f"aqueue, chunks of {args.size}, C={args.concurrency}", args.concurrency, args.size),
        (f"aqueue, chunks of {args.size}, C={wide}", wide, args.size),
    ]
    result.baseline = modes[0][0]
    for label, concurrency, size in modes:
        runs: list[float] = []
        client: list[float] = []
        server: list[float] = []
        for run in range(bench.runs):
            with bench.database("chunks") as url:
                once = functools.partial(drain_once, url, jobs, concurrency, size, bench.server.pid)
                try:
                    rate, cpu = run_async(once)
                except Exception as exc:
                    result.errors.append(f"{label} run {run + 1}: {type(exc).__name__}: {exc}")
                    continue
            # CPU per job is steadier than jobs/s on a shared machine: both are reported.
            client.append((cpu.get("client_cpu_s") or 0.0) / jobs * 1e6)
            if cpu.get("server_cpu_s") is not None:
                server.append((cpu["server_cpu_s"] or 0.0) / jobs * 1e6)
            bench.log(
                f"chunks {label} run {run + 1}: {rate:,.0f} jobs/s, worker CPU "
                f"{client[-1]:.1f} us/job" + (f", server {server[-1]:.1f} us/job" if server else "")
            )
            runs.append(rate)
        result.systems[label] = {"label": label, "config": f"C={concurrency} size={size}"}
        result.rows.append(Row(label, "drain", "jobs/s", runs))
        result.rows.append(Row(label, "worker CPU per job", "us", client, higher_is_better=False))
        if server:
            result.rows.append(Row(label, "server CPU per job", "us", server, False))
    return result


if __name__ == "__main__":
    sys.exit(main_for("chunks", __doc__ or "", add_arguments, scenario))
