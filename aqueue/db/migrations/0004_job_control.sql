-- Job control: unique jobs and cluster-wide queue pauses.

-- Unique jobs. The enqueuing code computes unique_key (a hash of the kind, the chosen
-- arguments, the queue when asked, plus the period bucket) and unique_states (the states
-- in which the job holds that key). The partial unique index holds exactly the jobs that
-- hold their key right now: a state change made by any statement (claim, outcome, rescue,
-- cancel, retry) moves the row into or out of it, so no code has to keep a key column in
-- step with the state, and concurrent enqueues meet in the index, not in a read-then-write.
ALTER TABLE {schema}.jobs
    ADD COLUMN unique_key text,
    ADD COLUMN unique_states {schema}.job_state[];

CREATE UNIQUE INDEX jobs_unique_idx ON {schema}.jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state = ANY (unique_states);

-- Queues with settings of their own. A paused queue (paused_at set) is skipped by every
-- claim: the claim statement reads this row, so a pause holds on every node as soon as it
-- commits, and survives restarts.
CREATE TABLE {schema}.queues (
    name text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    paused_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
