-- Inserting, reading and steering single jobs.
-- Statements start with "-- name: NAME"; placeholders are described in queries.py.

-- fragment: option_groups
-- The distinct option sets of one enqueue call (see db.params.InsertColumns), with their
-- tags and meta parsed and their due time computed once per group, not once per job.
groups AS MATERIALIZED (
    SELECT g.ord, g.kind, g.queue, g.priority, g.max_attempts, g.timeout, g.retry::jsonb AS retry,
           g.meta::jsonb AS meta,
           CASE WHEN g.tags = '[]' THEN '{}'::text[]
                ELSE ARRAY(SELECT jsonb_array_elements_text(g.tags::jsonb)) END AS tags,
           coalesce(g.sched, now() + make_interval(secs => g.delay), now()) AS at
    FROM unnest(:kind::text[], :queue::text[], :priority::smallint[], :max_attempts::smallint[],
                :scheduled_at::timestamptz[], :delay::float8[], :tags::text[], :meta::text[],
                :timeout::float8[], :retry::text[])
        WITH ORDINALITY
        AS g(kind, queue, priority, max_attempts, sched, delay, tags, meta, timeout, retry, ord)
)

-- fragment: job_values
-- A new job's columns from its input row `r` and its option group `g`.
g.kind, g.queue, r.partition_key,
(CASE WHEN g.at > now() THEN 'scheduled' ELSE 'available' END)::{schema}.job_state,
r.args, g.priority, g.max_attempts, g.at, g.tags, g.meta, g.timeout, g.retry

-- name: insert_jobs
-- One statement for one job or thousands: a document in, one row out. The ids come back
-- as one array in input order: a statement's identity values are drawn in the order it
-- inserts, and it inserts in input order. A job's state and due time are its group's,
-- and every job of the statement was created at now(): one array and two small ones
-- decode far faster than a row per job.
WITH {@option_groups}, inserted AS (
    INSERT INTO {schema}.jobs
        (kind, queue, partition_key, state, args, priority, max_attempts, scheduled_at, tags,
         meta, timeout, retry)
    SELECT {@job_values}
    FROM (SELECT (e->>0)::int AS grp, e->1 AS args, e->>2 AS partition_key, ord
          FROM jsonb_array_elements(:jobs::text::jsonb) WITH ORDINALITY AS x(e, ord)) AS r
    JOIN groups AS g ON g.ord = r.grp
    ORDER BY r.ord
    RETURNING id
)
SELECT (SELECT array_agg(id ORDER BY id) FROM inserted) AS ids,
       array_agg((CASE WHEN g.at > now() THEN 'scheduled' ELSE 'available' END)
                 ORDER BY g.ord) AS states,
       array_agg(g.at ORDER BY g.ord) AS scheduled_at,
       now() AS created_at
FROM groups AS g;

