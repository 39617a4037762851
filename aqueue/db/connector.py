"""The connection layer: one App's pool, error mapping, transactions, extra connections.

Nothing outside ``aqueue/db/`` imports asyncpg. Connection failures leave this module as
``DatabaseError`` with one readable line, and a missing schema as ``SchemaNotMigrated``.
The statements themselves are ``database.Database``'s methods.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from ..bounds import DISCONNECT_TIMEOUT
from ..errors import AppNotOpen, DatabaseError, SchemaNotMigrated
from .queries import Queries, Statement

__all__ = ["Connector", "Row", "describe_url"]

Row = asyncpg.Record
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


class Connector:
    """One App's pool. ``open()`` / ``close()`` are idempotent."""

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
            where = describe_url(self.url)
            raise DatabaseError(
                f"PostgreSQL at {where} failed a statement [{exc.sqlstate}]: {exc}", exc.sqlstate
            ) from exc

    async def _fetch(
        self, statement: Statement, *args: Any, conn: Any = None
    ) -> list[asyncpg.Record]:
        async with self._errors():
            target = conn if conn is not None else self.pool
            rows: list[asyncpg.Record] = await target.fetch(statement.sql, *args)
            return rows

    async def _fetchrow(self, statement: Statement, *args: Any) -> asyncpg.Record | None:
        async with self._errors():
            row: asyncpg.Record | None = await self.pool.fetchrow(statement.sql, *args)
            return row

    async def _execute(self, statement: Statement, *args: Any) -> str:
        """Runs a statement for its effect; returns the command status (``DELETE 3``)."""
        async with self._errors():
            status: str = await self.pool.execute(statement.sql, *args)
            return status

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """A pooled connection inside a transaction, for statements that commit together."""
        async with self._errors(), self.pool.acquire() as conn, conn.transaction():
            yield conn

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
            await conn.close(timeout=DISCONNECT_TIMEOUT)
