"""What a running job reads and records about its own work: resumable steps
(``ctx.step``), its workflow dependencies' results (``ctx.dep_result``) and, for a batch's
callback, its batch's outcome (``ctx.batch``).

**Steps.** ``await ctx.step("charge", charge_card, order_id)`` runs ``charge_card`` once
per job, not once per attempt: its JSON result is recorded under (job, "charge") as soon
as it returns, and a later attempt of the same job gets that result back without calling
it again. Names, not call positions, identify steps, so steps run concurrently
(``asyncio.gather``) or in a changed order still find their own records. A step that
raised records nothing: the next attempt runs it again. The record is written only while
this attempt is the job's running one, so an attempt that timed out or was rescued
cannot speak for its successor; concurrent calls under one name in one attempt share one
run. A step's side effects and its record are not one transaction (nothing can make an
external call and a database write atomic): a crash between the two runs the step again
on the next attempt, so a step should still be idempotent where it can be (pass an
idempotency key derived from ``ctx.job.id`` and the step name).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic_core

from .db.database import Database
from .errors import DependencyFailed, InvalidOption, InvalidWorkflow, ResultNotJSON
from .jobs import Job
from .validate import to_storable_json, validate_name

__all__ = ["BatchInfo", "StepRecorder", "run_step"]


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What a batch's callback sees as ``ctx.batch``: its batch's jobs by final state."""

    id: int
    counts: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def completed(self) -> int:
        return self.counts.get("completed", 0)

    @property
    def discarded(self) -> int:
        return self.counts.get("discarded", 0)

    @property
    def cancelled(self) -> int:
        return self.counts.get("cancelled", 0)


async def run_step(
    job_id: int, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, str]:
    """Run step ``name``'s ``fn`` (awaited when it returns an awaitable); returns its value
    and the JSON to record, or raises ``ResultNotJSON`` with nothing recorded."""
    value = fn(*args, **kwargs)
    if inspect.isawaitable(value):
        value = await value
    try:
        return value, to_storable_json(value)
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
        raise ResultNotJSON(
            f"step {name!r} of job {job_id} returned a value that cannot be recorded as "
            f"JSON ({type(value).__name__}): {exc}"
        ) from None


class StepRecorder:
    """One attempt's view of its job's recorded steps and dependencies; one per
    ``JobContext``."""

    __slots__ = ("_db", "_job", "_running")

    def __init__(self, db: Database, job: Job) -> None:
        self._db = db
        self._job = job
        self._running: dict[str, asyncio.Future[Any]] = {}

    async def step(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        validate_name("step name", name)
        if not callable(fn):
            raise InvalidOption("fn", f"must be callable, got {type(fn).__name__}")
        shared = self._running.get(name)
        if shared is not None:  # the same step, called again while it runs in this attempt
            return await asyncio.shield(shared)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._running[name] = future
        try:
            value = await self._run(name, fn, args, kwargs)
        except BaseException as exc:
            del self._running[name]  # a failed step is run again when called again
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: a lone caller's failure is not "unhandled"
            raise
        future.set_result(value)
        return value

    async def _run(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        job = self._job
        recorded = await self._db.step_result(job.id, name)
        if recorded is not None:
            return pydantic_core.from_json(recorded["result"])
        value, text = await run_step(job.id, name, fn, args, kwargs)
        row = await self._db.record_step(job.id, job.attempt, name, text)
        if row["result"] is None:  # recorded by a concurrent transaction just now
            again = await self._db.step_result(job.id, name)
            return pydantic_core.from_json(again["result"]) if again is not None else value
        if row["written"]:
            # What a later attempt will read back: the stored JSON, not the object.
            return pydantic_core.from_json(text)
        return pydantic_core.from_json(row["result"])

    async def dep_result(self, name: str) -> Any:
        """The recorded result of this workflow step's dependency ``name``."""
        job = self._job
        validate_name("step name", name)
        if job.workflow_id is None:
            raise InvalidWorkflow(f"job {job.id} is not a workflow step: it has no dependencies")
        row = await self._db.dep_result(job.id, name)
        if row is None:
            if await self._db.has_step(job.workflow_id, name):
                raise InvalidWorkflow(f"step {name!r} is not a dependency of step {job.step!r}")
            raise InvalidWorkflow(f"workflow {job.workflow_id} has no step {name!r}")
        if row["state"] != "completed":
            raise DependencyFailed(name, row["state"])
        return pydantic_core.from_json(row["result"]) if row["result"] is not None else None
