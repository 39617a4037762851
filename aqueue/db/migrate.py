"""Applies the numbered migrations, once, under an advisory lock.

Several processes may migrate at once (every worker calling ``app.migrate()`` on start):
the transaction-scoped advisory lock makes them queue, and each applies only the
versions the ``migrations`` table does not list yet.
"""

from __future__ import annotations

from typing import Any

from .queries import Queries, load_migrations

__all__ = ["migrate"]


async def migrate(conn: Any, q: Queries) -> list[str]:
    """Bring the schema of ``q`` up to date on ``conn``; returns the file names applied."""
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute(q.migration_lock.sql, q.schema)
        await conn.execute(q.create_schema.sql)
        await conn.execute(q.create_migrations_table.sql)
        done = {row["version"] for row in await conn.fetch(q.applied_migrations.sql)}
        for version, name, sql in load_migrations(q.schema):
            if version not in done:
                await conn.execute(sql)
                await conn.execute(q.record_migration.sql, version, name)
                applied_now.append(name)
    return applied_now
