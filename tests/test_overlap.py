"""aqueue.overlap.while_awaiting: the work runs while the call waits, errors arrive as
themselves, and nothing outlives the call."""

from __future__ import annotations

import anyio
import pytest

from aqueue.overlap import while_awaiting


async def test_work_runs_while_the_call_waits() -> None:
    order: list[str] = []
    release = anyio.Event()

    async def call() -> str:
        order.append("call sent")
        await release.wait()
        order.append("call answered")
        return "rows"

    def work() -> int:
        order.append("work")
        release.set()  # the call is already waiting: it was started first
        return 7

    assert await while_awaiting(call, work) == ("rows", 7)
    assert order == ["call sent", "work", "call answered"]


async def test_a_failing_call_raises_its_own_error() -> None:
    async def call() -> None:
        try:
            raise KeyError("inner")
        except KeyError as exc:
            raise ValueError("statement failed") from exc

    with pytest.raises(ValueError, match="statement failed") as caught:
        await while_awaiting(call, lambda: None)
    assert isinstance(caught.value.__cause__, KeyError)


async def test_failing_work_cancels_the_call() -> None:
    cancelled = anyio.Event()

    async def call() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    def work() -> None:
        raise RuntimeError("work failed")

    with pytest.raises(RuntimeError, match="work failed"):
        await while_awaiting(call, work)
    assert cancelled.is_set()
