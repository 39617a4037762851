"""The connection pool and every statement aqueue runs, as typed methods.

Nothing outside ``aqueue/db/`` imports asyncpg. Rows leave this module as asyncpg
records (read-only mappings) or plain values; connection failures leave it as
``DatabaseError`` with one readable line, and a missing schema as ``SchemaNotMigrated``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from ..errors import DatabaseError, JobStateError, SchemaNotMigrated
from .migrate import migrate
from .queries import Queries

__all__ = ["Database", "InsertRow", "OutcomeRow", "Row", "UniqueColumns"]

Row = asyncpg.Record
# (kind, queue, args_json, priority, max_attempts, scheduled_at, delay, tags_json, meta_json,
#  timeout, retry_json)
InsertRow = tuple[
    str, str, str, int, int, datetime | None, float | None, str, str, float | None, str | None
]
# (unique_key, period_seconds, states_csv): all None for a job that is not unique
UniqueColumns = tuple[str | None, float | None, str | None]
# (id, attempt, state, result_json, error_json, delay)
OutcomeRow = tuple[int, int, str, str | None, str | None, float | None]

_CONNECTION_ERRORS = (
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.TooManyConnectionsError,
    # An idle pooled connection that the server just terminated (restart, pg_terminate_backend)
    # can be handed out before asyncpg has seen the socket close; the query then fails with
    # "cannot switch to state ...; another operation (2) is in progress". The connection is
    # gone, and the pool replaces it on the next acquire.
    asyncpg.exceptions.InternalClientError,
    TimeoutError,
)


def describe_url(url: str) -> str:
    """The URL without its password, for messages."""
    head, sep, tail = url.partition("@")
    if not sep:
        return url
    scheme, _, userinfo = head.partition("://")
    return f"{scheme}://{userinfo.split(':', 1)[0]}@{tail}"


class Database:
    """One App's pool and statements. ``open()`` / ``close()`` are idempotent."""

    def __init__(
        self,
        url: str,
        schema: str,
        *,
        pool_size: int,
        connect_timeout: float,
        logger: logging.Logger,
    ) -> None:
        self.url = url
        self.q = Queries(schema)
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._logger = logger
        self._pool: asyncpg.Pool | None = None

    @property
    def schema(self) -> str:
        return self.q.schema

    @property
    def channel(self) -> str:
        return self.q.channel

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._connect_timeout,
                server_settings={"application_name": "aqueue"},
            )
        except _CONNECTION_ERRORS as exc:
            raise DatabaseError(
                f"cannot connect to PostgreSQL at {describe_url(self.url)}: "
                f"{exc or type(exc).__name__}"
            ) from None
        except asyncpg.PostgresError as exc:
            raise DatabaseError(
                f"PostgreSQL at {describe_url(self.url)} refused the connection: {exc}"
            ) from None

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            from ..errors import AppNotOpen

            raise AppNotOpen("the App is not open: use 'async with app:' before this call")
        return self._pool

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            yield
        except asyncpg.exceptions.UndefinedTableError as exc:
            raise SchemaNotMigrated(
                f"aqueue's tables are missing in schema {self.schema!r} ({exc}): "
                "run 'aqueue migrate' or 'await app.migrate()'"
            ) from None
        except asyncpg.exceptions.UndefinedObjectError as exc:
            raise SchemaNotMigrated(
                f"aqueue's schema {self.schema!r} is incomplete ({exc}): run 'aqueue migrate'"
            ) from None
        except _CONNECTION_ERRORS as exc:
            raise DatabaseError(
                f"lost the connection to PostgreSQL at {describe_url(self.url)}: "
                f"{exc or type(exc).__name__}"
            ) from exc
        except asyncpg.PostgresError as exc:
            # Any other server error: a shutdown or pg_terminate_backend in the middle of a
            # statement (57P01), a statement_timeout or lock_timeout (57014, 55P03), an
            # aborted caller transaction. Callers (producer, completer, enqueue) handle
            # DatabaseError; a raw asyncpg error would escape them and end the worker.
            raise DatabaseError(
                f"PostgreSQL at {describe_url(self.url)} failed a statement [{exc.sqlstate}]: {exc}"
            ) from exc

    async def _fetch(self, sql: str, *args: Any, conn: Any = None) -> list[asyncpg.Record]:
        async with self._errors():
            target = conn if conn is not None else self.pool
            rows: list[asyncpg.Record] = await target.fetch(sql, *args)
            return rows

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self._errors():
            row: asyncpg.Record | None = await self.pool.fetchrow(sql, *args)
            return row

    # -- migrations -------------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        async with self._errors(), self.pool.acquire() as conn:
            return await migrate(conn, self.q)

    # -- enqueue ----------------------------------------------------------------------------

    async def insert_jobs(self, rows: Sequence[InsertRow], conn: Any = None) -> list[Row]:
        columns = list(zip(*rows, strict=True)) if rows else [()] * 11
        return await self._fetch(self.q.insert_jobs, *map(list, columns), conn=conn)

    async def insert_and_notify(self, rows: Sequence[InsertRow], conn: Any = None) -> list[Row]:
        """Insert jobs, then wake the workers of their queues.

        On the caller's connection both statements run in the caller's transaction (the
        wake-up is delivered at its commit). On the pool the insert commits first and the
        NOTIFY follows in its own transaction, which is cheap: it writes no WAL.
        """
        inserted = await self.insert_jobs(rows, conn=conn)
        due = [
            row[1] for row, job in zip(rows, inserted, strict=True) if job["state"] == "available"
        ]
        if due:
            await self._fetch(self.q.notify_available, due, conn=conn)
        return inserted

    # -- worker -----------------------------------------------------------------------------

    async def claim(
        self, queue: str, limit: int, kinds: Sequence[str], node_id: str, *, full: bool
    ) -> list[Row]:
        """Claim up to ``limit`` due jobs; ``full`` returns every column a Job needs."""
        sql = self.q.claim if full else self.q.claim_lean
        return await self._fetch(sql, queue, limit, kinds, node_id)

    async def adopt_claims(self, queue: str, node_id: str, held: Sequence[int]) -> list[Row]:
        """Jobs running under ``node_id`` in ``queue`` other than ``held`` (full rows)."""
        return await self._fetch(self.q.adopt_claims, queue, node_id, list(held))

    async def record_outcomes(self, outcomes: Sequence[OutcomeRow]) -> list[Row]:
        columns = list(zip(*outcomes, strict=True))
        return await self._fetch(self.q.record_outcomes, *map(list, columns))

    async def outcomes_in_place(self, outcomes: Sequence[tuple[int, int, str]]) -> list[Row]:
        """Of these (id, attempt, state) outcomes, those the rows already show as written."""
        ids, attempts, states = (list(column) for column in zip(*outcomes, strict=True))
        return await self._fetch(self.q.outcomes_in_place, ids, attempts, states)

    async def cancel_requested(self, job_ids: Sequence[int]) -> list[int]:
        rows = await self._fetch(self.q.cancel_requested, list(job_ids))
        return [row["id"] for row in rows]

    # -- admin ------------------------------------------------------------------------------

    async def get_job(self, job_id: int) -> Row | None:
        return await self._fetchrow(self.q.get_job, job_id)

    async def list_jobs(
        self, state: str | None, queue: str | None, kind: str | None, limit: int
    ) -> list[Row]:
        return await self._fetch(self.q.list_jobs, state, queue, kind, limit)

    async def cancel_job(self, job_id: int, reason: str) -> Row | None:
        return await self._fetchrow(self.q.cancel_job, job_id, reason)

    async def retry_job(self, job_id: int) -> Row | None:
        try:
            return await self._fetchrow(self.q.retry_job, job_id)
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
        async with self._errors():
            await self.pool.execute(self.q.drop_schema)

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
        rows = await self._fetch(
            self.q.upsert_node,
            node_id,
            host,
            pid,
            ttl,
            queues_json,
            list(kinds),
            config_json,
            digest,
            conn=conn,
        )
        return bool(rows and rows[0]["lapsed"])

    async def connect(self) -> Any:
        """A connection of its own, outside the pool: for work that must not queue behind
        jobs for a pooled connection (the node's heartbeat)."""
        async with self._errors():
            return await asyncpg.connect(
                self.url,
                timeout=self._connect_timeout,
                server_settings={"application_name": "aqueue-heartbeat"},
            )

    async def disconnect(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            await conn.close(timeout=2)

    async def delete_node(self, node_id: str) -> None:
        await self._fetch(self.q.delete_node, node_id)

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
        row = await self._fetchrow(self.q.acquire_lease, name, holder, ttl, info_json, renewing)
        return None if row is None else int(row["term"])

    async def lease_free(self, name: str) -> bool:
        row = await self._fetchrow(self.q.lease_free, name)
        return bool(row and row["free"])

    async def release_lease(self, name: str, holder: str, info_json: str | None = None) -> bool:
        row = await self._fetchrow(self.q.release_lease, name, holder, info_json)
        return bool(row and row["released"])

    async def list_leases(self) -> list[Row]:
        return await self._fetch(self.q.list_leases)

    async def rescue_orphans(self, limit: int) -> list[Row]:
        return await self._fetch(self.q.rescue_orphans, limit)

    async def delete_expired_nodes(self, older_than: float) -> None:
        await self._fetch(self.q.delete_expired_nodes, older_than)

    async def prune_jobs(self, older_than: float, limit: int) -> int:
        async with self._errors():
            status: str = await self.pool.execute(self.q.prune_jobs, older_than, limit)
        return int(status.rsplit(" ", 1)[-1])

    async def prune_periodic_runs(self, older_than: float) -> None:
        await self._fetch(self.q.prune_periodic_runs, older_than)

    async def last_periodic_slots(self, names: Sequence[str]) -> dict[str, datetime]:
        rows = await self._fetch(self.q.last_periodic_slots, list(names))
        return {row["name"]: row["slot"] for row in rows}

    async def claim_periodic_slot(self, name: str, slot: datetime, conn: Any) -> bool:
        return bool(await self._fetch(self.q.claim_periodic_slot, name, slot, conn=conn))

    async def set_periodic_job(self, name: str, slot: datetime, job_id: int, conn: Any) -> None:
        await self._fetch(self.q.set_periodic_job, name, slot, job_id, conn=conn)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """A pooled connection inside a transaction, for statements that commit together."""
        async with self._errors(), self.pool.acquire() as conn, conn.transaction():
            yield conn

    # -- job control (issue 4) --------------------------------------------------------------

    async def insert_unique_and_notify(
        self, rows: Sequence[InsertRow], unique: Sequence[UniqueColumns], conn: Any = None
    ) -> list[Row]:
        """``insert_and_notify`` for a batch holding unique jobs; see ``insert_unique_jobs``.

        One output row per input row, in order: the whole job when it was inserted, or a
        NULL ``id`` and the ``wanted_key`` another job holds.
        """
        columns = [*zip(*rows, strict=True), *zip(*unique, strict=True)]
        written = await self._fetch(self.q.insert_unique_jobs, *map(list, columns), conn=conn)
        due = [row["queue"] for row in written if row["state"] == "available"]
        if due:
            await self._fetch(self.q.notify_available, due, conn=conn)
        return written

    async def unique_holders(self, keys: Sequence[str], conn: Any = None) -> dict[str, Row]:
        """The jobs holding these unique keys now, by key."""
        rows = await self._fetch(self.q.unique_holders, list(keys), conn=conn)
        return {row["unique_key"]: row for row in rows}

    async def retry_unique_conflict(self, job_id: int) -> int | None:
        """The job holding the unique key that job ``job_id`` would take back on a retry."""
        row = await self._fetchrow(self.q.retry_unique_conflict, job_id)
        return row["id"] if row is not None else None

    async def rename_kind_batch(self, old: str, new: str, after_id: int, limit: int) -> Row:
        row = await self._fetchrow(self.q.rename_kind_batch, old, new, after_id, limit)
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
        row = await self._fetchrow(self.q.obliterate_batch, queue, force, limit)
        assert row is not None  # an aggregate row always comes back
        return row

    async def forget_queue(self, queue: str) -> None:
        async with self._errors():
            await self.pool.execute(self.q.forget_queue, queue)

    async def queue_stats(self, queue: str | None) -> list[Row]:
        return await self._fetch(self.q.queue_stats, queue)
