"""The one enqueue path: build -> resolve options -> insert (plain or unique) -> notify.

Every way of enqueuing ends here: ``definition.enqueue(...)``, ``.options(...)``,
``app.enqueue(kind, ...)``, ``app.enqueue_many([...])`` and the periodic scheduler.

1. **Build**: a ``JobRequest`` holds the validated arguments as JSON text and the
   per-enqueue ``Options`` (``definition.py``; by kind name: ``Enqueuer.build``).
2. **Resolve**: the job's defaults merged with the request's options, every default
   applied (``ResolvedOptions``). A batch usually shares a handful of (kind, options)
   pairs, so each pair is resolved once per call.
3. **Insert**: one statement for the whole batch: option groups as small arrays, the
   jobs as one JSON document (``db.params.InsertColumns``); a batch holding unique jobs
   takes the unique variant (see ``aqueue/unique.py`` for how keys are enforced).
4. **Notify**: the workers of each queue that got a due job are woken, inside the
   caller's transaction when it passed ``conn=`` (delivered at commit).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from .db.database import Database, Row
from .db.params import Deps, GroupColumns, InsertColumns, Inserted
from .definition import JobRequest, dump_unvalidated
from .errors import ConfigurationError, DatabaseError, InvalidOption, InvalidWorkflow
from .jobs import Job, job_from_row, saved_job, unsaved_job
from .options import Options
from .overlap import while_awaiting
from .registry import EnqueueCall, Registry
from .unique import Unique
from .validate import json_text, validate_name
from .workflow import GroupPlan

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_PRIORITY",
    "DEFAULT_QUEUE",
    "Enqueuer",
    "ResolvedOptions",
    "Runner",
]

DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 0
DEFAULT_MAX_ATTEMPTS = 20
# Insert-then-read rounds before a unique enqueue gives up: each extra round needs the
# key's holder to leave its unique states between two statements, which is rare.
_UNIQUE_ROUNDS = 5
# From this many jobs, their Job records are built while the insert runs (aqueue/overlap.py);
# below it, the task that takes costs more than it hides.
_OVERLAP_FROM = 32
T = TypeVar("T")


class ResolvedOptions:
    """A job's options with every default applied."""

    __slots__ = (
        "max_attempts",
        "meta",
        "meta_json",
        "priority",
        "queue",
        "retry_json",
        "schedule_in",
        "scheduled_at",
        "tags",
        "tags_json",
        "timeout",
        "unique",
    )

    def __init__(self, merged: Options, override: Options) -> None:
        self.queue = merged.queue or DEFAULT_QUEUE
        self.priority = merged.priority if merged.priority is not None else DEFAULT_PRIORITY
        self.max_attempts = (
            merged.max_attempts if merged.max_attempts is not None else DEFAULT_MAX_ATTEMPTS
        )
        self.tags = list(merged.tags or ())
        self.tags_json = json.dumps(self.tags)
        self.meta_json = merged.meta_json()
        self.meta: dict[str, Any] = json.loads(self.meta_json)
        self.scheduled_at = merged.scheduled_at
        self.schedule_in = merged.schedule_in
        # Timeout and retry policy are stored only when set per enqueue; otherwise the
        # job's definition decides when it runs (so a deploy can change them).
        self.timeout = override.timeout
        retry = override.retry
        self.retry_json = json.dumps(retry.to_json()) if retry is not None else None
        self.unique: Unique | None = merged.unique or None  # False: off for this enqueue

    def add_meta(self, extra: Mapping[str, Any]) -> None:
        """Merge enqueue middleware's ``extra`` meta over this group's own."""
        self.meta = {**self.meta, **extra}
        self.meta_json = json_text("meta", self.meta)

    def job(self, row: Row, request: JobRequest) -> Job:
        """The Job a unique insert just wrote, from what we sent plus its row."""
        job = unsaved_job(
            request.kind,
            self.queue,
            request.args_json,
            self.priority,
            self.max_attempts,
            self.tags,
            self.meta,
        )
        return saved_job(job, row["id"], row["state"], row["scheduled_at"], row["created_at"])


