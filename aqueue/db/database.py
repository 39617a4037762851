"""Every statement aqueue runs, as typed methods over the connection layer.

Rows leave this module as asyncpg records (read-only mappings) or plain values. The SQL is
in ``sql/*.sql``, one file per table or concern; ``queries.py`` loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import asyncpg

from ..errors import DatabaseError, JobStateError
from .connector import Row
from .migrate import migrate
from .params import InsertColumns, Inserted, Outcomes
from .queries import Statement
from .workflow_store import WorkflowStore

__all__ = ["ClaimColumns", "Database", "Row"]

#: What a claim returns of each job: ``full``, every column a ``Job`` needs (a job takes
#: its JobContext, or hooks or middleware are registered); ``lean``, what running it needs
#: and its due and start times (for observers); ``bare``, what running it needs.
ClaimColumns = Literal["full", "lean", "bare"]


class Database(WorkflowStore):
    """One App's pools and statements. What a running worker does for itself (claims,
    outcomes, heartbeats, leases, maintenance) goes to ``worker_pool``, everything else
    (enqueue, admin, reads) to the App's ``pool``; see ``connector.py``."""

    # -- migrations -------------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        async with self._errors(), self.pool.acquire() as conn:
            return await migrate(conn, self.q)

    # -- enqueue ----------------------------------------------------------------------------

    async def insert_jobs(self, columns: InsertColumns, *, conn: Any = None) -> Inserted:
        """Insert jobs, then wake the workers of their queues.

        On the caller's connection both statements run in the caller's transaction (the
        wake-up is delivered at its commit). On the pool the insert commits first and the
        NOTIFY follows in its own transaction, which is cheap: it writes no WAL.
        """
        statement = self.q.insert_jobs
        [row] = await self._fetch(statement, *statement.bind(columns), conn=conn)
        inserted = Inserted(
            list(row["ids"]), list(row["states"]), list(row["scheduled_at"]), row["created_at"]
        )
        if len(inserted.ids) != len(columns):
            raise DatabaseError(f"inserted {len(inserted.ids)} of {len(columns)} jobs")
        due = {
            q
            for q, state in zip(columns.queue, inserted.states, strict=True)
            if state == "available"
        }
        await self._notify(due, conn)
        return inserted

    async def insert_unique_jobs(self, columns: InsertColumns, *, conn: Any = None) -> list[Row]:
        """``insert_jobs`` for a batch holding unique jobs, one row out per row in: the
        whole job when it was inserted, or a NULL ``id`` and the ``wanted_key`` another job
        holds."""
        statement = self.q.insert_unique_jobs
        inserted = await self._fetch(statement, *statement.bind(columns), conn=conn)
        due = {columns.queue_of(i) for i, row in enumerate(inserted) if row["state"] == "available"}
        await self._notify(due, conn)
        return inserted

    async def _notify(self, queues: set[str], conn: Any) -> None:
        if queues:
            await self._fetch(self.q.notify_available, list(queues), conn=conn)

    # -- worker -----------------------------------------------------------------------------

    async def claim(
        self,
        queue: str,
        limit: int,
        kinds: Sequence[str],
        node_id: str,
        *,
        columns: ClaimColumns,
        limited: bool = False,
    ) -> list[Row]:
        """Claim up to ``limit`` due jobs, with ``columns`` of each (see ``ClaimColumns``);
        ``limited``: the queue has cluster-wide limits (the claim takes its lock)."""
        q = self.q
        if columns == "full":
            statement = q.claim_limited if limited else q.claim
        elif columns == "lean":
            statement = q.claim_limited_lean if limited else q.claim_lean
        else:
            statement = q.claim_limited_bare if limited else q.claim_bare
        args = statement.args(queue=queue, limit=limit, kinds=kinds, node_id=node_id)
        return await self._fetch(statement, *args, conn=self.worker_pool)

    async def adopt_claims(self, queue: str, node_id: str, held: Sequence[int]) -> list[Row]:
        """Jobs running under ``node_id`` in ``queue`` other than ``held`` (full rows)."""
        return await self._fetch(
            self.q.adopt_claims, queue, node_id, list(held), conn=self.worker_pool
        )

    async def record_outcomes(self, outcomes: Outcomes, *, columns: bool) -> dict[int, Row | None]:
        """Write outcomes; returns, by job id, the rows written: with ``columns``, what the
        write changed (finalized_at, scheduled_at, attempt), else None."""
        if columns:
            statement = self.q.record_outcomes
            rows = await self._fetch(statement, *statement.bind(outcomes), conn=self.worker_pool)
            return {row["id"]: row for row in rows}
        statement = self.q.record_outcomes_lean
        [row] = await self._fetch(statement, *statement.bind(outcomes), conn=self.worker_pool)
        return dict.fromkeys(row["ids"])

    async def outcomes_in_place(
        self, ids: Sequence[int], attempts: Sequence[int], states: Sequence[str]
    ) -> list[Row]:
        """Of these outcomes, those the rows already show as written."""
        statement = self.q.outcomes_in_place
        args = statement.args(id=list(ids), attempt=list(attempts), state=list(states))
        return await self._fetch(statement, *args, conn=self.worker_pool)

    async def record_progress(
        self, job_id: int, attempt: int, progress: float, note: str | None
    ) -> bool:
        """Record a running attempt's progress; False when the job is no longer running
        that attempt (finished, rescued, claimed again), and nothing was written."""
        statement = self.q.record_progress
        args = statement.args(id=job_id, attempt=attempt, progress=progress, note=note)
        status = await self._execute(statement, *args)
        return status.rsplit(" ", 1)[-1] != "0"

    async def cancel_requested(self, job_ids: Sequence[int]) -> list[int]:
        rows = await self._fetch(self.q.cancel_requested, list(job_ids), conn=self.worker_pool)
        return [row["id"] for row in rows]

    # -- admin ------------------------------------------------------------------------------

    async def get_job(self, job_id: int) -> Row | None:
        return await self._fetchrow(self.q.get_job, job_id)

    async def list_jobs(
        self, state: str | None, queue: str | None, kind: str | None, limit: int
    ) -> list[Row]:
        statement = self.q.list_jobs
        args = statement.args(state=state, queue=queue, kind=kind, limit=limit)
        return await self._fetch(statement, *args)

    async def _under_workflow_lock(
        self, statement: Statement, job_id: int, *args: Any
    ) -> Row | None:
        """``statement`` on job ``job_id`` after its workflow's (or batch's) transaction
        lock, in one transaction. Cancelling a pending step settles its dependents, like
        an outcome does, so it locks in the same order (see migration 0007); a retry
        takes it so that retention cannot delete the job it brings back."""

        async def attempt() -> Row | None:
            async with self.transaction() as tx:
                await self._fetch(self.q.lock_job_workflow, job_id, conn=tx)
                return await self._fetchrow(statement, job_id, *args, conn=tx)

        return await self.retrying_deadlocks(attempt)

    async def cancel_job(self, job_id: int, reason: str) -> Row | None:
        return await self._under_workflow_lock(self.q.cancel_job, job_id, reason)

    async def retry_job(self, job_id: int) -> Row | None:
        try:
            return await self._under_workflow_lock(self.q.retry_job, job_id)
        except DatabaseError as exc:
            if not isinstance(exc.__cause__, asyncpg.exceptions.UniqueViolationError):
                raise
            # A unique job would take its key back while another job holds it.
            holder = await self.retry_unique_conflict(job_id)
            raise JobStateError(
                f"job {job_id} is unique and job {holder} now holds its key: "
                "retry that one, or delete it first"
            ) from None

    async def queues_idle(self, queues: Sequence[str], kinds: Sequence[str]) -> bool:
        row = await self._fetchrow(self.q.queues_idle, list(queues), list(kinds))
        return bool(row and row["idle"])

    async def drop_schema(self) -> None:
        await self._execute(self.q.drop_schema)

    async def delete_job(self, job_id: int) -> Row | None:
        return await self._fetchrow(self.q.delete_job, job_id)

    # -- cluster ----------------------------------------------------------------------------

    async def upsert_node(
        self,
        node_id: str,
        host: str,
        pid: int,
        ttl: float,
        queues_json: str,
        kinds: Sequence[str],
        config_json: str,
        digest: str,
        conn: Any = None,
    ) -> bool:
        """Register or heartbeat a node; True when its row was missing or had expired."""
        statement = self.q.upsert_node
        args = statement.args(
            id=node_id,
            host=host,
            pid=pid,
            ttl=ttl,
            queues=queues_json,
            kinds=list(kinds),
            config=config_json,
            digest=digest,
        )
        rows = await self._fetch(statement, *args, conn=conn or self.worker_pool)
        return bool(rows and rows[0]["lapsed"])

    async def delete_node(self, node_id: str) -> None:
        await self._fetch(self.q.delete_node, node_id, conn=self.worker_pool)

    async def list_nodes(self) -> list[Row]:
        return await self._fetch(self.q.list_nodes)

    async def acquire_lease(
        self,
        name: str,
        holder: str,
        ttl: float,
        info_json: str | None = None,
        renewing: int | None = None,
    ) -> int | None:
        """Take or renew (``renewing`` = its term) a lease; its term, or None when another
        holder has it."""
        statement = self.q.acquire_lease
        args = statement.args(name=name, holder=holder, ttl=ttl, info=info_json, renewing=renewing)
        row = await self._fetchrow(statement, *args, conn=self.worker_pool)
        return None if row is None else int(row["term"])

    async def lease_free(self, name: str) -> bool:
        row = await self._fetchrow(self.q.lease_free, name, conn=self.worker_pool)
        return bool(row and row["free"])

    async def release_lease(self, name: str, holder: str, info_json: str | None = None) -> bool:
        statement = self.q.release_lease
        row = await self._fetchrow(
            statement,
            *statement.args(name=name, holder=holder, info=info_json),
            conn=self.worker_pool,
        )
        return bool(row and row["released"])

    async def list_leases(self) -> list[Row]:
        return await self._fetch(self.q.list_leases)

    async def rescue_orphans(self, limit: int) -> list[Row]:
        return await self._fetch(self.q.rescue_orphans, limit, conn=self.worker_pool)

    async def delete_expired_nodes(self, older_than: float) -> None:
        await self._fetch(self.q.delete_expired_nodes, older_than, conn=self.worker_pool)

    async def prune_jobs(self, older_than: float, limit: int) -> int:
        status = await self._execute(self.q.prune_jobs, older_than, limit, conn=self.worker_pool)
        return int(status.rsplit(" ", 1)[-1])

    async def prune_periodic_runs(self, older_than: float) -> None:
        await self._fetch(self.q.prune_periodic_runs, older_than, conn=self.worker_pool)

    async def last_periodic_slots(self, names: Sequence[str]) -> dict[str, datetime]:
        rows = await self._fetch(self.q.last_periodic_slots, list(names), conn=self.worker_pool)
        return {row["name"]: row["slot"] for row in rows}

    async def claim_periodic_slot(self, name: str, slot: datetime, conn: Any) -> bool:
        return bool(await self._fetch(self.q.claim_periodic_slot, name, slot, conn=conn))

    async def set_periodic_job(self, name: str, slot: datetime, job_id: int, conn: Any) -> None:
        await self._fetch(self.q.set_periodic_job, name, slot, job_id, conn=conn)

    # -- unique jobs, renames, queues -------------------------------------------------------

    async def unique_holders(self, keys: Sequence[str], conn: Any = None) -> dict[str, Row]:
        """The jobs holding these unique keys now, by key."""
        rows = await self._fetch(self.q.unique_holders, list(keys), conn=conn)
        return {row["unique_key"]: row for row in rows}

    async def retry_unique_conflict(self, job_id: int) -> int | None:
        """The job holding the unique key that job ``job_id`` would take back on a retry."""
        row = await self._fetchrow(self.q.retry_unique_conflict, job_id)
        return row["id"] if row is not None else None

    async def rename_kind_batch(self, old: str, new: str, after_id: int, limit: int) -> Row:
        statement = self.q.rename_kind_batch
        args = statement.args(old=old, new=new, after_id=after_id, limit=limit)
        row = await self._fetchrow(statement, *args)
        assert row is not None  # an aggregate row always comes back
        return row

    async def kind_state_counts(self, kind: str) -> dict[str, int]:
        rows = await self._fetch(self.q.kind_state_counts, kind)
        return {row["state"]: row["jobs"] for row in rows}

    async def kind_known_to_live_node(self, kind: str) -> bool:
        row = await self._fetchrow(self.q.kind_known_to_live_node, kind)
        return bool(row and row["known"])

    async def queue_known(self, queue: str) -> bool:
        row = await self._fetchrow(self.q.queue_known, queue)
        return bool(row and row["known"])

    async def pause_queue(self, queue: str) -> bool:
        row = await self._fetchrow(self.q.pause_queue, queue)
        return bool(row and row["changed"])

    async def resume_queue(self, queue: str) -> bool:
        row = await self._fetchrow(self.q.resume_queue, queue)
        return bool(row and row["changed"])

    async def queue_unfinished(self, queue: str) -> int:
        row = await self._fetchrow(self.q.queue_unfinished, queue)
        return int(row["jobs"]) if row is not None else 0

    async def queue_running(self, queue: str) -> int:
        row = await self._fetchrow(self.q.queue_running, queue)
        return int(row["jobs"]) if row is not None else 0

    async def obliterate_batch(self, queue: str, force: bool, limit: int) -> Row:
        statement = self.q.obliterate_batch
        row = await self._fetchrow(
            statement, *statement.args(queue=queue, force=force, limit=limit)
        )
        assert row is not None  # an aggregate row always comes back
        return row

    async def forget_queue(self, queue: str) -> None:
        await self._execute(self.q.forget_queue, queue)

    async def set_queue_limits(self, name: str, limits: dict[str, Any], node_id: str) -> None:
        """Store ``limits`` (``aqueue.Queue.limits()``) as the ones in force for ``name``."""
        statement = self.q.set_queue_limits
        await self._fetch(statement, *statement.args(name=name, node_id=node_id, **limits))

    async def queue_limits(
        self, names: Sequence[str]
    ) -> dict[str, tuple[int | None, int | None, int | None]]:
        """The limits in force for those of these queues that have any: name ->
        (global_limit, partition_limit, rate_limit)."""
        rows = await self._fetch(self.q.queue_limits, list(names), conn=self.worker_pool)
        return {
            row["name"]: (row["global_limit"], row["partition_limit"], row["rate_limit"])
            for row in rows
            if row["global_limit"] is not None
            or row["partition_limit"] is not None
            or row["rate_limit"] is not None
        }

    async def rate_wait(self, queue: str, kinds: Sequence[str]) -> float | None:
        """Seconds until the rate of ``queue`` has a place for its due jobs (None: the
        rate is not what holds it back)."""
        row = await self._fetchrow(self.q.rate_wait, queue, list(kinds), conn=self.worker_pool)
        assert row is not None  # a SELECT of one value always returns a row
        wait: float | None = row["wait"]
        return wait

    async def prune_rate_starts(self) -> int:
        row = await self._fetchrow(self.q.prune_rate_starts, conn=self.worker_pool)
        assert row is not None
        deleted: int = row["deleted"]
        return deleted

    async def queue_stats(self, queue: str | None) -> list[Row]:
        return await self._fetch(self.q.queue_stats, queue)

    async def queue_gauges(self) -> list[Row]:
        """Per queue: due and later waiting jobs, the oldest due one's age, running jobs,
        paused; one statement over unfinished jobs only (a metrics scrape)."""
        return await self._fetch(self.q.queue_gauges)
