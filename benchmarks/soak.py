"""soak: minutes of mixed load on several in-process workers, checking invariants as it goes.

Not run in CI. Jobs succeed, fail once then succeed, always fail (discarded), snooze once,
discard themselves or run slowly; some are cancelled while they wait or run; every so
often a worker is stopped (gracefully, or with a short shutdown_timeout that interrupts
its slow jobs) and a fresh one takes its place. Every ``--check-every`` seconds:

- no job ran twice at the same time, and no job reached ``completed`` twice;
- no job ran more than once unless an attempt failed, snoozed or was interrupted;
- every ``running`` row belongs to a live worker; a stopped worker leaves none behind;
- nothing due waits longer than ``--max-lag`` seconds.

At the end enqueuing stops, the workers drain what is due, and a final check adds: no job
lost (every enqueued id is there), nothing ``running``, every job final or scheduled for
later, one completion hook per completed job. Prints a summary; exits 1 on any violation.

    .venv/bin/python benchmarks/soak.py                 # 10 minutes on a throwaway server
    .venv/bin/python benchmarks/soak.py --minutes 1 --workers 3 --rate 300
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import logging
import random
import sys
import time
import uuid
from typing import Any

import anyio
import anyio.lowlevel
import asyncpg

import aqueue
from aqueue.embedded import EmbeddedPostgres

MODES = {  # mode: weight
    "ok": 68,
    "fail_once": 10,
    "fail_always": 3,
    "snooze_once": 7,
    "slow": 8,
    "discard": 4,
}
RETRY = aqueue.Backoff(base=0.2, factor=2.0, max_delay=2.0)
# What the driver's own queries (raw pool calls) raise while PostgreSQL restarts.
CONNECTION_TROUBLE = (
    aqueue.DatabaseError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Ledger:
    """What the jobs and hooks saw, in this process (every worker runs here)."""

    enqueued: set[int] = dataclasses.field(default_factory=set)
    modes: dict[int, str] = dataclasses.field(default_factory=dict)
    runs: collections.Counter[int] = dataclasses.field(default_factory=collections.Counter)
    in_flight: set[int] = dataclasses.field(default_factory=set)
    interrupted: collections.Counter[int] = dataclasses.field(default_factory=collections.Counter)
    failed: collections.Counter[int] = dataclasses.field(default_factory=collections.Counter)
    snoozed: set[int] = dataclasses.field(default_factory=set)
    completed_hooks: collections.Counter[int] = dataclasses.field(
        default_factory=collections.Counter
    )
    cancels: int = 0
    restarts: int = 0
    hard_restarts: int = 0
    enqueue_errors: int = 0
    postgres_restarts: int = 0
    not_applied: int = 0  # outcome writes that found nothing to change (see OutcomeLog)
    reply_lost: int = 0  # outcome writes that committed but lost their reply
    skipped_checks: int = 0
    violations: list[str] = dataclasses.field(default_factory=list)

    def violation(self, message: str) -> None:
        if len(self.violations) < 1000:
            self.violations.append(message)
        log(f"VIOLATION: {message}")


class OutcomeLog(logging.Handler):
    """Counts what the completer reports: outcomes not applied (a completed job without a
    hook is allowed only that many times), and outcomes whose write committed but lost
    its reply, found again by reading the rows (their hooks run)."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(logging.INFO)
        self.ledger = ledger

    def emit(self, record: logging.LogRecord) -> None:
        if "outcome(s) not applied" in str(record.msg) and record.args:
            self.ledger.not_applied += int(record.args[0])  # type: ignore[index]
        elif "reply was lost" in str(record.msg) and record.args:
            self.ledger.reply_lost += int(record.args[0])  # type: ignore[index]


