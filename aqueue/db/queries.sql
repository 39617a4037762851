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
      -- A paused queue claims nothing. Not correlated with the rows: PostgreSQL checks it
      -- once per claim (a one-time filter on one primary-key probe) before any scan.
      AND NOT EXISTS (SELECT 1 FROM {schema}.queues AS paused
                      WHERE paused.name = $1 AND paused.paused_at IS NOT NULL)
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
      -- A paused queue claims nothing. Not correlated with the rows: PostgreSQL checks it
      -- once per claim (a one-time filter on one primary-key probe) before any scan.
      AND NOT EXISTS (SELECT 1 FROM {schema}.queues AS paused
                      WHERE paused.name = $1 AND paused.paused_at IS NOT NULL)
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
    -- state::text, not state: with `state = 'running'` the planner may pick the partial
    -- index of running jobs, which (until vacuum) still lists every job that ever ran, and
    -- walk all of it for each batch (measured: 20x slower drains after an ANALYZE). The
    -- primary key is the right path for a batch of ids.
    WHERE j.id = o.id AND j.state::text = 'running' AND j.attempt = o.attempt
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
WHERE id = ANY($1::bigint[]) AND state::text = 'running' AND cancel_requested_at IS NOT NULL;

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
-- True when none of these queues has a due job of these kinds, or a running job. Jobs of
-- a paused queue are not due: nothing will claim them until it is resumed.
SELECT NOT EXISTS (
    SELECT 1 FROM {schema}.jobs AS j
    WHERE queue = ANY($1::text[])
      AND (state = 'running'
           OR (state IN ('available', 'scheduled', 'retryable')
               AND scheduled_at <= now() AND kind = ANY($2::text[])
               AND NOT EXISTS (SELECT 1 FROM {schema}.queues AS paused
                               WHERE paused.name = j.queue AND paused.paused_at IS NOT NULL)))
) AS idle;

-- name: drop_schema
DROP SCHEMA IF EXISTS {schema} CASCADE;

-- ---------------------------------------------------------------------------------------
-- Cluster: nodes, leases, rescue, retention, periodic occurrences.

-- name: upsert_node
-- Registers a worker process or refreshes its heartbeat. ``lapsed``: the row was missing
-- or already expired (the node may have lost jobs to rescue); re-created either way.
WITH old AS (SELECT expires_at FROM {schema}.nodes WHERE id = $1)
INSERT INTO {schema}.nodes AS n (id, host, pid, expires_at, queues, kinds, config, digest)
VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5::jsonb, $6::text[], $7::jsonb, $8)
ON CONFLICT (id) DO UPDATE
SET heartbeat_at = now(), expires_at = EXCLUDED.expires_at
RETURNING NOT EXISTS (SELECT 1 FROM old WHERE old.expires_at > now()) AS lapsed;

-- name: delete_node
DELETE FROM {schema}.nodes WHERE id = $1;

-- name: list_nodes
SELECT id, host, pid, started_at, heartbeat_at, expires_at, queues::text AS queues, kinds,
       config::text AS config, digest, expires_at > now() AS alive
FROM {schema}.nodes
ORDER BY started_at, id;

-- name: acquire_lease
-- Takes the lease when it is free or expired, or renews it for its holder. A renewal
-- ($5 = the term being renewed) keeps the term; anything else is a new tenure and gets
-- term + 1, so the term can serve as a fencing token. A lease is released by expiring it,
-- not by deleting the row, so terms never go backwards.
INSERT INTO {schema}.leases AS l (name, holder, expires_at, info)
VALUES ($1, $2, now() + make_interval(secs => $3), coalesce($4::jsonb, '{}'))
ON CONFLICT (name) DO UPDATE
SET holder = EXCLUDED.holder,
    term = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > now() AND l.term = $5
                THEN l.term ELSE l.term + 1 END,
    acquired_at = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > now()
                            AND l.term = $5
                       THEN l.acquired_at ELSE now() END,
    renewed_at = now(),
    expires_at = EXCLUDED.expires_at,
    info = coalesce($4::jsonb, l.info)
