"""Workflows and batches: jobs that wait for other jobs.

A ``Workflow`` is a DAG of named steps, each a job built with ``.build(...)``; a step
with ``deps`` waits in ``pending`` until they end. A batch (``app.enqueue_batch``) is a
set of jobs plus an optional callback that runs once after all of them ended, whatever
their outcomes: the same mechanism, the callback depending on every member with
``on_dep_failure="run"``.

What happens in the database (``db/migrations/0007_workflows.sql``): each dependent
counts its unfinished dependencies, and the transaction that ends a dependency (an
outcome, a rescue, a cancel) updates its dependents' counts through a trigger; the last
one makes it ``available``, a failed one (``discarded``/``cancelled``) cancels it unless
it runs anyway, and a cancelled dependent cancels its own dependents in turn. So nothing
polls, no crash can strand a step between its dependency's outcome and its promotion, and
a 10,000 -> 1 fan-in costs the same per member from the first to the last. The leader
runs a backstop for what no transaction announces (a dependency deleted by hand).

Everything here is checked before anything is written: a cycle, a dependency naming no
step, two steps of one name, a workflow with no steps, or a step with a per-job ``conn``
or ``unique`` (a unique step could be answered by another job, outside the workflow)
raise ``InvalidWorkflow``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from .definition import JobRequest
from .errors import InvalidWorkflow
from .jobs import FINAL_STATES, Job, JobState
from .validate import validate_name

__all__ = [
    "Batch",
    "GroupPlan",
    "Workflow",
    "WorkflowInfo",
    "WorkflowRun",
    "WorkflowStatus",
    "plan_batch",
]

OnDepFailure = Literal["cancel", "run"]
#: The largest workflow or batch one call writes (one statement per table; a bigger set
#: belongs in several batches).
MAX_JOBS = 100_000


@dataclass(frozen=True, slots=True)
class _Step:
    name: str
    request: JobRequest
    deps: tuple[str, ...]
    run_anyway: bool


class Workflow:
    """A DAG of named steps, enqueued in one transaction by ``app.enqueue_workflow``::

        wf = aqueue.Workflow("nightly-etl")
        wf.add("fetch", fetch.build(day="2026-12-01"))
        wf.add("clean", clean.build(), deps=["fetch"])
        wf.add("load", load.build(), deps=["clean"], on_dep_failure="cancel")
        run = await app.enqueue_workflow(wf)

    Steps may be added in any order (a dependency may be added after its dependent); the
    graph is checked when it is enqueued, or by ``check()``.
    """

    def __init__(self, name: str = "workflow") -> None:
        validate_name("name", name)
        self.name = name
        self._steps: dict[str, _Step] = {}

    def add(
        self,
        name: str,
        build: JobRequest,
        *,
        deps: Iterable[str] = (),
        on_dep_failure: OnDepFailure = "cancel",
    ) -> Workflow:
        """Add step ``name`` running ``build`` (from ``job.build(...)``) after ``deps``.

        ``on_dep_failure``: when a dependency ends ``discarded`` or ``cancelled``,
        ``"cancel"`` (the default) cancels this step, and its dependents in turn;
        ``"run"`` runs it anyway once every dependency ended. Returns the workflow."""
        validate_name("step name", name)
        if name in self._steps:
            raise InvalidWorkflow(f"workflow {self.name!r}: two steps are named {name!r}")
        if not isinstance(build, JobRequest):
            raise InvalidWorkflow(
                f"step {name!r}: expected a job from .build(...), got {type(build).__name__}"
            )
        if isinstance(deps, str):
            raise InvalidWorkflow(f"step {name!r}: deps must be a list of step names, not a str")
        dep_names = tuple(deps)
        for dep in dep_names:
            if not isinstance(dep, str):
                raise InvalidWorkflow(f"step {name!r}: dependency {dep!r} is not a step name")
        if len(set(dep_names)) != len(dep_names):
            raise InvalidWorkflow(f"step {name!r}: a dependency is listed twice")
        if on_dep_failure not in ("cancel", "run"):
            raise InvalidWorkflow(
                f"step {name!r}: on_dep_failure must be 'cancel' or 'run', got {on_dep_failure!r}"
            )
        _check_request(name, build)
        self._steps[name] = _Step(name, build, dep_names, on_dep_failure == "run")
        return self

    @property
    def steps(self) -> list[str]:
        """The step names, in the order they were added."""
        return list(self._steps)

    def check(self) -> GroupPlan:
        """Check the graph; return what ``enqueue_workflow`` writes (steps in a
        topological order). Raises ``InvalidWorkflow`` naming the problem."""
        if not self._steps:
            raise InvalidWorkflow(f"workflow {self.name!r} has no steps")
        if len(self._steps) > MAX_JOBS:
            raise InvalidWorkflow(f"workflow {self.name!r}: more than {MAX_JOBS:,} steps")
        for step in self._steps.values():
            for dep in step.deps:
                if dep not in self._steps:
                    raise InvalidWorkflow(
                        f"step {step.name!r} depends on {dep!r}, which is no step of "
                        f"workflow {self.name!r}"
                    )
                if dep == step.name:
                    raise InvalidWorkflow(f"step {step.name!r} depends on itself")
        order = _topological(self._steps)
        index = {name: i for i, name in enumerate(order)}
        steps = [self._steps[name] for name in order]
        return GroupPlan(
            kind="workflow",
            name=self.name,
            requests=[s.request for s in steps],
            steps=list(order),
            deps=[[index[d] for d in s.deps] for s in steps],
            run_anyway=[s.run_anyway for s in steps],
        )


def _topological(steps: Mapping[str, _Step]) -> list[str]:
    """Kahn's order (stable: steps as added, whenever free); a cycle raises, naming it."""
    waiting = {name: len(step.deps) for name, step in steps.items()}
    dependents: dict[str, list[str]] = {name: [] for name in steps}
    for step in steps.values():
        for dep in step.deps:
            dependents[dep].append(step.name)
    ready = deque(name for name, n in waiting.items() if n == 0)
    order: list[str] = []
    while ready:
        name = ready.popleft()
        order.append(name)
        for dependent in dependents[name]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                ready.append(dependent)
    if len(order) < len(steps):
        left = {name for name, n in waiting.items() if n > 0}
        raise InvalidWorkflow(f"the steps {_cycle(steps, left)} form a cycle")
    return order


