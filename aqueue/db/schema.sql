-- The current aqueue schema, in one piece: what applying every file of migrations/ to an
-- empty schema produces (tests/test_schema.py checks that they agree). For reading and for
-- review; aqueue itself only ever applies the migrations. {schema} is the schema name.

CREATE TYPE {schema}.job_state AS ENUM (
    'pending', 'scheduled', 'available', 'running', 'retryable',
    'completed', 'cancelled', 'discarded'
);

-- One row per job, from enqueue until retention prunes it.
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
    -- One record per failed attempt: attempt, at, type, message, traceback.
    errors jsonb NOT NULL DEFAULT '[]',
    result jsonb,
    tags text[] NOT NULL DEFAULT '{}',
    meta jsonb NOT NULL DEFAULT '{}',
    -- Set only when given per enqueue; otherwise the job's definition decides.
    timeout double precision CHECK (timeout > 0),
    retry jsonb,
    -- The node running the job (state 'running'); rescue matches it against nodes.
    node_id text,
    cancel_requested_at timestamptz,
    -- The key a unique job holds while its state is one of unique_states (aqueue/unique.py).
    unique_key text,
    unique_states {schema}.job_state[],
    -- What the running job last reported (ctx.progress), and by which attempt: a Job shows
    -- it only while the row's attempt is still progress_attempt.
    progress double precision CHECK (progress BETWEEN 0 AND 1),
    progress_note text CHECK (length(progress_note) <= 500),
    progress_at timestamptz,
    progress_attempt smallint,
    -- A final state always has a finalization time, and only a final state has one.
    CONSTRAINT jobs_finalized_in_final_state CHECK (
        (state IN ('completed', 'cancelled', 'discarded')) = (finalized_at IS NOT NULL)
    )
) WITH (fillfactor = 90);

-- The claim: due jobs of one queue in (priority, scheduled_at, id) order.
CREATE INDEX jobs_claim_idx ON {schema}.jobs (queue, priority, scheduled_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
-- Rescue finds running jobs by node.
CREATE INDEX jobs_running_node_idx ON {schema}.jobs (node_id) WHERE state = 'running';
-- Retention prunes finished jobs oldest first.
CREATE INDEX jobs_finalized_idx ON {schema}.jobs (finalized_at)
    WHERE state IN ('completed', 'cancelled', 'discarded');
-- Exactly the jobs holding their unique key now.
CREATE UNIQUE INDEX jobs_unique_idx ON {schema}.jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state = ANY (unique_states);

-- Worker processes and their heartbeats.
CREATE TABLE {schema}.nodes (
    id text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    queues jsonb NOT NULL DEFAULT '{}',
    kinds text[] NOT NULL DEFAULT '{}',
    config jsonb NOT NULL DEFAULT '{}',
    digest text NOT NULL DEFAULT ''
);

-- Named leases: the leader's, and one per persistent-worker replica.
CREATE TABLE {schema}.leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    term bigint NOT NULL DEFAULT 1,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    renewed_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    info jsonb NOT NULL DEFAULT '{}'
);

-- One row per periodic occurrence enqueued, so a (schedule, slot) runs once.
CREATE TABLE {schema}.periodic_runs (
    name text NOT NULL,
    slot timestamptz NOT NULL,
    job_id bigint,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, slot)
);

-- Queues with settings of their own (a pause).
CREATE TABLE {schema}.queues (
    name text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    paused_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Applied migrations (created by the migration runner itself).
CREATE TABLE IF NOT EXISTS {schema}.migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
