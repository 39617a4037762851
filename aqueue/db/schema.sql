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
    -- The flow-control partition key (aqueue.Partition); NULL for most jobs.
    partition_key text,
    -- What the running job last reported (ctx.progress), and by which attempt: a Job shows
    -- it only while the row's attempt is still progress_attempt.
    progress double precision CHECK (progress BETWEEN 0 AND 1),
    progress_note text CHECK (length(progress_note) <= 500),
    progress_at timestamptz,
    progress_attempt smallint,
    -- The workflow (aqueue.Workflow) or batch (app.enqueue_batch) the job belongs to, and
    -- its step's name there ('callback' for a batch's callback).
    workflow_id bigint,
    batch_id bigint,
    step text CHECK (length(step) BETWEEN 1 AND 200),
    -- For a job with dependencies: how many have not ended, how many ended other than
    -- completed, and whether it runs anyway when some failed (on_dep_failure="run").
    deps_left integer CHECK (deps_left >= 0),
    deps_failed integer CHECK (deps_failed >= 0),
    run_on_dep_failure boolean,
    -- A final state always has a finalization time, and only a final state has one.
    CONSTRAINT jobs_finalized_in_final_state CHECK (
        (state IN ('completed', 'cancelled', 'discarded')) = (finalized_at IS NOT NULL)
    )
) WITH (fillfactor = 90);

