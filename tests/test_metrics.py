"""Prometheus metrics: counters and histograms fed by real jobs on a real worker, queue
gauges from the database, read back through a real registry and a real HTTP scrape of the
dashboard's ``/metrics``."""

from __future__ import annotations

import base64
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import anyio
import pytest
from starlette.requests import Request

import aqueue
from aqueue.dashboard import create_app
from tests.support import eventually, served

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import aqueue.metrics  # noqa: E402

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape, by (name, labels)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def scrape(registry: Any) -> Samples:
    return samples(prometheus_client.generate_latest(registry).decode())


async def test_job_counters_and_histograms_after_real_jobs(app: aqueue.App) -> None:
    metrics = aqueue.metrics.instrument(app)
    registry = prometheus_client.CollectorRegistry()
    registry.register(metrics)

    @app.job(queue="mail")
    async def send(n: int) -> None: ...

    @app.job(queue="mail", max_attempts=2)
    async def bounce() -> None:
        raise RuntimeError("mailbox full")

    @app.job
    async def give_up() -> None:
        raise aqueue.Discard("bad address")

    await app.enqueue_many([send.build(n=i) for i in range(3)])
    bounced = await bounce.enqueue()
    await give_up.enqueue()
    async with app.worker(queues={"default": 2, "mail": 2}):

        def counted(name: str, queue: str, kind: str, state: str) -> float | None:
            return value(scrape(registry), name, queue=queue, kind=kind, state=state)

        await eventually(
            lambda: (
                counted("aqueue_jobs_finished_total", "mail", "send", "completed") == 3
                and counted("aqueue_jobs_finished_total", "default", "give_up", "discarded") == 1
                and counted("aqueue_attempts_total", "mail", "bounce", "retryable") == 1
            ),
            what="every first outcome counted",
        )
        # The retry's backoff is skipped so the second, last attempt runs now.
        await eventually(lambda: _retryable(app, bounced.id))
        await app.retry(bounced.id)
        await app.wait(bounced.id, timeout=10)
        await eventually(
            lambda: counted("aqueue_jobs_finished_total", "mail", "bounce", "discarded") == 1,
            what="the last attempt counted",
        )
    found = scrape(registry)
    assert value(found, "aqueue_attempts_total", **_mail("send")) == 3
    assert value(found, "aqueue_attempts_total", **_mail("bounce", "retryable")) == 1
    assert value(found, "aqueue_jobs_finished_total", **_mail("bounce", "retryable")) is None
    assert value(found, "aqueue_jobs_finished_total", **_mail("bounce", "discarded")) == 1
    assert value(found, "aqueue_attempt_duration_seconds_count", **_mail("send")) == 3
    assert (value(found, "aqueue_attempt_duration_seconds_sum", **_mail("send")) or 0) >= 0
    # Every attempt's wait, the retried one's too: 3 + 2 in "mail".
    assert value(found, "aqueue_job_wait_seconds_count", queue="mail", kind="send") == 3
    assert value(found, "aqueue_job_wait_seconds_count", queue="mail", kind="bounce") == 2
    assert value(found, "aqueue_job_wait_seconds_bucket", queue="mail", kind="send", le="+Inf") == 3
    # Cumulative buckets: a no-op runs in well under an hour, and none takes less than 0s.
    duration = "aqueue_attempt_duration_seconds_bucket"
    assert value(found, duration, **_mail("send"), le="3600.0") == 3
    bounds = [f"{b!r}" for b in map(float, aqueue.metrics.DURATION_BUCKETS)]
    counts = [value(found, duration, **_mail("send"), le=le) or 0 for le in bounds]
    assert counts == sorted(counts)


def _mail(kind: str, state: str = "completed") -> dict[str, str]:
    return {"queue": "mail", "kind": kind, "state": state}


async def _retryable(app: aqueue.App, job_id: int) -> bool:
    job = await app.get_job(job_id)
    return job is not None and job.state is aqueue.JobState.RETRYABLE


async def test_queue_gauges_come_from_the_database(app: aqueue.App) -> None:
    metrics = aqueue.metrics.instrument(app)
    registry = prometheus_client.CollectorRegistry()
    registry.register(metrics)
    started = anyio.Event()
    release = anyio.Event()

    @app.job(queue="bulk")
    async def hold() -> None:
        started.set()
        await release.wait()

    @app.job(queue="bulk")
    async def later() -> None: ...

    @app.job(queue="reports")
    async def report() -> None: ...

    await hold.enqueue()
    await later.options(schedule_in=3600).enqueue()
    await app.enqueue_many([report.build() for _ in range(4)])
    await app.pause_queue("reports")
    # Before any refresh the collector reports no gauge samples, never stale zeros.
    assert value(scrape(registry), "aqueue_queue_due_jobs", queue="reports") is None
    try:
        async with app.worker(queues={"bulk": 1}):
            with anyio.fail_after(10):
                await started.wait()
            await metrics.refresh()
            found = scrape(registry)
            assert value(found, "aqueue_queue_running_jobs", queue="bulk") == 1
            assert value(found, "aqueue_queue_scheduled_jobs", queue="bulk") == 1
            assert value(found, "aqueue_queue_due_jobs", queue="bulk") == 0
            assert value(found, "aqueue_queue_due_jobs", queue="reports") == 4
            assert value(found, "aqueue_queue_paused", queue="reports") == 1
            assert value(found, "aqueue_queue_paused", queue="bulk") == 0
            assert (value(found, "aqueue_queue_oldest_due_seconds", queue="reports") or -1) >= 0
            assert value(found, "aqueue_queue_oldest_due_seconds", queue="bulk") == 0
            release.set()
    finally:
        release.set()


