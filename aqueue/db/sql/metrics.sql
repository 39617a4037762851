-- What a Prometheus scrape reads (aqueue/metrics.py): one statement per scrape, however many
-- queues. Same format and placeholders as the other files here (see queries.py).

-- name: queue_gauges
-- Per queue: waiting jobs that are due, waiting jobs not due yet, the age of the oldest due
-- one, running jobs (and in its busiest partition), whether the queue is paused, and its
-- limits. It reads only unfinished jobs: the
-- waiting ones through the claim's partial index (its predicate and columns: an index-only
-- scan where the visibility map allows), the running ones through the rescue's partial
-- index, so a table holding millions of finished jobs costs what an empty one does.
WITH waiting AS (
    SELECT queue,
           count(*) FILTER (WHERE scheduled_at <= now()) AS due,
           count(*) FILTER (WHERE scheduled_at > now()) AS later,
           extract(epoch FROM now() - min(scheduled_at) FILTER (WHERE scheduled_at <= now()))
               ::float8 AS oldest_due_age
    FROM {schema}.jobs
    WHERE state IN ('available', 'scheduled', 'retryable')
    GROUP BY queue
), running AS (
    -- Per queue, and its busiest partition (what a Partition(limit=n) bounds).
    SELECT queue, sum(jobs)::bigint AS running,
           max(jobs) FILTER (WHERE partition_key IS NOT NULL) AS busiest_partition
    FROM (SELECT queue, partition_key, count(*) AS jobs
          FROM {schema}.jobs
          WHERE state = 'running'
          GROUP BY queue, partition_key) AS per_partition
    GROUP BY queue
), known AS (
    SELECT queue FROM waiting UNION SELECT queue FROM running
    UNION SELECT name FROM {schema}.queues
)
SELECT k.queue,
       coalesce(w.due, 0) AS due,
       coalesce(w.later, 0) AS later,
       coalesce(w.oldest_due_age, 0) AS oldest_due_age,
       coalesce(r.running, 0) AS running,
       coalesce(r.busiest_partition, 0) AS busiest_partition,
       coalesce(q.paused_at IS NOT NULL, false) AS paused,
       -- The cluster-wide limits in force (NULL: none), as the queues table stores them.
       q.global_limit, q.partition_limit,
       -- A rate as starts per second (n / per), so that queues with different windows compare.
       q.rate_limit / q.rate_per AS rate_limit
FROM known AS k
LEFT JOIN waiting AS w ON w.queue = k.queue
LEFT JOIN running AS r ON r.queue = k.queue
LEFT JOIN {schema}.queues AS q ON q.name = k.queue
ORDER BY k.queue;
