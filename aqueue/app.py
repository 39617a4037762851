"""``aqueue.App``: configuration, the job registry, the pool, enqueue and admin calls."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar, overload

import anyio
import pydantic_core
from anyio.abc import TaskStatus

from . import control
from .cluster import ClusterStatus, LeaseInfo, NodeInfo, find_drift
from .config import build_settings, resolve_database_url, validate_schema_name
from .db.database import Database, InsertRow, Row
from .definition import (
    AfterProcessHook,
    ConfiguredJob,
    JobDefinition,
    JobRequest,
    require_coroutine_function,
)
from .enqueue import DEFAULT_QUEUE, ResolvedOptions, insert_unique
from .errors import (
    ConfigurationError,
    InvalidJobArgs,
    InvalidOption,
    JobNotFound,
    JobStateError,
)
from .jobs import Job, JobContext, JobState
from .options import (
    Backoff,
    Options,
    json_nul_problems,
    validate_name,
    validate_registered_name,
)
from .registry import Registry
from .unique import Unique
from .worker.notifier import Notifier
from .worker.periodic import CronSchedule, PeriodicEntry
from .worker.persistent import PersistentDefinition, PersistentFn
from .worker.worker import Worker

__all__ = ["App"]

P = ParamSpec("P")
R = TypeVar("R")
H = TypeVar("H", bound=AfterProcessHook)


class _JobDecorator(Protocol):
    @overload
    def __call__(
        self, fn: Callable[Concatenate[JobContext, P], Awaitable[R]], /
    ) -> JobDefinition[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> JobDefinition[P, R]: ...


class App:
    """One aqueue application: jobs registered on it, a pool to one database schema.

    ``url`` is a ``postgresql://`` URL; ``None`` reads ``AQUEUE_DATABASE_URL``. Settings
    (all keyword-only, validated here) are documented in docs/configuration.md.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        schema: str = "aqueue",
        poll_interval: float = 1.0,
        heartbeat_interval: float = 2.0,
        node_ttl: float = 15.0,
        shutdown_timeout: float = 30.0,
        retention: float | timedelta = 7 * 86400.0,
        leader_ttl: float = 10.0,
        pool_size: int = 10,
        connect_timeout: float = 10.0,
        completer_batch: int = 1000,
        prune_interval: float = 60.0,
        restart_delay: float = 1.0,
        restart_delay_max: float = 60.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.url = resolve_database_url(url)
        validate_schema_name(schema)
        if isinstance(retention, timedelta):
            retention = retention.total_seconds()
        self.settings = build_settings(
            schema_name=schema,
            poll_interval=poll_interval,
            heartbeat_interval=heartbeat_interval,
            node_ttl=node_ttl,
            shutdown_timeout=shutdown_timeout,
            retention=retention,
            leader_ttl=leader_ttl,
            pool_size=pool_size,
            connect_timeout=connect_timeout,
            completer_batch=completer_batch,
            prune_interval=prune_interval,
            restart_delay=restart_delay,
            restart_delay_max=restart_delay_max,
        )
        self.logger = logger or logging.getLogger("aqueue")
        self.registry = Registry()
        self.db = Database(
            self.url,
            schema,
            pool_size=pool_size,
            connect_timeout=connect_timeout,
            logger=self.logger,
        )
        self._notifier: Notifier | None = None
        self._notifier_lock = anyio.Lock()

    @property
    def schema(self) -> str:
        return self.settings.schema_name

    def __repr__(self) -> str:
        return f"<aqueue.App schema={self.schema!r} jobs={len(self.registry.definitions())}>"

    # -- registration -----------------------------------------------------------------------

    @overload
    def job(
        self, fn: Callable[Concatenate[JobContext, P], Awaitable[R]], /
    ) -> JobDefinition[P, R]: ...

    @overload
    def job(self, fn: Callable[P, Awaitable[R]], /) -> JobDefinition[P, R]: ...

    @overload
    def job(
        self,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | timedelta | None = None,
        tags: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
        retry: Backoff | None = None,
        aliases: Sequence[str] = (),
        unique: Unique | None = None,
    ) -> _JobDecorator: ...

    def job(
        self,
        fn: Callable[..., Awaitable[Any]] | None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | timedelta | None = None,
        tags: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
        retry: Backoff | None = None,
        aliases: Sequence[str] = (),
        unique: Unique | None = None,
    ) -> Any:
        """Register an ``async def`` as a job: ``@app.job`` or ``@app.job(queue="mail", ...)``."""
        defaults = Options.create(
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            tags=tags,
            meta=meta,
            retry=retry,
            unique=unique,
        )
        if isinstance(aliases, str):
            raise ConfigurationError("aliases: must be a list of kind names, not a string")
        alias_tuple = tuple(validate_name("aliases", alias) for alias in aliases)

        def register(func: Callable[..., Awaitable[Any]]) -> JobDefinition[Any, Any]:
            kind = validate_name("name", name if name is not None else func.__name__)
            definition: JobDefinition[Any, Any] = JobDefinition(
                self, func, kind=kind, aliases=alias_tuple, defaults=defaults
            )
            self.registry.add(definition)
            return definition

        return register(fn) if fn is not None else register

    def after_process(self, hook: H) -> H:
        """Register ``async def hook(job, outcome)``, run after every job's attempt."""
        require_coroutine_function(hook, "after_process hook")
        self.registry.global_hooks.append(hook)
        return hook

    def hooks_for(self, definition: JobDefinition[Any, Any] | None) -> list[AfterProcessHook]:
        return self.registry.hooks_for(definition)

    def periodic(
        self,
        job: JobDefinition[Any, Any] | ConfiguredJob[Any, Any],
        *,
        cron: str,
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        run_on_start: bool = False,
        timezone: str = "UTC",
    ) -> None:
        """Enqueue ``job(**kwargs)`` at every ``cron`` slot (in ``timezone``), from the
        elected leader only, once per slot cluster-wide. Bad cron strings, time zones or
        arguments fail here, at registration."""
        if not isinstance(job, JobDefinition | ConfiguredJob) or job.definition.app is not self:
            raise ConfigurationError(
                f"periodic: expected a job registered on this App with @app.job, got {job!r}"
            )
        schedule = CronSchedule(cron, timezone)
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise ConfigurationError(f"periodic: kwargs must be a mapping, got {kwargs!r}")
        request = job.build(**dict(kwargs or {}))
        if request.options.conn is not None:
            raise ConfigurationError("periodic: a job with conn= cannot be scheduled")
        if request.options.scheduled_at is not None:
            raise ConfigurationError("periodic: the cron expression sets the time; no scheduled_at")
        entry_name = job.definition.kind if name is None else name
        validate_registered_name("periodic name", entry_name)
        if not isinstance(run_on_start, bool):
            raise ConfigurationError(f"periodic: run_on_start must be a bool, got {run_on_start!r}")
        self.registry.add_periodic(PeriodicEntry(entry_name, schedule, request, run_on_start))

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

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the connection pool (``async with app`` does this)."""
        await self.db.open()

    async def close(self) -> None:
        notifier, self._notifier = self._notifier, None
        if notifier is not None:
            await notifier.close()
        await self.db.close()

    async def __aenter__(self) -> App:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            await self.close()

    async def migrate(self) -> list[str]:
        """Create or upgrade aqueue's tables; returns the migrations applied now."""
        return await self.db.migrate()

    async def notifier(self) -> Notifier:
        """This App's LISTEN connection, opened on first use."""
        async with self._notifier_lock:
            if self._notifier is None:
                self.db.pool  # noqa: B018 - raises AppNotOpen outside 'async with app'
                self._notifier = Notifier(
                    self.url,
                    self.db.channel,
                    connect_timeout=self.settings.connect_timeout,
                    logger=self.logger,
                )
            notifier = self._notifier
        await notifier.start()
        return notifier

    # -- enqueue ----------------------------------------------------------------------------

    async def enqueue(
        self,
        kind: str,
        args: Mapping[str, Any] | None = None,
        *,
        allow_unknown: bool = False,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | timedelta | None = None,
        scheduled_at: datetime | None = None,
        schedule_in: float | timedelta | None = None,
        tags: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
        retry: Backoff | None = None,
        conn: Any = None,
        unique: Unique | Literal[False] | None = None,
    ) -> Job:
        """Enqueue by kind name. Unknown kinds raise ``UnknownJobKind`` unless
        ``allow_unknown=True`` (then ``args`` is stored unvalidated, for a worker that knows it)."""
        options = Options.create(
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            scheduled_at=scheduled_at,
            schedule_in=schedule_in,
            tags=tags,
            meta=meta,
            retry=retry,
            conn=conn,
            unique=unique,
        )
        return await self.enqueue_request(
            self.build(kind, args, allow_unknown=allow_unknown, options=options)
        )

    def build(
        self,
        kind: str,
        args: Mapping[str, Any] | None = None,
        *,
        allow_unknown: bool = False,
        options: Options | None = None,
    ) -> JobRequest:
        """A ``JobRequest`` for ``enqueue_many``, by kind name."""
        validate_name("kind", kind)
        definition = self.registry.get(kind)
        if definition is None:
            if not allow_unknown:
                self.registry.require(kind)
            if args is not None and not isinstance(args, Mapping):
                raise InvalidJobArgs(kind, [("args", "must be a mapping")])
            try:
                args_json = pydantic_core.to_json(dict(args or {})).decode()
            except pydantic_core.PydanticSerializationError as exc:
                raise InvalidJobArgs(kind, [("args", f"not JSON-serialisable: {exc}")]) from None
            problems = json_nul_problems(args_json, "args")
            if problems:
                raise InvalidJobArgs(kind, problems)
            return JobRequest(kind, args_json, options or Options())
        return JobRequest(definition.kind, definition.schema.dump(args or {}), options or Options())

    async def enqueue_request(self, request: JobRequest) -> Job:
        return (await self._insert([request], request.options.conn))[0]

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
        return await self._insert(requests, conn)

    async def _insert(self, requests: Sequence[JobRequest], conn: Any) -> list[Job]:
        # Everything but the arguments depends only on (kind, options), and a batch usually
        # shares a handful of those: resolve each pair once per call.
        resolved: dict[tuple[str, int], ResolvedOptions] = {}
        per_job: list[ResolvedOptions] = []
        rows: list[InsertRow] = []
        for request in requests:
            key = (request.kind, id(request.options))
            opts = resolved.get(key)
            if opts is None:
                opts = resolved[key] = self._resolve(request)
            per_job.append(opts)
            rows.append((request.kind, opts.queue, request.args_json, *opts.row_tail))
        if any(opts.unique is not None for opts in per_job):
            return await insert_unique(self, rows, requests, per_job, conn)
        inserted = await self.db.insert_and_notify(rows, conn=conn)
        return [
            opts.job(row, request)
            for row, request, opts in zip(inserted, requests, per_job, strict=True)
        ]

    def _resolve(self, request: JobRequest) -> ResolvedOptions:
        definition = self.registry.get(request.kind)
        defaults = definition.defaults if definition is not None else Options()
        return ResolvedOptions(defaults.merged(request.options), request.options)

    # -- records ----------------------------------------------------------------------------

    def job_from_row(
        self,
        row: Row,
        *,
        state: JobState | None = None,
        result: Any = None,
        error_json: str | None = None,
        duplicate: bool = False,
    ) -> Job:
        """A ``Job`` from a database row; ``state``/``result``/``error_json`` overlay an outcome
        the row predates (hooks get the job as it is after the attempt, without a re-read)."""
        errors = _from_json(row["errors"]) if row["errors"] else []
        if error_json is not None:
            errors.append(_from_json(error_json))
        if state is None:
            state = JobState(row["state"])
            result = _from_json(row["result"]) if row["result"] is not None else None
        return Job(
            id=row["id"],
            kind=row["kind"],
            queue=row["queue"],
            state=state,
            args=_from_json(row["args"]),
            priority=row["priority"],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            scheduled_at=row["scheduled_at"],
            created_at=row["created_at"],
            attempted_at=row["attempted_at"],
            finalized_at=row["finalized_at"],
            errors=errors,
            result=result,
            tags=list(row["tags"]),
            meta=_from_json(row["meta"]),
            duplicate=duplicate,
        )

    # -- admin ------------------------------------------------------------------------------

    async def get_job(self, job_id: int) -> Job | None:
        row = await self.db.get_job(_job_id(job_id))
        return self.job_from_row(row) if row is not None else None

    async def list_jobs(
        self,
        *,
        state: JobState | str | None = None,
        queue: str | None = None,
        kind: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs matching every filter given, oldest first."""
        if state is not None:
            try:
                state = JobState(state).value
            except ValueError:
                raise InvalidOption(
                    "state", f"{state!r} is not one of {', '.join(s.value for s in JobState)}"
                ) from None
        if queue is not None:
            validate_name("queue", queue)
        if kind is not None:
            validate_name("kind", kind)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100_000:
            raise InvalidOption("limit", f"must be an integer from 1 to 100000, got {limit!r}")
        rows = await self.db.list_jobs(state, queue, kind, limit)
        return [self.job_from_row(row) for row in rows]

    async def cancel(self, job_id: int) -> Job | None:
        """Cancel a job: a waiting one at once, a running one at its next await (any node).

        Returns the job as it is now (a running job shows ``running`` until its node stops
        it), or None when there is no such job. Final jobs are left as they are.
        """
        found = await self.db.cancel_job(_job_id(job_id), "cancelled by app.cancel")
        if found is None:
            return None
        return await self.get_job(job_id)

    async def retry(self, job_id: int) -> Job:
        """Make a scheduled, retryable, discarded or cancelled job available now.

        A job out of attempts gets one more. Raises ``JobStateError`` for other states
        and ``JobNotFound`` (a ``LookupError``) when there is no such job.
        """
        found = await self.db.retry_job(_job_id(job_id))
        if found is None:
            raise JobNotFound(job_id)
        if not found["changed"]:
            raise JobStateError(
                f"job {job_id} is {found['state']}: only scheduled, retryable, "
                "discarded or cancelled jobs can be retried"
            )
        job = await self.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id, "was deleted meanwhile")
        return job

    async def delete(self, job_id: int) -> bool:
        """Delete a job that is not running. True if deleted, False if there was none."""
        found = await self.db.delete_job(_job_id(job_id))
        if found is None:
            return False
        if not found["changed"]:
            raise JobStateError(f"job {job_id} is running: cancel it first, then delete it")
        return True

    async def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """Wait until the job is completed, cancelled or discarded; ``TimeoutError`` otherwise."""
        job_id = _job_id(job_id)
        if timeout is not None and (not isinstance(timeout, int | float) or timeout < 0):
            raise InvalidOption("timeout", f"must be a number >= 0, got {timeout!r}")
        notifier = await self.notifier()
        job = await self.get_job(job_id)  # a final job returns even with timeout=0
        if job is not None and job.state.is_final:
            return job
        with anyio.move_on_after(timeout if timeout is not None else float("inf")) as scope:
            while True:
                with notifier.final_subscription(job_id) as finalized:
                    job = await self.get_job(job_id)
                    if job is None:
                        raise JobNotFound(job_id)
                    if job.state.is_final:
                        return job
                    # Polling covers a notification lost while the listener reconnects.
                    with anyio.move_on_after(self.settings.poll_interval * 5):
                        await finalized.wait()
        if scope.cancelled_caught:
            raise TimeoutError(f"job {job_id} did not finish within {timeout}s")
        raise AssertionError("unreachable")

    # -- cluster ----------------------------------------------------------------------------

    async def cluster_status(self) -> ClusterStatus:
        """Worker nodes (alive or recently dead), leases (``.leader``), configuration drift."""
        nodes = [NodeInfo.from_row(row) for row in await self.db.list_nodes()]
        leases = [LeaseInfo.from_row(row) for row in await self.db.list_leases()]
        return ClusterStatus(nodes=nodes, leases=leases, drift=find_drift(nodes))

    # -- queue and kind control (logic in control.py) ------------------------------------

    async def pause_queue(self, name: str, *, allow_unknown: bool = False) -> bool:
        """Stop claims from queue ``name`` on every node (persisted, survives restarts).

        Returns False if it was paused already. ``UnknownQueue`` for a queue no job, setting
        or live worker names, unless ``allow_unknown`` (to pause a queue before first use).
        """
        return await control.pause_queue(self, name, allow_unknown=allow_unknown)

    async def resume_queue(self, name: str) -> bool:
        """Let queue ``name`` be claimed again and wake its workers; False if not paused."""
        return await control.resume_queue(self, name)

    async def queue_stats(self, name: str | None = None) -> dict[str, control.QueueStats]:
        """Counts per state, oldest due age, running per node and jobs no live worker can
        run, by queue name (only queue ``name`` when given)."""
        return await control.queue_stats(self, name)

    async def drain(self, queue: str, timeout: float | None = None) -> None:
        """Wait until ``queue`` has nothing waiting or running; ``TimeoutError`` otherwise."""
        await control.drain(self, queue, timeout)

    async def obliterate_queue(self, name: str, force: bool = False) -> int:
        """Delete every job of queue ``name``; returns how many.

        Raises ``JobStateError`` while jobs of the queue run, unless ``force`` (which
        deletes them too and cancels their runs).
        """
        return await control.obliterate_queue(self, name, force=force)

    async def rename_kind(
        self, old: str, new: str, *, allow_unknown: bool = False, batch_size: int = 1000
    ) -> int:
        """Move waiting jobs (scheduled, available, retryable) of kind ``old`` to ``new``.

        Running jobs are left alone; safe while workers run. Returns the jobs moved.
        """
        report = await control.rename_kind(
            self, old, new, allow_unknown=allow_unknown, batch_size=batch_size
        )
        return report.moved

    # -- workers ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def worker(self, queues: Mapping[str, int] | None = None) -> AsyncIterator[Worker]:
        """Run a worker inside this block; leaving it shuts the worker down gracefully."""
        worker = Worker(self, queues if queues is not None else {DEFAULT_QUEUE: 10})
        # Fail fast with SchemaNotMigrated (or AppNotOpen) instead of a worker whose claims
        # fail and are retried forever.
        await self.db.queues_idle(list(worker.queues), self.registry.kinds())
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(_run_shielded, worker)
                try:
                    yield worker
                finally:
                    with anyio.CancelScope(shield=True):
                        await worker.stop()
        except BaseExceptionGroup as group:
            # The task group is an implementation detail: an error raised in the caller's
            # block (say TimeoutError from app.wait) or by the worker comes out as itself.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def run_worker(self, queues: Mapping[str, int] | None = None) -> None:
        """Run a worker until cancelled (the CLI cancels on SIGTERM/SIGINT), then shut down."""
        async with self.worker(queues) as worker:
            await worker.wait_stopped()


async def _run_shielded(
    worker: Worker, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    # A cancellation from outside (the CLI on SIGTERM, a cancelled task group) must reach the
    # worker as a stop request, not as a cancellation of its jobs and its completer: the
    # host task's ``finally`` calls ``worker.stop()``, which is graceful and bounded by
    # ``shutdown_timeout``.
    with anyio.CancelScope(shield=True):
        await worker.run(task_status=task_status)


# pydantic-core's parser: several times faster than json.loads on the small documents
# (args, meta, errors) a Job is made of, and it runs once per job on hot paths.
_from_json = pydantic_core.from_json


def _job_id(job_id: object) -> int:
    if not isinstance(job_id, int) or isinstance(job_id, bool) or not 1 <= job_id < 2**63:
        raise InvalidOption("job_id", f"must be a positive integer, got {job_id!r}")
    return job_id