WHERE l.expires_at <= now() OR l.holder = EXCLUDED.holder
RETURNING term;

-- name: lease_free
-- A plain read before trying to take a lease: waiting nodes poll held leases without
-- locking or writing anything.
SELECT NOT EXISTS (
    SELECT 1 FROM {schema}.leases WHERE name = $1 AND expires_at > now()
) AS free;

-- name: release_lease
-- Expires the lease now and tells the other nodes, which try to take it at once.
WITH released AS (
    UPDATE {schema}.leases
    SET expires_at = now(), renewed_at = now(), info = coalesce($3::jsonb, info)
    WHERE name = $1 AND holder = $2 AND expires_at > now()
    RETURNING name
)
SELECT count(pg_notify({channel}, 'l:' || name)) AS released FROM released;

-- name: list_leases
SELECT name, holder, term, acquired_at, renewed_at, expires_at, info::text AS info,
       expires_at > now() AS held
FROM {schema}.leases
ORDER BY name;

-- name: rescue_orphans
-- Running jobs whose node is gone (no row, or its heartbeat expired) go back to retryable,
-- or are discarded when out of attempts, or cancelled when a cancel was requested; a
-- bounded batch per call. The claim sets node_id only after the node row exists.
WITH orphans AS (
    SELECT j.id
    FROM {schema}.jobs AS j
    WHERE j.state = 'running'
      AND NOT EXISTS (SELECT 1 FROM {schema}.nodes AS n
                      WHERE n.id = j.node_id AND n.expires_at > now())
    ORDER BY j.id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE {schema}.jobs AS j
    SET state = (CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                      WHEN j.attempt >= j.max_attempts THEN 'discarded'
                      ELSE 'retryable' END)::{schema}.job_state,
        scheduled_at = now(),
        finalized_at = CASE WHEN j.cancel_requested_at IS NOT NULL
                              OR j.attempt >= j.max_attempts THEN now() END,
        cancel_requested_at = NULL,
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempt, 'at', now(), 'type', 'NodeLost',
            'message', 'the worker node ' || coalesce(j.node_id, '?')
                       || ' running this attempt stopped heartbeating (crashed or lost)',
            'traceback', NULL)),
        node_id = NULL
    FROM orphans
    WHERE j.id = orphans.id
    RETURNING j.id, j.queue, j.state
), woken AS (
    SELECT pg_notify({channel}, 'i:' || queue) FROM (SELECT DISTINCT queue FROM rescued) AS q
), finished AS (
    SELECT pg_notify({channel}, 'f:' || id) FROM rescued WHERE state <> 'retryable'
)
SELECT id, queue, state::text AS state,
       (SELECT count(*) FROM woken) + (SELECT count(*) FROM finished) AS notified
FROM rescued;

-- name: delete_expired_nodes
-- Rows of nodes long dead (their jobs were rescued already); kept a while for cluster_status.
DELETE FROM {schema}.nodes WHERE expires_at < now() - make_interval(secs => $1);

