-- Queue settings (pause), statistics, drain and obliterate.
-- Statements start with "-- name: NAME"; placeholders are described in queries.py.

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
-- Deletes up to :limit jobs of queue :queue: running ones only when :force, and then
-- their nodes are told to cancel them. Rows are locked first and re-checked, so without force
-- a job claimed meanwhile is left running rather than deleted under its worker.
WITH doomed AS (
    SELECT id FROM {schema}.jobs
    WHERE queue = :queue AND (:force OR state <> 'running')
    ORDER BY id
    LIMIT :limit
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
-- After an obliterate: drop the queue's settings row unless it holds a pause or limits.
DELETE FROM {schema}.queues
WHERE name = $1 AND paused_at IS NULL AND global_limit IS NULL AND partition_limit IS NULL
  AND rate_limit IS NULL;

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
       settings.global_limit,
       settings.partition_limit,
       settings.rate_limit,
       settings.rate_per,
       coalesce(settings.rate_per_partition, false) AS rate_per_partition,
       -- Starts in the trailing window: of the queue, or of its busiest partition key.
       (SELECT coalesce(max(used), 0) FROM (
            SELECT sum(r.starts) AS used FROM {schema}.rate_starts AS r
            WHERE r.queue = names.queue
              AND r.started_at > clock_timestamp() - settings.rate_per * interval '1 second'
            GROUP BY r.partition_key) AS windows
        WHERE settings.rate_limit IS NOT NULL)::integer AS rate_used,
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

-- name: set_queue_limits
-- A worker starting with an aqueue.Queue spec stores its cluster-wide limits: the last
-- worker to start decides what is in force (drift reports the others).
INSERT INTO {schema}.queues AS q (name, global_limit, partition_limit, rate_limit, rate_per,
                                  rate_per_partition, limits_by, limits_at)
VALUES (:name, :global_limit, :partition_limit, :rate_limit, :rate_per, :rate_per_partition,
        :node_id, now())
ON CONFLICT (name) DO UPDATE
SET global_limit = EXCLUDED.global_limit, partition_limit = EXCLUDED.partition_limit,
    rate_limit = EXCLUDED.rate_limit, rate_per = EXCLUDED.rate_per,
    rate_per_partition = EXCLUDED.rate_per_partition,
    limits_by = EXCLUDED.limits_by, limits_at = now(), updated_at = now();

-- name: queue_limits
-- The limits in force for these queues (no row: none).
SELECT name, global_limit, partition_limit, rate_limit
FROM {schema}.queues
WHERE name = ANY ($1::text[]);

-- name: rate_wait
-- Seconds until a rate-limited queue's window has a place for its due jobs (NULL: the
-- rate is not what holds it back); see migrations/0009_rate_limits.sql.
SELECT {schema}.rate_wait($1, $2::text[]) AS wait;

-- name: prune_rate_starts
-- Starts that no window can count any more (see migrations/0009_rate_limits.sql).
SELECT {schema}.prune_rate_starts() AS deleted;
