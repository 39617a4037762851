-- Workflows and batches: their rows, their jobs' dependencies, promotion's backstop.
-- Promotion itself is the jobs trigger of migrations/0007_workflows.sql.
-- Statements start with "-- name: NAME"; placeholders are described in queries.py.

-- name: create_workflow
INSERT INTO {schema}.workflows (kind, name, steps)
VALUES (:kind, :name, :steps)
RETURNING id;

-- name: insert_group_jobs
-- insert_jobs for the jobs of one workflow or batch: each row also carries its step name,
-- how many dependencies it waits for (0: due at once, like any job) and whether it runs
-- when one of them failed. Ids come back in input order, as for insert_jobs.
WITH {@option_groups}, inserted AS (
    INSERT INTO {schema}.jobs
        (kind, queue, partition_key, state, args, priority, max_attempts, scheduled_at, tags,
         meta, timeout, retry, workflow_id, batch_id, step, deps_left, deps_failed,
         run_on_dep_failure)
    SELECT g.kind, g.queue, r.partition_key,
           (CASE WHEN r.deps > 0 THEN 'pending' WHEN g.at > now() THEN 'scheduled'
                 ELSE 'available' END)::{schema}.job_state,
           r.args, g.priority, g.max_attempts, g.at, g.tags, g.meta, g.timeout, g.retry,
           :workflow_id::bigint, :batch_id::bigint, r.step,
           CASE WHEN r.deps > 0 THEN r.deps END, CASE WHEN r.deps > 0 THEN 0 END,
           CASE WHEN r.deps > 0 THEN r.run_anyway END
    FROM (SELECT (e->>0)::int AS grp, e->1 AS args, e->>2 AS partition_key, e->>3 AS step,
                 (e->>4)::int AS deps, (e->>5)::boolean AS run_anyway, ord
          FROM jsonb_array_elements(:jobs::text::jsonb) WITH ORDINALITY AS x(e, ord)) AS r
    JOIN groups AS g ON g.ord = r.grp
    ORDER BY r.ord
    RETURNING id, state, scheduled_at, queue
), members AS (
    INSERT INTO {schema}.workflow_jobs (workflow_id, job_id)
    SELECT coalesce(:workflow_id::bigint, :batch_id::bigint), id FROM inserted
)
SELECT array_agg(id ORDER BY id) AS ids,
       array_agg(state::text ORDER BY id) AS states,
       array_agg(scheduled_at ORDER BY id) AS scheduled_at,
       array_agg(DISTINCT queue) FILTER (WHERE state = 'available') AS due_queues,
       now() AS created_at
FROM inserted;

-- name: insert_deps
-- job_id waits for dep_id, for each pair.
INSERT INTO {schema}.job_deps (dep_id, job_id)
SELECT * FROM unnest(:dep_id::bigint[], :job_id::bigint[]);

-- name: get_workflow
SELECT id, kind, name, steps, created_at FROM {schema}.workflows WHERE id = $1;

-- name: workflow_jobs
-- Every job of one workflow or batch, in enqueue order.
SELECT {job_columns:j}
FROM {schema}.workflow_jobs AS m
JOIN {schema}.jobs AS j ON j.id = m.job_id
WHERE m.workflow_id = $1
ORDER BY j.id;

-- name: list_workflows
-- Workflows and batches, newest first, with their jobs counted by state.
SELECT w.id, w.kind, w.name, w.steps, w.created_at,
       coalesce((SELECT jsonb_object_agg(c.state, c.n)
                 FROM (SELECT j.state::text AS state, count(*) AS n
                       FROM {schema}.workflow_jobs AS m
                       JOIN {schema}.jobs AS j ON j.id = m.job_id
                       WHERE m.workflow_id = w.id
                       GROUP BY j.state) AS c), '{}')::text AS counts
FROM {schema}.workflows AS w
WHERE (:kind::text IS NULL OR w.kind = :kind) AND (:before::bigint IS NULL OR w.id < :before)
ORDER BY w.id DESC
LIMIT :limit;

-- name: dep_result
-- What ctx.dep_result reads: the dependency named `step` of job $1, if it has one.
SELECT d.id, d.state::text AS state, d.result::text AS result
FROM {schema}.job_deps AS e
JOIN {schema}.jobs AS d ON d.id = e.dep_id
WHERE e.job_id = $1 AND d.step = $2;

