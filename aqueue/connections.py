"""The App's own pool for the caller's SQL: ``app.transaction()`` and ``app.connection()``.

A web app that enqueues inside its request's transaction needs a connection that its own
statements and the enqueue share. These hand out the App's pooled connections, so no
second pool is needed (``pool_size`` then counts the web app's use too); a web app that
has a pool already passes its own connections as ``conn=`` instead. ``App`` inherits
these; docs/howto/fastapi.md shows both ways.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from .db.database import Database
from .errors import ConfigurationError

__all__ = ["Connections"]


class Connections:
    """The connection methods of ``App`` (see each one)."""

    db: Database
    testing: str | None

    def _no_database(self, what: str) -> None:
        if self.testing == "inline":
            raise ConfigurationError(
                f"{what} needs a database, and this App runs jobs inline (testing='inline')"
            )

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """``async with app.transaction() as conn:`` an asyncpg connection of the App's
        pool inside a transaction, committed when the block ends and rolled back when it
        raises. Run your own SQL on it and enqueue with ``conn=conn``: the jobs exist
        only if your writes commit. Errors of your own statements reach you as asyncpg
        raised them; aqueue's own raise aqueue's errors."""
        self._no_database("app.transaction()")
        async with self.db.user_transaction() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """``async with app.connection() as conn:`` an asyncpg connection of the App's
        pool, given back when the block ends: for your own statements (and your own
        ``conn.transaction()``) without a second pool."""
        self._no_database("app.connection()")
        async with self.db.user_connection() as conn:
            yield conn
