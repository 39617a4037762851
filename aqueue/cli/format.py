"""What the commands print: tables for people, JSON documents for scripts.

Every function here returns text and has no side effect; the commands print it. Times
in tables are UTC so that every reader of one output agrees on them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from ..cluster import ClusterStatus
from ..control import QueueStats
from ..jobs import Job, JobState

__all__ = [
    "age",
    "cluster_json",
    "cluster_text",
    "job_data",
    "job_detail",
    "jobs_table",
    "queues_table",
    "stats_data",
    "table",
    "to_json",
    "when",
]

# The columns of `aqueue queues list`, in a job's life order rather than the enum's.
_QUEUE_STATES = (
    JobState.SCHEDULED,
    JobState.AVAILABLE,
    JobState.RETRYABLE,
    JobState.RUNNING,
    JobState.COMPLETED,
    JobState.CANCELLED,
    JobState.DISCARDED,
)


# -- JSON -----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, JobState):
        return value.value
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def to_json(data: Any) -> str:
    """One indented JSON document; datetimes in ISO 8601, states by name."""
    return json.dumps(data, default=_plain, indent=2, sort_keys=False)


def job_data(job: Job) -> dict[str, Any]:
    data = dataclasses.asdict(job)
    data["state"] = job.state.value
    return data


def stats_data(stats: QueueStats) -> dict[str, Any]:
    data = dataclasses.asdict(stats)
    data["counts"] = {str(state): count for state, count in stats.counts.items()}
    return data


def cluster_json(status: ClusterStatus) -> str:
    # `default=str`, unlike to_json: `aqueue cluster --json` has always printed datetimes
    # as str() does ("2026-01-01 09:00:00+00:00"), and scripts may parse that.
    return json.dumps(dataclasses.asdict(status), default=str, indent=2)


# -- tables and values ----------------------------------------------------------------------


def when(value: datetime | None) -> str:
    # Server timestamps are timezone-aware; print them in UTC so every reader agrees.
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart, no trailing blanks."""
    cells = [list(header), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def jobs_table(jobs: Sequence[Job]) -> str:
    header = ("ID", "KIND", "QUEUE", "STATE", "ATTEMPT", "PRIORITY", "SCHEDULED (UTC)")
    rows = (
        (
            job.id,
            job.kind,
            job.queue,
            job.state.value,
            f"{job.attempt}/{job.max_attempts}",
            job.priority,
            when(job.scheduled_at),
        )
        for job in jobs
    )
    return table(header, rows)


def progress_bar(fraction: float, width: int = 20) -> str:
    """``[########------------]  40%``: a terminal's progress bar, plain ASCII."""
    filled = round(fraction * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {fraction * 100:3.0f}%"


def job_detail(job: Job) -> str:
    lines = [
        f"job {job.id}",
        f"  kind          {job.kind}",
        f"  queue         {job.queue}",
        f"  state         {job.state.value}",
        f"  attempt       {job.attempt} of {job.max_attempts}",
        f"  priority      {job.priority}",
        f"  args          {json.dumps(job.args)}",
        f"  created at    {when(job.created_at)} UTC",
        f"  scheduled at  {when(job.scheduled_at)} UTC",
        f"  attempted at  {when(job.attempted_at)}",
        f"  finalized at  {when(job.finalized_at)}",
    ]
    if job.progress is not None:
        note = f"  {job.progress_note}" if job.progress_note else ""
        lines.append(f"  progress      {progress_bar(job.progress)}{note}")
    if job.tags:
        lines.append(f"  tags          {', '.join(job.tags)}")
    if job.meta:
        lines.append(f"  meta          {json.dumps(job.meta)}")
    if job.result is not None:
        lines.append(f"  result        {json.dumps(job.result)}")
    for error in job.errors:
        lines.append(
            f"  error         attempt {error.get('attempt')}: "
            f"{error.get('type')}: {error.get('message')}"
        )
    return "\n".join(lines)


def _limits(stats: QueueStats) -> str:
    parts = []
    if stats.global_limit is not None:
        parts.append(f"global {stats.running}/{stats.global_limit}")
    if stats.partition_limit is not None:
        parts.append(f"{stats.partition_limit} per partition")
    if stats.rate_limit is not None:
        scope = " per partition" if stats.rate_per_partition else ""
        parts.append(
            f"rate {stats.rate_used or 0}/{stats.rate_limit} per {stats.rate_per:g}s{scope}"
        )
    return ", ".join(parts) or "-"


def queues_table(stats: Iterable[QueueStats]) -> str:
    """The queue table, then one line per kind no live worker can run."""
    stats = list(stats)
    if not stats:
        return "no queues"
    header = (
        "QUEUE",
        "STATUS",
        "NODES",
        *(state.value.upper() for state in _QUEUE_STATES),
        "OLDEST",
        "UNRUNNABLE",
        "LIMITS",
    )
    rows = [
        (
            s.name,
            "paused" if s.paused else "active",
            s.nodes,
            *(s.counts[state] for state in _QUEUE_STATES),
            age(s.oldest_available_age),
            sum(s.unrunnable.values()),
            _limits(s),
        )
        for s in stats
    ]
    notes = [
        f"  {s.name}: {count} waiting job(s) of kind {kind!r}: no live worker knows it"
        for s in stats
        for kind, count in sorted(s.unrunnable.items())
    ]
    return "\n".join([table(header, rows), *notes])


def cluster_text(status: ClusterStatus) -> str:
    leader = status.leader
    lines = [
        f"leader: {leader.holder[:8]} (term {leader.term})" if leader else "leader: none",
        f"nodes ({len(status.nodes)}):",
    ]
    for node in status.nodes:
        flag = "" if node.alive else "  [expired]"
        lead = "  [leader]" if leader and leader.holder == node.id else ""
        lines.append(
            f"  {node.id[:8]}  {node.host}:{node.pid}  queues={node.queues}  "
            f"heartbeat {node.heartbeat_at:%H:%M:%S}{lead}{flag}"
        )
    others = [lease for lease in status.leases if lease.name != "leader"]
    if others:
        lines.append("leases:")
        for lease in others:
            held = f"held by {lease.holder[:8]}" if lease.held else "free"
            lines.append(f"  {lease.name}  {held}  term {lease.term}  {json.dumps(lease.info)}")
    nodes = {n.id: n for n in status.nodes}
    lines.extend(f"drift: {drift.describe(nodes)}" for drift in status.drift)
    return "\n".join(lines)
