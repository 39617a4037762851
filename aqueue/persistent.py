"""Persistent workers: long-lived coroutines that run on at most ``replicas`` nodes at once.

Each replica of ``@app.persistent(name=..., replicas=N)`` is a lease named
``persistent:<name>:<index>``. Every worker process competes for every replica's lease
(see ``lease.py``); the holder runs the coroutine and keeps the lease while it restarts
it, so one replica never hops between nodes because of a crash loop.

- **Returns or raises**: restarted after ``restart_delay``, doubling up to
  ``restart_delay_max``; the delay resets once a run lasted longer than the cap. The
  restart count and last error are written to the lease row at each renewal
  (``cluster_status().leases[...].info``).
- **Shutdown**: the coroutine is cancelled (at an ``await``), the lease is released with a
  notification, and a waiting node takes over within a round trip.
- **Node death**: its leases lapse after ``leader_ttl``; another node takes over.
- **Fencing**: a holder that cannot renew stops at its local deadline, which falls before
  the lease's expiry in the database; ``ctx.lease_lost`` is set and the coroutine is
  cancelled, so at most ``replicas`` copies ever run cluster-wide.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .context import PersistentContext
from .errors import ConfigurationError
from .validate import validate_registered_name

__all__ = ["PersistentDefinition", "PersistentFn", "lease_name"]


PersistentFn = Callable[[PersistentContext], Awaitable[None]]


@dataclass(frozen=True)
class PersistentDefinition:
    name: str
    fn: PersistentFn
    replicas: int

    @classmethod
    def create(cls, fn: PersistentFn, name: str | None, replicas: int) -> PersistentDefinition:
        name = name if name is not None else getattr(fn, "__qualname__", None)
        if not isinstance(name, str):
            raise ConfigurationError("persistent: give the worker a name=")
        validate_registered_name("persistent name", name)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 1 <= replicas <= 1000:
            raise ConfigurationError(
                f"persistent {name!r}: replicas must be an integer from 1 to 1000, got {replicas!r}"
            )
        return cls(name, fn, replicas)

    def describe(self) -> dict[str, Any]:
        return {"replicas": self.replicas}


def lease_name(name: str, replica: int) -> str:
    return f"persistent:{name}:{replica}"
