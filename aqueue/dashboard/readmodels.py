"""What the pages show, assembled from the App's admin calls and ``db.browse`` reads.

Pure shaping: no HTML here, no writes. Each ``*_view`` function gathers one page's data
with as few round trips as the page allows (the overview is three statements).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..cluster import ClusterStatus, LeaseInfo, NodeInfo
from ..control import QueueStats
from ..db.browse import Browse, PeriodicRun
from ..jobs import Job
from .charts import Chart, throughput_chart

if TYPE_CHECKING:
    from ..app import App

__all__ = [
    "CANCELLABLE",
    "RETRYABLE",
    "RecordedStep",
    "job_actions",
    "overview_view",
    "periodic_view",
    "persistent_view",
]

#: The states ``app.retry`` and ``app.cancel`` act on (their docstrings); buttons follow.
RETRYABLE = ("scheduled", "retryable", "discarded", "cancelled")
CANCELLABLE = ("pending", "scheduled", "available", "retryable", "running")
#: Columns of the queue tables: what waits (``pending``: on its workflow dependencies),
#: what runs, how it ended.
STATE_COLUMNS = (
    "available",
    "scheduled",
    "pending",
    "running",
    "retryable",
    "completed",
    "discarded",
    "cancelled",
)


def job_actions(state: str) -> list[str]:
    """The actions a job in ``state`` accepts, in button order."""
    actions = []
    if state in RETRYABLE:
        actions.append("retry")
    if state in CANCELLABLE:
        actions.append("cancel")
    if state != "running":
        actions.append("delete")
    return actions


def job_timing(job: Job) -> dict[str, float | None]:
    """Seconds waited before the (last) attempt started, and that attempt's run time."""
    waited = ran = None
    if job.attempted_at is not None:
        waited = max((job.attempted_at - job.scheduled_at).total_seconds(), 0.0)
        if job.finalized_at is not None:
            ran = max((job.finalized_at - job.attempted_at).total_seconds(), 0.0)
    return {"waited": waited, "ran": ran}


@dataclasses.dataclass(frozen=True)
class RecordedStep:
    """One resumable step a job recorded (``ctx.step``): its result as stored JSON text."""

    name: str
    attempt: int
    result_json: str
    recorded_at: datetime

    @property
    def result(self) -> Any:
        return json.loads(self.result_json)


@dataclasses.dataclass(frozen=True)
class Overview:
    queues: Sequence[QueueStats]
    chart: Chart
    cluster: ClusterStatus
    waiting: int
    running: int
    leader_node: NodeInfo | None

    @property
    def alive_nodes(self) -> int:
        return sum(1 for node in self.cluster.nodes if node.alive)


async def overview_view(app: App, browse: Browse) -> Overview:
    stats = await app.queue_stats()
    chart = throughput_chart(await browse.throughput())
    cluster = await app.cluster_status()
    return Overview(
        queues=list(stats.values()),
        chart=chart,
        cluster=cluster,
        waiting=sum(s.waiting for s in stats.values()),
        running=sum(s.running for s in stats.values()),
        leader_node=leader_node(cluster),
    )


def leader_node(cluster: ClusterStatus) -> NodeInfo | None:
    leader = cluster.leader
    if leader is None:
        return None
    return next((node for node in cluster.nodes if node.id == leader.holder), None)


def node_label(nodes: Mapping[str, NodeInfo], node_id: str) -> str:
    node = nodes.get(node_id)
    return f"{node.host}:{node.pid}" if node is not None else "unknown node"


@dataclasses.dataclass(frozen=True)
class Replica:
    """One replica of a persistent worker: its lease, if one was ever taken."""

    name: str
    replica: int
    registered: bool
    lease: LeaseInfo | None
    holder: str

    @property
    def restarts(self) -> Any:
        return self.lease.info.get("restarts") if self.lease else None

    @property
    def last_error(self) -> Any:
        return self.lease.info.get("last_error") if self.lease else None

    @property
    def running_since(self) -> datetime | None:
        raw = self.lease.info.get("running_since") if self.lease else None
        return datetime.fromisoformat(raw) if isinstance(raw, str) else None


def persistent_view(app: App, cluster: ClusterStatus) -> list[Replica]:
    """Every replica this App registers or the database holds a lease for."""
    nodes = {node.id: node for node in cluster.nodes}
    leases: dict[tuple[str, int], LeaseInfo] = {}
    for lease in cluster.leases:
        kind, _, rest = lease.name.partition(":")
        name, _, number = rest.rpartition(":")
        if kind == "persistent" and name and number.isdigit():
            leases[(name, int(number))] = lease
    keys = set(leases)
    for definition in app.registry.persistent.values():
        keys.update((definition.name, i) for i in range(definition.replicas))
    replicas = []
    for name, index in sorted(keys):
        found = leases.get((name, index))
        holder = node_label(nodes, found.holder) if found is not None and found.held else ""
        registered = name in app.registry.persistent and (
            index < app.registry.persistent[name].replicas
        )
        replicas.append(Replica(name, index, registered, found, holder))
    return replicas


@dataclasses.dataclass(frozen=True)
class Schedule:
    name: str
    registered: bool
    kind: str | None
    cron: str | None
    timezone: str | None
    queue: str | None
    run_on_start: bool
    next_run: datetime | None
    last: PeriodicRun | None
    drift: bool


def periodic_view(
    app: App, latest: Mapping[str, PeriodicRun], cluster: ClusterStatus
) -> list[Schedule]:
    """Registered schedules with their next and last runs, plus schedules the database has
    runs of that this App does not register (another version's, or removed ones)."""
    now = datetime.now(UTC)
    drifting = {d.name for d in cluster.drift if d.section == "periodic"}
    schedules = []
    for name, entry in sorted(app.registry.periodic.items()):
        definition = app.registry.get(entry.request.kind)
        queue = entry.request.options.queue or (
            definition.defaults.queue if definition is not None else None
        )
        schedules.append(
            Schedule(
                name=name,
                registered=True,
                kind=entry.request.kind,
                cron=entry.schedule.expression,
                timezone=entry.schedule.timezone,
                queue=queue or "default",
                run_on_start=entry.run_on_start,
                next_run=entry.schedule.next_after(now),
                last=latest.get(name),
                drift=name in drifting,
            )
        )
    for name, run in sorted(latest.items()):
        if name not in app.registry.periodic:
            schedules.append(
                Schedule(name, False, None, None, None, None, False, None, run, name in drifting)
            )
    return schedules
