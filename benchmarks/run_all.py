"""Run every benchmark scenario against ONE throwaway durable PostgreSQL (or ``--url``),
print each scenario's table as it finishes, then one summary table and the issue's
targets; write benchmarks/results/<scenario>.json and results/run_all.json.

    .venv/bin/python benchmarks/run_all.py             # full: 20k jobs, C=100, 3 runs
    .venv/bin/python benchmarks/run_all.py --smoke     # seconds per scenario, for CI
    .venv/bin/python benchmarks/run_all.py --only drain,latency --runs 5
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import backlog
import bare_sql
import chunks
import drain
import enqueue
import latency
import limits
import memory
import processes
import scale
import workflows
from common import (
    RESULTS_DIR,
    Bench,
    ScenarioResult,
    Server,
    base_parser,
    describe_machine,
    fmt,
    machine_facts,
    result_payload,
    run_scenario,
    write_json,
)

# Order: the floor first (the scale every other number is read against), peers next.
SCENARIOS: dict[str, ModuleType] = {
    "bare_sql": bare_sql,
    "drain": drain,
    "enqueue": enqueue,
    "latency": latency,
    "backlog": backlog,
    "limits": limits,
    "chunks": chunks,
    "processes": processes,
    "scale": scale,
    "workflows": workflows,
    "memory": memory,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = base_parser(__doc__ or "")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help="comma-separated scenarios to run, in this order",
    )
    parser.add_argument("--jobs", type=int, help="N for every scenario that drains N jobs")
    parser.add_argument("--concurrency", type=int, help="C for every scenario that has one")
    return parser.parse_args(argv)


def scenario_args(module: ModuleType, args: argparse.Namespace) -> argparse.Namespace:
    """The scenario's own namespace: its defaults, with the shared options passed down."""
    parser = base_parser(module.__doc__ or "")
    module.add_arguments(parser)
    known = parser._option_string_actions  # its option strings, to pass only what it has
    argv = ["--runs", str(args.runs), "--systems", args.systems, "--out", str(args.out)]
    if args.url:
        argv += ["--url", args.url]
    if args.smoke:
        argv.append("--smoke")
    for option, value in (("--jobs", args.jobs), ("--concurrency", args.concurrency)):
        if value is not None and option in known:
            argv += [option, str(value)]
    return parser.parse_args(argv)


