-- Read-only statements for the dashboard's pages (aqueue/db/browse.py runs them).
-- Same format and placeholders as the other files here (see queries.py). None of them
-- writes: every action the dashboard offers goes through the App's admin calls instead.

-- fragment: browse_page
-- The columns of a jobs-list row and the page's filters: $1 states (a list), $2 queue,
-- $3 kind, $4 tag (NULL: any), $7 the length of the arguments' preview.
SELECT id, kind, queue, state::text AS state, priority, attempt, max_attempts,
       scheduled_at, created_at, attempted_at, finalized_at, tags,
       left(args::text, $7) AS args_preview, jsonb_array_length(errors) AS error_count,
       -- The running attempt's own progress only (see jobs.job_from_row).
       CASE WHEN state = 'running' AND progress_attempt = attempt THEN progress END AS progress,
       CASE WHEN state = 'running' AND progress_attempt = attempt THEN progress_note END
           AS progress_note
FROM {schema}.jobs
WHERE ($1::text[] IS NULL OR state::text = ANY ($1::text[]))
  AND ($2::text IS NULL OR queue = $2)
  AND ($3::text IS NULL OR kind = $3)
  AND ($4::text IS NULL OR tags @> ARRAY[$4::text])

-- name: browse_jobs_older
-- One page of jobs, newest first, with ids below $5: keyset paging by the primary key, so
-- page 1000 costs what page 1 costs and no total is ever counted. NULL filters match
-- everything; $1 is a list of states. The caller asks for one row more than it shows, to
-- know whether an older page exists.
{@browse_page}
  AND id < $5
ORDER BY id DESC
LIMIT $6;

-- name: browse_jobs_newer
-- The page just above id $5 (the "newer" link): oldest first here, reversed by the caller.
{@browse_page}
  AND id > $5
ORDER BY id
LIMIT $6;

-- name: throughput
-- Jobs finalized per minute over the last hour, by final state ($1: one queue, or NULL).
-- The state list and the finalized_at range match the partial index jobs_finalized_idx,
-- so this reads one hour of index entries, however many older jobs are kept.
SELECT floor(extract(epoch FROM now() - finalized_at) / 60)::int AS minutes_ago,
       state::text AS state, count(*) AS jobs
FROM {schema}.jobs
WHERE state IN ('completed', 'cancelled', 'discarded')
  AND finalized_at > now() - interval '60 minutes'
  AND ($1::text IS NULL OR queue = $1)
GROUP BY 1, 2;

-- name: periodic_latest
-- The latest recorded occurrence of each periodic schedule and the state of its job
-- (NULL once retention pruned the job). Served by the (name, slot) primary key.
SELECT DISTINCT ON (p.name) p.name, p.slot, p.enqueued_at, p.job_id,
       j.state::text AS job_state
FROM {schema}.periodic_runs AS p
LEFT JOIN {schema}.jobs AS j ON j.id = p.job_id
ORDER BY p.name, p.slot DESC;
