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

-- How many seconds until a rate-limited queue has a place again for its due jobs: the
-- earliest time the oldest start of a full window leaves it (of the queue's window, or,
-- per partition, of the windows of keys with due jobs, at most 1000 keys looked at).
-- NULL when the rate is not what holds the queue back. Read without the lock: a hint
-- (see the essay at the top).
CREATE FUNCTION {schema}.rate_wait(p_queue text, p_kinds text[])
RETURNS double precision LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    settings {schema}.queues%ROWTYPE;
    v_at timestamptz := clock_timestamp();
    v_since timestamptz;
    v_key text := NULL;
    v_next text;
    v_free timestamptz;
    v_soonest timestamptz := NULL;
    v_keyless boolean;
BEGIN
    SELECT * INTO settings FROM {schema}.queues WHERE name = p_queue;
    IF NOT FOUND OR settings.rate_limit IS NULL OR settings.paused_at IS NOT NULL THEN
        RETURN NULL;
    END IF;
    v_since := v_at - settings.rate_per * interval '1 second';
    v_keyless := NOT settings.rate_per_partition OR EXISTS (
        SELECT 1 FROM {schema}.jobs
        WHERE state IN ('available', 'scheduled', 'retryable') AND queue = p_queue
          AND partition_key IS NULL AND scheduled_at <= now() AND kind = ANY (p_kinds));
    IF v_keyless THEN
        v_soonest := {schema}.rate_frees_at(p_queue, '', settings.rate_limit, v_since);
    END IF;
    IF settings.rate_per_partition THEN
        FOR i IN 1..1000 LOOP
            v_next := NULL;
            SELECT partition_key INTO v_next FROM {schema}.jobs
            WHERE state IN ('available', 'scheduled', 'retryable') AND queue = p_queue
              AND partition_key > coalesce(v_key, '') AND scheduled_at <= now()
              AND kind = ANY (p_kinds)
            ORDER BY partition_key LIMIT 1;
            EXIT WHEN v_next IS NULL;
            v_free := {schema}.rate_frees_at(p_queue, v_next, settings.rate_limit, v_since);
            v_soonest := least(v_soonest, v_free);
            v_key := v_next;
        END LOOP;
    END IF;
    RETURN extract(epoch FROM v_soonest + settings.rate_per * interval '1 second' - v_at);
END
$$;

-- The oldest start in the window of (queue, key) when that window is full, else NULL.
CREATE FUNCTION {schema}.rate_frees_at(
    p_queue text, p_key text, p_limit integer, p_since timestamptz
) RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN sum(starts) >= p_limit THEN min(started_at) END
    FROM {schema}.rate_starts
    WHERE queue = p_queue AND partition_key = p_key AND started_at > p_since
$$;

-- Deletes the starts no window can count any more: older than their queue's window, or
-- of a queue without a rate now. Under each queue's lock, like the claims that count them
-- (an expired start deleted between a claim's clock read and its count would go
-- uncounted); the locks are taken one queue at a time and held only until commit.
CREATE FUNCTION {schema}.prune_rate_starts() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_queue text := NULL;
    v_per double precision;
    v_done bigint := 0;
    v_count bigint;
BEGIN
    LOOP
        SELECT queue INTO v_queue FROM {schema}.rate_starts
        WHERE queue > coalesce(v_queue, '') ORDER BY queue LIMIT 1;
        EXIT WHEN NOT FOUND;
        PERFORM pg_advisory_xact_lock(1634825574, hashtext('{schema}.' || v_queue));
        SELECT rate_per INTO v_per FROM {schema}.queues
        WHERE name = v_queue AND rate_limit IS NOT NULL;
        DELETE FROM {schema}.rate_starts
        WHERE queue = v_queue
          AND (v_per IS NULL OR started_at <= clock_timestamp() - v_per * interval '1 second');
        GET DIAGNOSTICS v_count = ROW_COUNT;
        v_done := v_done + v_count;
    END LOOP;
    RETURN v_done;
END
$$;

-- The claim of a limited queue (the reasoning is in migrations/0005_flow_control.sql
-- and, for rate limits, 0009_rate_limits.sql).
CREATE FUNCTION {schema}.claim_limited(
    p_queue text, p_limit integer, p_kinds text[], p_node text
) RETURNS SETOF {schema}.jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    settings {schema}.queues%ROWTYPE;
    free integer := p_limit;
    cursor_key text;
    picked_ids bigint[];
    last_key text;
    v_at timestamptz;
    v_since timestamptz;
    v_rated boolean;
    v_by_key boolean;
    v_keyless integer;
    v_key text;
    v_next text;
    v_wrapped boolean := false;
    v_room integer;
    v_keys text[] := '{}';
    v_rooms integer[] := '{}';
