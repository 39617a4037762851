"""memory: peak resident memory (VmHWM) of one aqueue worker process while it drains N
jobs at concurrency 100 and 1,000.

Each job holds its slot for ``--job-sleep`` seconds (20 ms by default) so that the worker
really has C jobs in flight: with instant no-op jobs a worker rarely holds more than a
handful at once and the concurrency setting would not be what is measured. The child
reports the most jobs it had in flight, its RSS when ready (imports, pool, no worker) and
its peak at the end.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Any

from common import Bench, Row, ScenarioResult, main_for, run_async
from processes import drain_with_processes
from systems import AqueueSystem


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs to drain (N)")
    parser.add_argument("--concurrencies", default="100,1000", help="comma-separated C values")
    parser.add_argument(
        "--job-sleep", type=float, default=0.02, help="seconds each job holds its slot"
    )


def scenario(bench: Bench) -> ScenarioResult:
    args = bench.args
    jobs = 2000 if bench.smoke else args.jobs
    concurrencies = [int(part) for part in args.concurrencies.split(",") if part.strip()]
    result = ScenarioResult(
        "memory",
        "memory: peak RSS (VmHWM) of one aqueue worker process draining N jobs",
        {
            "jobs": jobs,
            "concurrencies": concurrencies,
            "job_sleep": args.job_sleep,
            "runs": bench.runs,
        },
    )
    system = AqueueSystem()
    result.systems["aqueue"] = {"label": system.label, "config": system.config}
    for concurrency in concurrencies:
        peaks: list[float] = []
        ready: list[float] = []
        details: list[dict[str, Any]] = []
        for run in range(bench.runs):
            with bench.database(f"mem_{concurrency}") as url:
                try:
                    info = run_async(
                        functools.partial(
                            drain_with_processes, url, 1, jobs, concurrency, args.job_sleep
                        )
                    )
                except Exception as exc:
                    result.errors.append(
                        f"C={concurrency} run {run + 1}: {type(exc).__name__}: {exc}"
                    )
                    continue
            peak, at_ready = info["vmhwm_mb"][0], info["rss_ready_mb"][0]
            bench.log(
                f"memory C={concurrency} run {run + 1}: peak {peak:.1f} MB (ready "
                f"{at_ready:.1f} MB), max in flight {info['max_in_flight'][0]}, "
                f"{info['rate']:,.0f} jobs/s"
            )
            peaks.append(peak)
            ready.append(at_ready)
            details.append(info)
        label = f"aqueue worker, C={concurrency}"
        result.rows.append(
            Row(label, "peak RSS", "MB", peaks, higher_is_better=False, extra={"runs": details})
        )
        result.rows.append(
            Row(label, "RSS before worker start", "MB", ready, higher_is_better=False)
        )
        if details:
            result.notes.append(
                f"C={concurrency}: max jobs in flight {[d['max_in_flight'][0] for d in details]}"
            )
    result.notes.append("target: peak RSS <= 100 MB at C=100")
    return result


if __name__ == "__main__":
    sys.exit(main_for("memory", __doc__ or "", add_arguments, scenario))