def summary(results: list[ScenarioResult]) -> str:
    header = ["scenario", "system", "metric", "unit", "median", "runs", "aqueue/this"]
    lines: list[list[str]] = [header]
    for result in results:
        for row in result.rows:
            ratio = result.ratio(row)
            lines.append(
                [
                    result.name,
                    row.system,
                    row.metric,
                    row.unit,
                    fmt(row.median, row.unit),
                    " ".join(fmt(v, row.unit) for v in row.runs),
                    f"{ratio:.2f}x" if ratio is not None else "",
                ]
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for i, line in enumerate(lines):
        cells = [
            c.rjust(widths[j]) if j in (4, 6) else c.ljust(widths[j]) for j, c in enumerate(line)
        ]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _median(
    results: dict[str, ScenarioResult], scenario: str, match: Callable[[str], bool], metric: str
) -> float | None:
    result = results.get(scenario)
    if result is None:
        return None
    for row in result.rows:
        if row.metric == metric and match(row.system):
            return row.median
    return None


def targets(results: dict[str, ScenarioResult]) -> list[dict[str, Any]]:
    """Issue 5's targets, checked against this run's medians (None when not measured)."""

    def aq(name: str) -> bool:
        # aqueue itself, not a diagnostic variant such as "(insert trigger off)".
        return name.startswith("aqueue") and "(" not in name

    def pgq(name: str) -> bool:
        return name.startswith("pgqueuer") and "no cap" not in name

    def pgq_nocap(name: str) -> bool:
        return name.startswith("pgqueuer") and "no cap" in name

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    checks: list[tuple[str, float | None, float, bool]] = []

    def add(name: str, value: float | None, goal: float, higher: bool = True) -> None:
        checks.append((name, value, goal, higher))

    drain_aq = _median(results, "drain", aq, "drain")
    add("drain >= 2.5x pgqueuer", ratio(drain_aq, _median(results, "drain", pgq, "drain")), 2.5)
    add(
        "drain >= 2.5x pgqueuer (no cap)",
        ratio(drain_aq, _median(results, "drain", pgq_nocap, "drain")),
        2.5,
    )
    for kind in ("all durable", "claims async-commit"):
        floor = _median(results, "bare_sql", lambda s, k=kind: s.endswith(k), "claim+complete")
        add(f"drain >= 0.5x bare SQL floor ({kind})", ratio(drain_aq, floor), 0.5)
    for mode, goal in (("batched", 2.0), ("single", 1.0)):
        metric = f"enqueue {mode}"
        ours = _median(results, "enqueue", aq, metric)
        theirs = _median(results, "enqueue", pgq, metric)
        add(f"{metric} >= {goal}x pgqueuer", ratio(ours, theirs), goal)
    p50 = _median(results, "latency", aq, "latency p50")
    pgq_p50 = _median(results, "latency", pgq, "latency p50")
    add("latency p50 <= pgqueuer's (ratio <= 1)", ratio(p50, pgq_p50), 1.0, higher=False)
    add("latency p99 <= 5 ms", _median(results, "latency", aq, "latency p99"), 5.0, higher=False)
    if "backlog" in results and len(results["backlog"].rows) > 1:
        rows = results["backlog"].rows
        add("deep backlog drain >= 0.8x small backlog", ratio(rows[-1].median, rows[0].median), 0.8)
    if "processes" in results:
        for row in results["processes"].rows:
            if row.note:
                dupes = float(row.note.split("=")[1])
                add(f"{row.system}: jobs run twice == 0", dupes, 0.0, higher=False)
    if "limits" in results:
        unlimited = _median(results, "limits", lambda s: s.endswith("no limit"), "drain")
        for label, goal in (("global_limit", 0.9), ("partitions", 0.7)):
            rate = _median(results, "limits", lambda s, k=label: k in s, "drain")
            add(f"drain with {label} >= {goal}x unlimited", ratio(rate, unlimited), goal)
        global_rate = _median(results, "limits", lambda s: "global_limit" in s, "drain")
        pgq_limit = _median(results, "limits", lambda s: "concurrency_limit" in s, "drain")
        add("global_limit >= 2x pgqueuer concurrency_limit", ratio(global_rate, pgq_limit), 2.0)
        started = _median(results, "limits", lambda s: "Rate(" in s, "start rate")
        configured = results["limits"].params.get("rate")
        if started is not None and configured:
            add("rate limit: start rate / configured >= 0.98", started / configured, 0.98)
    if "chunks" in results:
        rows = [r for r in results["chunks"].rows if r.metric == "drain" and r.runs]
        plain = max((r.median or 0.0 for r in rows if "plain" in r.system), default=None)
        chunked = max((r.median or 0.0 for r in rows if "chunks of" in r.system), default=None)
        add("chunks of 100 >= 2x plain jobs (best of each)", ratio(chunked, plain), 2.0)
    if "workflows" in results:
        for plain, shape, goal in (("plain jobs", "chains", 0.6), ("plain jobs", "fan-out", 0.7)):
            rows = results["workflows"].rows
            drains = [r for r in rows if r.metric == "drain"]
            # Rows come in pairs: the plain baseline, then the shape measured against it.
            for base, row in zip(drains[::2], drains[1::2], strict=False):
                if plain in base.system and shape in row.system:
                    add(
                        f"{shape} drain >= {goal}x as many plain jobs",
                        ratio(row.median, base.median),
                        goal,
                    )
    rss = _median(results, "memory", lambda s: s.endswith("C=100"), "peak RSS")
    add("worker peak RSS at C=100 <= 100 MB", rss, 100.0, higher=False)
    out = []
    for name, value, goal, higher in checks:
        met = None if value is None else (value >= goal if higher else value <= goal)
        out.append({"target": name, "value": value, "goal": goal, "met": met})
    return out


def format_targets(checks: list[dict[str, Any]]) -> str:
    lines = ["== targets of issues 5, 9, 10 and 11 (this run's medians)"]
    for check in checks:
        value = check["value"]
        shown = "not measured" if value is None else f"{value:.2f}"
        verdict = {True: "met", False: "NOT met", None: "-"}[check["met"]]
        lines.append(f"   {check['target']:<52} {shown:>12}   {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in SCENARIOS]
    if unknown:
        print(
            f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    machine = machine_facts()
    started = time.perf_counter()
    results: dict[str, ScenarioResult] = {}
    payloads: dict[str, Any] = {}
    with Server(args.url) as server:
        print(describe_machine(machine, server.info), flush=True)
        for name in wanted:
            module = SCENARIOS[name]
            bench = Bench(server, scenario_args(module, args), machine)
            t0 = time.perf_counter()
            result = run_scenario(module.scenario, bench)
            print(result.table(), flush=True)
            print(f"   ({time.perf_counter() - t0:.1f} s)\n", flush=True)
            results[name] = result
            payloads[name] = result_payload(bench, result)
            write_json(name, payloads[name], args.out)
    checks = targets(results)
    if args.smoke:
        print("(smoke run: tiny N and one run; the numbers below only show that it works)")
    print("== summary (medians of each scenario's runs)")
    print(summary(list(results.values())))
    print()
    print(format_targets(checks))
    total = time.perf_counter() - started
    print(f"\ntotal {total:.1f} s; JSON in {args.out}")
    write_json(
        "run_all",
        {
            "machine": machine,
            "server": server.info,
            "smoke": args.smoke,
            "seconds": total,
            "targets": checks,
            "scenarios": {name: payload["scenario"] for name, payload in payloads.items()},
        },
        args.out,
    )
    errors = [error for result in results.values() for error in result.errors]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["RESULTS_DIR", "main"]
