-- Progress reported by a running job (ctx.progress). One small UPDATE per report: none of
-- these columns is indexed, so the write is a heap-only (HOT) update that touches no index.
-- progress_attempt is the attempt that reported it: a Job shows progress only while the
-- row's attempt is still that one, so a retry starts without the last attempt's progress
-- and no claim or outcome statement has to clear these columns.
ALTER TABLE {schema}.jobs
    ADD COLUMN progress double precision CHECK (progress BETWEEN 0 AND 1),
    ADD COLUMN progress_note text CHECK (length(progress_note) <= 500),
    ADD COLUMN progress_at timestamptz,
    ADD COLUMN progress_attempt smallint;
