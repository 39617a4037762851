-- Cluster coordination: worker nodes with heartbeats, and named leases (the leader's, and
-- one per persistent-worker replica).

CREATE TABLE {schema}.nodes (
    id text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    -- A node whose expiry passed is dead: its running jobs are rescued, its leases lapse.
    expires_at timestamptz NOT NULL,
    queues jsonb NOT NULL DEFAULT '{}',
    kinds text[] NOT NULL DEFAULT '{}',
    -- Periodic and persistent configuration of the node, and its digest, for drift reports.
    config jsonb NOT NULL DEFAULT '{}',
    digest text NOT NULL DEFAULT ''
);

CREATE TABLE {schema}.leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    -- Incremented each time the lease changes hands: a fencing token.
    term bigint NOT NULL DEFAULT 1,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    renewed_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    -- What the holder reports about its tenure (a persistent copy's restarts, last error).
    info jsonb NOT NULL DEFAULT '{}'
);

-- One row per periodic occurrence enqueued: the primary key makes a (schedule, slot)
-- occurrence happen once even when two leaders overlap or a new one catches up.
CREATE TABLE {schema}.periodic_runs (
    name text NOT NULL,
    slot timestamptz NOT NULL,
    job_id bigint,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, slot)
);

-- Rescue finds running jobs by node.
CREATE INDEX jobs_running_node_idx ON {schema}.jobs (node_id) WHERE state = 'running';

-- Retention prunes finished jobs oldest first.
CREATE INDEX jobs_finalized_idx ON {schema}.jobs (finalized_at)
    WHERE state IN ('completed', 'cancelled', 'discarded');

-- The (state, queue) index of 0001 goes: every state change of a job is a non-HOT update,
-- and each index is one more write per enqueue, claim and outcome. The partial indexes
-- cover every state a query looks for: waiting (jobs_claim_idx), running
-- (jobs_running_node_idx) and finished (jobs_finalized_idx).
DROP INDEX {schema}.jobs_state_idx;
