"""A three-step workflow: fetch -> clean -> load, each step reading its dependency's result.

    AQUEUE_DATABASE_URL=postgresql://... python examples/workflow_etl.py

Uses its own schema (``AQUEUE_SCHEMA``, default ``aqueue_example_etl``) and drops it at the
end, so it can run against any database.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aqueue
from aqueue.testing import run_until_idle

app = aqueue.App(schema=os.environ.get("AQUEUE_SCHEMA", "aqueue_example_etl"))


@app.job
async def fetch(day: str) -> dict[str, Any]:
    return {"day": day, "rows": [3, 1, 2]}


@app.job
async def clean(ctx: aqueue.JobContext) -> list[int]:
    fetched = await ctx.dep_result("fetch")  # the dependency's recorded result
    return sorted(fetched["rows"])


@app.job
async def load(ctx: aqueue.JobContext) -> str:
    rows = await ctx.dep_result("clean")
    return f"loaded {len(rows)} rows: {rows}"


async def main() -> None:
    async with app:
        await app.migrate()
        wf = aqueue.Workflow("nightly-etl")
        wf.add("fetch", fetch.build(day="2026-12-01"))
        wf.add("clean", clean.build(), deps=["fetch"])
        wf.add("load", load.build(), deps=["clean"])
        run = await app.enqueue_workflow(wf)
        print("enqueued:", {name: job.state.value for name, job in run.jobs.items()})
        await run_until_idle(app)
        status = await app.workflow_status(run.id)
        print("workflow:", status.state)
        print("load said:", status.steps["load"].result)
        await app.db.drop_schema()


if __name__ == "__main__":
    asyncio.run(main())
