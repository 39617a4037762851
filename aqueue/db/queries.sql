-- Every statement aqueue runs. Each starts with "-- name: NAME".
-- Placeholders, replaced once when loaded: {schema} (quoted schema name), {channel} (the
-- notification channel as a string literal) and {job_columns} / {job_columns:ALIAS} (the
-- columns a Job record is built from). Values are always $n parameters.

-- name: insert_jobs
-- One statement for one job or thousands: arrays in, rows out, in input order.
INSERT INTO {schema}.jobs
    (kind, queue, state, args, priority, max_attempts, scheduled_at, tags, meta, timeout, retry)
SELECT i.kind, i.queue,
       (CASE WHEN i.at > now() THEN 'scheduled' ELSE 'available' END)::{schema}.job_state,
       i.args::jsonb, i.priority, i.max_attempts, i.at,
       CASE WHEN i.tags = '[]' THEN '{}'::text[]
            ELSE ARRAY(SELECT jsonb_array_elements_text(i.tags::jsonb)) END,
       i.meta::jsonb, i.timeout, i.retry::jsonb
FROM (
    SELECT u.*, coalesce(u.sched, now() + make_interval(secs => u.delay), now()) AS at
    FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::smallint[],
                $6::timestamptz[], $7::float8[], $8::text[], $9::text[], $10::float8[], $11::text[])
        WITH ORDINALITY
        AS u(kind, queue, args, priority, max_attempts, sched, delay, tags, meta, timeout, retry, ord)
    ORDER BY u.ord
) AS i
RETURNING id, state::text AS state, scheduled_at, created_at;

-- name: notify_available
-- Wakes the workers of these queues (once per distinct queue). Run in the inserting
-- transaction when it is the caller's, so the wake-up is delivered only at its commit.
SELECT count(pg_notify({channel}, 'i:' || q.queue)) AS notified
FROM (SELECT DISTINCT unnest($1::text[]) AS queue) AS q;