def build_app(url: str, schema: str, ledger: Ledger, *, shutdown_timeout: float) -> aqueue.App:
    """One node: an App with the soak job registered. Each worker gets its own App (and
    pool and LISTEN connection), like separate processes would."""
    app = aqueue.App(
        url,
        schema=schema,
        poll_interval=1.0,
        shutdown_timeout=shutdown_timeout,
        logger=logging.getLogger("aqueue.soak"),
    )

    @app.job(name="soak", max_attempts=3, retry=RETRY)
    async def soak(ctx: aqueue.JobContext, mode: str, sleep: float) -> int:
        job_id = ctx.job.id
        if job_id in ledger.in_flight:
            ledger.violation(f"job {job_id} started while already running")
        ledger.in_flight.add(job_id)
        ledger.runs[job_id] += 1
        try:
            if mode == "slow":
                await anyio.sleep(sleep)
            elif mode == "fail_once" and ctx.attempt == 1:
                ledger.failed[job_id] += 1
                raise RuntimeError("failing the first attempt")
            elif mode == "fail_always":
                ledger.failed[job_id] += 1
                raise RuntimeError("failing every attempt")
            elif mode == "snooze_once" and job_id not in ledger.snoozed:
                ledger.snoozed.add(job_id)
                raise aqueue.Snooze(0.3)
            elif mode == "discard":
                raise aqueue.Discard("soak discard")
            else:
                await anyio.lowlevel.checkpoint()
            return job_id
        except anyio.get_cancelled_exc_class():
            ledger.interrupted[job_id] += 1
            raise
        finally:
            ledger.in_flight.discard(job_id)

    @soak.after_process
    async def count_completions(job: aqueue.Job, outcome: aqueue.Outcome) -> None:
        if outcome.state is aqueue.JobState.COMPLETED:
            ledger.completed_hooks[job.id] += 1
            if ledger.completed_hooks[job.id] > 1:
                ledger.violation(f"job {job.id} completed twice")

    return app


class Node:
    """A worker running until ``stop`` is set; ``node_id`` once it has started."""

    def __init__(self, app: aqueue.App, concurrency: int) -> None:
        self.app = app
        self.concurrency = concurrency
        self.node_id: str | None = None
        self.stop = anyio.Event()
        self.stopped = anyio.Event()

    async def run(self) -> None:
        try:
            async with self.app, self.app.worker({"default": self.concurrency}) as worker:
                self.node_id = worker.node_id
                await self.stop.wait()
        finally:
            self.stopped.set()


