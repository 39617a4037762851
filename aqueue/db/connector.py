"""The connection layer: one App's pools, error mapping, transactions, extra connections.

Nothing outside ``aqueue/db/`` imports asyncpg. Connection failures leave this module as
``DatabaseError`` with one readable line, and a missing schema as ``SchemaNotMigrated``.
The statements themselves are ``database.Database``'s methods.

Connections, and why there are several kinds:

- ``pool`` (``pool_size``): the App's. Enqueues, admin calls, ``app.transaction()``, and
  whatever jobs do with their App. Jobs can hold all of it for as long as they run.
- ``worker_pool`` (``worker_pool_size``): a running worker's own statements (claims,
  outcome writes, lease renewals, maintenance, periodic enqueues). Kept apart so that
  coordination never waits behind jobs for a connection: a worker whose jobs hold the
  whole App pool still renews its leases and records outcomes. Its connections open on
  first use.
- ``connect()``: one connection outside both pools, over ``listen_url``, for the node
  heartbeat; ``listener.py`` opens the LISTEN connection the same way.

Transaction poolers (``pooler="transaction"``): every statement here is safe on a
connection that the pooler may hand to another client between transactions. No session
``SET`` (the claim's ``set_config(..., true)`` is transaction-local), no session advisory
locks (migrations take ``pg_advisory_xact_lock``), no temporary tables, no LISTEN on
``url``. What remains is asyncpg's statement cache: it prepares named statements once per
connection, and a pooler without prepared-statement support would run them on a server
connection that never saw them. So with a pooler the pools cache nothing
(``statement_cache_size=0``): asyncpg then sends Parse, Describe and Flush, then Bind,
Execute and Sync, with no Sync between, so the pooler keeps one server connection for the
whole exchange. The cost (a parse and a second round trip per statement) is why a direct
connection keeps the cache; it is measured in docs/howto/deploying.md.

Releasing a connection: asyncpg's pools run a reset query (``RESET ALL``, ``UNLISTEN *``,
``CLOSE ALL``, ``pg_advisory_unlock_all()``) on every release by default, one more round
trip after every statement. Since aqueue's own statements leave no session state (above),
its pools skip that query (asyncpg still rolls back a transaction left open). A
connection lent to the caller (``app.connection()``, ``app.transaction()``) may come back
with anything set, so ``user_connection`` runs the reset itself before giving it back
(not behind a transaction pooler: there no session state outlives a transaction, the
pooler hands the server connection on). Measured: one enqueue from ten producers, 1.9k to 2.4-3.0k
jobs a second on one machine (benchmarks/enqueue.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, TypeVar

import anyio
import asyncpg

from ..bounds import DISCONNECT_TIMEOUT
from ..errors import AppNotOpen, ConfigurationError, DatabaseError, SchemaNotMigrated
from .queries import Queries, Statement

__all__ = ["Connector", "Row", "describe_url"]

Row = asyncpg.Record
T = TypeVar("T")
#: Tries of a transaction that PostgreSQL ended to break a deadlock (``retrying_deadlocks``).
DEADLOCK_TRIES = 3
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


async def _no_reset(conn: Any) -> None:
    """aqueue's statements leave no session state to reset (see the module docstring)."""


