-- Applying migrations, and dropping a schema.
-- Statements start with "-- name: NAME"; placeholders are described in queries.py.

-- name: migration_lock
-- Transaction-scoped: processes migrating at once queue here, then see each other's work.
SELECT pg_advisory_xact_lock(1634825573, hashtext($1::text));

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema};

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS {schema}.migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
SELECT version FROM {schema}.migrations ORDER BY version;

-- name: record_migration
INSERT INTO {schema}.migrations (version, name) VALUES ($1, $2);

-- name: drop_schema
DROP SCHEMA IF EXISTS {schema} CASCADE;