-- name: has_step
-- Whether workflow $1 has a step named $2 (only asked to word an error).
SELECT EXISTS (SELECT 1 FROM {schema}.workflow_jobs AS m
               JOIN {schema}.jobs AS j ON j.id = m.job_id
               WHERE m.workflow_id = $1 AND j.step = $2) AS found;

-- name: batch_counts
-- A batch's jobs by state, its callback left out (ctx.batch).
SELECT j.state::text AS state, count(*) AS n
FROM {schema}.workflow_jobs AS m
JOIN {schema}.jobs AS j ON j.id = m.job_id
WHERE m.workflow_id = $1 AND j.step IS NULL
GROUP BY j.state;

-- name: lock_job_workflow
-- The transaction lock of job $1's workflow or batch, if it has one (see lock_workflows),
-- unless the job is running: an outcome write locks a running row before the lock (its
-- trigger takes it), so taking them the other way round could deadlock, and nothing
-- done to a running job settles its dependents.
SELECT {schema}.lock_workflows(
    ARRAY(SELECT coalesce(workflow_id, batch_id) FROM {schema}.jobs
          WHERE id = $1 AND state <> 'running')) AS locked;

-- name: lock_workflow
SELECT {schema}.lock_workflows(ARRAY[$1::bigint]) AS locked;

-- name: cancel_workflow
-- Cancels up to $3 jobs of a workflow or batch that have not ended (and are not already
-- asked to stop): with $4, its running ones, flagged and their nodes told, as app.cancel
-- does for one job; else its waiting ones, here and now (their dependents follow through
-- the trigger, under the workflow's lock). Called in bounded rounds, so that no statement
-- notes an unbounded list of finished jobs.
WITH old AS (
    SELECT j.id, j.state FROM {schema}.jobs AS j
    WHERE j.id IN (SELECT job_id FROM {schema}.workflow_jobs WHERE workflow_id = $1)
      AND j.state NOT IN ('completed', 'cancelled', 'discarded')
      AND (j.state = 'running') = $4::boolean
      AND NOT (j.state = 'running' AND j.cancel_requested_at IS NOT NULL)
    ORDER BY j.id
    LIMIT $3
    FOR UPDATE OF j
), changed AS (
    UPDATE {schema}.jobs AS j
    {@cancel_set}
    FROM old
    WHERE j.id = old.id
    RETURNING j.id, old.state
), notified AS (
    SELECT pg_notify({channel}, CASE WHEN state = 'running' THEN 'c:' ELSE 'f:' END || id)
    FROM changed
)
SELECT count(*) AS changed,
       count(*) FILTER (WHERE state = 'running') AS running,
       (SELECT count(*) FROM notified) AS notified
FROM changed;

-- fragment: stranded
-- Pending jobs `j` none of whose dependencies is still unfinished: promotion would already
-- have settled them, unless a dependency was deleted.
j.state = 'pending'
AND NOT EXISTS (SELECT 1 FROM {schema}.job_deps AS e
                JOIN {schema}.jobs AS d ON d.id = e.dep_id
                WHERE e.job_id = j.id AND d.finalized_at IS NULL)

-- name: lock_stranded_groups
-- The backstop's first statement, in promote_stranded's transaction: the workflows and
-- batches of up to $1 stranded jobs, with their transaction locks taken before any of
-- their rows, the order every settling follows (lock_workflows).
WITH groups AS (
    SELECT coalesce(array_agg(DISTINCT coalesce(j.workflow_id, j.batch_id)), '{}') AS ids
    FROM (SELECT j.workflow_id, j.batch_id FROM {schema}.jobs AS j
          WHERE ({@stranded})
          ORDER BY j.id
          LIMIT $1) AS j
)
SELECT ids, {schema}.lock_workflows(ids) IS NULL AS locked FROM groups;

-- name: promote_stranded
-- The leader's backstop: the stranded jobs of workflows and batches $2 (whose locks
-- lock_stranded_groups took). Each is settled from its dependencies as they are now; a
-- deleted dependency counts as failed.
WITH stuck AS (
    SELECT j.id FROM {schema}.jobs AS j
    WHERE ({@stranded})
      AND coalesce(j.workflow_id, j.batch_id) = ANY ($2::bigint[])
    ORDER BY j.id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), settled AS (
    SELECT s.id,
           (count(*) FILTER (WHERE d.id IS NULL OR d.state <> 'completed'))::integer AS failed
    FROM stuck AS s
    LEFT JOIN {schema}.job_deps AS e ON e.job_id = s.id
    LEFT JOIN {schema}.jobs AS d ON d.id = e.dep_id
    GROUP BY s.id
), moved AS (
    UPDATE {schema}.jobs AS j
    SET deps_left = 0,
        deps_failed = s.failed,
        state = (CASE WHEN s.failed > 0 AND NOT j.run_on_dep_failure THEN 'cancelled'
                      WHEN j.scheduled_at > now() THEN 'scheduled'
                      ELSE 'available' END)::{schema}.job_state,
        finalized_at = CASE WHEN s.failed > 0 AND NOT j.run_on_dep_failure THEN now() END,
        errors = CASE WHEN s.failed > 0 AND NOT j.run_on_dep_failure
            THEN j.errors || jsonb_build_array(jsonb_build_object(
                'attempt', j.attempt, 'at', now(), 'type', 'DependencyFailed',
                'message', 'cancelled: a dependency was discarded, cancelled or deleted',
                'traceback', NULL))
            ELSE j.errors END
    FROM settled AS s
    WHERE j.id = s.id AND j.state = 'pending'
    RETURNING j.id, j.state, j.queue
), woken AS (
    SELECT pg_notify({channel}, 'i:' || q.queue)
    FROM (SELECT DISTINCT queue FROM moved WHERE state = 'available') AS q
)
SELECT count(*) AS moved, (SELECT count(*) FROM woken) AS notified FROM moved;

