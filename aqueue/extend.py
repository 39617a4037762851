"""How user code extends an App: hooks after each attempt, middleware around each attempt
and each enqueue, observers of each committed attempt, persistent workers. ``App``
inherits these; they only add to the App's ``Registry``, which the worker and the enqueue
path read."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from .definition import AfterProcessHook, require_coroutine_function
from .errors import ConfigurationError
from .persistent import PersistentDefinition, PersistentFn
from .registry import EnqueueMiddleware, Middleware, Observer, Registry

__all__ = ["Extensions"]

H = TypeVar("H", bound=AfterProcessHook)
M = TypeVar("M", bound=Middleware)
EM = TypeVar("EM", bound=EnqueueMiddleware)
OB = TypeVar("OB", bound=Observer)


class Extensions:
    """The registration methods of ``App`` (see each one)."""

    registry: Registry

    def after_process(self, hook: H) -> H:
        """Register ``async def hook(job, outcome)``, run after every job's attempt."""
        require_coroutine_function(hook, "after_process hook")
        self.registry.global_hooks.append(hook)
        return hook

    def observe(self, observer: OB | None = None, /, *, wait: bool = True) -> Any:
        """Register ``def observer(queue, kind, outcome, wait)``, called in the worker once
        per attempt right after its outcome is committed; ``wait`` is the seconds from due
        to start. Synchronous and on the worker's event loop: for quick bookkeeping such as
        counters (``aqueue.metrics`` uses it), never for I/O (use ``after_process``). An
        exception is logged and changes nothing. Observers keep claims lean (no Job is built):
        the wait comes from two times every claim reads. ``wait=False`` is accepted for
        compatibility and changes nothing."""

        def register(fn: OB) -> OB:
            if not callable(fn) or inspect.iscoroutinefunction(fn):
                raise ConfigurationError(f"observer must be a plain (not async) function: {fn!r}")
            self.registry.observers.append(fn)
            if wait:
                self.registry.observers_want_wait = True
            return fn

        return register(observer) if observer is not None else register

    def enqueue_middleware(self, middleware: EM) -> EM:
        """Register ``async def mw(call, call_next)`` around every enqueue call.

        ``call`` is an ``aqueue.EnqueueCall`` (the jobs about to be inserted, and a
        ``meta`` dict merged over each job's meta); ``await call_next()`` inserts them
        and returns the Jobs, which ``mw`` returns in turn. The first registered is
        outermost. Tracing uses it to carry the enqueuer's trace context to the worker."""
        require_coroutine_function(middleware, "enqueue middleware")
        self.registry.enqueue_middleware.append(middleware)
        return middleware

    def middleware(self, middleware: M) -> M:
        """Register ``async def mw(job, call_next)`` around every attempt of every job.

        ``await call_next()`` runs the rest (later middleware, then the job) and returns
        the job's result, which ``mw`` returns in turn; the first registered is outermost.
        What ``mw`` raises is the attempt's outcome, as if the job had raised it."""
        require_coroutine_function(middleware, "middleware")
        self.registry.middleware.append(middleware)
        return middleware

    def persistent(
        self, *, name: str | None = None, replicas: int = 1
    ) -> Callable[[PersistentFn], PersistentFn]:
        """Register ``async def fn(ctx: PersistentContext)`` to run on at most ``replicas``
        worker processes of the cluster at once, restarted when it returns or fails."""

        def register(fn: PersistentFn) -> PersistentFn:
            require_coroutine_function(fn, "persistent worker")
            self.registry.add_persistent(PersistentDefinition.create(fn, name, replicas))
            return fn

        return register
