"""bare SQL floor: the claim/complete round trips alone, no framework, for scale.

Our own small jobs table (not aqueue's schema or code), with statements of the shape a
queue needs: a claim of up to B due rows ``FOR UPDATE SKIP LOCKED`` marked running in
the same statement, and a completion of B rows by id in one ``UPDATE ... FROM unnest``.
Two connections work as a pipeline: one claims batch after batch, the other completes
them, so a claim round trip and a completion round trip overlap as in a real worker.
Nothing runs between claim and completion: this is the ceiling for this server and this
driver, which no framework with the same commit policy can beat.

Two rows: every commit durable, and claims committed with ``synchronous_commit = off``
(set on the claiming connection only; completions stay durable). A lost claim only
leaves the job available again, so a queue may make that trade; aqueue's claim does, so
the second row is its like-for-like floor.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time

import asyncpg

from common import Bench, Row, ScenarioResult, main_for, run_async

SCHEMA = """
CREATE TABLE bench_jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL DEFAULT 'default',
    state text NOT NULL DEFAULT 'available',
    priority smallint NOT NULL DEFAULT 0,
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    attempt smallint NOT NULL DEFAULT 0,
    args jsonb NOT NULL DEFAULT '{}',
    result jsonb,
    attempted_at timestamptz,
    finalized_at timestamptz
);
CREATE INDEX bench_jobs_due ON bench_jobs (queue, priority, scheduled_at, id)
    WHERE state = 'available';
"""

CLAIM = """
UPDATE bench_jobs AS j
SET state = 'running', attempt = j.attempt + 1, attempted_at = now()
FROM (
    SELECT id FROM bench_jobs
    WHERE state = 'available' AND queue = $1 AND scheduled_at <= now()
    ORDER BY priority, scheduled_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
) AS picked
WHERE j.id = picked.id
RETURNING j.id, j.args::text
"""

COMPLETE = """
UPDATE bench_jobs AS j
SET state = 'completed', finalized_at = now(), result = 'null'::jsonb
FROM unnest($1::bigint[]) AS done(id)
WHERE j.id = done.id AND j.state = 'running'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs to claim and complete")
    parser.add_argument("--batch", type=int, default=100, help="rows per claim / completion")


async def floor_once(url: str, jobs: int, batch: int, async_claims: bool) -> float:
    setup = await asyncpg.connect(url)
    try:
        await setup.execute(SCHEMA)
        await setup.execute(
            "INSERT INTO bench_jobs (args) SELECT jsonb_build_object('n', g) "
            "FROM generate_series(1, $1::int) AS g",
            jobs,
        )
        await setup.execute("VACUUM ANALYZE bench_jobs")
    finally:
        await setup.close()
    claimer = await asyncpg.connect(url)
    completer = await asyncpg.connect(url)
    try:
        if async_claims:
            await claimer.execute("SET synchronous_commit = off")
        # Small bound: the claimer may run one or two batches ahead, as a worker would.
        claimed: asyncio.Queue[list[int] | None] = asyncio.Queue(maxsize=2)

        async def claim_loop() -> None:
            while True:
                rows = await claimer.fetch(CLAIM, "default", batch)
                if not rows:
                    await claimed.put(None)
                    return
                await claimed.put([row[0] for row in rows])

        async def complete_loop() -> int:
            done = 0
            while (ids := await claimed.get()) is not None:
                await completer.execute(COMPLETE, ids)
                done += len(ids)
            return done

        # Prepare both statements before the clock starts, as any driver would reuse them.
        await claimer.prepare(CLAIM)
        await completer.prepare(COMPLETE)
        started = time.perf_counter()
        _, done = await asyncio.gather(claim_loop(), complete_loop())
        elapsed = time.perf_counter() - started
        if done != jobs:
            raise RuntimeError(f"completed {done} of {jobs} jobs")
        return jobs / elapsed
    finally:
        await claimer.close()
        await completer.close()


def scenario(bench: Bench) -> ScenarioResult:
    args = bench.args
    jobs = 2000 if bench.smoke else args.jobs
    result = ScenarioResult(
        "bare_sql",
        "bare SQL floor: claim B + complete B per round trip, 2 connections, no framework",
        {"jobs": jobs, "batch": args.batch, "runs": bench.runs},
    )
    for async_claims in (False, True):
        label = "bare SQL, claims async-commit" if async_claims else "bare SQL, all durable"
        runs: list[float] = []
        for run in range(bench.runs):
            with bench.database("bare_sql") as url:
                try:
                    rate = run_async(
                        functools.partial(floor_once, url, jobs, args.batch, async_claims)
                    )
                except Exception as exc:
                    result.errors.append(f"{label} run {run + 1}: {type(exc).__name__}: {exc}")
                    continue
            bench.log(f"{label} run {run + 1}: {rate:,.0f} jobs/s")
            runs.append(rate)
        result.rows.append(Row(label, "claim+complete", "jobs/s", runs))
    return result


if __name__ == "__main__":
    sys.exit(main_for("bare_sql", __doc__ or "", add_arguments, scenario))