-- name: insert_unique_jobs
-- insert_jobs for a batch holding unique jobs: each job's row also carries its unique key
-- (NULL for a job that is not unique), period in seconds and states. A job whose key is
-- held by another job (see jobs_unique_idx) is skipped: its output row has a NULL id and
-- the key it wanted, and the enqueuing code then reads the holder (unique_holders).
-- DO NOTHING rather than DO UPDATE: DO UPDATE would lock the holder until the enqueuing
-- transaction ends, and a caller's long transaction would then stall the worker writing
-- that job's outcome. Ids are drawn up front so that every input row finds its output row.
-- The enqueuing code sends at most one row per key, sorted by key, so that concurrent
-- batches sharing keys wait on each other in one order instead of deadlocking.
WITH {@option_groups}, input AS MATERIALIZED (
    SELECT u.ord, (u.e->>0)::int AS grp, u.e->1 AS args, u.e->>2 AS partition_key,
           u.e->>5 AS ustates,
           CASE WHEN u.e->>3 IS NULL OR u.e->>4 IS NULL THEN u.e->>3
                -- The period bucket comes from the database clock: one clock for every node.
                ELSE (u.e->>3) || ':'
                     || floor(extract(epoch FROM now()) / (u.e->>4)::float8)::bigint::text
           END AS unique_key,
           nextval(pg_get_serial_sequence('{schema}.jobs', 'id')) AS new_id
    FROM jsonb_array_elements(:jobs::text::jsonb) WITH ORDINALITY AS u(e, ord)
), written AS (
    INSERT INTO {schema}.jobs AS j
        (id, kind, queue, partition_key, state, args, priority, max_attempts, scheduled_at, tags,
         meta, timeout, retry, unique_key, unique_states)
    OVERRIDING SYSTEM VALUE
    SELECT r.new_id, {@job_values}, r.unique_key,
           string_to_array(r.ustates, ',')::{schema}.job_state[]
    FROM input AS r
    JOIN groups AS g ON g.ord = r.grp
    ORDER BY r.ord
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

-- name: notify_available
-- Wakes the workers of these queues (once per distinct queue). Run in the inserting
-- transaction when it is the caller's, so the wake-up is delivered only at its commit.
SELECT count(pg_notify({channel}, 'i:' || q.queue)) AS notified
FROM (SELECT DISTINCT unnest($1::text[]) AS queue) AS q;

-- name: unique_holders
-- The jobs holding these unique keys now.
SELECT {job_columns}, unique_key
FROM {schema}.jobs
WHERE unique_key = ANY ($1::text[]) AND unique_key IS NOT NULL AND state = ANY (unique_states);

-- name: get_job
SELECT {job_columns} FROM {schema}.jobs WHERE id = $1;

-- name: list_jobs
SELECT {job_columns}
FROM {schema}.jobs
WHERE (:state::text IS NULL OR state = :state::{schema}.job_state)
  AND (:queue::text IS NULL OR queue = :queue)
  AND (:kind::text IS NULL OR kind = :kind)
ORDER BY id
LIMIT :limit;

-- fragment: cancel_set
-- What a cancel does to the locked rows `old` of `j`: a waiting job ends cancelled with a
-- Cancelled error ($2 the reason); a running one is only flagged, and its node records the
-- cancellation when the job stops.
SET state = CASE WHEN old.state = 'running' THEN j.state ELSE 'cancelled' END,
    finalized_at = CASE WHEN old.state = 'running' THEN NULL ELSE now() END,
    cancel_requested_at = now(),
    errors = CASE WHEN old.state = 'running' THEN j.errors
                  ELSE j.errors || jsonb_build_array(jsonb_build_object(
                      'attempt', j.attempt, 'at', now(), 'type', 'Cancelled',
                      'message', $2::text, 'traceback', NULL)) END

-- name: cancel_job
-- A waiting job is cancelled here and now; a running one is flagged and its node is told
-- through NOTIFY, and the node records the cancellation when the job stops.
WITH old AS (
    SELECT id, state FROM {schema}.jobs WHERE id = $1 FOR UPDATE
), changed AS (
    UPDATE {schema}.jobs AS j
    {@cancel_set}
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
-- A workflow or batch job that ended and has dependents is not retried: they were already
-- promoted or cancelled by its first ending, and a second one would count twice.
WITH old AS (
    SELECT id, state, queue,
           state IN ('discarded', 'cancelled')
               AND EXISTS (SELECT 1 FROM {schema}.job_deps AS e WHERE e.dep_id = jobs.id)
               AS has_dependents,
           -- A step cancelled while a dependency still runs must not run before it ends.
           EXISTS (SELECT 1 FROM {schema}.job_deps AS e
                   JOIN {schema}.jobs AS d ON d.id = e.dep_id
                   WHERE e.job_id = jobs.id AND d.finalized_at IS NULL) AS deps_unfinished
    FROM {schema}.jobs WHERE id = $1 FOR UPDATE
), changed AS (
    UPDATE {schema}.jobs AS j
    SET state = 'available',
        scheduled_at = now(),
        finalized_at = NULL,
        cancel_requested_at = NULL,
        max_attempts = greatest(j.max_attempts, least(j.attempt + 1, 32767))
    FROM old
    WHERE j.id = old.id AND old.state IN ('scheduled', 'retryable', 'discarded', 'cancelled')
      AND NOT old.has_dependents AND NOT old.deps_unfinished
    RETURNING j.id, j.queue
), notified AS (
    SELECT pg_notify({channel}, 'i:' || queue) FROM changed
)
SELECT old.state::text AS state, old.has_dependents, old.deps_unfinished,
       (SELECT count(*) FROM changed) AS changed,
       (SELECT count(*) FROM notified) AS notified
FROM old;

-- name: retry_unique_conflict
-- The job holding the unique key that the job $1 would take back if it were retried.
SELECT other.id
FROM {schema}.jobs AS mine
JOIN {schema}.jobs AS other
  ON other.unique_key = mine.unique_key AND other.id <> mine.id
 AND other.state = ANY (other.unique_states)
WHERE mine.id = $1
LIMIT 1;

-- name: delete_job
WITH old AS (
    SELECT id, state FROM {schema}.jobs WHERE id = $1 FOR UPDATE
), deleted AS (
    DELETE FROM {schema}.jobs AS j USING old
    WHERE j.id = old.id AND old.state <> 'running'
    RETURNING j.id
)
SELECT old.state::text AS state, (SELECT count(*) FROM deleted) AS changed FROM old;

-- name: rename_kind_batch
-- Moves up to :limit waiting jobs of kind :old with ids above :after_id to kind :new, in id
-- order. Rows are locked (waiting for a claim in flight to commit, then re-checked), so a job that was
-- claimed meanwhile is running and stays as it is. Wakes the queues of the moved jobs for
-- the workers that know the new kind.
WITH picked AS (
    SELECT id FROM {schema}.jobs
    WHERE kind = :old AND state IN ('pending', 'scheduled', 'available', 'retryable') AND id > :after_id
    ORDER BY id
    LIMIT :limit
    FOR UPDATE
), moved AS (
    UPDATE {schema}.jobs AS j
    SET kind = :new
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

-- name: prune_jobs
-- Finished jobs older than the retention period, oldest first, a bounded batch per call.
WITH old AS (
    SELECT id FROM {schema}.jobs
    WHERE state IN ('completed', 'cancelled', 'discarded')
      AND finalized_at < now() - make_interval(secs => $1)
      -- Jobs of workflows and batches go with their whole workflow (prune_workflows).
      AND workflow_id IS NULL AND batch_id IS NULL
    ORDER BY finalized_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {schema}.jobs AS j USING old WHERE j.id = old.id;

-- name: record_progress
-- ctx.progress: what a running job reports about itself. Guarded by id, state and attempt
-- so that a late report (the attempt timed out, was rescued as an orphan and claimed again,
-- or already ended) never touches the job's next attempt or a finished row. No RETURNING:
-- the caller learns from the status whether it applied. No index covers these columns, so
-- this is a heap-only update.
UPDATE {schema}.jobs
SET progress = :progress,
    progress_note = :note,
    progress_at = now(),
    progress_attempt = attempt
WHERE id = :id AND state = 'running' AND attempt = :attempt;
