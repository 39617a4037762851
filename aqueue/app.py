"""``aqueue.App``: the façade. It holds the settings, the registry, the database and the
enqueue path, and every call delegates below: enqueue to ``enqueue.py``, job admin to
``admin.py``, queue and kind control to ``control.py``, workers to ``worker/``.

Nothing below this module imports it (DESIGN §6); the two contexts user code receives
(``context.py``) name it as a type only. Workers get a ``Runtime`` instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, overload

import anyio
from anyio.abc import TaskStatus
from typing_extensions import Unpack

from .admin import JobAdmin
from .bounds import APP_CLOSE_TIMEOUT
from .chunk import Chunk
from .cluster import ClusterStatus, LeaseInfo, NodeInfo, find_drift
from .config import SettingsOptions, build_settings, resolve_database_url, resolve_listen_url
from .connections import Connections
from .context import JobContext, PersistentContext
from .control import Control, QueueStats
from .db.database import Database
from .db.notifier import Notifier
from .definition import (
    ChunkDecorator,
    ConfiguredJob,
    JobDecorator,
    JobDefinition,
    JobRequest,
    PartitionBy,
)
from .enqueue import DEFAULT_QUEUE, Enqueuer
from .errors import ConfigurationError
from .extend import Extensions
from .flow import Queue, choose_queues, resolve_queues
from .jobs import Job, JobState
from .options import EnqueueOptions, JobOptions, Options
from .progress import ProgressReporter
from .registry import Registry
from .schedule import PeriodicEntry
from .steps import BatchInfo, StepRecorder
from .validate import validate_name
from .worker.inline import InlineRunner
from .worker.runtime import Runtime
from .worker.worker import Worker
from .workflow_calls import WorkflowCalls

__all__ = ["App"]

P = ParamSpec("P")
R = TypeVar("R")


class App(Extensions, WorkflowCalls, Connections):
    """One aqueue application: jobs registered on it, a pool to one database schema.

    ``url`` is a ``postgresql://`` URL; ``None`` reads ``AQUEUE_DATABASE_URL``. Settings
    (all keyword-only, validated here; ``config.Settings`` holds their defaults and
    bounds) are documented in docs/reference/configuration.md.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        schema: str = "aqueue",
        queues: Mapping[str, int | Queue] | None = None,
        listen_url: str | None = None,
        logger: logging.Logger | None = None,
        testing: Literal["inline"] | None = None,
        **settings: Unpack[SettingsOptions],
    ) -> None:
        if testing not in (None, "inline"):
            raise ConfigurationError(f"testing: must be 'inline' or None, got {testing!r}")
        self.testing = testing  # "inline": jobs run at enqueue, no database (worker/inline.py)
        self.url = resolve_database_url(url, required=testing is None)
        # Checked now, so a bad spec fails at construction; used by every worker.
        self.queues: dict[str, int | Queue] | None = None
        if queues is not None:
            resolve_queues(queues)
            self.queues = dict(queues)
        #: Where the session-scoped connections go (LISTEN, the heartbeat): ``url`` unless
        #: ``url`` is a transaction pooler, see docs/howto/deploying.md.
        self.listen_url = resolve_listen_url(listen_url, self.url)
        self.settings = build_settings(schema, settings)
        self.logger = logger or logging.getLogger("aqueue")
        self.registry = Registry()
        self.db = Database(
            self.url,
            schema,
            pool_size=self.settings.pool_size,
            connect_timeout=self.settings.connect_timeout,
            logger=self.logger,
            listen_url=None if listen_url is None else self.listen_url,
            worker_pool_size=self.settings.worker_pool_size,
            pooler=self.settings.pooler,
        )
        self._enqueuer = Enqueuer(self.db, self.registry)
        self._jobs = JobAdmin(self.db, self.notifier, poll_interval=self.settings.poll_interval)
        self.control = Control(
            self.db, self.registry, poll_interval=self.settings.poll_interval, logger=self.logger
        )
        self._notifier: Notifier | None = None
        self._notifier_lock = anyio.Lock()
        self.runtime = Runtime(
            db=self.db,
            registry=self.registry,
            settings=self.settings,
            logger=self.logger,
            enqueuer=self._enqueuer,
            notifier=self.notifier,
            job_context=self._job_context,
            persistent_context=self._persistent_context,
        )
        #: Runs jobs with no database: every enqueue in inline mode, and perform_job.
        self.inline = InlineRunner(self.runtime, partial(JobContext, app=self, logger=self.logger))
        self._enqueuer.runner, self._enqueuer.inline = self.inline, testing == "inline"
        self._reads: JobAdmin | InlineRunner = self.inline if testing else self._jobs

    @property
    def schema(self) -> str:
        return self.db.schema

    def __repr__(self) -> str:
        return f"<aqueue.App schema={self.schema!r} jobs={len(self.registry.definitions())}>"

    async def _job_context(self, job: Job) -> JobContext:
        reporter = ProgressReporter(self.db, job.id, job.attempt)
        batch = None
        if job.batch_id is not None and job.step == "callback":
            batch = BatchInfo(job.batch_id, await self.db.batch_counts(job.batch_id))
        return JobContext(
            job=job,
            app=self,
            logger=self.logger,
            reporter=reporter,
            steps=StepRecorder(self.db, job),
            batch=batch,
        )

    def _persistent_context(
        self, *, name: str, replica: int, node_id: str, term: int, lease_lost: anyio.Event
    ) -> PersistentContext:
        return PersistentContext(
            name=name,
            replica=replica,
            node_id=node_id,
            term=term,
            logger=self.logger,
            lease_lost=lease_lost,
            app=self,
        )

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
        chunk: Chunk,
        name: str | None = None,
        aliases: Sequence[str] = (),
        partition_by: PartitionBy | None = None,
        **defaults: Unpack[JobOptions],
    ) -> ChunkDecorator: ...

    @overload
    def job(
        self,
        *,
        name: str | None = None,
        aliases: Sequence[str] = (),
        partition_by: PartitionBy | None = None,
        **defaults: Unpack[JobOptions],
    ) -> JobDecorator: ...

    def job(
        self,
        fn: Callable[..., Awaitable[Any]] | None = None,
        *,
        name: str | None = None,
        aliases: Sequence[str] = (),
        partition_by: PartitionBy | None = None,
        chunk: Chunk | None = None,
        **defaults: Unpack[JobOptions],
    ) -> Any:
        """Register an ``async def`` as a job: ``@app.job`` or ``@app.job(queue="mail", ...)``.

        The options (``aqueue.options.JobOptions``) are the job's defaults; each enqueue
        can override them with ``.options(...)``; ``chunk=``: see docs/howto/chunks.md."""
        unknown = defaults.keys() - JobOptions.__optional_keys__
        if unknown:
            raise TypeError(
                f"job() got unexpected option(s) {', '.join(sorted(unknown))}; job defaults "
                f"are name, aliases, {', '.join(sorted(JobOptions.__optional_keys__))}"
            )
        job_defaults = Options.create(**defaults)
        if isinstance(aliases, str):
            raise ConfigurationError("aliases: must be a list of kind names, not a string")
        alias_tuple = tuple(validate_name("aliases", alias) for alias in aliases)

        def register(func: Callable[..., Awaitable[Any]]) -> JobDefinition[Any, Any]:
            kind = validate_name("name", name if name is not None else func.__name__)
            definition: JobDefinition[Any, Any] = JobDefinition(
                self._enqueuer,
                func,
                kind=kind,
                aliases=alias_tuple,
                defaults=job_defaults,
                partition_by=partition_by,
                chunk=chunk,
            )
            self.registry.add(definition)
            return definition

        return register(fn) if fn is not None else register

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
        if (
            not isinstance(job, JobDefinition | ConfiguredJob)
            or self.registry.get(job.definition.kind) is not job.definition
        ):
            raise ConfigurationError(
                f"periodic: expected a job registered on this App with @app.job, got {job!r}"
            )
        entry = PeriodicEntry.create(
            job, cron=cron, kwargs=kwargs, name=name, run_on_start=run_on_start, timezone=timezone
        )
        self.registry.add_periodic(entry)

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the connection pool (``async with app`` does this); an inline App has none."""
        if self.testing != "inline":
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
        # Shielded, so a cancelled caller still closes its connections; bounded, so a
        # server that stopped answering cannot hold the caller forever.
        with anyio.CancelScope(shield=True), anyio.move_on_after(APP_CLOSE_TIMEOUT) as scope:
            await self.close()
        if scope.cancelled_caught:
            self.logger.warning(
                "aqueue: closing the pool took over %ss; abandoned", APP_CLOSE_TIMEOUT
            )

    async def migrate(self) -> list[str]:
        """Create or upgrade aqueue's tables; returns the migrations applied now."""
        self._no_database("app.migrate()")
        return await self.db.migrate()

    async def notifier(self) -> Notifier:
        """This App's LISTEN connection, opened on first use."""
        async with self._notifier_lock:
            if self._notifier is None:
                self.db.pool  # noqa: B018 - raises AppNotOpen outside 'async with app'
                listen_url = self.db.require_session("LISTEN (workers, app.wait)")
                self._notifier = Notifier(
                    listen_url,
                    self.db.channel,
                    connect_timeout=self.settings.connect_timeout,
                    logger=self.logger,
                )
            notifier = self._notifier
        await notifier.start()
        return notifier

    # -- enqueue (enqueue.py) ---------------------------------------------------------------

    async def enqueue(
        self,
        kind: str,
        args: Mapping[str, Any] | None = None,
        *,
        allow_unknown: bool = False,
        **options: Unpack[EnqueueOptions],
    ) -> Job:
        """Enqueue by kind name. Unknown kinds raise ``UnknownJobKind`` unless
        ``allow_unknown=True`` (then ``args`` is stored unvalidated, for a worker that knows
        it). The options are those of ``.options(...)``."""
        request = self.build(
            kind, args, allow_unknown=allow_unknown, options=Options.create(**options)
        )
        return await self._enqueuer.enqueue_request(request)

    def build(
        self,
        kind: str,
        args: Mapping[str, Any] | None = None,
        *,
        allow_unknown: bool = False,
        options: Options | None = None,
    ) -> JobRequest:
        """A ``JobRequest`` for ``enqueue_many``, by kind name."""
        return self._enqueuer.build(kind, args, allow_unknown=allow_unknown, options=options)

    async def enqueue_request(self, request: JobRequest) -> Job:
        return await self._enqueuer.enqueue_request(request)

    async def enqueue_many(self, requests: Sequence[JobRequest], *, conn: Any = None) -> list[Job]:
        """Insert many jobs in one statement (one round trip); returns them in order."""
        return await self._enqueuer.enqueue_many(requests, conn=conn)

    # -- job admin (admin.py) ---------------------------------------------------------------

    async def get_job(self, job_id: int) -> Job | None:
        return await self._reads.get(job_id)

    async def list_jobs(
        self,
        *,
        state: JobState | str | None = None,
        queue: str | None = None,
        kind: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs matching every filter given, oldest first."""
        return await self._reads.list(state=state, queue=queue, kind=kind, limit=limit)

    async def cancel(self, job_id: int) -> Job | None:
        """Cancel a job: a waiting one at once, a running one at its next await (any node).

        Returns the job as it is now (a running job shows ``running`` until its node stops
        it), or None when there is no such job. Final jobs are left as they are.
        """
        return await self._jobs.cancel(job_id)

    async def retry(self, job_id: int) -> Job:
        """Make a scheduled, retryable, discarded or cancelled job available now.

        A job out of attempts gets one more. Raises ``JobStateError`` for other states
        and ``JobNotFound`` (a ``LookupError``) when there is no such job.
        """
        return await self._jobs.retry(job_id)

    async def delete(self, job_id: int) -> bool:
        """Delete a job that is not running. True if deleted, False if there was none."""
        return await self._jobs.delete(job_id)

    async def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """Wait until the job is completed, cancelled or discarded; ``TimeoutError`` otherwise."""
        return await self._reads.wait(job_id, timeout)

    # -- cluster ----------------------------------------------------------------------------

    async def cluster_status(self) -> ClusterStatus:
        """Worker nodes (alive or recently dead), leases (``.leader``), configuration drift."""
        nodes = [NodeInfo.from_row(row) for row in await self.db.list_nodes()]
        leases = [LeaseInfo.from_row(row) for row in await self.db.list_leases()]
        return ClusterStatus(nodes=nodes, leases=leases, drift=find_drift(nodes))

    # -- queue and kind control (control.py) ------------------------------------------------

    async def pause_queue(self, name: str, *, allow_unknown: bool = False) -> bool:
        """Stop claims from queue ``name`` on every node (persisted, survives restarts).

        Returns False if it was paused already. ``UnknownQueue`` for a queue no job, setting
        or live worker names, unless ``allow_unknown`` (to pause a queue before first use).
        """
        return await self.control.pause_queue(name, allow_unknown=allow_unknown)

    async def resume_queue(self, name: str) -> bool:
        """Let queue ``name`` be claimed again and wake its workers; False if not paused."""
        return await self.control.resume_queue(name)

    async def queue_stats(self, name: str | None = None) -> dict[str, QueueStats]:
        """Counts per state, oldest due age, running per node and jobs no live worker can
        run, by queue name (only queue ``name`` when given)."""
        return await self.control.queue_stats(name)

    async def drain(self, queue: str, timeout: float | None = None) -> None:
        """Wait until ``queue`` has nothing waiting or running; ``TimeoutError`` otherwise."""
        await self.control.drain(queue, timeout)

    async def obliterate_queue(self, name: str, force: bool = False) -> int:
        """Delete every job of queue ``name``; returns how many.

        Raises ``JobStateError`` while jobs of the queue run, unless ``force`` (which
        deletes them too and cancels their runs).
        """
        return await self.control.obliterate_queue(name, force=force)

    async def rename_kind(
        self, old: str, new: str, *, allow_unknown: bool = False, batch_size: int = 1000
    ) -> int:
        """Move waiting jobs (scheduled, available, retryable) of kind ``old`` to ``new``.

        Running jobs are left alone; safe while workers run. Returns the jobs moved.
        """
        report = await self.control.rename_kind(
            old, new, allow_unknown=allow_unknown, batch_size=batch_size
        )
        return report.moved

    # -- workers ----------------------------------------------------------------------------

    def worker_queues(
        self,
        queues: Mapping[str, int | Queue] | None = None,
        *,
        concurrency: Mapping[str, int] | None = None,
    ) -> dict[str, int | Queue]:
        """The queues a worker of this App runs: ``queues`` when given, else
        ``App(queues=...)``, else every queue a registered job names (concurrency 10).
        ``concurrency`` overrides only the local concurrency of a queue (``-q api=20``),
        keeping its limits."""
        named = {d.defaults.queue or DEFAULT_QUEUE for d in self.registry.definitions()}
        return choose_queues(queues, self.queues, named, concurrency)

    @contextlib.asynccontextmanager
    async def worker(
        self, queues: Mapping[str, int | Queue] | None = None
    ) -> AsyncIterator[Worker]:
        """Run a worker inside this block; leaving it shuts the worker down gracefully.

        ``queues`` defaults to ``worker_queues()``: ``App(queues=...)``, else every queue a
        registered job names."""
        self._no_database("a worker")
        worker = Worker(self.runtime, self.worker_queues(queues))
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

    async def run_worker(self, queues: Mapping[str, int | Queue] | None = None) -> None:
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
