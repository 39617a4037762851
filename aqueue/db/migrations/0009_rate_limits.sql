-- Rate limits: at most rate_limit starts of a queue (or of each partition key) in any
-- window of rate_per seconds, across the cluster. A start is a claim: the moment a job
-- leaves the waiting states for 'running', recorded as its attempted_at.
--
-- Why no interleaving of claims can exceed a rate. Every claim of a rate-limited queue
-- runs claim_limited, under the queue's transaction-scoped advisory lock (0005 argues why
-- a count read after that lock sees every claim committed before it, and why none can
-- commit in between). Once it holds the lock, the claim reads the clock once (t, with
-- clock_timestamp(), not now(): now() is when the transaction began, which may be long
-- before the lock was granted) and counts the starts recorded in rate_starts with
-- started_at > t - per; it takes at most rate_limit minus that many jobs, stamps them
-- attempted_at = t and records them (t, how many) in the same transaction, so the record
-- commits with the claim or not at all. Take any window (a, a + per] and the claim k
-- within it that came last in lock order: every other start in that window was recorded
-- by a claim j before k in lock order, with a < t_j, and t_k <= a + per, so
-- t_j > a >= t_k - per: claim k counted all of them, and took only what was left. So no
-- window holds more than rate_limit starts. Starts older than the window (started_at <=
-- t - per) can never be counted again, and are deleted under the same lock (by the claim
-- for the keys it records, by prune_rate_starts for the rest). Windows are measured by
-- the database server's clock, which the argument assumes is never stepped backwards (a
-- claim reading an earlier time than its predecessor could miss starts that predecessor
-- deleted as expired). The window slides (no fixed buckets, whose edges would let twice
-- the rate through across a boundary).
--
-- Per partition: the same count, for the key (jobs without a key share one window of
-- their own: they neither throttle a keyed partition nor go unlimited). Starts made
-- while a queue had no rate are not recorded, and a changed rate (a longer per, or
-- per_partition switched) may not see all the starts made under the old one: a rate holds
-- from the first claim made under it. A job claimed and then handed back unstarted
-- (shutdown) still counted as a start: the bound is never exceeded, at worst undershot.
--
-- Waiting: a worker whose claim came back short asks rate_wait when the next place frees
-- (the oldest start in a full window leaves it at started_at + per) and sleeps until then,
-- so nothing polls. That answer is read outside the lock; a start committed meanwhile can
-- only make the real time later, so the worker at worst wakes early, claims nothing, and
-- asks again: one wake per start that leaves a window, never a spin.

ALTER TABLE {schema}.queues
    ADD COLUMN rate_limit integer CHECK (rate_limit BETWEEN 1 AND 10000),
    ADD COLUMN rate_per double precision CHECK (rate_per > 0 AND rate_per <= 31622400),
    ADD COLUMN rate_per_partition boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT queues_rate_check CHECK ((rate_limit IS NULL) = (rate_per IS NULL));

-- One row per claim (and per key, per partition): how many jobs it started at started_at.
-- partition_key is '' for the queue's own window and for jobs without a key (a real key is
-- never empty). Rows older than the window are deleted by the claims that touch the same
-- key and by the leader's pruning.
CREATE TABLE {schema}.rate_starts (
    queue text NOT NULL,
    partition_key text NOT NULL,
    started_at timestamptz NOT NULL,
    starts integer NOT NULL CHECK (starts > 0)
);
CREATE INDEX rate_starts_window_idx
    ON {schema}.rate_starts (queue, partition_key, started_at) INCLUDE (starts);

CREATE OR REPLACE FUNCTION {schema}.claim_limited(
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

-- How many seconds until a rate-limited queue has a place again for its due jobs: the
-- earliest time the oldest start of a full window leaves it (of the queue's window, or,
-- per partition, of the windows of keys with due jobs, at most 1000 keys looked at).
-- NULL when the rate is not what holds the queue back. Read without the lock: a hint
-- (see the essay at the top of this file).
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
