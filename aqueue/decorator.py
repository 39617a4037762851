"""The type of ``@app.job(...)`` with options: what it returns for each kind of function.

Overloads, so that ``enqueue(**kwargs)`` is type-checked against the job's own
parameters: with or without a leading ``JobContext``, ``async def`` or plain ``def``
(which runs in a worker thread, see ``threads.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar, overload

from .context import JobContext
from .definition import JobDefinition

__all__ = ["JobDecorator"]

P = ParamSpec("P")
R = TypeVar("R")


class JobDecorator(Protocol):
    @overload
    def __call__(
        self, fn: Callable[Concatenate[JobContext, P], Awaitable[R]], /
    ) -> JobDefinition[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> JobDefinition[P, R]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[JobContext, P], R], /) -> JobDefinition[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> JobDefinition[P, R]: ...
