-- Resumable steps (ctx.step), recorded under (job, name).
-- Statements start with "-- name: NAME"; placeholders are described in queries.py.

-- name: step_result
SELECT result::text AS result, attempt FROM {schema}.job_steps WHERE job_id = $1 AND name = $2;

-- name: record_step
-- Records a step's result, only while this attempt is still the job's running one (a late
-- write from an attempt that timed out or was rescued must not speak for the next). When
-- the step was recorded already (by a concurrent call under the same name) the first
-- record stands and is returned.
WITH mine AS (
    SELECT id FROM {schema}.jobs
    WHERE id = :job_id AND state = 'running' AND attempt = :attempt
), written AS (
    INSERT INTO {schema}.job_steps (job_id, name, result, attempt)
    SELECT mine.id, :name, :result::text::jsonb, :attempt FROM mine
    ON CONFLICT (job_id, name) DO NOTHING
    RETURNING result::text AS result, true AS written
)
SELECT coalesce((SELECT result FROM written),
                (SELECT result::text FROM {schema}.job_steps
                 WHERE job_id = :job_id AND name = :name)) AS result,
       EXISTS (SELECT 1 FROM written) AS written,
       EXISTS (SELECT 1 FROM mine) AS running;

-- name: job_steps
-- The recorded steps of these jobs, in the order they were recorded.
SELECT job_id, name, result::text AS result, attempt, recorded_at
FROM {schema}.job_steps
WHERE job_id = ANY ($1::bigint[])
ORDER BY job_id, recorded_at, name;
