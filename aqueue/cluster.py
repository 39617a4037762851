"""What ``await app.cluster_status()`` returns: nodes, the leader, leases, drift.

Drift: every node publishes its periodic and persistent configuration (and a digest of
it). Periodic jobs are enqueued by whichever node leads, so when nodes disagree the
schedule silently depends on the election; the leader logs the difference and
``cluster_status().drift`` lists it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .jobs import RowLike

__all__ = [
    "LEADER_LEASE",
    "ClusterStatus",
    "Drift",
    "LeaseInfo",
    "NodeInfo",
    "config_digest",
    "find_drift",
]

LEADER_LEASE = "leader"


@dataclass(frozen=True)
class NodeInfo:
    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    alive: bool
    queues: dict[str, int]
    kinds: list[str]
    #: ``{"periodic": {name: {...}}, "persistent": {name: {...}}}``
    config: dict[str, Any]
    digest: str

    @classmethod
    def from_row(cls, row: RowLike) -> NodeInfo:
        return cls(
            **{f: row[f] for f in _NODE_PLAIN},
            queues=json.loads(row["queues"]),
            kinds=list(row["kinds"]),
            config=json.loads(row["config"]),
        )


@dataclass(frozen=True)
class LeaseInfo:
    name: str
    holder: str
    term: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime
    held: bool
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: RowLike) -> LeaseInfo:
        return cls(**{f: row[f] for f in _LEASE_PLAIN}, info=json.loads(row["info"]))


@dataclass(frozen=True)
class Drift:
    """One periodic schedule or persistent worker configured differently across live nodes."""

    section: str  # "periodic", "persistent" or "queues" (cluster-wide limits)
    name: str
    #: node id -> its configuration of this entry (None: the node does not have it)
    by_node: dict[str, Any]

    def describe(self, nodes: Mapping[str, NodeInfo]) -> str:
        parts = []
        for node_id, value in sorted(self.by_node.items()):
            node = nodes.get(node_id)
            where = f"{node.host}:{node.pid}" if node else node_id[:8]
            shown = "missing" if value is None else json.dumps(value, sort_keys=True)
            parts.append(f"{where} ({node_id[:8]}) {shown}")
        return f"{self.section} {self.name!r} differs: " + "; ".join(parts)


@dataclass(frozen=True)
class ClusterStatus:
    nodes: list[NodeInfo]
    leases: list[LeaseInfo]
    drift: list[Drift]

    @property
    def leader(self) -> LeaseInfo | None:
        """The leader's lease while it is held, else None (an election is due)."""
        for lease in self.leases:
            if lease.name == LEADER_LEASE and lease.held:
                return lease
        return None


_NODE_PLAIN = ("id", "host", "pid", "started_at", "heartbeat_at", "expires_at", "alive", "digest")
_LEASE_PLAIN = ("name", "holder", "term", "acquired_at", "renewed_at", "expires_at", "held")


def config_digest(config: Mapping[str, Any]) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def find_drift(nodes: Sequence[NodeInfo]) -> list[Drift]:
    """Entries whose configuration differs between live nodes (none when digests agree)."""
    alive = [n for n in nodes if n.alive]
    if len({n.digest for n in alive}) <= 1:
        return []
    drift: list[Drift] = []
    for section in ("periodic", "persistent", "queues"):
        names = sorted({name for n in alive for name in n.config.get(section, {})})
        for name in names:
            by_node = {n.id: n.config.get(section, {}).get(name) for n in alive}
            canonical = {json.dumps(v, sort_keys=True) for v in by_node.values()}
            if len(canonical) > 1:
                drift.append(Drift(section, name, by_node))
    return drift
