-- Workflows and batches: jobs that wait in 'pending' until the jobs they depend on end.
--
-- Promotion happens in the transaction that finalizes a dependency, whoever writes it (a
-- worker's outcome, a rescue that discards, app.cancel, cancel_workflow): a row trigger on
-- jobs notes each workflow or batch job that reaches a final state, and a statement trigger
-- then updates the jobs depending on them. Nothing polls, and no crash can fall between the
-- dependency's outcome and its dependents' promotion. The leader's backstop
-- (promote_stranded) only repairs what no transaction can announce: a dependency deleted
-- by hand.
--
-- Cost. Each dependent counts its unfinished dependencies (deps_left) and failed ones
-- (deps_failed); a finished job decrements the counters of its dependents found through
-- job_deps, so a step costs O(its dependents), never a scan of its siblings, and a
-- 10,000 -> 1 fan-in costs the same for its last member as for its first. Plain jobs pay
-- only the row trigger's WHEN (no call) and one cheap statement-trigger call per UPDATE
-- statement (outcomes and claims are batched, so per statement is per batch).
--
-- Why two triggers. A row trigger updating dependents itself would lock them in the order
-- their dependencies happen to be written, and two outcome batches finishing members of
-- the same two fan-ins in opposite orders would deadlock. Instead the row trigger only
-- appends the job to a transaction-local list (a custom setting: safe behind a transaction
-- pooler), and the statement trigger locks all dependents of the statement in id order
-- before changing them. Its own updates (dependents cancelled by a failed dependency) add
-- to the list and fire it again one level down, where it returns at once: the outer call
-- loops until the list is empty, so a cascade down a chain of any length is a loop, never
-- a recursion deep enough to exhaust the stack. Id order alone does not cover a cascade
-- (its second round locks rows after the first round's): so before it locks any pending
-- row, whoever settles pending jobs takes the transaction lock of each workflow involved,
-- in id order (lock_workflows). A cascade never leaves the workflows of its first round,
-- and app.cancel and cancel_workflow take the same lock first.

ALTER TABLE {schema}.jobs
    -- The workflow (aqueue.Workflow) or batch (app.enqueue_batch) the job belongs to.
    ADD COLUMN workflow_id bigint,
    ADD COLUMN batch_id bigint,
    -- The step's name in its workflow ('callback' for a batch's callback).
    ADD COLUMN step text CHECK (length(step) BETWEEN 1 AND 200),
    -- For a job with dependencies: how many have not ended, how many ended other than
    -- completed, and whether it runs anyway when some failed (on_dep_failure="run").
    ADD COLUMN deps_left integer CHECK (deps_left >= 0),
    ADD COLUMN deps_failed integer CHECK (deps_failed >= 0),
    ADD COLUMN run_on_dep_failure boolean;

-- One row per workflow or batch, for its name, kind and size.
CREATE TABLE {schema}.workflows (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('workflow', 'batch')),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    steps integer NOT NULL CHECK (steps >= 1),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- job_id waits for dep_id. Looked up by the dependency (promotion) and the dependent
-- (the backstop, dep_result).
CREATE TABLE {schema}.job_deps (
    dep_id bigint NOT NULL,
    job_id bigint NOT NULL,
    PRIMARY KEY (dep_id, job_id)
);
CREATE INDEX job_deps_job_idx ON {schema}.job_deps (job_id);

-- The jobs of each workflow or batch. A table of its own rather than an index on
-- jobs.workflow_id: a job row is updated at least twice (claim, outcome), never in place
-- (its state is in index predicates), and each such update adds an entry to every index
-- covering the row; this table is written once per job, at enqueue.
CREATE TABLE {schema}.workflow_jobs (
    workflow_id bigint NOT NULL,
    job_id bigint NOT NULL,
    PRIMARY KEY (workflow_id, job_id)
);

-- Jobs waiting on dependencies: the backstop's scan.
CREATE INDEX jobs_pending_idx ON {schema}.jobs (id) WHERE state = 'pending';

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
