"""Index 250 documents in calls of up to 100; the empty ones are discarded alone.

AQUEUE_DATABASE_URL=postgresql://... python examples/chunk_index.py
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import pydantic

import aqueue

app = aqueue.App(schema=os.environ.get("AQUEUE_SCHEMA", "aqueue_example_chunks"))


class Doc(pydantic.BaseModel):
    id: int
    text: str


calls: list[int] = []


@app.job(chunk=aqueue.Chunk(size=100, timeout=0.5), max_attempts=3)
async def index(docs: list[Doc]) -> list[object]:
    calls.append(len(docs))
    return [
        {"words": len(doc.text.split())} if doc.text else aqueue.Discard("empty document")
        for doc in docs
    ]


async def main() -> None:
    async with app:
        await app.migrate()
        docs = [Doc(id=i, text="" if i % 50 == 0 else f"document number {i}") for i in range(250)]
        jobs = await app.enqueue_many([index.build(doc) for doc in docs])
        async with app.worker(queues={"default": 100}):
            done = [await app.wait(job.id, timeout=30) for job in jobs]
    states = Counter(job.state.value for job in done)
    print(f"completed: {states['completed']}, discarded: {states['discarded']}")
    print(f"calls: {len(calls)}, largest: {max(calls)}")
    print(f"result of the second document: {done[1].result}")


if __name__ == "__main__":
    asyncio.run(main())
