-- Flow control: cluster-wide limits on running jobs, per queue and per partition key.
--
-- Why no interleaving of claims can exceed a limit. A count of running jobs read in a
-- snapshot cannot see another worker's claim that has not committed yet, so two workers
-- that count at once both see room and both claim (the bug of pgqueuer#761, hatchet#4778).
-- Here a limited queue's claims are serialised by a transaction-scoped advisory lock on
-- the queue, and the claim runs as a VOLATILE PL/pgSQL function: in READ COMMITTED every
-- statement inside such a function takes a fresh snapshot, so the count that follows
-- the lock sees every claim committed before the lock was granted, and no claim can
-- commit in between (its holder still holds the lock until it commits). A running job
-- keeps its place until its outcome is written (state leaves 'running'); a rescued,
-- cancelled or deleted job gives it back the same way. Unlimited queues never take the
-- lock, and their plain claim refuses a queue whose stored spec is limited, so a node
-- that has not yet seen a new limit claims nothing rather than too much.
--
-- Fairness: partitions are served round-robin. The claim walks the distinct keys with
-- due jobs (an index skip scan) starting after the key served last (queues.rr_cursor),
-- stops once it has a key for every free place, gives each key at most its free places,
-- and takes the first job of every key before the second of any.

ALTER TABLE {schema}.jobs ADD COLUMN partition_key text;

ALTER TABLE {schema}.queues
    ADD COLUMN global_limit integer CHECK (global_limit BETWEEN 1 AND 10000),
    ADD COLUMN partition_limit integer CHECK (partition_limit BETWEEN 1 AND 10000),
    ADD COLUMN limits_by text,
    ADD COLUMN limits_at timestamptz,
    ADD COLUMN rr_cursor text;

-- Waiting jobs of partitioned queues, by key: the claim's skip scan and per-key picks.
CREATE INDEX jobs_partition_claim_idx
    ON {schema}.jobs (queue, partition_key, priority, scheduled_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable') AND partition_key IS NOT NULL;

-- Running jobs by queue and key (the limits' counts) and node (rescue, adoption). It
-- replaces the index on node_id alone, so a claim still writes one index entry here.
CREATE INDEX jobs_running_idx ON {schema}.jobs (queue, partition_key, node_id)
    WHERE state = 'running';
DROP INDEX {schema}.jobs_running_node_idx;

CREATE FUNCTION {schema}.claim_limited(
    p_queue text, p_limit integer, p_kinds text[], p_node text
) RETURNS SETOF {schema}.jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    settings {schema}.queues%ROWTYPE;
    free integer := p_limit;
    cursor_key text;
    picked_ids bigint[];
    last_key text;
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
    SELECT * INTO settings FROM {schema}.queues WHERE name = p_queue;
    IF NOT FOUND OR settings.paused_at IS NOT NULL THEN
        RETURN;
    END IF;
    IF settings.global_limit IS NOT NULL THEN
        free := least(free, settings.global_limit - (
            SELECT count(*) FROM {schema}.jobs
            WHERE queue = p_queue AND state = 'running')::integer);
    END IF;
    IF free <= 0 THEN
        RETURN;
    END IF;
    -- Unlike the plain claim, this one commits durably: a limited claim lost in a crash
    -- after its jobs started would hand their places to others while they still run.
    IF settings.partition_limit IS NULL THEN
        RETURN QUERY
        UPDATE {schema}.jobs AS j
        SET state = 'running', attempt = least(j.attempt + 1, 32767), attempted_at = now(),
            node_id = p_node
        FROM (SELECT id FROM {schema}.jobs
              WHERE state IN ('available', 'scheduled', 'retryable') AND queue = p_queue
                AND scheduled_at <= now() AND kind = ANY (p_kinds)
              ORDER BY priority, scheduled_at, id
              LIMIT free
              FOR UPDATE SKIP LOCKED) AS picked
        WHERE j.id = picked.id
        RETURNING j.*;
        RETURN;
    END IF;
    cursor_key := settings.rr_cursor;
    -- The keys with a due job and a free place, in turn: starting after the key served
    -- last, wrapping around once, stopping as soon as there are as many keys as free
    -- places (each gives at least one job). Two index probes per key looked at.
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
        v_room := settings.partition_limit - (
            SELECT count(*) FROM {schema}.jobs
            WHERE queue = p_queue AND state = 'running' AND partition_key = v_next)::integer;
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
              ORDER BY priority, scheduled_at, id LIMIT free) AS c
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
    -- The next claim starts after the last key served (round-robin across claims); ''
    -- when that was a job without a key, whose group then goes last next time.
    UPDATE {schema}.queues SET rr_cursor = last_key WHERE name = p_queue;
    RETURN QUERY
    UPDATE {schema}.jobs AS j
    SET state = 'running', attempt = least(j.attempt + 1, 32767), attempted_at = now(),
        node_id = p_node
    WHERE j.id = ANY (picked_ids)
    RETURNING j.*;
END
$$;
