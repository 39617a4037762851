"""latency: an idle worker; a producer enqueues one job at a time at a fixed rate;
enqueue-to-start times.

Producer and worker share one process, so one clock (``time.perf_counter``) stamps both
ends: the producer notes the time just before it calls enqueue (so the enqueue's own
commit is inside the latency, as a user would see it) and the job notes the time it
starts. Sends follow a fixed schedule (not "sleep after each"), so a slow enqueue does
not lower the offered rate.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time

from common import Bench, Row, ScenarioResult, main_for, percentile, run_async
from systems import make_system, select_systems

WARMUP_JOBS = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=200.0, help="jobs per second offered")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to offer them")
    parser.add_argument("--concurrency", type=int, default=100, help="worker concurrency (C)")


async def latency_once(
    system_name: str, url: str, rate: float, seconds: float, concurrency: int
) -> list[float]:
    """One run; returns the enqueue-to-start latencies in milliseconds."""
    system = make_system(system_name)
    await system.open(url)
    try:
        sent: dict[int, float] = {}
        started: dict[int, float] = {}
        total = int(rate * seconds)
        all_started = asyncio.Event()

        def on_run(n: int) -> None:
            started[n] = time.perf_counter()
            if len(started) >= total + WARMUP_JOBS:
                all_started.set()

        system.on_run = on_run
        async with system.worker(concurrency):
            # Warm-up: connections, prepared statements, the first LISTEN round trip.
            for n in range(-WARMUP_JOBS, 0):
                await system.enqueue_one(n)
                await asyncio.sleep(1 / rate)
            await asyncio.sleep(0.5)
            begin = time.perf_counter()
            for n in range(total):
                delay = begin + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent[n] = time.perf_counter()
                await system.enqueue_one(n)
            await asyncio.wait_for(all_started.wait(), 30)
        return [(started[n] - sent[n]) * 1000 for n in range(total)]
    finally:
        await system.close()


def scenario(bench: Bench) -> ScenarioResult:
    args = bench.args
    seconds = 0.5 if bench.smoke else args.seconds
    result = ScenarioResult(
        "latency",
        "latency: idle worker, one job enqueued at a time at a fixed rate, enqueue-to-start",
        {
            "rate": args.rate,
            "seconds": seconds,
            "concurrency": args.concurrency,
            "runs": bench.runs,
        },
    )
    for name in select_systems(args.systems, result.notes):
        system = make_system(name)
        result.systems[name] = {"label": system.label, "config": system.config}
        if name == "aqueue":
            result.baseline = system.label
        per_metric: dict[str, list[float]] = {"p50": [], "p99": [], "max": []}
        samples: list[list[float]] = []
        for run in range(bench.runs):
            with bench.database(f"lat_{name}") as url:
                try:
                    values = run_async(
                        functools.partial(
                            latency_once, name, url, args.rate, seconds, args.concurrency
                        )
                    )
                except Exception as exc:
                    result.errors.append(f"{name} run {run + 1}: {type(exc).__name__}: {exc}")
                    continue
            stats = {
                "p50": percentile(values, 50),
                "p99": percentile(values, 99),
                "max": max(values),
            }
            for key, value in stats.items():
                per_metric[key].append(value)
            samples.append(values)
            bench.log(
                f"latency {name} run {run + 1}: p50 {stats['p50']:.2f} ms, "
                f"p99 {stats['p99']:.2f} ms, max {stats['max']:.2f} ms"
            )
        for key, runs in per_metric.items():
            result.rows.append(
                Row(system.label, f"latency {key}", "ms", runs, higher_is_better=False)
            )
        result.systems[name]["samples_ms"] = samples
    result.rows.sort(key=lambda row: ("p50", "p99", "max").index(row.metric.split()[-1]))
    result.notes.append("aqueue/this below 1.00x means aqueue's latency is lower (better)")
    return result


if __name__ == "__main__":
    sys.exit(main_for("latency", __doc__ or "", add_arguments, scenario))
