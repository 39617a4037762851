"""OpenTelemetry: spans for enqueue and every attempt, read from the SDK's in-memory
exporter after a real enqueue and a real worker run; the attempt's span is a child of the
enqueuer's through the trace context carried in the job's meta."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

import aqueue
from tests.support import eventually

pytest.importorskip("opentelemetry.sdk")
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

import aqueue.tracing


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    # A provider of the test's own, passed explicitly: the global one is never set.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


async def test_an_attempt_is_a_child_of_the_span_that_enqueued_it(
    app: aqueue.App, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    aqueue.tracing.instrument(app, tracer_provider=provider)
    tracer = provider.get_tracer("tests")

    @app.job
    async def notify(user: str) -> None:
        with tracer.start_as_current_span("inside notify"):
            pass

    @app.job
    async def signup(user: str) -> int:
        # A job that enqueues: the follow-up's enqueue span is a child of this attempt.
        follow_up = await notify.enqueue(user=user)
        return follow_up.id

    with tracer.start_as_current_span("POST /signup") as request:
        job = await signup.enqueue(user="ada")
    assert job.meta["traceparent"].split("-")[1] == f"{request.get_span_context().trace_id:032x}"
    async with app.worker(queues={"default": 2}):
        done = await app.wait(job.id, timeout=10)
        await app.wait(done.result, timeout=10)

    [root] = named(exporter, "POST /signup")
    [enqueue_signup] = named(exporter, "enqueue signup")
    [run_signup] = named(exporter, "run signup")
    [enqueue_notify] = named(exporter, "enqueue notify")
    [run_notify] = named(exporter, "run notify")
    [inside] = named(exporter, "inside notify")
    chain = [root, enqueue_signup, run_signup, enqueue_notify, run_notify, inside]
    assert {trace_id(span) for span in chain} == {trace_id(root)}
    for parent, child in itertools.pairwise(chain):
        assert parent_id(child) == span_id(parent), (child.name, parent.name)
    assert enqueue_signup.kind is SpanKind.PRODUCER
    assert run_signup.kind is SpanKind.CONSUMER
    assert run_signup.attributes is not None
    assert run_signup.attributes["aqueue.job.id"] == job.id
    assert run_signup.attributes["aqueue.job.state"] == "completed"
    assert run_signup.attributes["messaging.destination.name"] == "default"
    assert enqueue_signup.attributes is not None
    assert enqueue_signup.attributes["aqueue.job.id"] == job.id
    assert run_signup.status.status_code is StatusCode.UNSET


async def test_errors_and_outcome_states_are_recorded_on_each_attempt(
    app: aqueue.App, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    aqueue.tracing.instrument(app, tracer_provider=provider)

    @app.job(max_attempts=2)
    async def flaky() -> None:
        raise ValueError("upstream said no")

    @app.job
    async def refuse() -> None:
        raise aqueue.Discard("not for us")

    job = await flaky.enqueue()
    refused = await refuse.enqueue()
    async with app.worker(queues={"default": 2}):
        await app.wait(refused.id, timeout=10)
        await _wait_state(app, job.id, aqueue.JobState.RETRYABLE)
        await app.retry(job.id)  # skip the backoff: the second, last attempt runs now
        await app.wait(job.id, timeout=10)

    [enqueue] = named(exporter, "enqueue flaky")
    first, second = sorted(named(exporter, "run flaky"), key=lambda s: s.start_time or 0)
    for attempt, span in enumerate((first, second), start=1):
        assert parent_id(span) == span_id(enqueue)  # every attempt: a child of the enqueue
        assert span.attributes is not None
        assert span.attributes["aqueue.job.attempt"] == attempt
        assert span.status.status_code is StatusCode.ERROR
        [event] = [e for e in span.events if e.name == "exception"]
        assert event.attributes is not None
        assert event.attributes["exception.type"] == "ValueError"
        assert event.attributes["exception.message"] == "upstream said no"
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["aqueue.job.state"] == "retryable"
    assert second.attributes["aqueue.job.state"] == "discarded"

    [run_refuse] = named(exporter, "run refuse")
    assert run_refuse.attributes is not None
    assert run_refuse.attributes["aqueue.job.state"] == "discarded"
    assert run_refuse.status.status_code is StatusCode.UNSET  # a decision, not a failure
    assert [e.name for e in run_refuse.events] == ["discarded"]


async def test_one_span_for_a_batch_and_the_jobs_own_meta_is_kept(
    app: aqueue.App, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    aqueue.tracing.instrument(app, tracer_provider=provider)

    @app.job(meta={"team": "growth"})
    async def ping(n: int) -> None: ...

    async with app.transaction() as conn:
        jobs = await app.enqueue_many(
            [ping.build(n=1), ping.options(meta={"tenant": "acme"}).build(n=2)], conn=conn
        )
    [enqueue] = named(exporter, "enqueue ping")
    assert enqueue.attributes is not None
    assert enqueue.attributes["messaging.batch.message_count"] == 2
    assert enqueue.attributes["aqueue.transactional"] is True
    assert enqueue.context is not None
    flags = int(enqueue.context.trace_flags)
    traceparent = f"00-{trace_id(enqueue):032x}-{span_id(enqueue):016x}-{flags:02x}"
    assert [dict(job.meta) for job in jobs] == [
        {"team": "growth", "traceparent": traceparent},
        {"tenant": "acme", "traceparent": traceparent},
    ]
    stored = await app.get_job(jobs[1].id)
    assert stored is not None and stored.meta == jobs[1].meta

    async with app.worker(queues={"default": 2}):
        for job in jobs:
            await app.wait(job.id, timeout=10)
    runs = named(exporter, "run ping")
    assert len(runs) == 2
    assert {parent_id(span) for span in runs} == {span_id(enqueue)}


async def test_a_job_enqueued_without_tracing_gets_a_root_span(
    make_app: Callable[..., aqueue.App], provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    producer = make_app()
    worker_app = make_app()
    aqueue.tracing.instrument(worker_app, tracer_provider=provider)
    for each in (producer, worker_app):

        @each.job
        async def plain() -> None: ...

    async with producer, worker_app:
        await producer.migrate()
        job = await producer.enqueue("plain", {})
        assert "traceparent" not in job.meta
        async with worker_app.worker(queues={"default": 1}):
            await worker_app.wait(job.id, timeout=10)
    [run] = named(exporter, "run plain")
    assert run.parent is None
    assert named(exporter, "enqueue plain") == []


async def test_hook_runs_are_child_spans_of_the_attempt(
    app: aqueue.App, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    aqueue.tracing.instrument(app, tracer_provider=provider)
    ran: list[int] = []

    @app.after_process
    async def notify_slack(job: aqueue.Job, outcome: aqueue.Outcome) -> None:
        ran.append(job.id)

    @app.after_process
    async def broken_hook(job: aqueue.Job, outcome: aqueue.Outcome) -> None:
        raise RuntimeError("webhook down")

    @app.job(max_attempts=2)
    async def charge(order: int) -> None:
        if order == 2:
            raise ValueError("card declined")

    good = await charge.enqueue(order=1)
    bad = await charge.enqueue(order=2)
    async with app.worker(queues={"default": 2}):
        await app.wait(good.id, timeout=10)
        await _wait_state(app, bad.id, aqueue.JobState.DISCARDED)
        await eventually(lambda: len(named(exporter, "hook broken_hook")) == 3, what="hooks")
    runs = {span.attributes["aqueue.job.id"]: [] for span in named(exporter, "run charge")}
    for span in named(exporter, "run charge"):
        runs[span.attributes["aqueue.job.id"]].append(span)
    assert len(runs[good.id]) == 1 and len(runs[bad.id]) == 2
    # One span per hook per attempt, each a child of its attempt's span, in its trace.
    for hook_name in ("notify_slack", "broken_hook"):
        hooks = named(exporter, f"hook {hook_name}")
        assert len(hooks) == 3, hook_name
        by_parent = {parent_id(span): span for span in hooks}
        for attempts in runs.values():
            for attempt in attempts:
                hook = by_parent[span_id(attempt)]
                assert trace_id(hook) == trace_id(attempt)
                assert hook.kind is SpanKind.INTERNAL
                assert hook.attributes["aqueue.hook"] == hook_name
                assert hook.attributes["aqueue.job.state"] == attempt.attributes["aqueue.job.state"]
    states = sorted(s.attributes["aqueue.job.state"] for s in named(exporter, "hook notify_slack"))
    assert states == ["completed", "discarded", "retryable"]
    for broken in named(exporter, "hook broken_hook"):
        assert broken.status.status_code is StatusCode.ERROR
        [event] = broken.events
        assert event.name == "exception"
        assert event.attributes["exception.message"] == "webhook down"
    for fine in named(exporter, "hook notify_slack"):
        assert fine.status.status_code is StatusCode.UNSET and not fine.events
    assert sorted(ran) == sorted([good.id, bad.id, bad.id])


def _unsampled_parent() -> trace.Span:
    """A span context the enqueuer's sampler said no to (trace flags 00)."""
    return trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=0x5CE0E9A56015FEC5AADFA328AE398115,
            span_id=0xAB54A98CEB1F0AD2,
            is_remote=True,
            trace_flags=trace.TraceFlags(0),
        )
    )


