-- Resumable steps (ctx.step): the recorded result of each completed step of a job, by the
-- step's name. A retried job reads them back instead of running its steps again; they go
-- when the job goes (retention, delete, obliterate), through the foreign key.
CREATE TABLE {schema}.job_steps (
    job_id bigint NOT NULL REFERENCES {schema}.jobs (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    result jsonb NOT NULL,
    -- The attempt that ran the step.
    attempt smallint NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, name)
);
