"""What ``aqueue worker`` tells its operator: a banner at start, a warning for jobs it
will never run, and a one-line throughput summary at a fixed interval.

A worker that says nothing looks the same whether it runs jobs or waits on a queue
nobody enqueues to; these lines are the first thing a new user reads. They go through
the App's logger (``aqueue`` unless the App was given another), at INFO, which the
``worker`` command shows by default.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import anyio

from ..enqueue import DEFAULT_QUEUE
from ..jobs import JobState
from ..registry import Registry
from ..threads import is_threaded
from ..worker.worker import Worker

__all__ = ["banner", "summarize_every", "unserved_kinds"]

# The states a summary counts, in the order it prints them.
_SUMMARY_STATES = (
    JobState.COMPLETED,
    JobState.RETRYABLE,
    JobState.SCHEDULED,
    JobState.DISCARDED,
    JobState.CANCELLED,
)


def _queue_text(worker: Worker, name: str) -> str:
    spec = worker.specs[name]
    limits = [f"global_limit={spec.queue.global_limit}"] if spec.queue.global_limit else []
    if spec.queue.partition is not None:
        limits.append(f"partition limit={spec.queue.partition.limit}")
    if spec.queue.ack == "sync":
        limits.append("ack=sync")
    return f"{name} (concurrency {spec.concurrency}{''.join(', ' + x for x in limits)})"


def banner(worker: Worker, registry: Registry, *, processes: str = "") -> list[str]:
    """The lines logged once the worker is up: who it is and what it runs."""
    queues = ", ".join(_queue_text(worker, name) for name in worker.specs) or "none"
    by_queue: dict[str, list[str]] = {}
    for definition in registry.definitions():
        thread = " (def: in a thread)" if is_threaded(definition.fn) else ""
        queue = definition.defaults.queue or DEFAULT_QUEUE
        by_queue.setdefault(queue, []).append(definition.kind + thread)
    kinds = "; ".join(f"{q}: {', '.join(sorted(k))}" for q, k in sorted(by_queue.items()))
    lines = [
        f"aqueue: worker {worker.node_id[:8]} ready{processes}",
        f"aqueue:   queues      {queues}",
        f"aqueue:   kinds       {kinds or 'none'}",
    ]
    if registry.periodic:
        periodic = ", ".join(
            f"{name} ({entry.schedule.expression} {entry.schedule.timezone})"
            for name, entry in sorted(registry.periodic.items())
        )
        lines.append(f"aqueue:   periodic    {periodic} (enqueued by the leader)")
    if registry.persistent:
        persistent = ", ".join(
            f"{name} x{definition.replicas}"
            for name, definition in sorted(registry.persistent.items())
        )
        lines.append(f"aqueue:   persistent  {persistent}")
    return lines


def unserved_kinds(registry: Registry, queues: Mapping[str, object]) -> dict[str, list[str]]:
    """Registered kinds whose default queue this worker does not serve, by queue."""
    missing: dict[str, list[str]] = {}
    for definition in registry.definitions():
        queue = definition.defaults.queue or DEFAULT_QUEUE
        if queue not in queues:
            missing.setdefault(queue, []).append(definition.kind)
    return {queue: sorted(kinds) for queue, kinds in sorted(missing.items())}


def summary(counts: Mapping[JobState, int], seconds: float, running: int) -> str:
    """``aqueue: last 60s: 1200 completed, 3 retryable (20.0/s); 4 running``."""
    parts = [f"{counts[s]} {s.value}" for s in _SUMMARY_STATES if counts.get(s)]
    done = sum(counts.get(s, 0) for s in _SUMMARY_STATES)
    rate = done / seconds if seconds > 0 else 0.0
    body = ", ".join(parts) if parts else "no job finished"
    return f"aqueue: last {seconds:.0f}s: {body} ({rate:.1f}/s); {running} running"


async def summarize_every(interval: float, worker: Worker, logger: logging.Logger) -> None:
    """Log ``summary`` every ``interval`` seconds until cancelled (a task of the command's
    task group, cancelled with it)."""
    seen = dict(worker.outcomes)
    last = time.monotonic()
    while True:
        await anyio.sleep(interval)
        now = time.monotonic()
        current = dict(worker.outcomes)
        delta = {state: n - seen.get(state, 0) for state, n in current.items()}
        logger.info("%s", summary(delta, now - last, worker.running_jobs))
        seen, last = current, now