async def test_an_attempt_of_an_unsampled_trace_gets_no_span_but_carries_the_trace(
    app: aqueue.App, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    aqueue.tracing.instrument(app, tracer_provider=provider)

    @app.after_process
    async def audit(job: aqueue.Job, outcome: aqueue.Outcome) -> None: ...

    @app.job
    async def child() -> None: ...

    @app.job
    async def parent() -> int:
        return (await child.enqueue()).id

    with trace.use_span(_unsampled_parent()):
        job = await parent.enqueue()
    assert job.meta["traceparent"].endswith("-00")  # the enqueue span was not sampled
    async with app.worker(queues={"default": 2}):
        done = await app.wait(job.id, timeout=10)
        inner = await app.wait(done.result, timeout=10)
    # The job's own enqueue stayed in the unsampled trace: same trace id, not sampled.
    assert inner.meta["traceparent"].split("-")[1] == "5ce0e9a56015fec5aadfa328ae398115"
    assert inner.meta["traceparent"].endswith("-00")
    assert exporter.get_finished_spans() == ()


async def test_follow_parent_sampling_off_asks_the_sampler_for_every_attempt(
    make_app: Callable[..., aqueue.App], exporter: InMemorySpanExporter
) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    always = TracerProvider(sampler=ALWAYS_ON)  # not parent-based: records every span
    always.add_span_processor(SimpleSpanProcessor(exporter))
    producer, worker_app = make_app(), make_app()
    aqueue.tracing.instrument(producer, tracer_provider=TracerProvider())
    aqueue.tracing.instrument(worker_app, tracer_provider=always, follow_parent_sampling=False)
    for each in (producer, worker_app):

        @each.job
        async def plain() -> None: ...

    async with producer, worker_app:
        await producer.migrate()
        with trace.use_span(_unsampled_parent()):
            job = await producer.enqueue("plain", {})
        assert job.meta["traceparent"].endswith("-00")
        async with worker_app.worker(queues={"default": 1}):
            await worker_app.wait(job.id, timeout=10)
    [run] = named(exporter, "run plain")
    assert run.parent is not None and run.parent.trace_id == 0x5CE0E9A56015FEC5AADFA328AE398115
    always.shutdown()


async def _wait_state(app: aqueue.App, job_id: int, state: aqueue.JobState) -> None:
    async def reached() -> bool:
        job = await app.get_job(job_id)
        return job is not None and job.state is state

    await eventually(reached, what=f"job {job_id} {state.value}")


async def test_inline_mode_makes_hook_spans_too(
    make_app: Callable[..., aqueue.App], provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = make_app(testing="inline")
    aqueue.tracing.instrument(app, tracer_provider=provider)

    @app.after_process
    async def notify_slack(job: aqueue.Job, outcome: aqueue.Outcome) -> None: ...

    @app.job
    async def charge(order: int) -> None: ...

    async with app:
        job = await charge.enqueue(order=1)
    assert job.state is aqueue.JobState.COMPLETED
    [attempt] = named(exporter, "run charge")
    [hook] = named(exporter, "hook notify_slack")
    assert parent_id(hook) == span_id(attempt)
    assert hook.attributes["aqueue.job.state"] == "completed"