class Soak:
    def __init__(
        self, args: argparse.Namespace, url: str, server: EmbeddedPostgres | None = None
    ) -> None:
        self.args = args
        self.url = url
        self.server = server
        self.schema = f"soak_{uuid.uuid4().hex[:8]}"
        self.ledger = Ledger()
        self.rng = random.Random(args.seed)
        self.nodes: list[Node] = []
        self.stopped_nodes: set[str] = set()
        self.unknown_nodes: set[str] = set()
        self.enqueuing = True
        self.started = time.monotonic()
        self.max_lag = 0.0
        self.without_hook = 0
        # The App the driver uses for enqueues, cancels and checks; never runs a worker.
        self.client = build_app(url, self.schema, self.ledger, shutdown_timeout=1.0)

    def new_node(self) -> Node:
        hard = self.rng.random() < 1 / 3
        app = build_app(self.url, self.schema, self.ledger, shutdown_timeout=0.2 if hard else 5.0)
        return Node(app, self.args.concurrency)

    async def run(self) -> int:
        async with self.client:
            await self.client.migrate()
            deadline = self.started + self.args.minutes * 60
            async with anyio.create_task_group() as tg:
                for _ in range(self.args.workers):
                    node = self.new_node()
                    self.nodes.append(node)
                    tg.start_soon(node.run)
                async with anyio.create_task_group() as load:
                    load.start_soon(self.enqueue_loop)
                    load.start_soon(self.cancel_loop)
                    load.start_soon(self.restart_loop, tg)
                    load.start_soon(self.check_loop)
                    if self.args.restart_postgres_every:
                        load.start_soon(self.postgres_loop)
                    await anyio.sleep(max(deadline - time.monotonic(), 0))
                    self.enqueuing = False
                    load.cancel_scope.cancel()
                log("load stopped; draining")
                await self.drain()
                await self.retrying(functools.partial(self.check, final=True))
                for node in self.nodes:
                    node.stop.set()
            await self.client.db.drop_schema()
        self.summary()
        return 1 if self.ledger.violations else 0

    # -- load ------------------------------------------------------------------------------

    async def enqueue_loop(self) -> None:
        soak = self.client.registry.get("soak")
        assert soak is not None
        modes, weights = zip(*MODES.items(), strict=True)
        tick = 0.05
        per_tick = max(1, round(self.args.rate * tick))
        while self.enqueuing:
            requests = []
            for mode in self.rng.choices(modes, weights, k=per_tick):
                configured = soak.options(
                    priority=self.rng.randint(0, 3),
                    schedule_in=self.rng.choice([None, None, None, self.rng.uniform(0, 2)]),
                )
                sleep = self.rng.uniform(0.2, 1.5) if mode == "slow" else 0.0
                requests.append(configured.build(mode=mode, sleep=sleep))
            try:
                jobs = await self.client.enqueue_many(requests)
            except aqueue.DatabaseError as exc:
                self.ledger.enqueue_errors += 1
                log(f"enqueue failed: {exc}")
            else:
                for job in jobs:
                    self.ledger.enqueued.add(job.id)
                    self.ledger.modes[job.id] = job.args["mode"]
            await anyio.sleep(tick)

    async def cancel_loop(self) -> None:
        while True:
            await anyio.sleep(self.rng.uniform(0.1, 0.5))
            recent = sorted(self.ledger.enqueued)[-200:]
            if recent:
                try:
                    await self.client.cancel(self.rng.choice(recent))
                except aqueue.DatabaseError:
                    continue  # PostgreSQL restarting
                self.ledger.cancels += 1

    async def restart_loop(self, tg: Any) -> None:
        while True:
            await anyio.sleep(self.rng.uniform(*self.args.restart_every))
            index = self.rng.randrange(len(self.nodes))
            old = self.nodes[index]
            hard = old.app.settings.shutdown_timeout < 1
            old.stop.set()
            with anyio.fail_after(30):
                await old.stopped.wait()
            if old.node_id is not None:
                self.stopped_nodes.add(old.node_id)
                left = await self.retrying(
                    self.client.db.pool.fetchval,
                    f'SELECT count(*) FROM "{self.schema}".jobs '
                    "WHERE state = 'running' AND node_id = $1",
                    old.node_id,
                )
                if left:
                    self.ledger.violation(f"stopped worker {old.node_id[:8]} left {left} running")
            self.ledger.restarts += 1
            self.ledger.hard_restarts += hard
            new = self.new_node()
            self.nodes[index] = new
            tg.start_soon(new.run)
            log(f"restarted a worker ({'short' if hard else 'graceful'} shutdown)")

    async def postgres_loop(self) -> None:
        """``pg_ctl restart -m fast`` now and then: every connection drops at once."""
        assert self.server is not None
        while True:
            await anyio.sleep(self.rng.uniform(*self.args.restart_postgres_every))
            began = time.monotonic()
            await anyio.to_thread.run_sync(self.server.restart)
            self.ledger.postgres_restarts += 1
            log(f"restarted PostgreSQL ({time.monotonic() - began:.2f}s)")

    # -- checks ----------------------------------------------------------------------------

    async def retrying(self, fn: Any, *args: Any) -> Any:
        """The driver's own query, retried through a PostgreSQL restart."""
        with anyio.fail_after(30):
            while True:
                try:
                    return await fn(*args)
                except CONNECTION_TROUBLE:
                    await anyio.sleep(0.2)

    async def check_loop(self) -> None:
        while True:
            await anyio.sleep(self.args.check_every)
            try:
                await self.check(final=False)
            except CONNECTION_TROUBLE as exc:  # a PostgreSQL restart under the check
                self.ledger.skipped_checks += 1
                log(f"check skipped: {type(exc).__name__}: {exc}")

    async def check(self, *, final: bool) -> None:
        pool = self.client.db.pool
        schema = f'"{self.schema}"'
        rows = await pool.fetch(
            f"SELECT state::text AS state, count(*) AS n FROM {schema}.jobs GROUP BY 1"
        )
        states = {row["state"]: row["n"] for row in rows}
        running = await pool.fetch(f"SELECT id, node_id FROM {schema}.jobs WHERE state = 'running'")
        live = {node.node_id for node in self.nodes if node.node_id is not None}
        unknown = set()
        for row in running:
            node_id = row["node_id"]
            if node_id in self.stopped_nodes:
                self.ledger.violation(f"job {row['id']} running on stopped worker {node_id[:8]}")
            elif node_id not in live:
                unknown.add(node_id)
        # A worker may claim before the driver has recorded its id: only a second sighting
        # of an unknown id is a violation.
        for node_id in unknown & self.unknown_nodes:
            self.ledger.violation(f"jobs running on unknown worker {node_id}")
        self.unknown_nodes = unknown
        lag = await pool.fetchval(
            f"SELECT coalesce(extract(epoch FROM now() - min(scheduled_at)), 0) "
            f"FROM {schema}.jobs WHERE state IN ('available', 'retryable', 'scheduled') "
            "AND scheduled_at <= now()"
        )
        self.max_lag = max(self.max_lag, float(lag))
        if lag > self.args.max_lag:
            self.ledger.violation(f"a due job has waited {lag:.1f}s")
        for job_id, runs in list(self.ledger.runs.items()):
            excuses = (
                self.ledger.failed[job_id]
                + self.ledger.interrupted[job_id]
                + (job_id in self.ledger.snoozed)
            )
            if runs > 1 + excuses and job_id not in self.ledger.in_flight:
                self.ledger.violation(f"job {job_id} ran {runs} times with {excuses} excuses")
                self.ledger.failed[job_id] += runs  # report once
        bad_final = await pool.fetchval(
            f"SELECT count(*) FROM {schema}.jobs WHERE "
            "(state IN ('completed', 'cancelled', 'discarded')) <> (finalized_at IS NOT NULL) "
            "OR attempt > max_attempts"
        )
        if bad_final:
            self.ledger.violation(f"{bad_final} rows with inconsistent final state or attempts")
        if final:
            await self.final_checks(states)
        elapsed = time.monotonic() - self.started
        log(
            f"t={elapsed:5.0f}s enqueued={len(self.ledger.enqueued)} "
            + " ".join(f"{k}={v}" for k, v in sorted(states.items()))
            + f" lag={lag:.2f}s violations={len(self.ledger.violations)}"
        )

    async def final_checks(self, states: dict[str, int]) -> None:
        pool = self.client.db.pool
        schema = f'"{self.schema}"'
        ids = {row["id"] for row in await pool.fetch(f"SELECT id FROM {schema}.jobs")}
        lost = self.ledger.enqueued - ids
        if lost:
            self.ledger.violation(f"{len(lost)} enqueued jobs are missing, e.g. {sorted(lost)[:5]}")
        if states.get("running"):
            self.ledger.violation(f"{states['running']} jobs still running after the drain")
        overdue = await pool.fetchval(
            f"SELECT count(*) FROM {schema}.jobs WHERE state NOT IN "
            "('completed', 'cancelled', 'discarded') AND scheduled_at <= now()"
        )
        if overdue:
            self.ledger.violation(f"{overdue} jobs due but not run after the drain")
        completed = {
            row["id"]
            for row in await pool.fetch(f"SELECT id FROM {schema}.jobs WHERE state = 'completed'")
        }
        hooked = set(self.ledger.completed_hooks)
        self.without_hook = len(completed - hooked)
        if hooked - completed or self.without_hook > self.ledger.not_applied:
            self.ledger.violation(
                f"completed rows vs completion hooks differ: {self.without_hook} without "
                f"a hook ({self.ledger.not_applied} outcome writes reported not applied), "
                f"{len(hooked - completed)} hooks without a completed row"
            )
        never_ran = [job_id for job_id in completed if not self.ledger.runs[job_id]]
        if never_ran:
            self.ledger.violation(f"{len(never_ran)} completed jobs never ran here")

    async def drain(self) -> None:
        """Wait until nothing is due or running (scheduled retries included), bounded."""
        pool = self.client.db.pool
        with anyio.move_on_after(60):
            while await self.retrying(
                pool.fetchval,
                f"SELECT count(*) FROM \"{self.schema}\".jobs WHERE state = 'running' "
                "OR (state IN ('available', 'retryable', 'scheduled') "
                "AND scheduled_at <= now() + interval '3 seconds')",
            ):
                await anyio.sleep(0.2)

    def summary(self) -> None:
        ledger = self.ledger
        elapsed = time.monotonic() - self.started
        runs = sum(ledger.runs.values())
        print(
            f"soak: {elapsed:.0f}s, {self.args.workers} workers x {self.args.concurrency}\n"
            f"  enqueued {len(ledger.enqueued)} jobs ({ledger.enqueue_errors} enqueue errors), "
            f"{runs} executions ({runs / elapsed:.0f}/s)\n"
            f"  failures {sum(ledger.failed.values())}, snoozes {len(ledger.snoozed)}, "
            f"interruptions {sum(ledger.interrupted.values())}, cancels sent {ledger.cancels}\n"
            f"  worker restarts {ledger.restarts} ({ledger.hard_restarts} with a short "
            f"shutdown_timeout), PostgreSQL restarts {ledger.postgres_restarts}, "
            f"max lag {self.max_lag:.2f}s, checks skipped {ledger.skipped_checks}\n"
            f"  completed (hooks) {len(ledger.completed_hooks)}, completed without a hook "
            f"{self.without_hook} ({ledger.not_applied} outcomes reported not applied); "
            f"lost replies recovered: {ledger.reply_lost} outcome writes\n"
            f"  violations: {len(ledger.violations)}"
        )
        for message in ledger.violations[:20]:
            print(f"    {message}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="load duration (10)")
    parser.add_argument("--workers", type=int, default=3, help="in-process workers (3)")
    parser.add_argument("--concurrency", type=int, default=20, help="per worker (20)")
    parser.add_argument("--rate", type=float, default=200.0, help="jobs enqueued per second")
    parser.add_argument("--check-every", type=float, default=3.0, help="seconds (3)")
    parser.add_argument("--max-lag", type=float, default=30.0, help="seconds a due job may wait")
    parser.add_argument(
        "--restart-every",
        type=float,
        nargs=2,
        default=(5.0, 15.0),
        metavar=("MIN", "MAX"),
        help="seconds between worker restarts, drawn uniformly (5 15)",
    )
    parser.add_argument(
        "--restart-postgres-every",
        type=float,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="also restart the throwaway PostgreSQL (fast shutdown) this often (off)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--url", help="an existing server instead of a throwaway one")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(levelname)s %(message)s")
    logger = logging.getLogger("aqueue.soak")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    console = logging.StreamHandler()
    console.setLevel(logging.ERROR)
    logger.addHandler(console)

    def run(url: str, server: EmbeddedPostgres | None) -> int:
        soak = Soak(args, url, server)
        logger.addHandler(OutcomeLog(soak.ledger))
        return anyio.run(soak.run)

    if args.url:
        if args.restart_postgres_every:
            parser.error("--restart-postgres-every needs the throwaway server (no --url)")
        return run(args.url, None)
    with EmbeddedPostgres() as server:
        return run(server.url, server)


if __name__ == "__main__":
    sys.exit(main())
