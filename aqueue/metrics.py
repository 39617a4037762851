"""Prometheus metrics for an App (the ``aqueue[prometheus]`` extra).

``instrument(app)`` returns a ``JobMetrics``: a ``prometheus_client`` collector to register
with a registry of your choice (aqueue never touches the global one by itself). Two kinds
of figures, fed two ways:

- **What this process ran**: counters and histograms per queue, kind and state, fed as
  jobs run, in memory, by an ``after_process`` hook (outcome, run time) and a middleware
  (the wait before start, read off the claimed job). They live where the worker runs: a
  process that only serves the dashboard counts nothing, which is why every worker
  process exposes its own (``prometheus_client.start_http_server`` in a worker, or the
  dashboard mounted in a web app that runs ``app.worker()``).
- **What the database holds**: queue gauges (due, scheduled, running, oldest due job,
  paused), the same for every process, from ONE statement per scrape
  (``db/sql/metrics.sql``) over unfinished jobs only. A collector's ``collect()`` is
  synchronous and may run in another thread, so it cannot query: ``await
  metrics.refresh()`` reads the gauges, and ``collect()`` reports the last reading. The
  dashboard's ``/metrics`` refreshes before every scrape; ``metrics.exposition()`` does
  both for an endpoint of your own.

The hot path is a dict lookup and a counter increment per attempt: the labelled children
are cached per (queue, kind, state), so no label is resolved twice.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .jobs import FINAL_STATES, Job, Outcome

if TYPE_CHECKING:
    from .app import App

__all__ = ["DURATION_BUCKETS", "JobMetrics", "QueueGauges", "exposition", "instrument"]

#: Seconds: from a millisecond's no-op to an hour's batch job (run time and wait alike).
DURATION_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
)  # fmt: skip


class QueueGauges:
    """Gauges per queue from one statement per ``refresh()``; ``collect()`` reports the
    last reading (nothing before the first)."""

    def __init__(self, app: App, *, namespace: str = "aqueue") -> None:
        self._db = app.db
        self._namespace = namespace
        self._rows: Sequence[Any] = ()
        self._read_seconds = 0.0

    async def refresh(self) -> None:
        started = time.perf_counter()
        self._rows = await self._db.queue_gauges()
        self._read_seconds = time.perf_counter() - started

    def collect(self) -> Iterable[Metric]:
        ns = self._namespace
        families = {
            "due": GaugeMetricFamily(
                f"{ns}_queue_due_jobs",
                "Jobs waiting in the queue that are due to run now.",
                labels=["queue"],
            ),
            "later": GaugeMetricFamily(
                f"{ns}_queue_scheduled_jobs",
                "Jobs waiting in the queue for a later time (scheduled, or retrying after "
                "a backoff).",
                labels=["queue"],
            ),
            "running": GaugeMetricFamily(
                f"{ns}_queue_running_jobs",
                "Jobs of the queue running now, on every node.",
                labels=["queue"],
            ),
            "oldest_due_age": GaugeMetricFamily(
                f"{ns}_queue_oldest_due_seconds",
                "How long the queue's oldest due job has been due (0 when none is).",
                labels=["queue"],
            ),
            "paused": GaugeMetricFamily(
                f"{ns}_queue_paused",
                "1 when the queue is paused (app.pause_queue), else 0.",
                labels=["queue"],
            ),
        }
        for row in self._rows:
            for column, family in families.items():
                family.add_metric([row["queue"]], float(row[column]))
        yield from families.values()
        yield GaugeMetricFamily(
            f"{ns}_gauges_read_seconds",
            "How long the last reading of the queue gauges took.",
            value=self._read_seconds,
        )


class JobMetrics:
    """The collector ``instrument(app)`` returns: this process's job counters and
    histograms, and the database's queue gauges (see the module's docstring)."""

    def __init__(self, app: App, *, namespace: str = "aqueue") -> None:
        ns = namespace
        labels = ["queue", "kind", "state"]
        # Not registered anywhere by themselves (registry=None): this collector reports them.
        self._finished = Counter(
            f"{ns}_jobs_finished",
            "Jobs that reached a final state (completed, cancelled, discarded).",
            labels,
            registry=None,
        )
        self._attempts = Counter(
            f"{ns}_attempts",
            "Attempts, by the state each left its job in (completed, retryable, "
            "scheduled for a snooze, discarded, cancelled).",
            labels,
            registry=None,
        )
        self._duration = Histogram(
            f"{ns}_attempt_duration_seconds",
            "How long attempts ran, by the state each left its job in.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        self._wait = Histogram(
            f"{ns}_job_wait_seconds",
            "Time from when an attempt was due (scheduled_at) to when it started (attempted_at).",
            ["queue", "kind"],
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        # (queue, kind, state) -> the labelled children, resolved once.
        self._outcome_children: dict[tuple[str, str, str], tuple[Any, Any, Any | None]] = {}
        self._wait_children: dict[tuple[str, str], Any] = {}
        self.gauges = QueueGauges(app, namespace=namespace)

    # -- feeding ---------------------------------------------------------------------------

    async def after_process(self, job: Job, outcome: Outcome) -> None:
        """The ``after_process`` hook: one attempt's outcome, once it is committed."""
        key = (job.queue, job.kind, outcome.state.value)
        children = self._outcome_children.get(key)
        if children is None:
            final = outcome.state in FINAL_STATES
            children = (
                self._attempts.labels(*key),
                self._duration.labels(*key),
                self._finished.labels(*key) if final else None,
            )
            self._outcome_children[key] = children
        attempts, duration, finished = children
        attempts.inc()
        duration.observe(outcome.duration)
        if finished is not None:
            finished.inc()

    async def middleware(self, job: Job, call_next: Callable[[], Awaitable[Any]]) -> Any:
        """The middleware: the wait before this attempt started, read off the claimed row
        (the outcome's write moves ``scheduled_at`` on for a retry, so a hook cannot)."""
        if job.attempted_at is not None:
            key = (job.queue, job.kind)
            child = self._wait_children.get(key)
            if child is None:
                child = self._wait_children[key] = self._wait.labels(*key)
            child.observe(max(0.0, (job.attempted_at - job.scheduled_at).total_seconds()))
        return await call_next()

    # -- reporting --------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the queue gauges (one statement); call it before each scrape."""
        await self.gauges.refresh()

    def collect(self) -> Iterable[Metric]:
        for metric in (self._finished, self._attempts, self._duration, self._wait):
            yield from metric.collect()
        yield from self.gauges.collect()

    async def exposition(self, registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
        """``(body, content type)`` of a scrape: the gauges refreshed, then ``registry``
        (default: a registry holding only this collector) in the text format."""
        return await exposition(self, registry)


async def exposition(
    collector: JobMetrics | QueueGauges, registry: CollectorRegistry | None = None
) -> tuple[bytes, str]:
    """A scrape of ``registry`` (default: one holding only ``collector``) after refreshing
    ``collector``'s gauges: ``(body, content type)`` in Prometheus' text format."""
    await collector.refresh()
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def instrument(app: App, *, namespace: str = "aqueue") -> JobMetrics:
    """Count ``app``'s jobs as this process runs them; return the collector.

    Registers an ``after_process`` hook and a middleware on ``app`` (call it once per App,
    before starting the worker) and returns the ``JobMetrics`` to register with your
    registry (``prometheus_client.REGISTRY.register(metrics)``) or to pass to the
    dashboard (``create_app(app, metrics=metrics)``)."""
    metrics = JobMetrics(app, namespace=namespace)
    app.after_process(metrics.after_process)
    app.middleware(metrics.middleware)
    return metrics