class Connector:
    """One App's pools. ``open()`` / ``close()`` are idempotent."""

    def __init__(
        self,
        url: str,
        schema: str,
        *,
        pool_size: int,
        connect_timeout: float,
        logger: logging.Logger,
        listen_url: str | None = None,
        worker_pool_size: int = 2,
        pooler: Literal["transaction"] | None = None,
    ) -> None:
        self.url = url
        self.listen_url = url if listen_url is None else listen_url
        # Given explicitly, it is trusted to be a session (even if equal to url).
        self._listen_url_given = listen_url is not None
        self.pooler = pooler
        self.q = Queries(schema)
        self._pool_size = pool_size
        self._worker_pool_size = worker_pool_size
        self._connect_timeout = connect_timeout
        self._logger = logger
        self._pool: asyncpg.Pool | None = None
        self._worker_pool: asyncpg.Pool | None = None

    def require_session(self, feature: str) -> str:
        """``listen_url``, or a ``ConfigurationError`` naming the settings when ``feature``
        (which needs a session of its own) would go through a transaction pooler."""
        if self.pooler == "transaction" and not self._listen_url_given:
            raise ConfigurationError(
                f"{feature} needs a session of its own, and url goes through a transaction "
                "pooler (pooler='transaction'): pass listen_url= a direct connection to "
                "PostgreSQL (or a session-mode pool) to aqueue.App"
            )
        return self.listen_url

    def _pool_options(self, application_name: str) -> dict[str, Any]:
        # Each kind of connection has its own name, so pg_stat_activity shows the budget.
        options: dict[str, Any] = {
            "timeout": self._connect_timeout,
            "server_settings": {"application_name": application_name},
        }
        options["reset"] = _no_reset
        if self.pooler == "transaction":
            options["statement_cache_size"] = 0
        return options

    @property
    def explicit_listen_url(self) -> str | None:
        """``listen_url`` when it was given, None when it is ``url``."""
        return self.listen_url if self._listen_url_given else None

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
            pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self._pool_size, **self._pool_options("aqueue")
            )
            # min_size=0 connects nothing, so this cannot fail once the first pool opened:
            # the worker pool's connections open when a worker runs its first statement.
            self._worker_pool = await asyncpg.create_pool(
                self.url,
                min_size=0,
                max_size=self._worker_pool_size,
                **self._pool_options("aqueue-worker"),
            )
            self._pool = pool
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
        worker_pool, self._worker_pool = self._worker_pool, None
        if worker_pool is not None:
            await worker_pool.close()
        if pool is not None:
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise AppNotOpen("the App is not open: use 'async with app:' before this call")
        return self._pool

    @property
    def worker_pool(self) -> asyncpg.Pool:
        """The running worker's own connections (claims, outcomes, leases, maintenance)."""
        if self._worker_pool is None:
            raise AppNotOpen("the App is not open: use 'async with app:' before this call")
        return self._worker_pool

    def _migrate_command(self) -> str:
        # The command that fixes it, for this schema: `aqueue migrate` alone migrates
        # the default one, and a user on another would run it and see the error again.
        suffix = "" if self.schema == "aqueue" else f" --schema {self.schema}"
        return f"aqueue migrate{suffix}"

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            yield
        except asyncpg.exceptions.UndefinedTableError as exc:
            raise SchemaNotMigrated(
                f"aqueue's tables are missing in schema {self.schema!r} ({exc}): "
                f"run '{self._migrate_command()}' or 'await app.migrate()'"
            ) from None
        except asyncpg.exceptions.UndefinedObjectError as exc:
            raise SchemaNotMigrated(
                f"aqueue's schema {self.schema!r} is incomplete ({exc}): "
                f"run '{self._migrate_command()}'"
            ) from None
        except (
            asyncpg.exceptions.InvalidSQLStatementNameError,
            asyncpg.exceptions.DuplicatePreparedStatementError,
        ) as exc:
            # aqueue never names statements itself: asyncpg's cached ones went missing or
            # clash, which is what a transaction pooler without prepared-statement support
            # does to them. Say which setting fixes it instead of a bare server error.
            raise DatabaseError(
                f"PostgreSQL at {describe_url(self.url)} failed a statement [{exc.sqlstate}]: "
                f"{exc}; if this URL is a transaction pooler (PgBouncer before 1.21), pass "
                "pooler='transaction' and listen_url= a direct connection to aqueue.App",
                exc.sqlstate,
            ) from exc
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

    async def _fetchrow(
        self, statement: Statement, *args: Any, conn: Any = None
    ) -> asyncpg.Record | None:
        async with self._errors():
            target = conn if conn is not None else self.pool
            row: asyncpg.Record | None = await target.fetchrow(statement.sql, *args)
            return row

    async def _execute(self, statement: Statement, *args: Any, conn: Any = None) -> str:
        """Runs a statement for its effect; returns the command status (``DELETE 3``)."""
        async with self._errors():
            target = conn if conn is not None else self.pool
            status: str = await target.execute(statement.sql, *args)
            return status

    async def retrying_deadlocks(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``await attempt()`` (a whole transaction), again when PostgreSQL ended it to
        break a deadlock (40P01): the other side went on, so the next try usually passes."""
        for tries_left in range(DEADLOCK_TRIES - 1, -1, -1):
            try:
                return await attempt()
            except DatabaseError as exc:
                if exc.sqlstate != "40P01" or not tries_left:
                    raise
                self._logger.info("aqueue: a transaction was ended by a deadlock; trying again")
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.asynccontextmanager
    async def transaction(self, *, worker: bool = False) -> AsyncIterator[Any]:
        """A pooled connection inside a transaction, for statements that commit together;
        from the worker pool when a worker's own duty needs it (periodic enqueues)."""
        pool = self.worker_pool if worker else self.pool
        async with self._errors(), pool.acquire() as conn, conn.transaction():
            yield conn

    @contextlib.asynccontextmanager
    async def user_connection(self) -> AsyncIterator[Any]:
        """A connection of the App's pool for the caller's own statements.

        Only getting the connection maps errors (``AppNotOpen``, ``DatabaseError``): what
        the caller's own SQL raises inside the block reaches it as asyncpg raised it (a
        ``UniqueViolationError`` the caller handles must not turn into ours). aqueue's
        statements run on it (``conn=``) still raise aqueue's errors."""
        pool = self.pool
        async with self._errors():
            conn = await pool.acquire()
        try:
            yield conn
        finally:
            # Shielded and bounded: a cancelled caller still gives the connection back.
            # A release that fails has terminated the connection (the pool replaces it);
            # that is no error of the caller's, and must not hide the one it may raise.
            with anyio.CancelScope(shield=True):
                failure: Exception | None = None
                if self.pooler != "transaction":
                    # The caller's session state (SET, LISTEN, advisory locks) must not
                    # reach aqueue's statements or the next caller.
                    try:
                        await conn.reset(timeout=DISCONNECT_TIMEOUT)
                    except Exception as exc:  # a connection that died in the block, say
                        failure = exc
                        with contextlib.suppress(Exception):
                            conn.terminate()  # the pool replaces it
                try:
                    await pool.release(conn, timeout=DISCONNECT_TIMEOUT)
                except Exception as exc:
                    failure = failure or exc
                if failure is not None:
                    self._logger.warning("aqueue: a connection was dropped on release: %r", failure)

    @contextlib.asynccontextmanager
    async def user_transaction(self) -> AsyncIterator[Any]:
        """``user_connection`` inside a transaction: committed when the block ends, rolled
        back when it raises."""
        async with self.user_connection() as conn, conn.transaction():
            yield conn

    def retarget(
        self, url: str, schema: str, listen_url: str | None = None
    ) -> tuple[str, str, str | None]:
        """Point a closed connector at another database or schema (``aqueue.testing``
        moves an App into a throwaway schema and back); returns the previous arguments."""
        if self._pool is not None:
            raise ConfigurationError("cannot move an open App to another schema: close it first")
        previous = (self.url, self.schema, self.explicit_listen_url)
        self.url = url
        self.listen_url = url if listen_url is None else listen_url
        self._listen_url_given = listen_url is not None
        self.q = Queries(schema)
        return previous

    @contextlib.asynccontextmanager
    async def transaction_on(self, conn: Any) -> AsyncIterator[Any]:
        """A transaction on ``conn`` (a savepoint when the caller's is open), or on a
        pooled connection when ``conn`` is None."""
        if conn is None:
            async with self.transaction() as pooled:
                yield pooled
            return
        async with self._errors(), conn.transaction():
            yield conn

    async def connect(self) -> Any:
        """A connection of its own, outside the pools, over ``listen_url``: for work that
        must not queue behind anyone for a connection, not even inside a pooler (the
        node's heartbeat)."""
        through_pooler = self.pooler == "transaction" and not self._listen_url_given
        async with self._errors():
            return await asyncpg.connect(
                self.listen_url,
                timeout=self._connect_timeout,
                statement_cache_size=0 if through_pooler else 100,
                server_settings={"application_name": "aqueue-heartbeat"},
            )

    async def disconnect(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            await conn.close(timeout=DISCONNECT_TIMEOUT)