-- name: prune_jobs
-- Finished jobs older than the retention period, oldest first, a bounded batch per call.
WITH old AS (
    SELECT id FROM {schema}.jobs
    WHERE state IN ('completed', 'cancelled', 'discarded')
      AND finalized_at < now() - make_interval(secs => $1)
    ORDER BY finalized_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {schema}.jobs AS j USING old WHERE j.id = old.id;

-- name: claim_periodic_slot
-- Records one occurrence of a schedule; no row back means it was enqueued already.
INSERT INTO {schema}.periodic_runs (name, slot) VALUES ($1, $2)
ON CONFLICT DO NOTHING
RETURNING name;

-- name: set_periodic_job
UPDATE {schema}.periodic_runs SET job_id = $3 WHERE name = $1 AND slot = $2;

-- name: last_periodic_slots
SELECT name, max(slot) AS slot FROM {schema}.periodic_runs
WHERE name = ANY($1::text[])
GROUP BY name;

-- name: prune_periodic_runs
-- Keeps the latest occurrence of each schedule (catch-up needs it) and recent history.
DELETE FROM {schema}.periodic_runs AS p
WHERE p.enqueued_at < now() - make_interval(secs => $1)
  AND p.slot < (SELECT max(slot) FROM {schema}.periodic_runs AS q WHERE q.name = p.name);
-- Job control (issue 4) ---------------------------------------------------------------------
-- Unique jobs, renames, queue pause / resume / drain / obliterate, queue statistics.

-- name: insert_unique_jobs
-- insert_jobs for a batch holding unique jobs: the same arrays plus each job's unique key
-- (NULL for a job that is not unique), period in seconds and states. A job whose key is
-- held by another job (see jobs_unique_idx) is skipped: its output row has a NULL id and
-- the key it wanted, and the enqueuing code then reads the holder (unique_holders).
-- DO NOTHING rather than DO UPDATE: DO UPDATE would lock the holder until the enqueuing
-- transaction ends, and a caller's long transaction would then stall the worker writing
-- that job's outcome. Ids are drawn up front so that every input row finds its output row.
-- The enqueuing code sends at most one row per key, sorted by key, so that concurrent
-- batches sharing keys wait on each other in one order instead of deadlocking.
WITH input AS MATERIALIZED (
    SELECT u.*,
           coalesce(u.sched, now() + make_interval(secs => u.delay), now()) AS at,
           CASE WHEN u.ukey IS NULL OR u.uperiod IS NULL THEN u.ukey
                -- The period bucket comes from the database clock: one clock for every node.
                ELSE u.ukey || ':' || floor(extract(epoch FROM now()) / u.uperiod)::bigint::text
           END AS unique_key,
           nextval(pg_get_serial_sequence('{schema}.jobs', 'id')) AS new_id
    FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::smallint[],
                $6::timestamptz[], $7::float8[], $8::text[], $9::text[], $10::float8[], $11::text[],
                $12::text[], $13::float8[], $14::text[])
        WITH ORDINALITY
        AS u(kind, queue, args, priority, max_attempts, sched, delay, tags, meta, timeout, retry,
             ukey, uperiod, ustates, ord)
), written AS (
    INSERT INTO {schema}.jobs AS j
        (id, kind, queue, state, args, priority, max_attempts, scheduled_at, tags, meta, timeout,
         retry, unique_key, unique_states)
    OVERRIDING SYSTEM VALUE
    SELECT i.new_id, i.kind, i.queue,
           (CASE WHEN i.at > now() THEN 'scheduled' ELSE 'available' END)::{schema}.job_state,
           i.args::jsonb, i.priority, i.max_attempts, i.at,
           CASE WHEN i.tags = '[]' THEN '{}'::text[]
                ELSE ARRAY(SELECT jsonb_array_elements_text(i.tags::jsonb)) END,
           i.meta::jsonb, i.timeout, i.retry::jsonb, i.unique_key,
           string_to_array(i.ustates, ',')::{schema}.job_state[]
    FROM input AS i
    ORDER BY i.ord
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state = ANY (unique_states)
    DO NOTHING
    RETURNING {job_columns:j}, j.unique_key
)
-- An equality join (hashable, unlike an OR): a written row is matched by its key, or by
-- its id when it has none. Keys are hex digests, never '#' followed by digits.
SELECT w.*, i.unique_key AS wanted_key
FROM input AS i
LEFT JOIN written AS w
  ON coalesce(w.unique_key, '#' || w.id) = coalesce(i.unique_key, '#' || i.new_id)
ORDER BY i.ord;

-- name: unique_holders
-- The jobs holding these unique keys now.
SELECT {job_columns}, unique_key
FROM {schema}.jobs
WHERE unique_key = ANY ($1::text[]) AND unique_key IS NOT NULL AND state = ANY (unique_states);

-- name: retry_unique_conflict
-- The job holding the unique key that the job $1 would take back if it were retried.
SELECT other.id
FROM {schema}.jobs AS mine
JOIN {schema}.jobs AS other
  ON other.unique_key = mine.unique_key AND other.id <> mine.id
 AND other.state = ANY (other.unique_states)
