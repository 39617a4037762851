"""What one App knows: job kinds, aliases, after_process hooks, middleware, periodic
schedules and persistent workers. Lives on the App; definitions only, no runtime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from .definition import AfterProcessHook, JobDefinition, JobRequest
from .errors import ConfigurationError, DuplicateJobKind, UnknownJobKind
from .jobs import Job, Outcome
from .persistent import PersistentDefinition
from .schedule import PeriodicEntry

if TYPE_CHECKING:
    from .db.database import ClaimColumns

__all__ = ["EnqueueCall", "EnqueueMiddleware", "Middleware", "Observer", "Registry"]

#: ``async def mw(job, call_next)``: runs around every attempt; ``await call_next()``
#: runs the rest (inner middleware, then the job) and returns the job's result.
Middleware = Callable[[Job, Callable[[], Awaitable[Any]]], Awaitable[Any]]

#: ``def observe(queue, kind, outcome, wait)``: called synchronously, once per committed
#: attempt, with the seconds the attempt waited between due and start (``wait``; every
#: claim reads the two times, so it is always there for a committed attempt).
Observer = Callable[[str, str, Outcome, float | None], None]
#: ``async def wrap(hook, job, outcome, call_next)`` around one after_process hook run.
HookWrapper = Callable[[Any, Job, Outcome, Callable[[], Awaitable[Any]]], Awaitable[Any]]


class EnqueueCall:
    """One enqueue call (``enqueue``, ``enqueue_many``, a periodic job), as enqueue
    middleware sees it before anything is written.

    ``requests`` are the jobs to insert, in order (read them, do not change them).
    ``meta`` starts empty: what middleware puts there is merged over the meta of every
    job of the call (tracing adds ``traceparent`` this way). ``transactional``: the call
    runs on the caller's connection (``conn=``), so the jobs exist only if it commits.
    """

    __slots__ = ("meta", "requests", "transactional")

    def __init__(self, requests: Sequence[JobRequest], *, transactional: bool) -> None:
        self.requests = requests
        self.meta: dict[str, Any] = {}
        self.transactional = transactional

    def __repr__(self) -> str:
        return f"<EnqueueCall jobs={len(self.requests)} meta={self.meta!r}>"


#: ``async def mw(call: EnqueueCall, call_next)``: runs around every enqueue call;
#: ``await call_next()`` inserts the jobs (after inner middleware) and returns them.
EnqueueMiddleware = Callable[
    [EnqueueCall, Callable[[], Awaitable[list[Job]]]], Awaitable[list[Job]]
]


class Registry:
    def __init__(self) -> None:
        self._by_kind: dict[str, JobDefinition[Any, Any]] = {}
        self._kinds: list[str] = []
        self.global_hooks: list[AfterProcessHook] = []
        #: Outermost first.
        self.middleware: list[Middleware] = []
        #: Synchronous observers of every committed attempt (metrics).
        self.observers: list[Observer] = []
        #: An observer asked for ``wait`` (``app.observe(wait=True)``). Informational: with
        #: any observer, claims read the job's times, so observers never need full rows.
        self.observers_want_wait = False
        #: Around every after_process hook run, outermost first:
        #: ``async def wrap(hook, job, outcome, call_next)`` (tracing's hook spans).
        self.hook_wrappers: list[HookWrapper] = []
        #: Around every enqueue call, outermost first.
        self.enqueue_middleware: list[EnqueueMiddleware] = []
        self.periodic: dict[str, PeriodicEntry] = {}
        self.persistent: dict[str, PersistentDefinition] = {}

    def add_periodic(self, entry: PeriodicEntry) -> None:
        if entry.name in self.periodic:
            raise ConfigurationError(
                f"periodic {entry.name!r} is already registered; give the other one a name="
            )
        self.periodic[entry.name] = entry

    def add_persistent(self, definition: PersistentDefinition) -> None:
        if definition.name in self.persistent:
            raise ConfigurationError(
                f"persistent worker {definition.name!r} is already registered; "
                "give the other one a name="
            )
        self.persistent[definition.name] = definition

    def node_config(self) -> dict[str, Any]:
        """The configuration every node should share (compared for drift)."""
        return {
            "periodic": {name: e.describe() for name, e in sorted(self.periodic.items())},
            "persistent": {name: d.describe() for name, d in sorted(self.persistent.items())},
        }

    def add(self, definition: JobDefinition[Any, Any]) -> None:
        names = (definition.kind, *definition.aliases)
        if len(set(names)) != len(names):
            raise DuplicateJobKind(f"job {definition.kind!r}: an alias repeats a kind: {names}")
        for name in names:
            existing = self._by_kind.get(name)
            if existing is not None:
                role = "kind" if existing.kind == name else f"an alias of {existing.kind!r}"
                raise DuplicateJobKind(
                    f"job kind {name!r} is already registered (as {role}); "
                    "give one of them another name= or remove the alias"
                )
        for name in names:
            self._by_kind[name] = definition
        self._kinds = sorted(self._by_kind)

    def get(self, kind: str) -> JobDefinition[Any, Any] | None:
        return self._by_kind.get(kind)

    def require(self, kind: str) -> JobDefinition[Any, Any]:
        definition = self._by_kind.get(kind)
        if definition is None:
            raise UnknownJobKind(kind, list(self._by_kind))
        return definition

    def kinds(self) -> list[str]:
        """Every kind and alias, the set a worker of this App can claim."""
        return self._kinds

    def definitions(self) -> list[JobDefinition[Any, Any]]:
        return list({id(d): d for d in self._by_kind.values()}.values())

    def needs_full_rows(self) -> bool:
        """Whether any job takes a JobContext or has hooks, or middleware is registered:
        each needs a whole Job record."""
        return bool(self.global_hooks or self.middleware) or any(
            d.hooks or d.schema.wants_context for d in self._by_kind.values()
        )

    def claim_columns(self) -> ClaimColumns:
        """What a worker's claims need of each job (see ``ClaimColumns``)."""
        if self.needs_full_rows():
            return "full"
        return "lean" if self.observers else "bare"

    def has_hooks(self) -> bool:
        return bool(self.global_hooks) or any(d.hooks for d in self._by_kind.values())

    def hooks_for(self, definition: JobDefinition[Any, Any] | None) -> list[AfterProcessHook]:
        if definition is None or not definition.hooks:
            return self.global_hooks
        return [*definition.hooks, *self.global_hooks]
