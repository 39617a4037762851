-- aqueue schema, version 1: the jobs table, its claim index and the insert wake-up trigger.
-- {schema} is replaced by the quoted schema name; nothing else is spliced in.

CREATE TYPE {schema}.job_state AS ENUM (
    'pending', 'scheduled', 'available', 'running', 'retryable',
    'completed', 'cancelled', 'discarded'
);

CREATE TABLE {schema}.jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL CHECK (length(kind) BETWEEN 1 AND 200),
    queue text NOT NULL DEFAULT 'default' CHECK (length(queue) BETWEEN 1 AND 200),
    state {schema}.job_state NOT NULL DEFAULT 'available',
    args jsonb NOT NULL DEFAULT '{}',
    priority smallint NOT NULL DEFAULT 0,
    attempt smallint NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts smallint NOT NULL DEFAULT 20 CHECK (max_attempts >= 1),
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    attempted_at timestamptz,
    finalized_at timestamptz,
    errors jsonb NOT NULL DEFAULT '[]',
    result jsonb,
    tags text[] NOT NULL DEFAULT '{}',
    meta jsonb NOT NULL DEFAULT '{}',
    timeout double precision CHECK (timeout > 0),
    retry jsonb,
    node_id text,
    cancel_requested_at timestamptz,
    -- A final state always has a finalization time, and only a final state has one.
    CONSTRAINT jobs_finalized_in_final_state CHECK (
        (state IN ('completed', 'cancelled', 'discarded')) = (finalized_at IS NOT NULL)
    )
) WITH (fillfactor = 90);

-- Serves the claim: due jobs of one queue in (priority, scheduled_at, id) order. Partial, so
-- finished jobs (usually most rows) cost the claim nothing.
CREATE INDEX jobs_claim_idx ON {schema}.jobs (queue, priority, scheduled_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');

-- Admin listings and retention pruning by state.
CREATE INDEX jobs_state_idx ON {schema}.jobs (state, queue);

-- One notification per queue per statement, delivered at commit, so a job enqueued in a
-- transaction wakes workers only once it is visible. The channel is derived from the
-- schema name so that several aqueue schemas in one database do not wake each other.
CREATE FUNCTION {schema}.notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('aqueue_' || substr(md5(TG_TABLE_SCHEMA), 1, 16), 'i:' || q.queue)
    FROM (SELECT DISTINCT queue FROM new_rows WHERE state = 'available') AS q;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_insert
    AFTER INSERT ON {schema}.jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.notify_insert();
