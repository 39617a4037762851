"""Statements about the server rather than aqueue's schema: creating databases.

Used by the throwaway server (``aqueue.embedded``) so that it, like every module outside
``aqueue/db/``, neither imports asyncpg nor holds SQL. ``CREATE DATABASE`` takes
identifiers, which cannot be bind parameters; they are quoted by ``quote_ident``, the one
quoting function the schema name goes through too.
"""

from __future__ import annotations

import anyio
import asyncpg

from ..bounds import DISCONNECT_TIMEOUT
from .queries import quote_ident

__all__ = ["create_database"]


async def create_database(
    url: str, name: str, template: str | None = None, *, connect_timeout: float = 30.0
) -> None:
    """Create database ``name`` on the server at ``url``, as a copy of ``template`` if given.

    asyncpg's errors propagate: ``DuplicateDatabaseError`` when it exists, ``ObjectInUseError``
    when someone is connected to the template.
    """
    statement = "CREATE DATABASE " + quote_ident(name)
    if template is not None:
        statement += " TEMPLATE " + quote_ident(template)
    conn = await asyncpg.connect(url, timeout=connect_timeout)
    try:
        await conn.execute(statement)
    finally:
        # Shielded and bounded: a cancelled caller must not leak the connection.
        with anyio.move_on_after(DISCONNECT_TIMEOUT, shield=True):
            await conn.close()
        if not conn.is_closed():
            conn.terminate()
