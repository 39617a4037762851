"""Resumable steps: a checkout that charges a card once, even when the receipt step fails
and the job is retried.

    AQUEUE_DATABASE_URL=postgresql://... python examples/resumable_steps.py
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aqueue

app = aqueue.App(schema=os.environ.get("AQUEUE_SCHEMA", "aqueue_example_steps"))
charges: list[int] = []
mail_attempts: list[str] = []


async def charge_card(order_id: int) -> dict[str, Any]:
    charges.append(order_id)
    return {"charge_id": f"ch_{order_id}", "amount": 4200}


async def send_receipt(charge_id: str) -> str:
    mail_attempts.append(charge_id)
    if len(mail_attempts) == 1:
        raise ConnectionError("mail server unavailable")  # the job is retried
    return f"receipt for {charge_id}"


@app.job(retry=aqueue.Backoff(base=0.1, jitter=0))
async def checkout(ctx: aqueue.JobContext, order_id: int) -> str:
    charged = await ctx.step("charge", charge_card, order_id)  # runs once per job
    return await ctx.step("receipt", send_receipt, charged["charge_id"])


async def main() -> None:
    async with app:
        await app.migrate()
        job = await checkout.enqueue(order_id=42)
        async with app.worker():
            done = await app.wait(job.id, timeout=30)
        print(f"job {done.state.value} after {done.attempt} attempts: {done.result}")
        print(f"card charged {len(charges)} time(s); receipt tried {len(mail_attempts)} times")
        await app.db.drop_schema()


if __name__ == "__main__":
    asyncio.run(main())