BEGIN
    -- The argument above holds in READ COMMITTED only: a snapshot older than the lock
    -- would miss the previous holder's claim.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'aqueue: claims of limited queues need READ COMMITTED, not %',
            current_setting('transaction_isolation');
    END IF;
    PERFORM pg_advisory_xact_lock(1634825574, hashtext('{schema}.' || p_queue));
    -- The time of this claim's starts: read once the lock is held (see 0009).
    v_at := clock_timestamp();
    SELECT * INTO settings FROM {schema}.queues WHERE name = p_queue;
    IF NOT FOUND OR settings.paused_at IS NOT NULL THEN
        RETURN;
    END IF;
    IF settings.global_limit IS NOT NULL THEN
        free := least(free, settings.global_limit - (
            SELECT count(*) FROM {schema}.jobs
            WHERE queue = p_queue AND state = 'running')::integer);
    END IF;
    v_rated := settings.rate_limit IS NOT NULL;
    IF v_rated THEN
        v_since := v_at - settings.rate_per * interval '1 second';
        IF NOT settings.rate_per_partition THEN
            free := least(free, settings.rate_limit - (
                SELECT coalesce(sum(starts), 0) FROM {schema}.rate_starts
                WHERE queue = p_queue AND partition_key = '' AND started_at > v_since)::integer);
        END IF;
    END IF;
    IF free <= 0 THEN
        RETURN;
    END IF;
    v_by_key := settings.partition_limit IS NOT NULL
        OR (v_rated AND settings.rate_per_partition);
    -- Unlike the plain claim, this one commits durably: a limited claim lost in a crash
    -- after its jobs started would hand their places to others while they still run.
    IF NOT v_by_key THEN
        RETURN QUERY
        WITH claimed AS (
            UPDATE {schema}.jobs AS j
            SET state = 'running', attempt = least(j.attempt + 1, 32767),
                attempted_at = v_at, node_id = p_node
            FROM (SELECT id FROM {schema}.jobs
                  WHERE state IN ('available', 'scheduled', 'retryable') AND queue = p_queue
                    AND scheduled_at <= now() AND kind = ANY (p_kinds)
                  ORDER BY priority, scheduled_at, id
                  LIMIT free
                  FOR UPDATE SKIP LOCKED) AS picked
            WHERE j.id = picked.id
            RETURNING j.*
        ), recorded AS (
            INSERT INTO {schema}.rate_starts (queue, partition_key, started_at, starts)
            SELECT p_queue, '', v_at, count(*) FROM claimed
            WHERE v_rated HAVING count(*) > 0
            RETURNING partition_key
        ), expired AS (
            DELETE FROM {schema}.rate_starts AS r
            USING recorded
            WHERE r.queue = p_queue AND r.partition_key = recorded.partition_key
              AND r.started_at <= v_since
        )
        SELECT * FROM claimed;
        RETURN;
    END IF;
    -- Jobs without a key: not partition-limited, but under a per-partition rate they share
    -- one window of their own.
    v_keyless := free;
    IF v_rated AND settings.rate_per_partition THEN
        v_keyless := greatest(0, least(free, settings.rate_limit - (
            SELECT coalesce(sum(starts), 0) FROM {schema}.rate_starts
            WHERE queue = p_queue AND partition_key = '' AND started_at > v_since)::integer));
    END IF;
    cursor_key := settings.rr_cursor;
    -- The keys with a due job and a free place, in turn: starting after the key served
    -- last, wrapping around once, stopping as soon as there are as many keys as free
    -- places (each gives at least one job). Two index probes per key looked at (three
    -- with a per-partition rate).
    v_key := cursor_key;
    LOOP
        v_next := NULL;
        SELECT partition_key INTO v_next FROM {schema}.jobs
        WHERE state IN ('available', 'scheduled', 'retryable') AND queue = p_queue
          AND partition_key > coalesce(v_key, '') AND scheduled_at <= now()
          AND kind = ANY (p_kinds)
        ORDER BY partition_key LIMIT 1;
        IF v_next IS NULL THEN
            EXIT WHEN v_wrapped OR cursor_key IS NULL;
            v_wrapped := true;
            v_key := NULL;
            CONTINUE;
        END IF;
        EXIT WHEN v_wrapped AND v_next > cursor_key;
        v_room := free;
        IF settings.partition_limit IS NOT NULL THEN
            v_room := least(v_room, settings.partition_limit - (
                SELECT count(*) FROM {schema}.jobs
                WHERE queue = p_queue AND state = 'running' AND partition_key = v_next)::integer);
        END IF;
        IF v_room > 0 AND v_rated AND settings.rate_per_partition THEN
            v_room := least(v_room, settings.rate_limit - (
                SELECT coalesce(sum(starts), 0) FROM {schema}.rate_starts
                WHERE queue = p_queue AND partition_key = v_next
                  AND started_at > v_since)::integer);
        END IF;
        IF v_room > 0 THEN
            v_keys := v_keys || v_next;
            v_rooms := v_rooms || v_room;
            EXIT WHEN cardinality(v_keys) >= free;
        END IF;
        v_key := v_next;
    END LOOP;
    WITH rotation AS (
        SELECT r.key, r.room, r.turn
        FROM unnest(v_keys, v_rooms) WITH ORDINALITY AS r(key, room, turn)
    ), candidates AS (
        SELECT c.id, NULL::text AS key, c.rank,
               (CASE WHEN cursor_key = '' THEN cardinality(v_keys) + 1 ELSE 0 END)::bigint AS turn
        FROM (SELECT id, row_number() OVER (ORDER BY priority, scheduled_at, id) AS rank
              FROM {schema}.jobs
              WHERE state IN ('available', 'scheduled', 'retryable') AND queue = p_queue
                AND partition_key IS NULL AND scheduled_at <= now() AND kind = ANY (p_kinds)
              ORDER BY priority, scheduled_at, id LIMIT v_keyless) AS c
        UNION ALL
        SELECT p.id, rotation.key, p.rank, rotation.turn
        FROM rotation,
             LATERAL (SELECT id, row_number() OVER (ORDER BY priority, scheduled_at, id) AS rank
                      FROM {schema}.jobs
                      WHERE state IN ('available', 'scheduled', 'retryable')
                        AND queue = p_queue AND partition_key = rotation.key
                        AND scheduled_at <= now() AND kind = ANY (p_kinds)
                      ORDER BY priority, scheduled_at, id
                      LIMIT rotation.room) AS p
    ), chosen AS (
        SELECT * FROM candidates ORDER BY rank, turn LIMIT free
    ), picked AS (
        -- Each chosen job locked by primary key, with the conditions again on the locked
        -- row: after waiting for a concurrent update, PostgreSQL re-checks them, so a job
        -- cancelled, renamed or claimed meanwhile is skipped.
        SELECT l.id, chosen.key, chosen.rank, chosen.turn
        FROM chosen,
             LATERAL (SELECT j.id FROM {schema}.jobs AS j
                      WHERE j.id = chosen.id
                        AND j.state IN ('available', 'scheduled', 'retryable')
                        AND j.queue = p_queue AND j.scheduled_at <= now()
                        AND j.kind = ANY (p_kinds)
                      FOR UPDATE SKIP LOCKED) AS l
    )
    SELECT array_agg(id),
           (array_agg(coalesce(key, '') ORDER BY rank DESC, turn DESC))[1]
    INTO picked_ids, last_key
    FROM picked;
    IF picked_ids IS NULL THEN
        RETURN;
    END IF;
    IF v_rated THEN
        -- Recorded in the claim's transaction: a queue-wide rate as one row (key ''), a
        -- per-partition one as a row per key; the same keys' expired starts go.
        WITH recorded AS (
            INSERT INTO {schema}.rate_starts (queue, partition_key, started_at, starts)
            SELECT p_queue,
                   CASE WHEN settings.rate_per_partition THEN coalesce(j.partition_key, '')
                        ELSE '' END,
                   v_at, count(*)
            FROM {schema}.jobs AS j WHERE j.id = ANY (picked_ids)
            GROUP BY 2
            RETURNING partition_key
        )
        DELETE FROM {schema}.rate_starts AS r
        USING recorded
        WHERE r.queue = p_queue AND r.partition_key = recorded.partition_key
          AND r.started_at <= v_since;
    END IF;
    -- The next claim starts after the last key served (round-robin across claims); ''
    -- when that was a job without a key, whose group then goes last next time.
    UPDATE {schema}.queues SET rr_cursor = last_key WHERE name = p_queue;
    RETURN QUERY
    UPDATE {schema}.jobs AS j
    SET state = 'running', attempt = least(j.attempt + 1, 32767), attempted_at = v_at,
        node_id = p_node
    WHERE j.id = ANY (picked_ids)
    RETURNING j.*;
END
$$;