class Runner(Protocol):
    """Runs jobs at enqueue instead of inserting them (``App(testing="inline")``; the
    implementation is ``worker.inline.InlineRunner``)."""

    async def enqueue(
        self, requests: Sequence[JobRequest], resolved: Sequence[ResolvedOptions]
    ) -> list[Job]: ...


class Enqueuer:
    """Builds and inserts jobs for one App (its registry and database)."""

    def __init__(self, db: Database, registry: Registry) -> None:
        self._db = db
        self._registry = registry
        #: Set by the App: what runs jobs without a database (perform_job, inline mode);
        #: with ``inline``, every enqueue goes to it instead of the database.
        self.runner: Runner | None = None
        self.inline = False

    def build(
        self,
        kind: str,
        args: Mapping[str, Any] | None = None,
        *,
        allow_unknown: bool = False,
        options: Options | None = None,
    ) -> JobRequest:
        """A ``JobRequest`` by kind name; unknown kinds raise ``UnknownJobKind`` unless
        ``allow_unknown`` (then ``args`` is stored unvalidated)."""
        validate_name("kind", kind)
        definition = self._registry.get(kind)
        options = options or Options()
        if definition is None:
            if not allow_unknown:
                self._registry.require(kind)
            return JobRequest.checked(kind, dump_unvalidated(kind, args), options)
        args_json = definition.schema.dump(args or {})
        key = None
        if definition.partition_by is not None and options.partition_key is None:
            key = definition.partition_key_of(dict(args or {}))
        return JobRequest.checked(definition.kind, args_json, options, key)

    async def enqueue_request(self, request: JobRequest) -> Job:
        return (await self.insert([request], request.options.conn))[0]

    async def enqueue_many(self, requests: Sequence[JobRequest], *, conn: Any = None) -> list[Job]:
        """Insert many jobs in one statement (one round trip); returns them in order."""
        if isinstance(requests, JobRequest) or not isinstance(requests, Sequence):
            raise InvalidOption("requests", "must be a list of jobs from .build(...)")
        for request in requests:
            if not isinstance(request, JobRequest):
                raise InvalidOption(
                    "requests", f"expected JobRequest from .build(), got {request!r}"
                )
        if not requests:
            return []
        conns = {id(r.options.conn) for r in requests if r.options.conn is not None}
        if conn is None and conns:
            if len(conns) > 1:
                raise InvalidOption("conn", "all jobs of one enqueue_many must share one conn")
            conn = next(r.options.conn for r in requests if r.options.conn is not None)
        return await self.insert(requests, conn)

    async def insert_group(self, plan: GroupPlan, conn: Any) -> tuple[int, list[Job]]:
        """Insert a workflow's or batch's jobs, their dependencies and its row, in one
        transaction (a savepoint inside the caller's, with ``conn``); returns its id and
        the Jobs in the plan's order."""
        holder: list[int] = []
        jobs = await self.insert(plan.requests, conn, (plan, holder))
        return holder[0], jobs

    async def insert(
        self,
        requests: Sequence[JobRequest],
        conn: Any,
        group: tuple[GroupPlan, list[int]] | None = None,
    ) -> list[Job]:
        """Insert ``requests`` (through any enqueue middleware) and return their Jobs."""
        middleware = self._registry.enqueue_middleware
        if not middleware:  # the common case: no call object at all
            return await self._insert(requests, conn, None, group)
        call = EnqueueCall(requests, transactional=conn is not None)

        def innermost() -> Awaitable[list[Job]]:
            return self._insert(requests, conn, call.meta or None, group)

        chain: Callable[[], Awaitable[list[Job]]] = innermost
        for layer in reversed(middleware):  # the first registered sees the call first
            chain = functools.partial(layer, call, chain)
        return await chain()

    async def _insert(
        self,
        requests: Sequence[JobRequest],
        conn: Any,
        extra_meta: Mapping[str, Any] | None,
        group: tuple[GroupPlan, list[int]] | None = None,
    ) -> list[Job]:
        # Each distinct (kind, options) pair is resolved once and sent once, as an option
        # group (see db.params.InsertColumns).
        resolved: dict[tuple[str, int], tuple[ResolvedOptions, int]] = {}
        per_job: list[ResolvedOptions] = []
        columns = InsertColumns() if group is None else GroupColumns()
        args, groups, keys = columns.args, columns.group, columns.partition_key
        unique = False
        for request in requests:
            key = (request.kind, id(request.options))
            found = resolved.get(key)
            if found is None:
                opts = self._resolve(request)
                if extra_meta is not None:
                    opts.add_meta(extra_meta)
                found = resolved[key] = (opts, _add_group(columns, request.kind, opts))
                unique = unique or opts.unique is not None
            per_job.append(found[0])
            args.append(request.args_json)
            groups.append(found[1])
            keys.append(request.partition_key)
        if self.inline and self.runner is not None:
            if group is not None:
                raise ConfigurationError(
                    f"inline mode cannot run a {group[0].kind}: its steps wait on each other "
                    "in the database; test it on a database (aqueue.testing.isolated)"
                )
            return await self.runner.enqueue(requests, per_job)
        if group is not None:
            assert isinstance(columns, GroupColumns)
            return await self._insert_group(columns, group, requests, per_job, conn)
        if unique:
            return await self._insert_unique(columns, requests, per_job, conn)

        def insert() -> Awaitable[Inserted]:
            return self._db.insert_jobs(columns, conn=conn)

        inserted, jobs = await _with_records(
            len(requests), insert, lambda: _unsaved(requests, per_job)
        )
        states, due, created = inserted.states, inserted.scheduled_at, inserted.created_at
        for job, job_id, index in zip(jobs, inserted.ids, columns.group, strict=True):
            saved_job(job, job_id, states[index - 1], due[index - 1], created)
        return jobs

    async def _insert_group(
        self,
        columns: GroupColumns,
        group: tuple[GroupPlan, list[int]],
        requests: Sequence[JobRequest],
        per_job: Sequence[ResolvedOptions],
        conn: Any,
    ) -> list[Job]:
        plan, holder = group
        for opts, step in zip(per_job, plan.steps, strict=True):
            if opts.unique is not None:  # also a unique= of the job's definition
                raise InvalidWorkflow(
                    f"step {step or '(batch job)'!r}: unique jobs cannot be steps (another "
                    "job could answer for it)"
                )
        columns.step = plan.steps
        columns.deps = [len(d) for d in plan.deps]
        columns.run_anyway = plan.run_anyway
        async with self._db.transaction_on(conn) as tx:
            group_id = await self._db.create_workflow(plan.kind, plan.name, len(requests), tx)
            if plan.kind == "workflow":
                columns.workflow_id = group_id
            else:
                columns.batch_id = group_id
            workflow_id, batch_id = columns.workflow_id, columns.batch_id

            def unsaved() -> list[Job]:
                return _unsaved(
                    requests, per_job, workflow_id=workflow_id, batch_id=batch_id, steps=plan.steps
                )

            inserted, jobs = await _with_records(
                len(requests), lambda: self._db.insert_group_jobs(columns, tx), unsaved
            )
            ids = inserted.ids
            edges = Deps()
            for index, deps in enumerate(plan.deps):
                for dep in deps:
                    edges.dep_id.append(ids[dep])
                    edges.job_id.append(ids[index])
            await self._db.insert_deps(edges, tx)
        holder.append(group_id)
        created = inserted.created_at
        for job, job_id, state, due in zip(
            jobs, ids, inserted.states, inserted.scheduled_at, strict=True
        ):
            saved_job(job, job_id, state, due, created)
        return jobs

    def _resolve(self, request: JobRequest) -> ResolvedOptions:
        definition = self._registry.get(request.kind)
        defaults = definition.defaults if definition is not None else Options()
        return ResolvedOptions(defaults.merged(request.options), request.options)

    async def _insert_unique(
        self,
        columns: InsertColumns,
        requests: Sequence[JobRequest],
        per_job: Sequence[ResolvedOptions],
        conn: Any,
    ) -> list[Job]:
        """Insert a batch holding unique jobs (see ``aqueue.unique``); returns Jobs in order.

        A key may appear only once in the statement, so a later request for a key already
        in this batch is answered with the first one's job, marked duplicate. Rows are sent
        sorted by key: two batches sharing keys then wait on each other in one order
        instead of deadlocking. A job whose key is held is answered with the holder, read
        right after the insert; if the holder let go of the key in between, the job is
        inserted again.
        """
        keys: list[str | None] = [None] * len(columns)
        periods: list[float | None] = [None] * len(columns)
        states: list[str | None] = [None] * len(columns)
        columns.unique_key, columns.unique_period, columns.unique_states = keys, periods, states
        first_for: dict[tuple[str, float | None], int] = {}
        duplicate_of: dict[int, int] = {}
        todo: list[tuple[str, int]] = []  # (key or "", index), sorted before each round
        for index, (request, opts) in enumerate(zip(requests, per_job, strict=True)):
            unique = opts.unique
            if unique is None:
                todo.append(("", index))
                continue
            key = unique.key(request.kind, opts.queue, request.args_json)
            ident = (key, unique.period_seconds)
            first = first_for.setdefault(ident, index)
            if first != index:
                duplicate_of[index] = first
                continue
            keys[index] = key
            periods[index] = unique.period_seconds
            states[index] = unique.states_csv()
            todo.append((key, index))
        todo.sort()
        jobs: dict[int, Job] = {}
        for _ in range(_UNIQUE_ROUNDS):
            indexes = [index for _, index in todo]
            written = await self._db.insert_unique_jobs(columns.select(indexes), conn=conn)
            held: list[tuple[tuple[str, int], str]] = []
            for entry, row in zip(todo, written, strict=True):
                if row["id"] is not None:
                    index = entry[1]
                    jobs[index] = per_job[index].job(row, requests[index])
                else:
                    held.append((entry, row["wanted_key"]))
            if not held:
                break
            holders = await self._db.unique_holders([key for _, key in held], conn=conn)
            todo = []
            for entry, key in held:
                holder = holders.get(key)
                if holder is not None:
                    jobs[entry[1]] = job_from_row(holder, duplicate=True)
                else:
                    todo.append(entry)  # the holder finished in between: the key is free
            if not todo:
                break
        else:
            raise DatabaseError(
                f"unique enqueue: the holders of {len(todo)} key(s) kept changing "
                f"over {_UNIQUE_ROUNDS} attempts; try again"
            )
        for index, first in duplicate_of.items():
            jobs[index] = dataclasses.replace(jobs[first], duplicate=True)
        return [jobs[index] for index in range(len(requests))]


