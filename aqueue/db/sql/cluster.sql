-- Worker nodes, leases, and the rescue of jobs whose node is gone.
-- Statements start with "-- name: NAME"; placeholders are described in queries.py.

-- name: upsert_node
-- Registers a worker process or refreshes its heartbeat. ``lapsed``: the row was missing
-- or already expired (the node may have lost jobs to rescue); re-created either way.
WITH old AS (SELECT expires_at FROM {schema}.nodes WHERE id = :id)
INSERT INTO {schema}.nodes AS n (id, host, pid, expires_at, queues, kinds, config, digest)
VALUES (:id, :host, :pid, now() + make_interval(secs => :ttl), :queues::jsonb, :kinds::text[], :config::jsonb, :digest)
ON CONFLICT (id) DO UPDATE
SET heartbeat_at = now(), expires_at = EXCLUDED.expires_at
RETURNING NOT EXISTS (SELECT 1 FROM old WHERE old.expires_at > now()) AS lapsed;

-- name: delete_node
DELETE FROM {schema}.nodes WHERE id = $1;

-- name: list_nodes
SELECT id, host, pid, started_at, heartbeat_at, expires_at, queues::text AS queues, kinds,
       config::text AS config, digest, expires_at > now() AS alive
FROM {schema}.nodes
ORDER BY started_at, id;

-- name: delete_expired_nodes
-- Rows of nodes long dead (their jobs were rescued already); kept a while for cluster_status.
DELETE FROM {schema}.nodes WHERE expires_at < now() - make_interval(secs => $1);

-- name: kind_known_to_live_node
SELECT EXISTS (
    SELECT 1 FROM {schema}.nodes WHERE expires_at > now() AND $1::text = ANY (kinds)
) AS known;

-- name: acquire_lease
-- Takes the lease when it is free or expired, or renews it for its holder. A renewal
-- (:renewing = the term being renewed) keeps the term; anything else is a new tenure and gets
-- term + 1, so the term can serve as a fencing token. A lease is released by expiring it,
-- not by deleting the row, so terms never go backwards.
INSERT INTO {schema}.leases AS l (name, holder, expires_at, info)
VALUES (:name, :holder, now() + make_interval(secs => :ttl), coalesce(:info::jsonb, '{}'))
ON CONFLICT (name) DO UPDATE
SET holder = EXCLUDED.holder,
    term = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > now() AND l.term = :renewing
                THEN l.term ELSE l.term + 1 END,
    acquired_at = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > now()
                            AND l.term = :renewing
                       THEN l.acquired_at ELSE now() END,
    renewed_at = now(),
    expires_at = EXCLUDED.expires_at,
    info = coalesce(:info::jsonb, l.info)
WHERE l.expires_at <= now() OR l.holder = EXCLUDED.holder
RETURNING term;

-- name: lease_free
-- A plain read before trying to take a lease: waiting nodes poll held leases without
-- locking or writing anything.
SELECT NOT EXISTS (
    SELECT 1 FROM {schema}.leases WHERE name = $1 AND expires_at > now()
) AS free;

-- name: release_lease
-- Expires the lease now and tells the other nodes, which try to take it at once.
WITH released AS (
    UPDATE {schema}.leases
    SET expires_at = now(), renewed_at = now(), info = coalesce(:info::jsonb, info)
    WHERE name = :name AND holder = :holder AND expires_at > now()
    RETURNING name
)
SELECT count(pg_notify({channel}, 'l:' || name)) AS released FROM released;

-- name: list_leases
SELECT name, holder, term, acquired_at, renewed_at, expires_at, info::text AS info,
       expires_at > now() AS held
FROM {schema}.leases
ORDER BY name;

-- name: rescue_orphans
-- Running jobs whose node is gone (no row, or its heartbeat expired) go back to retryable,
-- or are discarded when out of attempts, or cancelled when a cancel was requested; a
-- bounded batch per call. The claim sets node_id only after the node row exists.
WITH orphans AS (
    SELECT j.id
    FROM {schema}.jobs AS j
    WHERE j.state = 'running'
      AND NOT EXISTS (SELECT 1 FROM {schema}.nodes AS n
                      WHERE n.id = j.node_id AND n.expires_at > now())
    ORDER BY j.id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE {schema}.jobs AS j
    SET state = (CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                      WHEN j.attempt >= j.max_attempts THEN 'discarded'
                      ELSE 'retryable' END)::{schema}.job_state,
        scheduled_at = now(),
        finalized_at = CASE WHEN j.cancel_requested_at IS NOT NULL
                              OR j.attempt >= j.max_attempts THEN now() END,
        cancel_requested_at = NULL,
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempt, 'at', now(), 'type', 'NodeLost',
            'message', 'the worker node ' || coalesce(j.node_id, '?')
                       || ' running this attempt stopped heartbeating (crashed or lost)',
            'traceback', NULL)),
        node_id = NULL
    FROM orphans
    WHERE j.id = orphans.id
    RETURNING j.id, j.queue, j.state
), woken AS (
    SELECT pg_notify({channel}, 'i:' || queue) FROM (SELECT DISTINCT queue FROM rescued) AS q
), finished AS (
    SELECT pg_notify({channel}, 'f:' || id) FROM rescued WHERE state <> 'retryable'
)
SELECT id, queue, state::text AS state,
       (SELECT count(*) FROM woken) + (SELECT count(*) FROM finished) AS notified
FROM rescued;
