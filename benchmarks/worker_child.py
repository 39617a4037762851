"""One aqueue worker process, driven over stdin/stdout by processes.py and memory.py.

Protocol, one JSON object or word per line:
  child  -> parent  {"event": "ready", ...}       app open, pool warm, worker not started
  parent -> child   go                              start the worker (all children at once)
  parent -> child   stop                            stop the worker gracefully
  child  -> parent  {"event": "done", "ran": [...], "vmhwm_mb": ..., ...}

Each child reports the job numbers it ran, so the parent can prove that no job ran twice
across processes without adding a database write to the job itself (which would measure
the side table, not the queue).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from common import run_async
from systems import AqueueSystem


def memory_mb() -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM, high-water mark) resident memory of this process."""
    found: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


async def read_line() -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return line.strip()


def emit(payload: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def child(url: str, concurrency: int, job_sleep: float, app_options: str) -> None:
    system = AqueueSystem(**json.loads(app_options))
    system.job_sleep = job_sleep
    ran: list[int] = []
    in_flight = 0
    max_in_flight = 0

    def on_run(n: int) -> None:
        nonlocal in_flight, max_in_flight
        ran.append(n)
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        if not job_sleep:
            in_flight -= 1

    def on_done(n: int) -> None:
        nonlocal in_flight
        in_flight -= 1

    system.on_run = on_run
    system.on_done = on_done
    await system.open(url)
    try:
        ready = memory_mb()
        emit({"event": "ready", "rss_mb": ready.get("VmRSS"), "hwm_mb": ready.get("VmHWM")})
        if await read_line() != "go":
            return
        async with system.worker(concurrency):
            await read_line()  # "stop" (or EOF if the parent died)
        final = memory_mb()
        emit(
            {
                "event": "done",
                "ran": ran,
                "rss_ready_mb": ready.get("VmRSS"),
                "hwm_ready_mb": ready.get("VmHWM"),
                "vmhwm_mb": final.get("VmHWM"),
                "max_in_flight": max_in_flight if job_sleep else None,
            }
        )
    finally:
        await system.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--job-sleep", type=float, default=0.0)
    parser.add_argument("--app-options", default="{}", help="extra App keywords, as JSON")
    args = parser.parse_args()
    run_async(lambda: child(args.url, args.concurrency, args.job_sleep, args.app_options))


if __name__ == "__main__":
    main()