def _unsaved(
    requests: Sequence[JobRequest],
    per_job: Sequence[ResolvedOptions],
    *,
    workflow_id: int | None = None,
    batch_id: int | None = None,
    steps: Sequence[str | None] | None = None,
) -> list[Job]:
    """The Jobs of an insert in flight (``jobs.unsaved_job``), in request order."""
    return [
        unsaved_job(
            request.kind,
            opts.queue,
            request.args_json,
            opts.priority,
            opts.max_attempts,
            opts.tags,
            opts.meta,
            workflow_id=workflow_id,
            batch_id=batch_id,
            step=steps[index] if steps is not None else None,
        )
        for index, (request, opts) in enumerate(zip(requests, per_job, strict=True))
    ]


async def _with_records(
    size: int, insert: Callable[[], Awaitable[T]], unsaved: Callable[[], list[Job]]
) -> tuple[T, list[Job]]:
    """``(await insert(), unsaved())`` for ``size`` jobs: from ``_OVERLAP_FROM`` on, the
    records are built while the insert runs (``aqueue/overlap.py``)."""
    if size >= _OVERLAP_FROM:
        return await while_awaiting(insert, unsaved)
    return await insert(), unsaved()


def _add_group(columns: InsertColumns, kind: str, opts: ResolvedOptions) -> int:
    """Adds an option group; returns its 1-based index."""
    columns.kind.append(kind)
    columns.queue.append(opts.queue)
    columns.priority.append(opts.priority)
    columns.max_attempts.append(opts.max_attempts)
    columns.scheduled_at.append(opts.scheduled_at)
    columns.delay.append(opts.schedule_in)
    columns.tags.append(opts.tags_json)
    columns.meta.append(opts.meta_json)
    columns.timeout.append(opts.timeout)
    columns.retry.append(opts.retry_json)
    return len(columns.queue)
