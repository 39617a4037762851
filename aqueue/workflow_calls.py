"""The App's workflow and batch calls (``App`` inherits them): enqueue, read, list, cancel.
The definitions and the reasoning are in ``workflow.py``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pydantic_core

from .db.database import Database
from .definition import JobRequest
from .enqueue import Enqueuer
from .errors import InvalidOption, WorkflowNotFound
from .jobs import job_from_row
from .validate import smallint
from .workflow import (
    Batch,
    Workflow,
    WorkflowInfo,
    WorkflowRun,
    WorkflowStatus,
    plan_batch,
)

__all__ = ["WorkflowCalls"]


def _check_id(workflow_id: object) -> int:
    if isinstance(workflow_id, bool) or not isinstance(workflow_id, int) or workflow_id < 1:
        raise InvalidOption("workflow_id", f"must be a positive int, got {workflow_id!r}")
    return workflow_id


class WorkflowCalls:
    db: Database
    _enqueuer: Enqueuer

    async def enqueue_workflow(self, workflow: Workflow, *, conn: Any = None) -> WorkflowRun:
        """Write every step of ``workflow`` in one transaction (inside the caller's with
        ``conn``: the steps exist only if it commits). Steps without dependencies are due
        at once; the others wait in ``pending``. Raises ``InvalidWorkflow`` (nothing
        written) for a cycle, an unknown dependency or an empty workflow."""
        if not isinstance(workflow, Workflow):
            raise InvalidOption("workflow", f"expected aqueue.Workflow, got {workflow!r}")
        plan = workflow.check()
        group_id, jobs = await self._enqueuer.insert_group(plan, conn)
        return WorkflowRun(group_id, plan.name, {job.step or "": job for job in jobs})

    async def enqueue_batch(
        self,
        builds: Sequence[JobRequest],
        *,
        callback: JobRequest | None = None,
        name: str = "batch",
        conn: Any = None,
    ) -> Batch:
        """Write ``builds`` (from ``.build(...)``) as one batch, in one transaction, and
        ``callback`` to run once after every one of them ended, whatever the outcomes;
        the callback's ``ctx.batch`` counts them by final state."""
        plan = plan_batch(builds, callback, name)
        group_id, jobs = await self._enqueuer.insert_group(plan, conn)
        if callback is not None:
            return Batch(group_id, plan.name, jobs[:-1], jobs[-1])
        return Batch(group_id, plan.name, jobs, None)

    async def workflow_status(self, workflow_id: int) -> WorkflowStatus:
        """A workflow or batch now: every job, its overall state and counts. Raises
        ``WorkflowNotFound`` for an unknown id (or one retention removed)."""
        row = await self.db.get_workflow(_check_id(workflow_id))
        if row is None:
            raise WorkflowNotFound(workflow_id)
        jobs = [job_from_row(r) for r in await self.db.workflow_jobs(row["id"])]
        return WorkflowStatus(row["id"], row["kind"], row["name"], row["created_at"], jobs)

    async def list_workflows(
        self,
        *,
        kind: Literal["workflow", "batch"] | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[WorkflowInfo]:
        """Workflows and batches, newest first; ``before``: ids below it (paging)."""
        if kind not in (None, "workflow", "batch"):
            raise InvalidOption("kind", f"must be 'workflow', 'batch' or None, got {kind!r}")
        if before is not None:
            _check_id(before)
        limit = smallint("limit", limit, 1)
        rows = await self.db.list_workflows(kind, before, limit)
        return [
            WorkflowInfo(
                r["id"],
                r["kind"],
                r["name"],
                r["steps"],
                r["created_at"],
                pydantic_core.from_json(r["counts"]),
            )
            for r in rows
        ]

    async def cancel_workflow(self, workflow_id: int) -> int:
        """Cancel every job of a workflow or batch that has not ended: waiting ones at once,
        running ones as ``app.cancel`` does (flagged; they end ``cancelled`` when they
        stop). Returns how many jobs it cancelled or flagged; 0 when all had ended."""
        row = await self.db.get_workflow(_check_id(workflow_id))
        if row is None:
            raise WorkflowNotFound(workflow_id)
        return await self.db.cancel_workflow(row["id"], "cancelled by app.cancel_workflow")