async def test_the_dashboard_serves_metrics_behind_its_auth(app: aqueue.App) -> None:
    metrics = aqueue.metrics.instrument(app)

    @app.job
    async def tick() -> None: ...

    job = await tick.enqueue()
    async with app.worker(queues={"default": 1}):
        await app.wait(job.id, timeout=10)
        await eventually(
            lambda: value(scrape(_only(metrics)), "aqueue_attempts_total", **_default("tick"))
        )
    await tick.options(schedule_in=600).enqueue()
    token = base64.b64encode(b"prom:secret").decode()

    def auth(request: Request) -> bool:
        return request.headers.get("authorization") == f"Basic {token}"

    async with served(create_app(app, auth=auth, metrics=metrics)) as base:
        denied = await anyio.to_thread.run_sync(_get, base + "/metrics", None)
        assert denied[0] == 401
        status, content_type, body = await anyio.to_thread.run_sync(
            _get, base + "/metrics", f"Basic {token}"
        )
    assert status == 200
    assert content_type.startswith("text/plain")
    found = samples(body)
    assert value(found, "aqueue_jobs_finished_total", **_default("tick")) == 1
    assert value(found, "aqueue_queue_scheduled_jobs", queue="default") == 1


async def test_the_dashboard_alone_serves_the_queue_gauges(app: aqueue.App) -> None:
    @app.job
    async def tick() -> None: ...

    await tick.enqueue()
    async with served(create_app(app)) as base:
        status, _, body = await anyio.to_thread.run_sync(_get, base + "/metrics", None)
    assert status == 200
    found = samples(body)
    assert value(found, "aqueue_queue_due_jobs", queue="default") == 1
    assert not [name for name, _ in found if name.startswith("aqueue_attempts")]


def test_the_core_package_does_not_import_prometheus_or_opentelemetry() -> None:
    code = (
        "import sys, aqueue, aqueue.dashboard; "
        "print([m for m in sys.modules if m.startswith(('prometheus_client', 'opentelemetry'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _default(kind: str) -> dict[str, str]:
    return {"queue": "default", "kind": kind, "state": "completed"}


def _only(metrics: aqueue.metrics.JobMetrics) -> Any:
    registry = prometheus_client.CollectorRegistry()
    registry.register(metrics)
    return registry


def _get(url: str, authorization: str | None) -> tuple[int, str, str]:
    request = urllib.request.Request(url)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["content-type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", ""), ""


async def test_limit_gauges_show_the_limits_in_force_and_their_use(app: aqueue.App) -> None:
    metrics = aqueue.metrics.instrument(app)
    release = anyio.Event()
    running: list[str] = []

    @app.job(queue="api", partition_by="tenant")
    async def call(tenant: str, n: int) -> None:
        running.append(tenant)
        await release.wait()

    spec = aqueue.Queue(
        concurrency=5,
        global_limit=3,
        partition=aqueue.Partition(limit=2),
        rate=aqueue.Rate(120, per=60),
    )
    await app.enqueue_many([call.build(tenant="acme", n=n) for n in range(4)])
    try:
        async with app.worker({"api": spec, "default": 1}):
            # Two of acme's jobs run (its partition's limit), the rest wait.
            await eventually(lambda: len(running) == 2, what="two jobs running")

            async def scraped() -> Samples | None:
                await metrics.refresh()
                found = scrape(_only(metrics))
                ok = value(found, "aqueue_queue_running_jobs", queue="api") == 2
                return found if ok else None

            found = await eventually(scraped, what="the running jobs in the gauges")
            assert value(found, "aqueue_queue_global_limit", queue="api") == 3
            assert value(found, "aqueue_queue_partition_limit", queue="api") == 2
            assert value(found, "aqueue_queue_rate_limit_per_second", queue="api") == 2.0
            assert value(found, "aqueue_queue_busiest_partition_running_jobs", queue="api") == 2
            assert value(found, "aqueue_queue_due_jobs", queue="api") == 2
            # A queue without limits has no limit samples.
            assert value(found, "aqueue_queue_global_limit", queue="default") is None
            assert value(found, "aqueue_queue_rate_limit_per_second", queue="default") is None
            release.set()
    finally:
        release.set()