-- The claim: due jobs of one queue in (priority, scheduled_at, id) order.
CREATE INDEX jobs_claim_idx ON {schema}.jobs (queue, priority, scheduled_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
-- Running jobs by queue, key and node: the limits' counts, rescue and adoption.
CREATE INDEX jobs_running_idx ON {schema}.jobs (queue, partition_key, node_id)
    WHERE state = 'running';
-- Waiting jobs of partitioned queues, by key: the round-robin claim.
CREATE INDEX jobs_partition_claim_idx
    ON {schema}.jobs (queue, partition_key, priority, scheduled_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable') AND partition_key IS NOT NULL;
-- Retention prunes finished jobs oldest first.
CREATE INDEX jobs_finalized_idx ON {schema}.jobs (finalized_at)
    WHERE state IN ('completed', 'cancelled', 'discarded');
-- Exactly the jobs holding their unique key now.
CREATE UNIQUE INDEX jobs_unique_idx ON {schema}.jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state = ANY (unique_states);

-- Jobs waiting on dependencies: the backstop's scan.
CREATE INDEX jobs_pending_idx ON {schema}.jobs (id) WHERE state = 'pending';

-- One row per workflow or batch, for its name, kind and size.
CREATE TABLE {schema}.workflows (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('workflow', 'batch')),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    steps integer NOT NULL CHECK (steps >= 1),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- job_id waits for dep_id.
CREATE TABLE {schema}.job_deps (
    dep_id bigint NOT NULL,
    job_id bigint NOT NULL,
    PRIMARY KEY (dep_id, job_id)
);
CREATE INDEX job_deps_job_idx ON {schema}.job_deps (job_id);

-- The jobs of each workflow or batch (written once per job: see migration 0007 for why
-- this is no index on jobs).
CREATE TABLE {schema}.workflow_jobs (
    workflow_id bigint NOT NULL,
    job_id bigint NOT NULL,
    PRIMARY KEY (workflow_id, job_id)
);

-- Resumable steps (ctx.step): each completed step's result, by job and step name.
CREATE TABLE {schema}.job_steps (
    job_id bigint NOT NULL REFERENCES {schema}.jobs (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    result jsonb NOT NULL,
    -- The attempt that ran the step.
    attempt smallint NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, name)
);

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

-- Queues with settings of their own: a pause, and the cluster-wide limits in force
-- (stored by the last worker that started with an aqueue.Queue spec for the queue).
CREATE TABLE {schema}.queues (
    name text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    paused_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    global_limit integer CHECK (global_limit BETWEEN 1 AND 10000),
    partition_limit integer CHECK (partition_limit BETWEEN 1 AND 10000),
    limits_by text,
    limits_at timestamptz,
    -- The partition key served last: round-robin resumes after it.
    rr_cursor text,
    -- aqueue.Rate: at most rate_limit starts per rate_per seconds (sliding), for the
    -- queue or for each partition key.
    rate_limit integer CHECK (rate_limit BETWEEN 1 AND 10000),
    rate_per double precision CHECK (rate_per > 0 AND rate_per <= 31622400),
    rate_per_partition boolean NOT NULL DEFAULT false,
    CONSTRAINT queues_rate_check CHECK ((rate_limit IS NULL) = (rate_per IS NULL))
);

-- The starts of rate-limited queues: one row per claim (and per key, per partition), ''
-- for the queue's own window and for jobs without a key.
CREATE TABLE {schema}.rate_starts (
    queue text NOT NULL,
    partition_key text NOT NULL,
    started_at timestamptz NOT NULL,
    starts integer NOT NULL CHECK (starts > 0)
);
CREATE INDEX rate_starts_window_idx
    ON {schema}.rate_starts (queue, partition_key, started_at) INCLUDE (starts);

-- Applied migrations (created by the migration runner itself).
CREATE TABLE IF NOT EXISTS {schema}.migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Promotion of workflow and batch dependents (the reasoning is in
-- migrations/0007_workflows.sql).
CREATE FUNCTION {schema}.note_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- ' id' for a completed job, ' -id' for one that failed (discarded or cancelled).
    PERFORM set_config('aqueue.' || {channel},
        coalesce(current_setting('aqueue.' || {channel}, true), '')
        || CASE WHEN NEW.state = 'completed' THEN ' ' ELSE ' -' END || NEW.id, true);
    RETURN NULL;
END
$$;

-- A workflow's (or batch's) transaction lock: whoever settles its pending jobs holds it
-- first, so settling never locks rows in two orders (see the header of migration 0007).
CREATE FUNCTION {schema}.lock_workflows(p_groups bigint[]) RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT count(pg_advisory_xact_lock(1634825575, hashtext('{schema}.' || g)))
    FROM (SELECT DISTINCT g FROM unnest(p_groups) AS g WHERE g IS NOT NULL ORDER BY g) AS s;
$$;

CREATE FUNCTION {schema}.advance_dependents() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_list text;
    v_sent bigint;
BEGIN
    IF pg_trigger_depth() > 1 THEN
        RETURN NULL;  -- the outer call's loop settles what this level changed
    END IF;
    LOOP
        v_list := current_setting('aqueue.' || {channel}, true);
        EXIT WHEN v_list IS NULL OR v_list = '';
        PERFORM set_config('aqueue.' || {channel}, '', true);
        WITH finished AS (
            SELECT abs(x::bigint) AS id, x::bigint < 0 AS failed
            FROM unnest(string_to_array(btrim(v_list), ' ')) AS x
        ), counts AS (
            SELECT e.job_id, count(*)::integer AS n,
                   (count(*) FILTER (WHERE f.failed))::integer AS failed
            FROM {schema}.job_deps AS e JOIN finished AS f ON e.dep_id = f.id
            GROUP BY e.job_id
        ), groups_locked AS (
            -- Every dependent is in its dependency's workflow, so later rounds of this
            -- loop stay inside the workflows locked in the first.
            SELECT {schema}.lock_workflows(array_agg(coalesce(j.workflow_id, j.batch_id)))
                   AS done
            FROM {schema}.jobs AS j
            WHERE j.id IN (SELECT job_id FROM counts)
        ), locked AS (
            SELECT j.id FROM {schema}.jobs AS j, groups_locked
            WHERE j.id IN (SELECT job_id FROM counts) AND j.state = 'pending'
            ORDER BY j.id
            FOR UPDATE OF j
        ), moved AS (
            UPDATE {schema}.jobs AS j
            SET deps_left = j.deps_left - c.n,
                deps_failed = j.deps_failed + c.failed,
                state = (CASE
                    WHEN j.deps_failed + c.failed > 0 AND NOT j.run_on_dep_failure
                        THEN 'cancelled'
                    WHEN j.deps_left - c.n > 0 THEN 'pending'
                    WHEN j.scheduled_at > now() THEN 'scheduled'
                    ELSE 'available' END)::{schema}.job_state,
                finalized_at = CASE WHEN j.deps_failed + c.failed > 0
                                         AND NOT j.run_on_dep_failure THEN now() END,
                errors = CASE WHEN j.deps_failed + c.failed > 0 AND NOT j.run_on_dep_failure
                    THEN j.errors || jsonb_build_array(jsonb_build_object(
                        'attempt', j.attempt, 'at', now(), 'type', 'DependencyFailed',
                        'message', 'cancelled: a dependency was discarded or cancelled',
                        'traceback', NULL))
                    ELSE j.errors END
            FROM counts AS c, locked AS l
            WHERE j.id = c.job_id AND j.id = l.id AND j.state = 'pending'
            RETURNING j.id, j.state, j.queue
        ), woken AS (
            SELECT pg_notify({channel}, 'i:' || q.queue)
            FROM (SELECT DISTINCT queue FROM moved WHERE state = 'available') AS q
        ), ended AS (
            SELECT pg_notify({channel}, 'f:' || id) FROM moved WHERE state = 'cancelled'
        )
        SELECT (SELECT count(*) FROM woken) + (SELECT count(*) FROM ended),
               (SELECT string_agg('-' || id, ' ') FROM moved WHERE state = 'cancelled')
        INTO v_sent, v_list;
        -- The next round: the dependents cancelled in this one. The row trigger does not
        -- note them (its WHEN skips changes made inside this function): one string built
        -- once, not appended to row by row.
        PERFORM set_config('aqueue.' || {channel}, coalesce(v_list, ''), true);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_note_finished
    AFTER UPDATE OF state ON {schema}.jobs
    FOR EACH ROW
    WHEN ((NEW.workflow_id IS NOT NULL OR NEW.batch_id IS NOT NULL)
          AND NEW.finalized_at IS NOT NULL AND OLD.finalized_at IS NULL
          AND pg_trigger_depth() = 0)
    EXECUTE FUNCTION {schema}.note_finished();

CREATE TRIGGER jobs_advance_dependents
    AFTER UPDATE OF state ON {schema}.jobs
    FOR EACH STATEMENT
    EXECUTE FUNCTION {schema}.advance_dependents();
