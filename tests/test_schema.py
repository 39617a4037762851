"""``aqueue/db/schema.sql`` is the schema a fresh migrate produces: same types, tables,
columns, defaults, constraints and indexes, compared through PostgreSQL's catalogs."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

import aqueue
from aqueue.db.queries import load_schema, quote_ident
from aqueue.testing import unique_schema

# Everything that makes up a schema, with the schema's own name written out of it so
# that two schemas can be compared.
_DESCRIBE = """
SELECT 'type ' || t.typname || ' ' || string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
WHERE t.typnamespace = $1::regnamespace GROUP BY t.typname
UNION ALL
SELECT format('column %s.%s %s null=%s default=%s identity=%s', c.relname, a.attname,
              format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
              pg_get_expr(d.adbin, d.adrelid), a.attidentity)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relnamespace = $1::regnamespace AND c.relkind = 'r'
  AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT format('position %s.%s %s', c.relname, a.attname,
              row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum))
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = $1::regnamespace AND c.relkind = 'r'
  AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT format('constraint %s %s', c.relname, pg_get_constraintdef(k.oid))
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
WHERE c.relnamespace = $1::regnamespace
UNION ALL
SELECT 'index ' || pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
WHERE c.relnamespace = $1::regnamespace
UNION ALL
SELECT format('table %s options=%s', relname, reloptions)
FROM pg_class WHERE relnamespace = $1::regnamespace AND relkind = 'r'
UNION ALL
SELECT format('%s %s', CASE prokind WHEN 'f' THEN 'function' ELSE 'routine' END, proname)
FROM pg_proc WHERE pronamespace = $1::regnamespace
UNION ALL
SELECT 'trigger ' || tgname
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = $1::regnamespace AND NOT t.tgisinternal
"""


async def _describe(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await conn.fetch(_DESCRIBE, quote_ident(schema))
    return sorted(row[0].replace(quote_ident(schema), "S").replace(schema, "S") for row in rows)


async def test_schema_sql_matches_a_fresh_migrate(
    make_app: Callable[..., aqueue.App], aqueue_database_url: str
) -> None:
    migrated = make_app()
    documented = unique_schema("doc")
    async with migrated:
        await migrated.migrate()
        conn = await asyncpg.connect(aqueue_database_url)
        try:
            await conn.execute(f"CREATE SCHEMA {quote_ident(documented)}")
            try:
                await conn.execute(load_schema(documented))
                from_migrations = await _describe(conn, migrated.schema)
                from_schema_sql = await _describe(conn, documented)
            finally:
                await conn.execute(f"DROP SCHEMA {quote_ident(documented)} CASCADE")
        finally:
            await conn.close()
    assert len(from_migrations) > 40  # the description sees the schema at all
    missing = sorted(set(from_migrations) - set(from_schema_sql))
    extra = sorted(set(from_schema_sql) - set(from_migrations))
    assert not missing and not extra, (
        f"schema.sql lacks {missing}\nschema.sql has, but migrations do not, {extra}"
    )
