"""A batch of e-mails with a callback that reports once every one of them ended.

AQUEUE_DATABASE_URL=postgresql://... python examples/batch_report.py
"""

from __future__ import annotations

import asyncio
import os

import aqueue
from aqueue.testing import run_until_idle

app = aqueue.App(schema=os.environ.get("AQUEUE_SCHEMA", "aqueue_example_batch"))


@app.job(max_attempts=1)
async def send(to: str) -> str:
    if to.endswith("@invalid"):
        raise aqueue.Discard(f"no such domain: {to}")
    return f"sent to {to}"


@app.job
async def report(ctx: aqueue.JobContext, campaign: str) -> str:
    assert ctx.batch is not None  # set for a batch's callback
    batch = ctx.batch
    return f"{campaign}: {batch.completed} sent, {batch.discarded} failed of {batch.total}"


async def main() -> None:
    async with app:
        await app.migrate()
        addresses = [f"user{n}@example.com" for n in range(9)] + ["nobody@invalid"]
        batch = await app.enqueue_batch(
            [send.build(to=a) for a in addresses], callback=report.build(campaign="december")
        )
        assert batch.callback is not None
        print(f"batch {batch.id}: {len(batch.jobs)} jobs, callback {batch.callback.state}")
        await run_until_idle(app)
        status = await app.workflow_status(batch.id)
        print("report:", status.steps["callback"].result)
        await app.db.drop_schema()


if __name__ == "__main__":
    asyncio.run(main())
