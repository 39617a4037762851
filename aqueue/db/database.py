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

from ..errors import DatabaseError, SchemaNotMigrated
from .migrate import migrate
from .queries import Queries

__all__ = ["Database", "InsertRow", "OutcomeRow", "Row"]

Row = asyncpg.Record
# (kind, queue, args_json, priority, max_attempts, scheduled_at, delay, tags_json, meta_json,
#  timeout, retry_json)
InsertRow = tuple[
    str, str, str, int, int, datetime | None, float | None, str, str, float | None, str | None
]
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
        return await self._fetchrow(self.q.retry_job, job_id)

    async def queues_idle(self, queues: Sequence[str], kinds: Sequence[str]) -> bool:
        row = await self._fetchrow(self.q.queues_idle, list(queues), list(kinds))
        return bool(row and row["idle"])

    async def drop_schema(self) -> None:
        async with self._errors():
            await self.pool.execute(self.q.drop_schema)

    async def delete_job(self, job_id: int) -> Row | None:
        return await self._fetchrow(self.q.delete_job, job_id)
