"""The statements of workflows, batches and resumable steps (``sql/workflows.sql``)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from ..errors import DatabaseError
from .connector import Connector, Row
from .params import Deps, GroupColumns, Inserted

__all__ = ["CANCEL_ROUND", "WorkflowStore"]

#: Jobs cancelled per statement by cancel_workflow: each statement's finished jobs are noted
#: in one string (see migration 0007), which must stay small.
CANCEL_ROUND = 1000
#: The most workflow locks the backstop and retention take in one transaction: advisory
#: locks share the server's lock table (max_locks_per_transaction x max_connections).
GROUP_LOCKS = 100


class WorkflowStore(Connector):
    async def create_workflow(self, kind: str, name: str, steps: int, conn: Any) -> int:
        statement = self.q.create_workflow
        row = await self._fetchrow(
            statement, *statement.args(kind=kind, name=name, steps=steps), conn=conn
        )
        assert row is not None
        return int(row["id"])

    async def insert_group_jobs(self, columns: GroupColumns, conn: Any) -> Inserted:
        """Insert the jobs of one workflow or batch on ``conn`` (inside its transaction) and
        wake the queues that got a due job (at its commit)."""
        statement = self.q.insert_group_jobs
        [row] = await self._fetch(statement, *statement.bind(columns), conn=conn)
        inserted = Inserted(
            list(row["ids"]), list(row["states"]), list(row["scheduled_at"]), row["created_at"]
        )
        if len(inserted.ids) != len(columns):
            raise DatabaseError(f"inserted {len(inserted.ids)} of {len(columns)} jobs")
        if row["due_queues"]:
            await self._fetch(self.q.notify_available, list(row["due_queues"]), conn=conn)
        return inserted

    async def insert_deps(self, deps: Deps, conn: Any) -> None:
        if deps.dep_id:
            statement = self.q.insert_deps
            await self._execute(statement, *statement.bind(deps), conn=conn)

    async def get_workflow(self, workflow_id: int) -> Row | None:
        return await self._fetchrow(self.q.get_workflow, workflow_id)

    async def workflow_jobs(self, workflow_id: int) -> list[Row]:
        return await self._fetch(self.q.workflow_jobs, workflow_id)

    async def workflow_edges(self, workflow_id: int) -> list[tuple[int, int]]:
        """(job_id, dep_id) for every dependency among a workflow's jobs."""
        rows = await self._fetch(self.q.workflow_edges, workflow_id)
        return [(int(row["job_id"]), int(row["dep_id"])) for row in rows]

    async def list_workflows(self, kind: str | None, before: int | None, limit: int) -> list[Row]:
        statement = self.q.list_workflows
        return await self._fetch(statement, *statement.args(kind=kind, before=before, limit=limit))

    async def dep_result(self, job_id: int, step: str) -> Row | None:
        return await self._fetchrow(self.q.dep_result, job_id, step, conn=self.worker_pool)

    async def has_step(self, workflow_id: int, step: str) -> bool:
        row = await self._fetchrow(self.q.has_step, workflow_id, step, conn=self.worker_pool)
        return bool(row and row["found"])

    async def batch_counts(self, batch_id: int) -> dict[str, int]:
        rows = await self._fetch(self.q.batch_counts, batch_id, conn=self.worker_pool)
        return {row["state"]: int(row["n"]) for row in rows}

    async def cancel_workflow(self, workflow_id: int, reason: str) -> int:
        """Cancel (or flag, when running) every job of the workflow not ended; how many.

        Two transactions, each in rounds of ``CANCEL_ROUND`` jobs: waiting jobs are
        cancelled under the workflow's lock (cancelling settles dependents), then running
        jobs, those claimed meanwhile too, are flagged without it (an outcome write locks a
        running row before that lock: the other order could deadlock). Waiting ones go
        first so that none is counted out by a cascade from a flagged job that ended."""

        async def rounds(running: bool) -> int:
            total = 0
            async with self.transaction() as tx:
                if not running:
                    await self._fetch(self.q.lock_workflow, workflow_id, conn=tx)
                while True:
                    row = await self._fetchrow(
                        self.q.cancel_workflow,
                        workflow_id,
                        reason,
                        CANCEL_ROUND,
                        running,
                        conn=tx,
                    )
                    changed = int(row["changed"]) if row is not None else 0
                    total += changed
                    if changed < CANCEL_ROUND:
                        return total

        total = 0
        for running in (False, True):
            total += await self.retrying_deadlocks(functools.partial(rounds, running))
        return total

    async def promote_stranded(self, limit: int) -> int:
        """Settles up to ``limit`` stranded pending jobs (of ``limit`` workflows at most:
        keep it at ``GROUP_LOCKS`` or below); returns how many it settled."""
        async with self.transaction(worker=True) as tx:
            groups = await self._fetchrow(self.q.lock_stranded_groups, limit, conn=tx)
            if groups is None or not groups["ids"]:
                return 0
            row = await self._fetchrow(self.q.promote_stranded, limit, groups["ids"], conn=tx)
        return int(row["moved"]) if row is not None else 0

    async def prune_workflows(self, older_than: float, limit: int) -> int:
        """Deletes up to ``limit`` finished workflows past retention, whole; returns how
        many."""
        async with self.transaction(worker=True) as tx:
            found = await self._fetchrow(
                self.q.lock_prunable_workflows, older_than, min(limit, GROUP_LOCKS), conn=tx
            )
            if found is None or not found["ids"]:
                return 0
            status = await self._execute(
                self.q.prune_workflows, older_than, limit, found["ids"], conn=tx
            )
        return int(status.rsplit(" ", 1)[-1])

    async def step_result(self, job_id: int, name: str) -> Row | None:
        return await self._fetchrow(self.q.step_result, job_id, name, conn=self.worker_pool)

    async def record_step(self, job_id: int, attempt: int, name: str, result_json: str) -> Row:
        statement = self.q.record_step
        args = statement.args(job_id=job_id, attempt=attempt, name=name, result=result_json)
        row = await self._fetchrow(statement, *args, conn=self.worker_pool)
        assert row is not None
        return row

    async def job_steps(self, job_ids: Sequence[int]) -> list[Row]:
        return await self._fetch(self.q.job_steps, list(job_ids))
