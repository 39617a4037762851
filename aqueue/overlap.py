"""Python work done while PostgreSQL executes a statement, instead of before or after it.

A big ``enqueue_many`` is two halves that used to run one after the other: the server
inserting the rows (about 9 µs a job) and the client building the returned ``Job``
records (about 3 µs a job). Nothing in the second half needs the first except four
values per job (id, state, due and creation time), so the records are built while the
statement runs and completed afterwards. The client and the server are separate
processes, on separate cores or machines, so the client's half costs no time.

The statement runs in a task of its own, inside a task group: it is sent before the
work starts (one checkpoint hands the loop to it, and a free connection writes the
statement in its first step), awaited before the result is used, and cancelled if the
work raises. An error of the statement reaches the caller as itself, not wrapped in an
exception group, so ``except DatabaseError`` keeps working.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import anyio.lowlevel

__all__ = ["while_awaiting"]

R = TypeVar("R")
T = TypeVar("T")


async def while_awaiting(call: Callable[[], Awaitable[R]], work: Callable[[], T]) -> tuple[R, T]:
    """``(await call(), work())``, with ``work`` running while ``call`` waits on the
    server."""
    box: list[R] = []

    async def run() -> None:
        box.append(await call())

    failure: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            # The loop runs callbacks in order: the new task's first step (sending the
            # statement) comes before this task resumes.
            await anyio.lowlevel.checkpoint()
            done = work()
    except BaseExceptionGroup as group:
        # Raised below, outside this handler: an error raised here would carry the group
        # as its context in every traceback.
        failure = group.exceptions[0] if len(group.exceptions) == 1 else group
    if failure is not None:
        raise failure
    return box[0], done