def _cycle(steps: Mapping[str, _Step], left: set[str]) -> str:
    """One cycle among the steps ``left`` (each waits on another of them), as a -> b -> a."""
    path: list[str] = []
    seen: dict[str, int] = {}
    name = min(left)
    while name not in seen:
        seen[name] = len(path)
        path.append(name)
        name = next(dep for dep in steps[name].deps if dep in left)
    loop = [*path[seen[name] :], name]
    return " -> ".join(repr(n) for n in loop)


def _check_request(name: str, request: JobRequest) -> None:
    if request.options.conn is not None:
        raise InvalidWorkflow(
            f"step {name!r}: pass conn= to enqueue_workflow/enqueue_batch, not to one job"
        )
    if request.options.unique:
        raise InvalidWorkflow(
            f"step {name!r}: unique jobs cannot be steps (another job could answer for it)"
        )


@dataclass(frozen=True, slots=True)
class GroupPlan:
    """What one workflow or batch writes: its jobs in a topological order, each job's
    step name, the positions of its dependencies and whether it runs when one failed."""

    kind: Literal["workflow", "batch"]
    name: str
    requests: list[JobRequest]
    steps: list[str | None]
    deps: list[list[int]]
    run_anyway: list[bool]


def plan_batch(
    builds: Sequence[JobRequest], callback: JobRequest | None, name: str = "batch"
) -> GroupPlan:
    """A batch as a group: its jobs, then the callback depending on all of them."""
    validate_name("name", name)
    if isinstance(builds, JobRequest) or not isinstance(builds, Sequence):
        raise InvalidWorkflow("enqueue_batch takes a list of jobs from .build(...)")
    if not builds:
        raise InvalidWorkflow("a batch needs at least one job")
    if len(builds) >= MAX_JOBS:
        raise InvalidWorkflow(f"a batch holds fewer than {MAX_JOBS:,} jobs")
    for i, build in enumerate(builds):
        if not isinstance(build, JobRequest):
            raise InvalidWorkflow(
                f"batch job {i}: expected a job from .build(...), got {type(build).__name__}"
            )
        _check_request(f"#{i}", build)
    requests = list(builds)
    steps: list[str | None] = [None] * len(requests)
    deps: list[list[int]] = [[] for _ in requests]
    run_anyway = [False] * len(requests)
    if callback is not None:
        if not isinstance(callback, JobRequest):
            raise InvalidWorkflow(
                f"callback: expected a job from .build(...), got {type(callback).__name__}"
            )
        _check_request("callback", callback)
        deps.append(list(range(len(requests))))
        requests.append(callback)
        steps.append("callback")
        run_anyway.append(True)
    return GroupPlan("batch", name, requests, steps, deps, run_anyway)


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    """An enqueued workflow: its id and each step's job as enqueued."""

    id: int
    name: str
    jobs: dict[str, Job]


@dataclass(frozen=True, slots=True)
class Batch:
    """An enqueued batch: its id, its jobs in the order given, and the callback's job."""

    id: int
    name: str
    jobs: list[Job]
    callback: Job | None


def overall_state(states: Iterable[JobState]) -> str:
    """A workflow's state from its jobs': ``running`` while any has not ended, then
    ``completed`` when all completed, ``failed`` when any was discarded, else
    ``cancelled``."""
    seen = set(states)
    if not seen or not seen <= FINAL_STATES:
        return "running"
    if seen == {JobState.COMPLETED}:
        return "completed"
    if JobState.DISCARDED in seen:
        return "failed"
    return "cancelled"


@dataclass(frozen=True, slots=True)
class WorkflowStatus:
    """A workflow or batch now (``app.workflow_status``): every job with its state,
    attempts and timing, by step name for a workflow."""

    id: int
    kind: str
    name: str
    created_at: datetime
    jobs: list[Job]
    state: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", overall_state(j.state for j in self.jobs))

    @property
    def steps(self) -> dict[str, Job]:
        """The named jobs (a workflow's steps; a batch's callback) by name."""
        return {job.step: job for job in self.jobs if job.step is not None}

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in self.jobs:
            counts[job.state.value] = counts.get(job.state.value, 0) + 1
        return counts


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """One line of ``app.list_workflows()``: a workflow or batch with its jobs counted by
    state."""

    id: int
    kind: str
    name: str
    steps: int
    created_at: datetime
    counts: Mapping[str, int]

    @property
    def state(self) -> str:
        return overall_state(JobState(s) for s, n in self.counts.items() if n)
