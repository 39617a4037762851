"""metrics_overhead: what Prometheus metrics and OpenTelemetry tracing cost a worker.

The drain scenario (N waiting no-op jobs, one worker at concurrency C) for plain aqueue and
for variants with ``aqueue.metrics.instrument`` and ``aqueue.tracing.instrument`` on,
alternating the variants in the same run of this script, each round starting one variant
further on (plain, +metrics, ...; then +metrics, ..., plain; ...) so that a busy machine
and the order weigh on all alike; medians of ``--runs``. Issue 13's target: the
instrumented median at least 0.9x the plain one.

Instrumented means what a production setup pays per attempt: the metrics observer, and a
span per attempt (unless its trace was not sampled at the enqueue) through
a real SDK ``TracerProvider`` with a ``BatchSpanProcessor`` whose exporter drops the spans
(the export itself runs on the SDK's own thread). Enqueue spans are made while the jobs
are enqueued, before the clock starts. One scrape of the metrics (with its queue-gauge
query) follows each instrumented run, to check it works.

    .venv/bin/python benchmarks/metrics_overhead.py --runs 5
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from common import Bench, Row, ScenarioResult, main_for, run_async
from drain import describe_cpu, drain_once
from systems import AqueueSystem, System

PLAIN = "aqueue"
#: The floor of any middleware: full claimed rows and a Job per attempt, nothing else.
MIDDLEWARE = "+no-op middleware"
#: Variant name -> (metrics on, tracing sample ratio or None).
VARIANTS: dict[str, tuple[bool, float | None]] = {
    PLAIN: (False, None),
    MIDDLEWARE: (False, None),
    "+metrics": (True, None),
    "+metrics+tracing": (True, 1.0),
    "+metrics+tracing(10% sampled)": (True, 0.1),
    "+metrics+tracing(1% sampled)": (True, 0.01),
}
TARGET = "+metrics+tracing"


class _DropSpans:
    """A span exporter that keeps nothing: the cost measured is making spans, not
    shipping them (which a collector does in another process)."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class InstrumentedAqueue(AqueueSystem):
    """aqueue with the instrumentations of one variant, as ``instrument()`` sets them up."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        self.variant = variant
        self.metrics_on, self.sample = VARIANTS[variant]
        self.provider: Any = None
        self.metrics: Any = None
        self.registry: Any = None

    @property
    def config(self) -> str:
        parts = []
        if self.variant == MIDDLEWARE:
            parts.append("@app.middleware async def passthrough(job, call_next)")
        if self.metrics_on:
            parts.append("aqueue.metrics.instrument(app) in a CollectorRegistry")
        if self.sample is not None:
            parts.append(
                "aqueue.tracing.instrument(app, tracer_provider=SDK TracerProvider("
                f"sampler=ParentBased(TraceIdRatioBased({self.sample:g}))) + "
                "BatchSpanProcessor, spans dropped)"
            )
        return super().config + ("; plus " + " and ".join(parts) if parts else "")

    async def open(self, url: str) -> None:
        await super().open(url)
        if self.variant == MIDDLEWARE:

            async def passthrough(job: Any, call_next: Any) -> Any:
                return await call_next()

            self._app.middleware(passthrough)
        if self.sample is not None:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

            import aqueue.tracing

            sampler = ParentBased(TraceIdRatioBased(self.sample))
            self.provider = TracerProvider(sampler=sampler)
            self.provider.add_span_processor(BatchSpanProcessor(_DropSpans()))  # type: ignore[arg-type]
            aqueue.tracing.instrument(self._app, tracer_provider=self.provider)
        if self.metrics_on:
            import prometheus_client

            import aqueue.metrics

            self.metrics = aqueue.metrics.instrument(self._app)
            self.registry = prometheus_client.CollectorRegistry()
            self.registry.register(self.metrics)

    async def close(self) -> None:
        if self.metrics is not None:
            body, _ = await self.metrics.exposition(self.registry)
            if b"aqueue_jobs_finished_total" not in body:
                raise RuntimeError("the instrumented run counted no finished job")
        if self.provider is not None:
            self.provider.shutdown()
        await super().close()


def make(name: str) -> System:
    return AqueueSystem() if name == PLAIN else InstrumentedAqueue(name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs to drain (N)")
    parser.add_argument("--concurrency", type=int, default=100, help="worker concurrency (C)")


def scenario(bench: Bench) -> ScenarioResult:
    jobs = 500 if bench.smoke else bench.args.jobs
    concurrency = bench.args.concurrency
    result = ScenarioResult(
        "metrics_overhead",
        "metrics_overhead: drain rate with Prometheus metrics and OpenTelemetry tracing on "
        "vs off, alternating in one run",
        {"jobs": jobs, "concurrency": concurrency, "runs": bench.runs},
    )
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    for run in range(bench.runs):
        shift = run % len(names)
        for name in names[shift:] + names[:shift]:
            label = name.strip("+").replace("+", "_").replace("(", "_").replace(")", "")
            label = label.replace("%", "pct").replace("=", "_").replace(" ", "_")
            with bench.database(f"overhead_{run}_{label or 'plain'}") as url:
                try:
                    rate, cpu = run_async(
                        functools.partial(
                            drain_once, name, url, jobs, concurrency, bench.server.pid, make=make
                        )
                    )
                except Exception as exc:
                    result.errors.append(f"{name} run {run + 1}: {type(exc).__name__}: {exc}")
                    continue
            bench.log(f"{name} run {run + 1}: {rate:,.0f} jobs/s, {describe_cpu(cpu)}")
            rates[name].append(rate)
    for name in VARIANTS:
        result.systems[name] = {"label": name, "config": make(name).config}
        result.rows.append(Row(name, "drain", "jobs/s", rates[name]))
    result.baseline = PLAIN
    plain = statistics.median(rates[PLAIN]) if rates[PLAIN] else None
    for name in VARIANTS:
        if name == PLAIN or not rates[name] or not plain:
            continue
        ratio = statistics.median(rates[name]) / plain
        verdict = ("meets" if ratio >= 0.9 else "MISSES") + " the 0.9x target"
        result.notes.append(f"{name} / plain median drain rate: {ratio:.2f}x ({verdict})")
    return result


if __name__ == "__main__":
    sys.exit(main_for("metrics_overhead", __doc__ or "", add_arguments, scenario))