-- fragment: prunable
-- Workflows and batches `w` created, and with every job ended, before the retention
-- period $1.
w.created_at < now() - make_interval(secs => $1)
AND NOT EXISTS (
    SELECT 1 FROM {schema}.workflow_jobs AS m
    JOIN {schema}.jobs AS j ON j.id = m.job_id
    WHERE m.workflow_id = w.id
      AND (j.finalized_at IS NULL OR j.finalized_at >= now() - make_interval(secs => $1)))

-- name: lock_prunable_workflows
-- Retention's first statement, in prune_workflows' transaction: up to $2 prunable
-- workflows, with their transaction locks taken. A retry of one of their jobs takes the
-- same lock (lock_job_workflow), so prune_workflows, reading after it, sees every retry
-- that committed, and no retry can start until it has committed.
WITH found AS (
    SELECT coalesce(array_agg(w.id ORDER BY w.id), '{}') AS ids
    FROM (SELECT w.id FROM {schema}.workflows AS w
          WHERE ({@prunable})
          ORDER BY w.id
          LIMIT $2) AS w
)
SELECT ids, {schema}.lock_workflows(ids) IS NULL AS locked FROM found;

-- name: prune_workflows
-- Retention of workflows and batches, whole: those of $3 (locked by
-- lock_prunable_workflows) still prunable. Their jobs, dependencies and row go together.
WITH done AS (
    SELECT w.id FROM {schema}.workflows AS w
    WHERE w.id = ANY ($3::bigint[]) AND ({@prunable})
    ORDER BY w.id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), members_gone AS (
    DELETE FROM {schema}.workflow_jobs AS m USING done
    WHERE m.workflow_id = done.id
    RETURNING m.job_id
), jobs_gone AS (
    DELETE FROM {schema}.jobs AS j USING members_gone WHERE j.id = members_gone.job_id
    RETURNING j.id
), deps_gone AS (
    -- Every edge of a workflow ends at one of its jobs (deleted by hand, or now).
    DELETE FROM {schema}.job_deps AS e USING members_gone WHERE e.job_id = members_gone.job_id
    RETURNING 1
)
DELETE FROM {schema}.workflows AS w USING done
WHERE w.id = done.id
  AND (SELECT count(*) FROM deps_gone) + (SELECT count(*) FROM jobs_gone) >= 0;

-- name: workflow_edges
-- The dependencies among one workflow's jobs (the dashboard's step table): which job waits
-- for which, through job_deps_job_idx, one row per edge.
SELECT e.job_id, e.dep_id
FROM {schema}.workflow_jobs AS m
JOIN {schema}.job_deps AS e ON e.job_id = m.job_id
WHERE m.workflow_id = $1
ORDER BY e.job_id, e.dep_id;
