-- `aqueue jobs list`: whole jobs (as jobs.job_from_row reads them) for people hunting
-- failures, paged by keyset on the primary key like the dashboard (db/listing.py).
-- Same format and placeholders as the other files here (see queries.py).

-- fragment: listing_filters
-- $1 states (a list; NULL: any), $2 queue, $3 kind, $4 since: the job's last activity
-- (finalized, else last attempted, else created) at or after it; NULL filters match all.
SELECT {job_columns}
FROM {schema}.jobs
WHERE ($1::text[] IS NULL OR state::text = ANY ($1::text[]))
  AND ($2::text IS NULL OR queue = $2)
  AND ($3::text IS NULL OR kind = $3)
  AND ($4::timestamptz IS NULL OR coalesce(finalized_at, attempted_at, created_at) >= $4)

-- name: list_jobs_oldest
-- Oldest first, ids above the cursor $5.
{@listing_filters}
  AND id > $5
ORDER BY id
LIMIT $6;

-- name: list_jobs_newest
-- Newest first, ids below the cursor $5.
{@listing_filters}
  AND id < $5
ORDER BY id DESC
LIMIT $6;
