"""OpenTelemetry spans for an App (the ``aqueue[otel]`` extra).

``instrument(app)`` makes a span for every enqueue call and one for every attempt, through
the two public hook points, nothing else:

- **Enqueue** (``app.enqueue_middleware``): a ``PRODUCER`` span around the insert, child
  of whatever span is current where the code enqueues. Its W3C trace context
  (``traceparent``, and ``tracestate`` when there is one) goes into the meta of every job
  of the call, in the same INSERT: nothing is written twice, and a job enqueued on the
  caller's transaction carries the context of the span that enqueued it.
- **Attempt** (``app.middleware``): a ``CONSUMER`` span around each attempt, whose parent
  is the context read back from the job's meta, so every attempt of a job (retries too)
  is a child of the span that enqueued it, across processes and machines. The span is
  current while the job runs: spans the job makes, and jobs it enqueues, are its children.

An attempt's span records the outcome state the job's code chose (``aqueue.job.state``,
by the outcome rules of DESIGN §1: return, Snooze, Discard, Cancel, another exception) and
any error (an exception event and an ERROR status). A cancellation (timeout, app.cancel,
shutdown) is recorded as such: which of the three it was is decided after the middleware.

The tracer comes from ``tracer_provider`` when given, else from the global provider
(OpenTelemetry's proxy tracer: configuring the SDK after ``instrument`` still takes effect).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .errors import Cancel, Discard, Snooze
from .jobs import Job, JobState
from .registry import EnqueueCall

if TYPE_CHECKING:
    from .app import App

__all__ = ["META_KEYS", "Tracing", "instrument"]

#: The meta keys that carry the trace context (W3C Trace Context's two headers).
META_KEYS = ("traceparent", "tracestate")
_SCOPE = "aqueue"


class Tracing:
    """The enqueue and attempt middleware that ``instrument(app)`` registers."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        self._propagator = TraceContextTextMapPropagator()
        # Parsed parent contexts by traceparent: the jobs of one enqueue call share one, so
        # a batch is parsed once. Bounded; emptied when full (cheap, and rarely).
        self._parents: dict[tuple[str, ...], Context] = {}

    async def enqueue(
        self, call: EnqueueCall, call_next: Callable[[], Awaitable[list[Job]]]
    ) -> list[Job]:
        kinds = sorted({request.kind for request in call.requests})
        name = f"enqueue {kinds[0]}" if len(kinds) == 1 else "enqueue"
        attributes: dict[str, Any] = {
            "messaging.system": "aqueue",
            "messaging.operation.type": "send",
            "messaging.batch.message_count": len(call.requests),
            "aqueue.job.kinds": kinds,
            "aqueue.transactional": call.transactional,
        }
        with self._tracer.start_as_current_span(
            name, kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier)  # this span is current: its context goes out
            call.meta.update(carrier)
            jobs = await call_next()
            queues = sorted({job.queue for job in jobs})
            span.set_attribute("aqueue.job.queues", queues)
            if len(queues) == 1:
                span.set_attribute("messaging.destination.name", queues[0])
            if len(jobs) == 1:
                span.set_attribute("aqueue.job.id", jobs[0].id)
                span.set_attribute("messaging.message.id", str(jobs[0].id))
            return jobs

    def _parent(self, job: Job) -> Context | None:
        """The enqueuer's context from the job's meta, or None (a root span)."""
        meta = job.meta
        traceparent = meta.get("traceparent")
        if not isinstance(traceparent, str):
            return None
        tracestate = meta.get("tracestate")
        key = (traceparent, tracestate) if isinstance(tracestate, str) else (traceparent,)
        parent = self._parents.get(key)
        if parent is None:
            if len(self._parents) >= _PARENTS_MAX:
                self._parents.clear()
            parent = self._parents[key] = self._propagator.extract(
                dict(zip(META_KEYS, key, strict=False))
            )
        return parent

    async def attempt(self, job: Job, call_next: Callable[[], Awaitable[Any]]) -> Any:
        parent = self._parent(job)
        attributes: dict[str, Any] = {
            "messaging.system": "aqueue",
            "messaging.operation.type": "process",
            "messaging.destination.name": job.queue,
            "messaging.message.id": str(job.id),
            "aqueue.job.id": job.id,
            "aqueue.job.kind": job.kind,
            "aqueue.job.attempt": job.attempt,
            "aqueue.job.max_attempts": job.max_attempts,
        }
        with self._tracer.start_as_current_span(
            f"run {job.kind}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            # Recorded below, where an outcome that is not a failure can be told apart.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await call_next()
            except anyio.get_cancelled_exc_class():
                span.add_event("cancelled", {"aqueue.reason": "timeout, app.cancel or shutdown"})
                span.set_status(Status(StatusCode.ERROR, "cancelled"))
                raise
            except Snooze as exc:
                span.set_attribute("aqueue.job.state", JobState.SCHEDULED.value)
                span.set_attribute("aqueue.snooze.seconds", float(exc.seconds))
                raise
            except (Discard, Cancel) as exc:
                state = JobState.DISCARDED if isinstance(exc, Discard) else JobState.CANCELLED
                span.set_attribute("aqueue.job.state", state.value)
                span.add_event(state.value, {"aqueue.reason": str(exc)})
                raise
            except Exception as exc:
                last = job.attempt >= job.max_attempts
                state = JobState.DISCARDED if last else JobState.RETRYABLE
                span.set_attribute("aqueue.job.state", state.value)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise
            span.set_attribute("aqueue.job.state", JobState.COMPLETED.value)
            return result


_PARENTS_MAX = 1024


def instrument(app: App, *, tracer_provider: TracerProvider | None = None) -> Tracing:
    """Trace ``app``'s enqueues and attempts (see the module's docstring).

    Registers an enqueue middleware and a middleware on ``app``: call it once per App,
    before enqueuing or starting a worker. The worker's App must be instrumented too for
    attempts to get spans; the enqueuer's for their parents to be carried."""
    tracing = Tracing(tracer_provider)
    app.enqueue_middleware(tracing.enqueue)
    app.middleware(tracing.attempt)
    return tracing
