"""Prometheus metrics for an App (the ``aqueue[prometheus]`` extra).

``instrument(app)`` returns a ``JobMetrics``: a ``prometheus_client`` collector to register
with a registry of your choice (aqueue never touches the global one by itself). Two kinds
of figures, fed two ways:

- **What this process ran**: counters and histograms per queue, kind and state, fed as
  jobs run, in memory, by an observer (``app.observe``): a synchronous call per committed
  attempt with its queue, kind, outcome and wait, no ``Job`` built and no task started,
  which an ``after_process`` hook would cost per attempt (measured: more than a no-op job
  itself; ``benchmarks/metrics_overhead.py``). They live where the worker runs: a
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

The hot path is two dict lookups and two bisects per attempt (see ``JobMetrics``).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .jobs import FINAL_STATES, Outcome

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
        # Limits exist only for queues that declare them: no sample rather than a made-up 0.
        limits = {
            "global_limit": GaugeMetricFamily(
                f"{ns}_queue_global_limit",
                "The queue's cluster-wide limit on running jobs (aqueue.Queue(global_limit=)).",
                labels=["queue"],
            ),
            "partition_limit": GaugeMetricFamily(
                f"{ns}_queue_partition_limit",
                "The queue's limit on running jobs per partition key (aqueue.Partition).",
                labels=["queue"],
            ),
            "rate_limit": GaugeMetricFamily(
                f"{ns}_queue_rate_limit_per_second",
                "The queue's rate limit in starts per second (aqueue.Rate: n / per; per "
                "partition key when per_partition).",
                labels=["queue"],
            ),
        }
        busiest = GaugeMetricFamily(
            f"{ns}_queue_busiest_partition_running_jobs",
            "Running jobs of the queue's busiest partition key (0 without partitions).",
            labels=["queue"],
        )
        for row in self._rows:
            labels = [row["queue"]]
            for column, family in families.items():
                family.add_metric(labels, float(row[column]))
            for column, family in limits.items():
                if row[column] is not None:
                    family.add_metric(labels, float(row[column]))
            busiest.add_metric(labels, float(row["busiest_partition"]))
        yield from families.values()
        yield from limits.values()
        yield busiest
        yield GaugeMetricFamily(
            f"{ns}_gauges_read_seconds",
            "How long the last reading of the queue gauges took.",
            value=self._read_seconds,
        )


class _Series:
    """One histogram series in plain Python: a count per bucket (the last is +Inf) and the
    sum. Its counter twin (how many observations) is the sum of the buckets."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.total = 0.0

    def add(self, value: float) -> None:
        # The first bound >= value: Prometheus buckets are "less than or equal".
        self.buckets[bisect.bisect_left(DURATION_BUCKETS, value)] += 1
        self.total += value

    def count(self) -> int:
        return sum(self.buckets)

    def cumulative(self) -> list[tuple[str, float]]:
        running, out = 0, []
        for bound, count in zip((*_BOUNDS, "+Inf"), self.buckets, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


# The "le" labels as prometheus_client writes them ("0.001", "1.0", "3600.0").
_BOUNDS = tuple(repr(float(bound)) for bound in DURATION_BUCKETS)


class JobMetrics:
    """The collector ``instrument(app)`` returns: this process's job counters and
    histograms, and the database's queue gauges (see the module's docstring).

    The figures are kept in plain Python (a dict of ``_Series``) and turned into metric
    families only when scraped: an attempt costs a dict lookup, two bisects and four
    additions, not the locks and per-sample objects of ``prometheus_client``'s Counter and
    Histogram (measured: those cost a no-op drain more than a tenth of its rate). A scrape
    from another thread (``start_http_server``) reads the dicts while the worker writes
    them: each read copies the items first, so a series may show one attempt less, never
    a broken one."""

    def __init__(self, app: App, *, namespace: str = "aqueue") -> None:
        self._ns = namespace
        # (queue, kind, state) -> run time; (queue, kind) -> wait before start.
        self._runs: dict[tuple[str, str, str], _Series] = {}
        self._waits: dict[tuple[str, str], _Series] = {}
        self.gauges = QueueGauges(app, namespace=namespace)

    # -- feeding ---------------------------------------------------------------------------

    def observe(self, queue: str, kind: str, outcome: Outcome, wait: float | None) -> None:
        """The observer (``app.observe``): one committed attempt, counted in place."""
        key = (queue, kind, outcome.state.value)
        runs = self._runs.get(key)
        if runs is None:
            runs = self._runs[key] = _Series()
        runs.add(outcome.duration)
        if wait is None:
            return
        waits = self._waits.get(key[:2])
        if waits is None:
            waits = self._waits[key[:2]] = _Series()
        waits.add(wait)

    # -- reporting --------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the queue gauges (one statement); call it before each scrape."""
        await self.gauges.refresh()

    def collect(self) -> Iterable[Metric]:
        ns = self._ns
        labels = ["queue", "kind", "state"]
        finished = CounterMetricFamily(
            f"{ns}_jobs_finished",
            "Jobs that reached a final state (completed, cancelled, discarded).",
            labels=labels,
        )
        attempts = CounterMetricFamily(
            f"{ns}_attempts",
            "Attempts, by the state each left its job in (completed, retryable, "
            "scheduled for a snooze, discarded, cancelled).",
            labels=labels,
        )
        duration = HistogramMetricFamily(
            f"{ns}_attempt_duration_seconds",
            "How long attempts ran, by the state each left its job in.",
            labels=labels,
        )
        for key, series in list(self._runs.items()):
            count = series.count()
            attempts.add_metric(list(key), count)
            if key[2] in _FINAL:
                finished.add_metric(list(key), count)
            duration.add_metric(list(key), series.cumulative(), series.total)
        wait = HistogramMetricFamily(
            f"{ns}_job_wait_seconds",
            "Time from when an attempt was due (scheduled_at) to when it started "
            "(attempted_at), per committed attempt.",
            labels=["queue", "kind"],
        )
        for pair, series in list(self._waits.items()):
            wait.add_metric(list(pair), series.cumulative(), series.total)
        yield from (finished, attempts, duration, wait)
        yield from self.gauges.collect()

    async def exposition(self, registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
        """``(body, content type)`` of a scrape: the gauges refreshed, then ``registry``
        (default: a registry holding only this collector) in the text format."""
        return await exposition(self, registry)


_FINAL = frozenset(state.value for state in FINAL_STATES)


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


def instrument(app: App, *, namespace: str = "aqueue", wait: bool = True) -> JobMetrics:
    """Count ``app``'s jobs as this process runs them; return the collector.

    Registers an observer on ``app`` (``app.observe``; call this once per App, before
    starting the worker) and returns the ``JobMetrics`` to register with your
    registry (``prometheus_client.REGISTRY.register(metrics)``) or to pass to the
    dashboard (``create_app(app, metrics=metrics)``).

    ``wait`` is kept for compatibility and changes nothing: every claim reads the two
    times the wait is made of, and the observer keeps claims lean (no ``Job`` is built;
    ``benchmarks/metrics_overhead.py`` measures what is left)."""
    metrics = JobMetrics(app, namespace=namespace)
    app.observe(metrics.observe, wait=wait)
    return metrics
