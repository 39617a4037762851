"""``aqueue demo``: real jobs on a throwaway PostgreSQL, start to finish, in seconds."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import anyio

from .app import App
from .backoff import Backoff
from .context import JobContext
from .errors import Discard, Snooze
from .jobs import Job, Outcome

__all__ = ["run_demo"]


def _build_app(url: str, notes: list[str]) -> tuple[App, dict[str, Any]]:
    app = App(url, schema="aqueue_demo", poll_interval=0.5, shutdown_timeout=5)

    @app.job(queue="mail")
    async def send_welcome(ctx: JobContext, email: str, name: str) -> dict[str, str]:
        await anyio.sleep(0.01)  # pretend to talk to a mail server
        return {"to": email, "message_id": f"msg-{ctx.job.id}"}

    @app.job(max_attempts=3, retry=Backoff(base=0.1, jitter=0.0))
    async def flaky_sync(ctx: JobContext, account: int) -> str:
        if ctx.attempt < 2:
            raise ConnectionError(f"upstream timed out (attempt {ctx.attempt})")
        return f"account {account} synced on attempt {ctx.attempt}"

    @app.job
    async def check_coupon(code: str) -> None:
        raise Discard(f"coupon {code!r} expired; retrying cannot help")

    @app.job(queue="bulk")
    async def noop(n: int) -> int:
        return n

    @send_welcome.after_process
    async def log_delivery(job: Job, outcome: Outcome) -> None:
        notes.append(
            f"hook: {job.kind} #{job.id} -> {outcome.state.value}, "
            f"returned {outcome.result!r} in {outcome.duration * 1000:.1f} ms"
        )

    snoozes: Counter[str] = Counter()

    @app.job
    async def poll_export(export_id: str) -> str:
        snoozes[export_id] += 1
        if snoozes[export_id] < 3:
            raise Snooze(0.1)  # not ready yet: look again shortly, attempt not consumed
        return f"export {export_id} done after {snoozes[export_id]} looks"

    return app, {
        "send_welcome": send_welcome,
        "flaky_sync": flaky_sync,
        "check_coupon": check_coupon,
        "noop": noop,
        "poll_export": poll_export,
    }


_TIMED = """\
  timed: the enqueue is one enqueue_many call (one INSERT of {jobs} rows, one round
  trip); the run is from the worker's start (queues default=10, mail=5, bulk=100) until
  the five jobs above and every bulk job were recorded, retries' backoff included, all
  on a throwaway local server (docs/explanation/performance.md has measured numbers)"""

_NEXT = """
what to try next:
  aqueue dev                          a throwaway PostgreSQL that stays up, with the
                                      export AQUEUE_DATABASE_URL=... line to paste
  docs/tutorial/quickstart.md         write a job, run `aqueue worker`, enqueue from Python
  aqueue demo --jobs 20000            a bigger drain"""


async def run_demo(jobs: int = 2000) -> int:
    from .embedded import EmbeddedPostgres

    print("aqueue demo: starting a throwaway PostgreSQL ...", flush=True)
    server = EmbeddedPostgres()
    await anyio.to_thread.run_sync(server.start)
    try:
        print(f"  {server.source_description}")
        notes: list[str] = []
        app, defs = _build_app(server.url, notes)
        async with app:
            await app.migrate()
            started = [
                await defs["send_welcome"].enqueue(email="ada@example.com", name="Ada"),
                await defs["send_welcome"].enqueue(email="alan@example.com", name="Alan"),
                await defs["flaky_sync"].enqueue(account=42),
                await defs["check_coupon"].enqueue(code="SPRING"),
                await defs["poll_export"].enqueue(export_id="x-7"),
            ]
            print(
                f"enqueued {len(started)} jobs; bulk-enqueueing {jobs} no-op jobs in one "
                "round trip ...",
                flush=True,
            )
            t0 = time.perf_counter()
            bulk = await app.enqueue_many([defs["noop"].build(n=i) for i in range(jobs)])
            enqueue_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            async with app.worker({"default": 10, "mail": 5, "bulk": 100}):
                finished = [await app.wait(job.id, timeout=60) for job in started]
                await app.wait(bulk[-1].id, timeout=60)
                done = await app.list_jobs(queue="bulk", state="completed", limit=jobs)
                while len(done) < jobs:
                    await anyio.sleep(0.05)
                    done = await app.list_jobs(queue="bulk", state="completed", limit=jobs)
            drain_s = time.perf_counter() - t0
            print()
            print(f"{'id':>4}  {'kind':<14} {'state':<10} {'tries':>5}  result / last error")
            for job in finished:
                detail = (
                    repr(job.result)
                    if job.state.value == "completed"
                    else f"{job.errors[-1]['type']}: {job.errors[-1]['message']}"
                )
                print(
                    f"{job.id:>4}  {job.kind:<14} {job.state.value:<10} {job.attempt:>5}  {detail}"
                )
            for job in finished:
                for err in job.errors[:-1] if job.state.value != "completed" else job.errors:
                    print(
                        f"      #{job.id} attempt {err['attempt']} failed: {err['type']}: "
                        f"{err['message']}"
                    )
            print()
            for note in notes:
                print(note)
            print(
                f"\n{jobs} bulk jobs: enqueued in {enqueue_s * 1000:.0f} ms, all run and "
                f"recorded within {drain_s:.2f} s"
            )
            print(_TIMED.format(jobs=jobs))
            print(_NEXT)
            states = Counter(j.state.value for j in finished)
            ok = states == Counter({"completed": 4, "discarded": 1}) and len(notes) == 2
        return 0 if ok else 1
    finally:
        await anyio.to_thread.run_sync(server.stop)
