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

- **Hooks** (``after_process``): an ``INTERNAL`` span per hook run, a child of the
  attempt's span (hooks run once the outcome is committed, after the attempt's span has
  ended, in the worker's hook task): its name is the hook's, an exception it raises is
  recorded on it. A job's code can find its hooks' runs under its attempt in a trace.

An attempt's span records the outcome state the job's code chose (``aqueue.job.state``,
by the outcome rules of DESIGN §1: return, Snooze, Discard, Cancel, another exception) and
any error (an exception event and an ERROR status). A cancellation (timeout, app.cancel,
shutdown) is recorded as such: which of the three it was is decided after the middleware.

The tracer comes from ``tracer_provider`` when given, else from the global provider
(OpenTelemetry's proxy tracer: configuring the SDK after ``instrument`` still takes effect).

**Sampling** is the provider's (``TracerProvider(sampler=ParentBased(TraceIdRatioBased(r)))``
samples a fraction ``r`` of traces at their root, the enqueue). An attempt whose
enqueuer's span was not sampled (the ``traceparent`` says so) gets no span at all: its
enqueuer's context is made current as it came, so what the job enqueues stays in the same
unsampled trace. That is what OpenTelemetry's parent-based samplers (the SDK's default)
decide anyway, at a fraction of the cost of asking the SDK for a span that records
nothing. ``instrument(app, follow_parent_sampling=False)`` asks the provider's sampler for
every attempt instead, for a sampler that is not parent-based.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .errors import Cancel, Discard, Snooze
from .jobs import Job, JobState, Outcome
from .registry import EnqueueCall

if TYPE_CHECKING:
    from .app import App

__all__ = ["META_KEYS", "Tracing", "instrument"]

#: The meta keys that carry the trace context (W3C Trace Context's two headers).
META_KEYS = ("traceparent", "tracestate")
_SCOPE = "aqueue"


class Tracing:
    """The enqueue and attempt middleware that ``instrument(app)`` registers."""

    def __init__(
        self, tracer_provider: TracerProvider | None = None, *, follow_parent_sampling: bool = True
    ) -> None:
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        self._propagator = TraceContextTextMapPropagator()
        self._follow = follow_parent_sampling
        # Parsed parent contexts by traceparent, with whether that parent was sampled: the
        # jobs of one enqueue call share one, so a batch is parsed once. Bounded; emptied
        # when full (cheap, and rarely).
        self._parents: dict[tuple[str, ...], tuple[Context, bool]] = {}
        # The latest attempt's span of each job, for its hooks' spans to hang under (hooks
        # run after the attempt's span ended, in another task). Bounded, oldest out first:
        # hooks run right after their outcome is committed.
        self._attempts: OrderedDict[int, SpanContext] = OrderedDict()

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

    def _parent(self, job: Job) -> tuple[Context, bool] | None:
        """The enqueuer's context from the job's meta and whether its span was sampled, or
        None (a root span)."""
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
            extracted = self._propagator.extract(dict(zip(META_KEYS, key, strict=False)))
            remote = trace.get_current_span(extracted).get_span_context()
            # An unparsable traceparent gives an invalid context: a root span, as without.
            sampled = not remote.is_valid or remote.trace_flags.sampled
            parent = self._parents[key] = (extracted, sampled)
        return parent

    async def attempt(self, job: Job, call_next: Callable[[], Awaitable[Any]]) -> Any:
        found = self._parent(job)
        if found is not None and self._follow and not found[1]:
            # Not sampled at the root: no span, but the trace goes on (see the docstring).
            token = otel_context.attach(found[0])
            try:
                return await call_next()
            finally:
                otel_context.detach(token)
        parent = found[0] if found is not None else None
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
            attempts = self._attempts
            if span.is_recording():
                attempts[job.id] = span.get_span_context()
                if len(attempts) > _ATTEMPTS_MAX:
                    attempts.popitem(last=False)
            else:
                # A sampler that is not parent-based may record one attempt of a job and
                # not the next: this attempt's hooks must not hang under the last one.
                attempts.pop(job.id, None)
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

    async def hook(
        self, hook: Any, job: Job, outcome: Outcome, call_next: Callable[[], Awaitable[Any]]
    ) -> Any:
        """Around one ``after_process`` hook run: a span under the attempt's."""
        attempt = self._attempts.get(job.id)
        if attempt is not None:
            parent: Context | None = trace.set_span_in_context(trace.NonRecordingSpan(attempt))
        else:
            # The attempt had no recording span (unsampled, or evicted): its enqueuer's
            # context decides, as for the attempt.
            found = self._parent(job)
            if found is not None and self._follow and not found[1]:
                return await call_next()
            parent = found[0] if found is not None else None
        name = getattr(hook, "__name__", None) or type(hook).__name__
        attributes: dict[str, Any] = {
            "aqueue.hook": name,
            "aqueue.job.id": job.id,
            "aqueue.job.kind": job.kind,
            "aqueue.job.attempt": job.attempt,
            "aqueue.job.state": outcome.state.value,
        }
        with self._tracer.start_as_current_span(
            f"hook {name}", context=parent, kind=SpanKind.INTERNAL, attributes=attributes
        ):
            return await call_next()


_PARENTS_MAX = 1024
#: Attempt spans remembered for their hooks; hooks run within moments of their commit.
_ATTEMPTS_MAX = 4096


def instrument(
    app: App, *, tracer_provider: TracerProvider | None = None, follow_parent_sampling: bool = True
) -> Tracing:
    """Trace ``app``'s enqueues, attempts and hook runs (see the module's docstring).

    Registers an enqueue middleware, a middleware and a hook wrapper on ``app``: call it
    once per App, before enqueuing or starting a worker. The worker's App must be
    instrumented too for attempts to get spans; the enqueuer's for their parents to be
    carried. ``follow_parent_sampling=False``: every attempt asks the provider's sampler,
    even when its enqueuer's span was not sampled (for a sampler that is not
    parent-based)."""
    tracing = Tracing(tracer_provider, follow_parent_sampling=follow_parent_sampling)
    app.enqueue_middleware(tracing.enqueue)
    app.middleware(tracing.attempt)
    app.registry.hook_wrappers.append(tracing.hook)
    return tracing
