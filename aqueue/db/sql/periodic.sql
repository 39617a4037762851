-- Occurrences of periodic schedules.
-- Statements start with "-- name: NAME"; placeholders are described in queries.py.

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
