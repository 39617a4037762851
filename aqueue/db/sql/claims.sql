-- Claiming due jobs for a worker, and what it holds.
-- Statements start with "-- name: NAME"; placeholders are described in queries.py.

-- fragment: claim_due
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
      AND queue = :queue
      AND scheduled_at <= now()
      AND kind = ANY(:kinds::text[])
      -- A paused queue claims nothing, and a limited one claims only through
      -- claim_limited (see migrations/0005). Not correlated with the rows: PostgreSQL
      -- checks it once per claim (a one-time filter on one primary-key probe).
      AND NOT EXISTS (SELECT 1 FROM {schema}.queues AS settings
                      WHERE settings.name = :queue
                        AND (settings.paused_at IS NOT NULL OR settings.global_limit IS NOT NULL
                             OR settings.partition_limit IS NOT NULL
                             OR settings.rate_limit IS NOT NULL))
    ORDER BY priority, scheduled_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.jobs AS j
SET state = 'running',
    attempt = least(j.attempt + 1, 32767),
    attempted_at = now(),
    node_id = :node_id
FROM picked, (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
WHERE j.id = picked.id

-- name: claim
-- Claims due jobs (see the claim_due fragment), returning every column a Job needs.
{@claim_due}
RETURNING {job_columns:j}, j.timeout, j.retry::text AS retry, j.partition_key;

-- fragment: run_columns
-- What running a job needs, of the claimed rows `j`.
j.id, j.kind, j.queue, j.args::text AS args, j.attempt, j.max_attempts, j.timeout,
j.retry::text AS retry, j.partition_key

-- name: claim_lean
-- The same claim, returning only what running a job needs: used when no job wants its
-- JobContext, no hook and no middleware is registered, so no Job record is built from it
-- (the full rows cost a no-op drain about a fifth of its rate). The two times are for
-- observers (metrics' wait before start).
{@claim_due}
RETURNING {@run_columns}, j.scheduled_at, j.attempted_at;

-- name: claim_bare
-- claim_lean without the two times, when no observer is registered either: decoding two
-- timestamps per job cost a no-op drain about a tenth of its worker's CPU.
{@claim_due}
RETURNING {@run_columns};

-- name: claim_limited
-- The claim of a queue with cluster-wide limits: a function that serialises the queue's
-- claims and counts what runs (migrations/0005_flow_control.sql explains why that is
-- exact). Same columns as claim.
SELECT {job_columns}, timeout, retry::text AS retry, partition_key
FROM {schema}.claim_limited(:queue, :limit, :kinds::text[], :node_id);

-- name: claim_limited_lean
SELECT {@run_columns}, j.scheduled_at, j.attempted_at
FROM {schema}.claim_limited(:queue, :limit, :kinds::text[], :node_id) AS j;

-- name: claim_limited_bare
SELECT {@run_columns}
FROM {schema}.claim_limited(:queue, :limit, :kinds::text[], :node_id) AS j;

-- name: adopt_claims
-- Jobs this worker claimed in one queue but does not hold: a claim that committed while
-- its reply was lost (the server restarted, the connection dropped). $3 lists every job
-- the worker still holds (running, waiting for a slot, or outcome not yet written). A
-- plain read: the rows are already this worker's, so reading them takes nothing away.
SELECT {job_columns}, timeout, retry::text AS retry, partition_key
FROM {schema}.jobs
WHERE state = 'running' AND queue = $1 AND node_id = $2 AND NOT (id = ANY($3::bigint[]))
ORDER BY priority, scheduled_at, id;

-- name: cancel_requested
-- Running jobs of this node that app.cancel flagged: covers a cancel notification this
-- node missed (e.g. while its LISTEN connection was being re-established).
SELECT id FROM {schema}.jobs
WHERE id = ANY($1::bigint[]) AND state::text = 'running' AND cancel_requested_at IS NOT NULL;
