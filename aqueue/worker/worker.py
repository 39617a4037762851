"""A worker process's runtime: its node row, producers per queue, one executor, the
completer, hooks, leader election and persistent workers.

Every long-lived loop is a child of the worker's task groups, started with ``tg.start``
so the worker is ready only when each is. The node row is written before the first claim
(rescue trusts it). Stop order follows the data flow: leadership and persistent workers
are given up at once (another node takes them over while this one drains); producers
stop claiming and settle their jobs (graceful, then cancel); the completer flushes; hooks
get their grace; last, the support services (node heartbeat, notifier supervision,
cancel watcher) are cancelled and the node row deleted.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Mapping

import anyio
from anyio.abc import TaskStatus

from ..cluster import config_digest
from ..db.notifier import Notifier
from ..flow import Queue, resolve_queues
from ..jobs import JobState
from ..threads import job_threads
from .attempt import Attempt
from .chunk_executor import ChunkExecutor
from .completer import Completer
from .executor import Executor
from .hooks import HookRunner
from .leader import Leader
from .maintenance import Maintenance
from .node import Node, NodeConfig
from .producer import Producer
from .runtime import HasRuntime, Runtime
from .scheduler import PeriodicScheduler
from .supervisor import PersistentSupervisor

__all__ = ["Worker"]

#: How many after_process hooks run at once; the rest wait their turn.
HOOK_CONCURRENCY = 100


class Worker:
    """Made by ``app.worker(...)`` / ``app.run_worker(...)``; ``await worker.stop()`` ends it."""

    def __init__(self, source: Runtime | HasRuntime, queues: Mapping[str, int | Queue]) -> None:
        runtime = source if isinstance(source, Runtime) else source.runtime
        self._runtime = runtime
        registry = runtime.registry
        self.specs = resolve_queues(
            queues, allow_empty=bool(registry.persistent or registry.periodic)
        )
        #: Each queue's local concurrency.
        self.queues = {name: spec.concurrency for name, spec in self.specs.items()}
        self.node_id = uuid.uuid4().hex
        settings = runtime.settings
        self._logger = runtime.logger
        config = registry.node_config()
        # The cluster-wide limits this node declares, compared across nodes (drift).
        config["queues"] = {
            name: spec.queue.limits() for name, spec in self.specs.items() if spec.declared
        }
        self.node = Node(
            runtime.db,
            self.node_id,
            NodeConfig(dict(self.queues), registry.kinds(), config, config_digest(config)),
            heartbeat_interval=settings.heartbeat_interval,
            ttl=settings.node_ttl,
            logger=self._logger,
            dedicated=settings.dedicated_heartbeat,
        )
        self.maintenance = Maintenance(runtime.db, settings, self._logger)
        self.periodic = PeriodicScheduler(runtime, registry.periodic)
        self.leader: Leader | None = None
        self.persistent: list[PersistentSupervisor] = []
        self._coordination = anyio.CancelScope()
        self._completer = Completer(
            runtime.db,
            batch_size=settings.completer_batch,
            on_committed=self._committed,
            on_written=self._written,
            logger=self._logger,
            columns_wanted=registry.has_hooks,
        )
        self._executor = Executor(runtime, self._completer.submit)
        self._hooks = HookRunner(
            registry,
            concurrency=HOOK_CONCURRENCY,
            grace=settings.shutdown_timeout,
            logger=self._logger,
        )
        chunks = None
        if any(definition.chunk is not None for definition in registry.definitions()):
            chunks = ChunkExecutor(runtime, self._completer.submit)
        self.producers = {
            queue: Producer(
                queue,
                spec.concurrency,
                db=runtime.db,
                kinds=registry.kinds,
                claim_columns=registry.claim_columns,
                node_id=self.node_id,
                alive=self.node.alive,
                executor=self._executor,
                poll_interval=settings.poll_interval,
                shutdown_timeout=settings.shutdown_timeout,
                logger=self._logger,
                outstanding=self._completer.holding,
                sync_ack=spec.queue.ack == "sync",
                chunks=chunks,
            )
            for queue, spec in self.specs.items()
        }
        #: Outcomes committed so far, by state (``aqueue worker``'s throughput summary).
        self.outcomes: collections.Counter[JobState] = collections.Counter()
        self._stopped = anyio.Event()
        self._stop_event = anyio.Event()
        self._stop_requested = False
        self._started = False

    @property
    def running_jobs(self) -> int:
        return sum(len(p.running) for p in self.producers.values())

    def request_stop(self) -> None:
        """Begin shutdown without waiting for it (safe from any task of this loop)."""
        if not self._stop_requested:
            self._stop_requested = True
            self._coordination.cancel()
            self._stop_event.set()
            for producer in self.producers.values():
                producer.stop()

    async def stop(self) -> None:
        """Stop claiming, let running jobs finish (``shutdown_timeout``), flush; idempotent."""
        self.request_stop()
        if self._started:
            await self._stopped.wait()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if self._started:
            raise RuntimeError("a Worker runs once; create a new one with app.worker(...)")
        self._started = True
        # The worker's own bound on threads for plain `def` jobs, inherited by its tasks.
        with job_threads(self._runtime.settings.job_threads):
            await self._run(task_status)

    async def _run(self, task_status: TaskStatus[None]) -> None:
        notifier = await self._runtime.notifier()
        await self._store_limits()
        try:
            async with anyio.create_task_group() as services:
                await services.start(notifier.supervise)
                await services.start(self.node.run)
                await services.start(self._coordinate, notifier)
                services.start_soon(self._watch_cancels)
                services.start_soon(self._watch_limits)
                async with anyio.create_task_group() as tail:
                    await tail.start(self._hooks.run)
                    await tail.start(self._complete_then_close_hooks)
                    with notifier.cancel_subscription(self._cancel_job):
                        async with anyio.create_task_group() as producers:
                            for producer in self.producers.values():
                                producers.start_soon(self._run_producer, producer, notifier)
                            if not self.producers:
                                # Nothing claims, but the block must last until stop().
                                producers.start_soon(self._stop_event.wait)
                            self._logger.info(
                                "aqueue: worker %s started: queues %s",
                                self.node_id[:8],
                                self.queues,
                            )
                            task_status.started()
                    self._completer.close()
                services.cancel_scope.cancel()
        finally:
            self._stopped.set()
            self._logger.info("aqueue: worker %s stopped", self.node_id[:8])

    async def _coordinate(
        self, notifier: Notifier, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        runtime = self._runtime
        self.leader = Leader(
            runtime.db,
            notifier,
            self.node_id,
            ttl=runtime.settings.leader_ttl,
            duties=[self.maintenance.run, self.periodic.run],
            logger=self._logger,
        )
        self.persistent = [
            PersistentSupervisor(runtime, notifier, definition, replica, self.node_id)
            for definition in runtime.registry.persistent.values()
            for replica in range(definition.replicas)
        ]
        started = False
        with self._coordination:
            async with anyio.create_task_group() as tg:
                await tg.start(self.leader.run)
                for supervisor in self.persistent:
                    await tg.start(supervisor.run)
                task_status.started()
                started = True
        if not started:  # stopped before it was up: still report ready, nothing runs
            task_status.started()

    async def _complete_then_close_hooks(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        # Hooks close only after the last outcome is written, so its hooks still run.
        await self._completer.run(task_status=task_status)
        self._hooks.close()

    async def _run_producer(self, producer: Producer, notifier: Notifier) -> None:
        with notifier.queue_subscription(producer.queue, producer.wake):
            await producer.run()

    def _cancel_job(self, job_id: int) -> None:
        for producer in self.producers.values():
            if producer.cancel_job(job_id):
                return

    async def _store_limits(self) -> None:
        """Store the limits this node declares (the last node to start decides what is in
        force), then learn which of its queues are limited."""
        db = self._runtime.db
        for name, spec in self.specs.items():
            if spec.declared:
                await db.set_queue_limits(name, spec.queue.limits(), self.node_id)
        await self._refresh_limits()

    async def _refresh_limits(self) -> None:
        if not self.producers:
            return
        limits = await self._runtime.db.queue_limits(list(self.producers))
        for name, producer in self.producers.items():
            found = limits.get(name)
            global_limit = found[0] if found else None
            rated = found is not None and found[2] is not None
            if (producer.limited, producer.global_limit, producer.rated) != (
                found is not None,
                global_limit,
                rated,
            ):
                producer.set_limits(found is not None, global_limit, rated=rated)
            # Chunk lists of one key go once they hold what the partition limit lets run.
            producer.partition_limit = found[1] if found else None

    async def _watch_cancels(self) -> None:
        # Covers cancel notifications missed while the LISTEN connection was down.
        while True:
            await anyio.sleep(self._runtime.settings.poll_interval * 5)
            running = [
                job_id for p in self.producers.values() for job_id in (*p.running, *p.waiting)
            ]
            if not running:
                continue
            try:
                flagged = await self._runtime.db.cancel_requested(running)
            except Exception as exc:  # the next round checks again
                self._logger.warning("aqueue: cancel check failed: %s", exc)
                continue
            for job_id in flagged:
                self._cancel_job(job_id)

    async def _watch_limits(self) -> None:
        # Another node may store other limits for a queue; a plain claim of a queue that
        # became limited claims nothing (so never too much) until this refresh sees it.
        while True:
            await anyio.sleep(self._runtime.settings.poll_interval)
            try:
                await self._refresh_limits()
            except Exception as exc:  # the next round checks again
                self._logger.warning("aqueue: reading queue limits failed: %s", exc)

    def _written(self, attempts: list[Attempt]) -> None:
        # The completer is done with these outcomes: a limited queue's places they held
        # are free (in the database too, unless the write failed for good, and then the
        # jobs are the rescue's).
        by_queue: dict[str, list[Attempt]] = {}
        for attempt in attempts:
            by_queue.setdefault(attempt.queue, []).append(attempt)
        for queue, done in by_queue.items():
            producer = self.producers.get(queue)
            if producer is not None and producer.limited:
                producer.released(done)

    def _committed(self, attempts: list[Attempt]) -> None:
        poll = self._runtime.settings.poll_interval
        for attempt in attempts:
            self.outcomes[attempt.state] += 1
            producer = self.producers.get(attempt.queue)
            if producer is None:
                continue
            if attempt.state in (JobState.SCHEDULED, JobState.RETRYABLE, JobState.AVAILABLE):
                if (attempt.delay or 0.0) < poll:
                    producer.wake_at(attempt.delay or 0.0)
            elif producer.limited:
                producer.wake()  # a place of a limited queue is free again
        self._hooks.committed(attempts)
