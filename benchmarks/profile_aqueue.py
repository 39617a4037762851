"""Profile aqueue (only) in one benchmark scenario with pyinstrument, to see where the
time goes: ``python benchmarks/profile_aqueue.py drain --jobs 20000``.

Scenarios: ``drain`` (worker side), ``enqueue-batched`` and ``enqueue-single`` (producer
side). Prints pyinstrument's text report; ``--html FILE`` writes the interactive one.
Needs ``pip install pyinstrument``; py-spy works too, from outside:
``py-spy top -- .venv/bin/python benchmarks/drain.py --systems aqueue``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from common import Server, chunks, run_async, wait_for
from systems import AqueueSystem


async def profiled(url: str, scenario: str, jobs: int, concurrency: int) -> Any:
    from pyinstrument import Profiler

    system = AqueueSystem()
    await system.open(url)
    profiler = Profiler(async_mode="disabled")
    try:
        if scenario == "drain":
            for part in chunks(range(jobs), 1000):
                await system.enqueue_many(part)
            executed = 0
            all_ran = asyncio.Event()

            def on_run(n: int) -> None:
                nonlocal executed
                executed += 1
                if executed >= jobs:
                    all_ran.set()

            system.on_run = on_run

            async def none_left() -> bool:
                return await system.remaining() == 0

            profiler.start()
            started = time.perf_counter()
            async with system.worker(concurrency):
                await all_ran.wait()
                await wait_for(none_left, timeout=30)
                elapsed = time.perf_counter() - started
            profiler.stop()
        elif scenario == "enqueue-batched":
            profiler.start()
            started = time.perf_counter()
            for part in chunks(range(jobs), 1000):
                await system.enqueue_many(part)
            elapsed = time.perf_counter() - started
            profiler.stop()
        else:
            counter = iter(range(jobs))

            async def producer() -> None:
                for n in counter:
                    await system.enqueue_one(n)

            profiler.start()
            started = time.perf_counter()
            await asyncio.gather(*(producer() for _ in range(10)))
            elapsed = time.perf_counter() - started
            profiler.stop()
    finally:
        await system.close()
    print(f"{scenario}: {jobs} jobs in {elapsed:.2f}s = {jobs / elapsed:,.0f} jobs/s (profiled)")
    return profiler


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=["drain", "enqueue-batched", "enqueue-single"])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--url", help="existing server (default: a throwaway durable one)")
    parser.add_argument("--html", type=Path)
    args = parser.parse_args()
    with Server(args.url) as server:
        url = run_async(lambda: server.create_database("profile"))
        try:
            profiler = run_async(lambda: profiled(url, args.scenario, args.jobs, args.concurrency))
        finally:
            run_async(lambda: server.drop_database(url))
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    if args.html is not None:
        args.html.write_text(profiler.output_html())
        print(f"HTML: {args.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
