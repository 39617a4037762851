"""processes: 1, 2 and 4 aqueue worker processes on one database drain N jobs together.

All children open their app first and report ready; then all are told "go" at once and
the clock runs until the database shows no unfinished job (polled every 10 ms from the
parent). Every child reports the job numbers it ran: a number seen twice, or missing, is
a correctness failure, and so is any job whose attempt counter is not 1.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

from common import Bench, Row, ScenarioResult, chunks, main_for, run_async, wait_for
from systems import AqueueSystem

CHILD = Path(__file__).resolve().parent / "worker_child.py"
# A child's final report lists every job it ran on one line: ~7 bytes a job, far past
# asyncio's default 64 KiB line limit at 20k jobs.
LINE_LIMIT = 64 * 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs to drain (N)")
    parser.add_argument(
        "--concurrency", type=int, default=100, help="concurrency of each worker process (C)"
    )
    parser.add_argument("--processes", default="1,2,4", help="comma-separated process counts")


async def _read_event(proc: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"worker process {proc.pid} exited (code {proc.returncode})")
        text = line.decode().strip()
        if text.startswith("{"):
            event: dict[str, Any] = json.loads(text)
            return event


async def _send(proc: asyncio.subprocess.Process, word: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(word.encode() + b"\n")
    await proc.stdin.drain()


async def enqueue_jobs(url: str, jobs: int) -> None:
    system = AqueueSystem()
    await system.open(url)  # also migrates, once, before any child starts
    try:
        for part in chunks(range(jobs), 1000):
            await system.enqueue_many(part)
    finally:
        await system.close()


async def drain_with_processes(
    url: str, processes: int, jobs: int, concurrency: int, job_sleep: float = 0.0
) -> dict[str, Any]:
    """Enqueue ``jobs``, drain them with ``processes`` worker processes; returns the rate,
    per-child reports and the duplicate check."""
    await enqueue_jobs(url, jobs)
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            "--url",
            url,
            "--concurrency",
            str(concurrency),
            "--job-sleep",
            str(job_sleep),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT,
        )
        for _ in range(processes)
    ]
    counter = await asyncpg.connect(url)
    try:
        for proc in children:
            await _read_event(proc, 60)

        async def none_left() -> bool:
            left: int = await counter.fetchval(
                "SELECT count(*) FROM aqueue.jobs WHERE state <> 'completed'"
            )
            return left == 0

        started = time.perf_counter()
        for proc in children:
            await _send(proc, "go")
        await wait_for(none_left, timeout=60 + jobs / 100, interval=0.01)
        elapsed = time.perf_counter() - started
        for proc in children:
            await _send(proc, "stop")
        reports = [await _read_event(proc, 60) for proc in children]
        for proc in children:
            await asyncio.wait_for(proc.wait(), 30)
        retried: int = await counter.fetchval("SELECT count(*) FROM aqueue.jobs WHERE attempt <> 1")
    finally:
        await counter.close()
        for proc in children:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    seen = Counter(n for report in reports for n in report["ran"])
    duplicates = sum(count - 1 for count in seen.values() if count > 1)
    missing = jobs - len(seen)
    return {
        "rate": jobs / elapsed,
        "seconds": elapsed,
        "per_process_jobs": [len(report["ran"]) for report in reports],
        "duplicates": duplicates,
        "missing": missing,
        "attempt_not_1": retried,
        "vmhwm_mb": [report.get("vmhwm_mb") for report in reports],
        "rss_ready_mb": [report.get("rss_ready_mb") for report in reports],
        "max_in_flight": [report.get("max_in_flight") for report in reports],
    }


def scenario(bench: Bench) -> ScenarioResult:
    args = bench.args
    jobs = 600 if bench.smoke else args.jobs
    counts = [int(part) for part in args.processes.split(",") if part.strip()]
    result = ScenarioResult(
        "processes",
        "processes: K aqueue worker processes drain N jobs from one database",
        {
            "jobs": jobs,
            "concurrency_per_process": args.concurrency,
            "processes": counts,
            "runs": bench.runs,
        },
    )
    system = AqueueSystem()
    result.systems["aqueue"] = {"label": system.label, "config": system.config}
    for k in counts:
        runs: list[float] = []
        details: list[dict[str, Any]] = []
        for run in range(bench.runs):
            with bench.database(f"procs_{k}") as url:
                try:
                    info = run_async(
                        functools.partial(drain_with_processes, url, k, jobs, args.concurrency)
                    )
                except Exception as exc:
                    result.errors.append(
                        f"{k} processes run {run + 1}: {type(exc).__name__}: {exc}"
                    )
                    continue
            bench.log(
                f"processes {k} run {run + 1}: {info['rate']:,.0f} jobs/s, split "
                f"{info['per_process_jobs']}, duplicates {info['duplicates']}, "
                f"missing {info['missing']}, attempt<>1 {info['attempt_not_1']}"
            )
            if info["duplicates"] or info["missing"] or info["attempt_not_1"]:
                result.errors.append(
                    f"{k} processes run {run + 1}: {info['duplicates']} duplicate runs, "
                    f"{info['missing']} missing, {info['attempt_not_1']} jobs with attempt <> 1"
                )
            runs.append(info["rate"])
            details.append(info)
        dupes = sum(d["duplicates"] for d in details)
        # The duplicate count rides on the row (for run_all's targets) only when measured.
        result.rows.append(
            Row(
                f"aqueue x{k} process{'es' if k > 1 else ''}",
                "drain",
                "jobs/s",
                runs,
                note=f"duplicates={dupes}" if details else "",
                extra={"runs": details},
            )
        )
        if details:
            result.notes.append(
                f"{k} process(es): jobs ran twice: {dupes}; split of the last run "
                f"{details[-1]['per_process_jobs']}"
            )
    return result


if __name__ == "__main__":
    sys.exit(main_for("processes", __doc__ or "", add_arguments, scenario))
