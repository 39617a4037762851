"""The workflow and batch pages (GET): the list, newest first, and one with every step.

Reads go through ``app.list_workflows`` and ``app.workflow_status``; the dependency edges
and a job's recorded steps are two more reads of the database layer, one statement each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

from ..errors import WorkflowNotFound
from ..jobs import Job
from ..workflow import WorkflowInfo
from .readmodels import job_timing
from .site import Site
from .views import _cursor

__all__ = ["WorkflowPages", "WorkflowStep", "workflow_steps"]

KINDS = ("workflow", "batch")
#: The states a workflow's summary counts, in column order (``pending`` first: steps
#: waiting on their dependencies).
WORKFLOW_STATES = (
    "pending",
    "scheduled",
    "available",
    "running",
    "retryable",
    "completed",
    "discarded",
    "cancelled",
)
#: A batch may hold thousands of jobs; the page shows this many and says so.
MAX_STEPS_SHOWN = 1000


@dataclasses.dataclass(frozen=True)
class WorkflowStep:
    """One row of a workflow's step table: the job and the steps it waits for."""

    job: Job
    deps: Sequence[Job]
    waited: float | None
    ran: float | None


def workflow_steps(jobs: Sequence[Job], edges: Sequence[tuple[int, int]]) -> list[WorkflowStep]:
    """Join the jobs with the (job_id, dep_id) edges among them, in enqueue order."""
    by_id = {job.id: job for job in jobs}
    deps: dict[int, list[Job]] = {}
    for job_id, dep_id in edges:
        if dep_id in by_id:
            deps.setdefault(job_id, []).append(by_id[dep_id])
    steps = []
    for job in jobs:
        timing = job_timing(job)
        steps.append(WorkflowStep(job, deps.get(job.id, []), timing["waited"], timing["ran"]))
    return steps


class WorkflowPages:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.render = site.renderer

    async def workflows(self, request: Request) -> Response:
        params = request.query_params
        problems = []
        raw_kind = params.get("kind") or None
        kind: Literal["workflow", "batch"] | None = None
        if raw_kind == "workflow":
            kind = "workflow"
        elif raw_kind == "batch":
            kind = "batch"
        elif raw_kind is not None:
            problems.append(f"unknown kind {raw_kind!r}: showing workflows and batches")
        before = _cursor(params.get("before"))
        size = self.site.page_size
        # One more than a page tells whether an older page exists, without a count.
        rows = await self.site.app.list_workflows(kind=kind, before=before, limit=size + 1)
        listed: list[WorkflowInfo] = rows[:size]
        return self.render.page(
            request,
            "workflows.html",
            title="Workflows",
            section="/workflows",
            workflows=listed,
            has_older=len(rows) > size,
            paged=before is not None,
            kind=kind,
            kinds=KINDS,
            problems=problems,
            states=WORKFLOW_STATES,
        )

    async def workflow(self, request: Request) -> Response:
        workflow_id = request.path_params["workflow_id"]
        if not 1 <= workflow_id < 2**63:
            return self.render.error(request, 404, f"There is no workflow {workflow_id}.")
        try:
            status = await self.site.app.workflow_status(workflow_id)
        except WorkflowNotFound:
            return self.render.error(request, 404, f"There is no workflow or batch {workflow_id}.")
        shown = status.jobs[:MAX_STEPS_SHOWN]
        edges = (
            await self.site.app.db.workflow_edges(status.id) if status.kind == "workflow" else []
        )
        return self.render.page(
            request,
            "workflow.html",
            title=f"{status.kind.capitalize()} {status.id}",
            section="/workflows",
            wf=status,
            steps=workflow_steps(shown, edges),
            hidden=len(status.jobs) - len(shown),
            counts=status.counts,
            states=WORKFLOW_STATES,
            can_cancel=status.state == "running",
        )
