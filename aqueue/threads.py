"""Plain ``def`` jobs: each attempt runs in a worker thread, as FastAPI runs sync endpoints.

``@app.job`` on a ``def`` wraps the function once, at registration, in ``ThreadedJob``:
an ``async`` callable that hands the call to ``anyio.to_thread.run_sync``. Everything
around it (argument validation, middleware, hooks, outcomes) is the same as for an
``async def`` job, because it sees an ``async`` function.

**How many threads.** Each worker has its own ``anyio.CapacityLimiter`` of
``Settings.job_threads`` tokens (default 40, anyio's own default), made when the worker
starts and carried to its jobs in a context variable: the job's task inherits it, and a
definition made at import time needs no reference to a worker that does not exist yet.
Outside a worker (a test calling the job's executor directly) anyio's default limiter
applies. A job waiting for a thread holds its queue slot: concurrency counts jobs, not
threads.

**Timeouts, ``app.cancel`` and shutdown.** A thread cannot be interrupted. When a
``def`` job's ``timeout`` passes (or it is cancelled, or the worker's shutdown grace
ends), the thread runs on, and aqueue chose to make **the slot wait for the thread**;
when it returns, its result is dropped and the attempt is recorded as what the
cancellation meant: ``JobTimeout`` (retried like any error), ``cancelled``, or handed
back at shutdown. The alternative, giving the slot back at once and abandoning the
thread, was rejected: the thread would keep running unseen, so a queue's
``concurrency`` and ``job_threads`` would stop being bounds (every timed-out job would
leave one more busy thread), and the retry of a timed-out attempt could run while the
first is still writing. The price is that a thread stuck forever holds its slot, and
delays the worker's shutdown, until the process exits (``aqueue worker --processes``
kills a child that outlives ``shutdown_timeout``).

A long ``def`` job can stop early: ``anyio.from_thread.check_cancelled()`` raises once
its attempt was timed out or cancelled, and the attempt then ends at once.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel

from .errors import ConfigurationError

__all__ = ["ThreadedJob", "is_threaded", "job_threads"]

# The running worker's limiter, inherited by every task it starts (see the docstring):
# a context variable holds no state of its own outside the worker's tasks.
_LIMITER: contextvars.ContextVar[anyio.CapacityLimiter | None] = contextvars.ContextVar(
    "aqueue_job_threads", default=None
)


@contextlib.contextmanager
def job_threads(size: int) -> Iterator[anyio.CapacityLimiter]:
    """Inside this block, ``def`` jobs started by this task or its children run in at
    most ``size`` threads at once."""
    limiter = anyio.CapacityLimiter(size)
    token = _LIMITER.set(limiter)
    try:
        yield limiter
    finally:
        _LIMITER.reset(token)


class ThreadedJob:
    """A ``def`` job function, callable as ``await job(**kwargs)``: runs it in a thread."""

    def __init__(self, fn: Callable[..., Any], kind: str) -> None:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise ConfigurationError(
                f"job {kind!r}: {fn!r} is a generator; a job is a plain 'def' or 'async def'"
            )
        if not callable(fn):
            raise ConfigurationError(f"job {kind!r}: {fn!r} is not callable")
        self.fn = fn
        self.kind = kind
        functools.update_wrapper(self, fn)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = await anyio.to_thread.run_sync(
            functools.partial(self.fn, *args, **kwargs), limiter=_LIMITER.get()
        )
        # The wait above is shielded (anyio waits for the thread): a timeout, cancel or
        # shutdown that came meanwhile is raised here, and the executor records it.
        await anyio.lowlevel.checkpoint()
        if inspect.isawaitable(result):
            # An object whose __call__ is async, say: it must be registered as such.
            close = getattr(result, "close", None)
            if close is not None:
                close()
            raise TypeError(
                f"job {self.kind!r} returned an awaitable from a thread: make the function "
                "itself 'async def' so aqueue awaits it"
            )
        return result

    def __repr__(self) -> str:
        return f"<ThreadedJob {self.kind!r} {self.fn!r}>"


def is_threaded(fn: object) -> bool:
    return isinstance(fn, ThreadedJob)