WHERE mine.id = $1
LIMIT 1;

-- name: rename_kind_batch
-- Moves up to $4 waiting jobs of kind $1 with ids above $3 to kind $2, in id order. Rows
-- are locked (waiting for a claim in flight to commit, then re-checked), so a job that was
-- claimed meanwhile is running and stays as it is. Wakes the queues of the moved jobs for
-- the workers that know the new kind.
WITH picked AS (
    SELECT id FROM {schema}.jobs
    WHERE kind = $1 AND state IN ('scheduled', 'available', 'retryable') AND id > $3
    ORDER BY id
    LIMIT $4
    FOR UPDATE
), moved AS (
    UPDATE {schema}.jobs AS j
    SET kind = $2
    FROM picked
    WHERE j.id = picked.id
    RETURNING j.id, j.queue
), woken AS (
    SELECT pg_notify({channel}, 'i:' || q.queue)
    FROM (SELECT DISTINCT queue FROM moved) AS q
)
SELECT (SELECT count(*) FROM moved) AS moved, (SELECT max(id) FROM moved) AS last_id,
       (SELECT count(*) FROM woken) AS notified;

-- name: kind_state_counts
SELECT state::text AS state, count(*) AS jobs
FROM {schema}.jobs
WHERE kind = $1
GROUP BY state;

-- name: kind_known_to_live_node
SELECT EXISTS (
    SELECT 1 FROM {schema}.nodes WHERE expires_at > now() AND $1::text = ANY (kinds)
) AS known;

-- name: queue_known
-- A queue exists when a job names it, it has settings (e.g. it was paused), or a live
-- node works it.
SELECT EXISTS (SELECT 1 FROM {schema}.jobs WHERE queue = $1)
    OR EXISTS (SELECT 1 FROM {schema}.queues WHERE name = $1)
    OR EXISTS (SELECT 1 FROM {schema}.nodes
               WHERE expires_at > now() AND queues ? $1::text) AS known;

-- name: pause_queue
-- Returns whether the queue was running before (false: it was already paused).
WITH before AS (
    SELECT paused_at FROM {schema}.queues WHERE name = $1
)
INSERT INTO {schema}.queues AS q (name, paused_at)
VALUES ($1, now())
ON CONFLICT (name) DO UPDATE
SET paused_at = coalesce(q.paused_at, now()), updated_at = now()
RETURNING (SELECT paused_at FROM before) IS NULL AS changed;

-- name: resume_queue
-- Clears a pause and wakes the queue's workers (at commit, so they see it resumed).
WITH resumed AS (
    UPDATE {schema}.queues
    SET paused_at = NULL, updated_at = now()
    WHERE name = $1 AND paused_at IS NOT NULL
    RETURNING name
)
SELECT count(*) AS changed, count(pg_notify({channel}, 'i:' || name)) AS notified
FROM resumed;

-- name: queue_unfinished
-- Jobs of the queue still to run or running (scheduled ones included, however far ahead).
SELECT count(*) AS jobs
FROM {schema}.jobs
WHERE queue = $1 AND state IN ('pending', 'scheduled', 'available', 'retryable', 'running');

-- name: queue_running
SELECT count(*) AS jobs FROM {schema}.jobs WHERE queue = $1 AND state = 'running';

-- name: obliterate_batch
-- Deletes up to $3 jobs of queue $1: running ones only when $2 (force), and then their
-- nodes are told to cancel them. Rows are locked first and re-checked, so without force
-- a job claimed meanwhile is left running rather than deleted under its worker.
WITH doomed AS (
    SELECT id FROM {schema}.jobs
    WHERE queue = $1 AND ($2 OR state <> 'running')
    ORDER BY id
    LIMIT $3
    FOR UPDATE
), deleted AS (
    DELETE FROM {schema}.jobs AS j
    USING doomed
    WHERE j.id = doomed.id
    RETURNING j.id, j.state
), cancelled AS (
    SELECT pg_notify({channel}, 'c:' || id) FROM deleted WHERE state = 'running'
)
SELECT (SELECT count(*) FROM deleted) AS deleted, (SELECT count(*) FROM cancelled) AS cancelled;

