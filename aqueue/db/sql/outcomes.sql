-- Writing attempt outcomes.
-- Statements start with "-- name: NAME"; placeholders are described in queries.py.

-- fragment: write_outcomes
-- Writes a batch of attempt outcomes. Only rows still running the same attempt change, so a
-- late write cannot resurrect a job rescued or re-claimed meanwhile. States 'available'
-- (interrupted by shutdown) and 'scheduled' (snoozed) give the attempt back. The rows
-- written are `done`; the two notifying CTEs run only if the statement reads them.
WITH o AS (
    SELECT (e->>0)::bigint AS id, (e->>1)::smallint AS attempt, e->>2 AS state,
           e->3 AS result, nullif(e->4, 'null') AS error, (e->>5)::float8 AS delay
    FROM jsonb_array_elements(:outcomes::text::jsonb) AS e
), done AS (
    UPDATE {schema}.jobs AS j
    SET state = o.state::{schema}.job_state,
        -- Only a completed attempt has a result (a JSON null when it returned None).
        result = CASE WHEN o.state = 'completed' THEN o.result END,
        errors = CASE WHEN o.error IS NULL THEN j.errors
                      ELSE j.errors || jsonb_build_array(o.error) END,
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
    RETURNING j.id, j.queue, j.finalized_at, j.scheduled_at, j.attempt
), freed AS (
    -- Places of limited queues were given back: wake their workers on every node (a
    -- worker waiting for a place has nothing else that would wake it before its poll).
    SELECT pg_notify({channel}, 'i:' || settings.name)
    FROM {schema}.queues AS settings
    WHERE settings.name IN (SELECT DISTINCT queue FROM done)
      AND (settings.global_limit IS NOT NULL OR settings.partition_limit IS NOT NULL)
), notified AS (
    -- Wakes app.wait() callers; ids are chunked to stay under NOTIFY's 8000-byte payload limit.
    SELECT pg_notify({channel}, 'f:' || string_agg(s.id::text, ','))
    FROM (SELECT id, (row_number() OVER ()) / 300 AS chunk
          FROM done WHERE finalized_at IS NOT NULL) AS s
    GROUP BY s.chunk
)

-- name: record_outcomes
-- The outcome write (write_outcomes), returning the columns it changed, for hooks. Selecting
-- the count makes PostgreSQL evaluate the notifying CTEs (an unreferenced CTE is skipped,
-- and so is a join the planner can prove unused).
{@write_outcomes}
SELECT done.id, done.finalized_at, done.scheduled_at, done.attempt,
       (SELECT count(*) FROM notified) + (SELECT count(*) FROM freed) AS notified
FROM done;

-- name: record_outcomes_lean
-- The outcome write when no after_process hook needs the changed columns: only the ids
-- of the rows written, as one array. Decoding two timestamps per job cost a no-op drain
-- about a tenth of its worker's CPU.
{@write_outcomes}
SELECT coalesce(array_agg(done.id), '{}') AS ids,
       (SELECT count(*) FROM notified) + (SELECT count(*) FROM freed) AS notified
FROM done;

-- name: outcomes_in_place
-- After an outcome write failed with its outcome unknown and the retry changed nothing:
-- the rows that show exactly what the write leaves (its state, the attempt after any
-- refund, no node), i.e. the failed try had committed. No other writer leaves a row so.
SELECT j.id, j.finalized_at, j.scheduled_at, j.attempt
FROM {schema}.jobs AS j
JOIN unnest(:id::bigint[], :attempt::smallint[], :state::text[]) AS o(id, attempt, state)
  ON j.id = o.id
WHERE j.state::text = o.state
  AND j.node_id IS NULL
  AND j.attempt = CASE WHEN o.state IN ('available', 'scheduled') THEN o.attempt - 1
                       ELSE o.attempt END;