-- name: claim
-- Due jobs of one queue whose kind this worker knows, locked without waiting on rows
-- another worker holds, marked running in the same statement.
-- The claim commits without waiting for its WAL flush (synchronous_commit off for this
-- transaction only): if the server crashes before the flush, the jobs are simply still
-- available, and the worker's outcome write (durable, and guarded by state and attempt)
-- cannot apply, so the job runs again: at-least-once holds. It saves an fsync per claim.
WITH picked AS (
    SELECT id
    FROM {schema}.jobs
    WHERE state IN ('available', 'scheduled', 'retryable')
      AND queue = $1
      AND scheduled_at <= now()
      AND kind = ANY($3::text[])
    ORDER BY priority, scheduled_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.jobs AS j
SET state = 'running',
    attempt = least(j.attempt + 1, 32767),
    attempted_at = now(),
    node_id = $4
FROM picked, (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
WHERE j.id = picked.id
RETURNING {job_columns:j}, j.timeout, j.retry::text AS retry;

-- name: claim_lean
-- The same claim, returning only what running a job needs: used when no job wants its
-- JobContext and no hook is registered, so no Job record is ever built from the row.
WITH picked AS (
    SELECT id
    FROM {schema}.jobs
    WHERE state IN ('available', 'scheduled', 'retryable')
      AND queue = $1
      AND scheduled_at <= now()
      AND kind = ANY($3::text[])
    ORDER BY priority, scheduled_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.jobs AS j
SET state = 'running',
    attempt = least(j.attempt + 1, 32767),
    attempted_at = now(),
    node_id = $4
FROM picked, (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
WHERE j.id = picked.id
RETURNING j.id, j.kind, j.queue, j.args::text AS args, j.attempt, j.max_attempts, j.timeout,
          j.retry::text AS retry;

-- name: adopt_claims
-- Jobs this worker claimed in one queue but does not hold: a claim that committed while
-- its reply was lost (the server restarted, the connection dropped). $3 lists every job
-- the worker still holds (running, waiting for a slot, or outcome not yet written). A
-- plain read: the rows are already this worker's, so reading them takes nothing away.
SELECT {job_columns}, timeout, retry::text AS retry
FROM {schema}.jobs
WHERE state = 'running' AND queue = $1 AND node_id = $2 AND NOT (id = ANY($3::bigint[]))
ORDER BY priority, scheduled_at, id;

-- name: record_outcomes
-- Writes a batch of attempt outcomes. Only rows still running the same attempt change, so a
-- late write cannot resurrect a job rescued or re-claimed meanwhile. States 'available'
-- (interrupted by shutdown) and 'scheduled' (snoozed) give the attempt back.
WITH o AS (
    SELECT *
    FROM unnest($1::bigint[], $2::smallint[], $3::text[], $4::text[], $5::text[], $6::float8[])
        AS o(id, attempt, state, result, error, delay)
), done AS (
    UPDATE {schema}.jobs AS j
    SET state = o.state::{schema}.job_state,
        result = o.result::jsonb,
        errors = CASE WHEN o.error IS NULL THEN j.errors
                      ELSE j.errors || jsonb_build_array(o.error::jsonb) END,
        finalized_at = CASE WHEN o.state IN ('completed', 'cancelled', 'discarded')
                            THEN now() END,
        scheduled_at = CASE WHEN o.delay IS NULL THEN j.scheduled_at
                            ELSE now() + make_interval(secs => o.delay) END,
        attempt = CASE WHEN o.state IN ('available', 'scheduled') THEN j.attempt - 1
                       ELSE j.attempt END,
        -- A cancel request is about this attempt; it must not cancel the next one.
        cancel_requested_at = NULL,
        node_id = NULL
    FROM o
    WHERE j.id = o.id AND j.state = 'running' AND j.attempt = o.attempt
    RETURNING j.id, j.finalized_at, j.scheduled_at, j.attempt
), notified AS (
    -- Wakes app.wait() callers; ids are chunked to stay under NOTIFY's 8000-byte payload limit.
    SELECT pg_notify({channel}, 'f:' || string_agg(s.id::text, ','))
    FROM (SELECT id, (row_number() OVER ()) / 300 AS chunk
          FROM done WHERE finalized_at IS NOT NULL) AS s
    GROUP BY s.chunk
)
-- Selecting the count makes PostgreSQL evaluate the notifying CTE (an unreferenced CTE is
-- skipped, and so is a join the planner can prove unused).
SELECT done.id, done.finalized_at, done.scheduled_at, done.attempt,
       (SELECT count(*) FROM notified) AS notified
FROM done;

-- name: outcomes_in_place
-- After an outcome write failed with its outcome unknown and the retry changed nothing:
-- the rows that show exactly what the write leaves (its state, the attempt after any
-- refund, no node), i.e. the failed try had committed. No other writer leaves a row so.
SELECT j.id, j.finalized_at, j.scheduled_at, j.attempt
FROM {schema}.jobs AS j
JOIN unnest($1::bigint[], $2::smallint[], $3::text[]) AS o(id, attempt, state) ON j.id = o.id
WHERE j.state::text = o.state
  AND j.node_id IS NULL
  AND j.attempt = CASE WHEN o.state IN ('available', 'scheduled') THEN o.attempt - 1
                       ELSE o.attempt END;

-- name: get_job
SELECT {job_columns} FROM {schema}.jobs WHERE id = $1;

-- name: list_jobs
SELECT {job_columns}
FROM {schema}.jobs
WHERE ($1::text IS NULL OR state = $1::{schema}.job_state)
  AND ($2::text IS NULL OR queue = $2)
  AND ($3::text IS NULL OR kind = $3)
ORDER BY id
LIMIT $4;

-- name: cancel_job
-- A waiting job is cancelled here and now; a running one is flagged and its node is told
-- through NOTIFY, and the node records the cancellation when the job stops.
WITH old AS (
    SELECT id, state FROM {schema}.jobs WHERE id = $1 FOR UPDATE
), changed AS (
    UPDATE {schema}.jobs AS j
    SET state = CASE WHEN old.state = 'running' THEN j.state ELSE 'cancelled' END,
        finalized_at = CASE WHEN old.state = 'running' THEN NULL ELSE now() END,
        cancel_requested_at = now(),
        errors = CASE WHEN old.state = 'running' THEN j.errors
                      ELSE j.errors || jsonb_build_array(jsonb_build_object(
                          'attempt', j.attempt, 'at', now(), 'type', 'Cancelled',
                          'message', $2::text, 'traceback', NULL)) END
    FROM old
    WHERE j.id = old.id AND old.state NOT IN ('completed', 'cancelled', 'discarded')
    RETURNING j.id, old.state
), notified AS (
    SELECT pg_notify({channel}, CASE WHEN state = 'running' THEN 'c:' ELSE 'f:' END || id)
    FROM changed
)
SELECT old.state::text AS state, (SELECT count(*) FROM changed) AS changed,
       (SELECT count(*) FROM notified) AS notified
FROM old;

-- name: retry_job
WITH old AS (
    SELECT id, state, queue FROM {schema}.jobs WHERE id = $1 FOR UPDATE
), changed AS (
    UPDATE {schema}.jobs AS j
    SET state = 'available',
        scheduled_at = now(),
        finalized_at = NULL,
        cancel_requested_at = NULL,
        max_attempts = greatest(j.max_attempts, least(j.attempt + 1, 32767))
    FROM old
    WHERE j.id = old.id AND old.state IN ('scheduled', 'retryable', 'discarded', 'cancelled')
    RETURNING j.id, j.queue
), notified AS (
    SELECT pg_notify({channel}, 'i:' || queue) FROM changed
)
SELECT old.state::text AS state, (SELECT count(*) FROM changed) AS changed,
       (SELECT count(*) FROM notified) AS notified
FROM old;

-- name: delete_job
WITH old AS (
    SELECT id, state FROM {schema}.jobs WHERE id = $1 FOR UPDATE
), deleted AS (
    DELETE FROM {schema}.jobs AS j USING old
    WHERE j.id = old.id AND old.state <> 'running'
    RETURNING j.id
)
SELECT old.state::text AS state, (SELECT count(*) FROM deleted) AS changed FROM old;

-- name: cancel_requested
-- Running jobs of this node that app.cancel flagged: covers a cancel notification this
-- node missed (e.g. while its LISTEN connection was being re-established).
SELECT id FROM {schema}.jobs
WHERE id = ANY($1::bigint[]) AND state = 'running' AND cancel_requested_at IS NOT NULL;

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

-- name: queues_idle
-- True when none of these queues has a due job of these kinds, or a running job.
SELECT NOT EXISTS (
    SELECT 1 FROM {schema}.jobs
    WHERE queue = ANY($1::text[])
      AND (state = 'running'
           OR (state IN ('available', 'scheduled', 'retryable')
               AND scheduled_at <= now() AND kind = ANY($2::text[])))
) AS idle;

-- name: drop_schema
DROP SCHEMA IF EXISTS {schema} CASCADE;
