"""Flow control specs: ``Queue``, ``Partition``, ``Rate``, the worker's
``{name: int | Queue}`` queues.

- **concurrency** bounds one worker process (its slots).
- **global_limit** bounds the queue's running jobs across every node.
- **Partition(limit=n)** bounds running jobs per partition key across every node. A job's
  key comes from ``@app.job(partition_by=...)`` or ``.options(partition_key=...)``; jobs
  without a key are not partition-limited (they still count toward ``global_limit``).
- **Rate(n, per=)** bounds *starts* (claims) in any window of ``per``: of the queue, or of
  each partition key (``per_partition=True``; jobs without a key then share one window).

The effective bound is the lowest. How the claim makes the cluster-wide limits exact is
explained in ``aqueue/db/migrations/0005_flow_control.sql`` (and ``0009_rate_limits.sql``
for rates); the limits in force are the ones stored in the ``queues`` table (see
``worker/worker.py``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from .bounds import CONCURRENCY_MAX
from .errors import ConfigurationError
from .validate import is_number, validate_name

__all__ = ["Ack", "Partition", "Queue", "QueueSpec", "Rate", "choose_queues", "resolve_queues"]

Ack = Literal["async", "sync"]
LIMIT_MAX = CONCURRENCY_MAX
#: The longest rate window (366 days), in seconds.
RATE_PER_MAX = 366 * 86400.0


def _limit(field: str, value: object, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= LIMIT_MAX:
        raise ConfigurationError(
            f"{field}: must be an integer from 1 to {LIMIT_MAX}, got {value!r}"
        )
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class Partition:
    """At most ``limit`` running jobs per partition key, across the cluster."""

    limit: int

    def __post_init__(self) -> None:
        _limit("partition.limit", self.limit, optional=False)


@dataclasses.dataclass(frozen=True, slots=True)
class Rate:
    """At most ``n`` starts in any window of ``per`` (sliding), for the queue or, with
    ``per_partition=True``, for each partition key. A start is a claim (the job's
    ``attempted_at``); how the claim makes it exact is explained in
    ``aqueue/db/migrations/0009_rate_limits.sql``."""

    n: int
    per: float | timedelta
    per_partition: bool = False

    def __post_init__(self) -> None:
        _limit("rate.n", self.n, optional=False)
        per = self.per.total_seconds() if isinstance(self.per, timedelta) else self.per
        if not is_number(per) or not 0 < per <= RATE_PER_MAX:
            raise ConfigurationError(
                f"rate.per: must be a positive duration of at most {RATE_PER_MAX:g} seconds "
                f"(366 days), got {self.per!r}"
            )
        if not isinstance(self.per_partition, bool):
            raise ConfigurationError(
                f"rate.per_partition: must be True or False, got {self.per_partition!r}"
            )

    @property
    def seconds(self) -> float:
        """``per`` in seconds."""
        return float(self.per.total_seconds() if isinstance(self.per, timedelta) else self.per)


@dataclasses.dataclass(frozen=True, slots=True)
class Queue:
    """A queue's spec: ``aqueue.Queue(concurrency=10, global_limit=20, ...)``."""

    concurrency: int = 10
    global_limit: int | None = None
    partition: Partition | None = None
    rate: Rate | None = None
    ack: Ack = "async"

    def __post_init__(self) -> None:
        _limit("concurrency", self.concurrency, optional=False)
        _limit("global_limit", self.global_limit, optional=True)
        if self.partition is not None and not isinstance(self.partition, Partition):
            raise ConfigurationError(
                f"partition: must be an aqueue.Partition, got {self.partition!r}"
            )
        if self.rate is not None and not isinstance(self.rate, Rate):
            raise ConfigurationError(f"rate: must be an aqueue.Rate, got {self.rate!r}")
        if self.ack not in ("async", "sync"):
            raise ConfigurationError(f"ack: must be 'async' or 'sync', got {self.ack!r}")

    @property
    def limited(self) -> bool:
        """Whether any cluster-wide limit applies (claims then take the queue's lock)."""
        return self.global_limit is not None or self.partition is not None or self.rate is not None

    def limits(self) -> dict[str, Any]:
        """The cluster-wide part, as stored in the ``queues`` table and compared for drift."""
        return {
            "global_limit": self.global_limit,
            "partition_limit": self.partition.limit if self.partition else None,
            "rate_limit": self.rate.n if self.rate else None,
            "rate_per": self.rate.seconds if self.rate else None,
            "rate_per_partition": self.rate.per_partition if self.rate else False,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class QueueSpec:
    """One queue of one worker: its name, its ``Queue``, and whether the worker declared
    it as an ``aqueue.Queue`` (then its limits are stored as the ones in force; a plain
    concurrency leaves the stored limits as they are)."""

    name: str
    queue: Queue
    declared: bool

    @property
    def concurrency(self) -> int:
        return self.queue.concurrency

    def limits_json(self) -> str:
        return json.dumps(self.queue.limits(), sort_keys=True)


def resolve_queues(
    queues: Mapping[str, int | Queue], *, allow_empty: bool = False
) -> dict[str, QueueSpec]:
    """A worker's queues, checked: an ``int`` is a local concurrency, as it always was."""
    if not isinstance(queues, Mapping) or (not queues and not allow_empty):
        raise ConfigurationError(
            "queues: give at least one queue, e.g. {'default': 10} (a worker without queues "
            "needs persistent workers or periodic jobs to run)"
        )
    specs: dict[str, QueueSpec] = {}
    for name, spec in queues.items():
        validate_name("queues", name)
        declared = isinstance(spec, Queue)
        if isinstance(spec, Queue):
            queue = spec
        elif isinstance(spec, int) and not isinstance(spec, bool):
            try:
                queue = Queue(concurrency=spec)
            except ConfigurationError:
                raise ConfigurationError(
                    f"queues[{name!r}]: concurrency must be an integer from 1 to "
                    f"{CONCURRENCY_MAX}, got {spec!r}"
                ) from None
        else:
            raise ConfigurationError(
                f"queues[{name!r}]: give a concurrency (int) or an aqueue.Queue, got {spec!r}"
            )
        specs[name] = QueueSpec(name, queue, declared)
    return specs


def choose_queues(
    given: Mapping[str, int | Queue] | None,
    declared: Mapping[str, int | Queue] | None,
    named: set[str],
    concurrency: Mapping[str, int] | None = None,
) -> dict[str, int | Queue]:
    """A worker's queues: ``given`` (``run_worker(queues=...)``), else ``declared``
    (``App(queues=...)``), else every queue a registered job names at concurrency 10
    (``default`` when there is none). ``concurrency`` then overrides only the local
    concurrency of a queue (``aqueue worker -q api=20``), keeping its limits."""
    if given is not None:
        chosen: dict[str, int | Queue] = dict(given)
    elif declared is not None:
        chosen = dict(declared)
    else:
        chosen = dict.fromkeys(sorted(named) or ["default"], 10)
    for name, local in (concurrency or {}).items():
        spec = chosen.get(name)
        chosen[name] = (
            dataclasses.replace(spec, concurrency=local) if isinstance(spec, Queue) else local
        )
    return chosen