-- name: forget_queue
-- After an obliterate: drop the queue's settings row unless it holds a pause.
DELETE FROM {schema}.queues WHERE name = $1 AND paused_at IS NULL;

-- name: queue_stats
-- One row per queue ($1: only that one; NULL: all): the queues jobs name, the queues with
-- settings and the queues live nodes work. Counts are exact (a scan of the queue's jobs).
-- "Unrunnable" counts waiting jobs whose kind no live node working their queue knows.
WITH live AS (
    SELECT id, kinds, queues FROM {schema}.nodes WHERE expires_at > now()
), node_queues AS (
    -- A node lists its queues as an object (name: concurrency) or as a list of names.
    SELECT l.id, l.kinds, q.name
    FROM live AS l,
         LATERAL (SELECT jsonb_object_keys(l.queues) AS name
                  WHERE jsonb_typeof(l.queues) = 'object'
                  UNION
                  SELECT jsonb_array_elements_text(l.queues)
                  WHERE jsonb_typeof(l.queues) = 'array') AS q
    WHERE $1::text IS NULL OR q.name = $1
), per_state AS (
    SELECT queue, state::text AS state, count(*) AS jobs
    FROM {schema}.jobs
    WHERE $1::text IS NULL OR queue = $1
    GROUP BY queue, state
), counts AS (
    SELECT queue, jsonb_object_agg(state, jobs) AS counts FROM per_state GROUP BY queue
), oldest AS (
    SELECT queue, extract(epoch FROM now() - min(scheduled_at))::float8 AS age
    FROM {schema}.jobs
    WHERE state IN ('scheduled', 'available', 'retryable') AND scheduled_at <= now()
      AND ($1::text IS NULL OR queue = $1)
    GROUP BY queue
), per_node AS (
    SELECT queue, coalesce(node_id, '') AS node_id, count(*) AS jobs
    FROM {schema}.jobs
    WHERE state = 'running' AND ($1::text IS NULL OR queue = $1)
    GROUP BY queue, node_id
), running AS (
    SELECT queue, jsonb_object_agg(node_id, jobs) AS by_node FROM per_node GROUP BY queue
), waiting_kinds AS (
    SELECT queue, kind, count(*) AS jobs
    FROM {schema}.jobs
    WHERE state IN ('scheduled', 'available', 'retryable') AND ($1::text IS NULL OR queue = $1)
    GROUP BY queue, kind
), unrunnable AS (
    SELECT w.queue, jsonb_object_agg(w.kind, w.jobs) AS by_kind
    FROM waiting_kinds AS w
    WHERE NOT EXISTS (
        SELECT 1 FROM node_queues AS nq WHERE nq.name = w.queue AND w.kind = ANY (nq.kinds)
    )
    GROUP BY w.queue
), workers AS (
    SELECT name AS queue, count(DISTINCT id) AS nodes FROM node_queues GROUP BY name
), names AS (
    SELECT queue FROM counts
    UNION SELECT name FROM {schema}.queues WHERE $1::text IS NULL OR name = $1
    UNION SELECT queue FROM workers
)
SELECT names.queue AS name,
       settings.paused_at,
       coalesce(counts.counts, '{}')::text AS counts,
       oldest.age AS oldest_available_age,
       coalesce(running.by_node, '{}')::text AS running_by_node,
       coalesce(unrunnable.by_kind, '{}')::text AS unrunnable,
       coalesce(workers.nodes, 0) AS nodes
FROM names
LEFT JOIN {schema}.queues AS settings ON settings.name = names.queue
LEFT JOIN counts ON counts.queue = names.queue
LEFT JOIN oldest ON oldest.queue = names.queue
LEFT JOIN running ON running.queue = names.queue
LEFT JOIN unrunnable ON unrunnable.queue = names.queue
LEFT JOIN workers ON workers.queue = names.queue
ORDER BY names.queue;
