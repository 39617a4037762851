"""workflows: what dependencies cost. One worker at concurrency C runs no-op jobs:

- ``chains``: W three-step chains (a -> b -> c, each enqueued with ``enqueue_workflow``)
  against the same number of plain jobs (``enqueue_many``);
- ``fan-in``: one workflow fanning out from one step to F steps and back into one (F + 2
  jobs) against F + 2 plain jobs.

Each run on a fresh database, same server, same run. Reported: the drain rate (jobs/s from
the worker's start until every job ended, everything enqueued beforehand) and the enqueue
rate. Targets (issue 11): chains drain at >= 0.6x plain, the fan-in at >= 0.7x plain.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time

from common import Bench, Row, ScenarioResult, chunks, main_for, run_async


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chains", type=int, default=1000, help="three-step chains (W)")
    parser.add_argument("--fan", type=int, default=10_000, help="width of the fan-in (F)")
    parser.add_argument("--concurrency", type=int, default=100, help="worker concurrency (C)")


async def once(url: str, mode: str, size: int, concurrency: int) -> tuple[float, float]:
    """(drain jobs/s, enqueue jobs/s) of one run."""
    import aqueue

    app = aqueue.App(url)
    done = 0
    total = {"chains": 3 * size, "fan-in": size + 2}[mode.removeprefix("plain ")]
    all_ran = asyncio.Event()

    @app.job(name="noop")
    async def noop(n: int = 0) -> None:
        nonlocal done
        done += 1
        if done >= total:
            all_ran.set()

    async with app:
        await app.migrate()
        began = time.perf_counter()
        if mode.startswith("plain"):
            for part in chunks(range(total), 1000):
                await app.enqueue_many([noop.build(n=n) for n in part])
        elif mode == "chains":
            for _ in range(size):
                wf = aqueue.Workflow("chain")
                wf.add("a", noop.build())
                wf.add("b", noop.build(), deps=["a"])
                wf.add("c", noop.build(), deps=["b"])
                await app.enqueue_workflow(wf)
        else:
            wf = aqueue.Workflow("fan")
            wf.add("root", noop.build())
            for n in range(size):
                wf.add(f"s{n}", noop.build(n=n), deps=["root"])
            wf.add("sink", noop.build(), deps=[f"s{n}" for n in range(size)])
            await app.enqueue_workflow(wf)
        enqueue_rate = total / (time.perf_counter() - began)
        started = time.perf_counter()
        async with app.worker({"default": concurrency}):
            await asyncio.wait_for(all_ran.wait(), 120 + total / 100)
            while await app.db.queue_unfinished("default"):
                await asyncio.sleep(0.002)
            elapsed = time.perf_counter() - started
    return total / elapsed, enqueue_rate


def scenario(bench: Bench) -> ScenarioResult:
    args = bench.args
    chains = 50 if bench.smoke else args.chains
    fan = 200 if bench.smoke else args.fan
    result = ScenarioResult(
        "workflows",
        "workflows: three-step chains and a fan-out/fan-in against as many plain jobs",
        {"chains": chains, "fan": fan, "concurrency": args.concurrency, "runs": bench.runs},
    )
    cases = {
        "plain chains": (f"aqueue, {3 * chains} plain jobs", chains),
        "chains": (f"aqueue, {chains} three-step chains", chains),
        "plain fan-in": (f"aqueue, {fan + 2} plain jobs", fan),
        "fan-in": (f"aqueue, fan-out/fan-in of {fan}", fan),
    }
    result.baseline = cases["plain chains"][0]
    for mode, (label, size) in cases.items():
        drains: list[float] = []
        enqueues: list[float] = []
        for run in range(bench.runs):
            with bench.database(f"workflows_{mode.replace(' ', '_').replace('-', '_')}") as url:
                try:
                    drain, enqueue = run_async(
                        functools.partial(once, url, mode, size, args.concurrency)
                    )
                except Exception as exc:
                    result.errors.append(f"{mode} run {run + 1}: {type(exc).__name__}: {exc}")
                    continue
            bench.log(f"workflows {mode} run {run + 1}: drain {drain:,.0f} jobs/s")
            drains.append(drain)
            enqueues.append(enqueue)
        result.systems[label] = {"label": label, "config": mode}
        result.rows.append(Row(label, "drain", "jobs/s", drains))
        result.rows.append(Row(label, "enqueue", "jobs/s", enqueues))
    return result


if __name__ == "__main__":
    sys.exit(main_for("workflows", __doc__ or "", add_arguments, scenario))
