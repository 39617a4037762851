"""Periodic jobs: registration errors, cron arithmetic, and enqueueing by the leader only,
once per slot, across several nodes."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import pytest

import aqueue
from aqueue.schedule import CronSchedule
from aqueue.worker.lease import Tenure
from aqueue.worker.worker import Worker
from tests.support import CLUSTER, eventually, schema_of


def periodic_app(make_app: Callable[..., aqueue.App], **settings: object) -> aqueue.App:
    app = make_app(**{**CLUSTER, **settings})

    @app.job
    async def tick(n: int = 0) -> int:
        return n

    return app


async def count_jobs(app: aqueue.App, kind: str) -> int:
    async with app.db.pool.acquire() as conn:
        value = await conn.fetchval(
            f"SELECT count(*) FROM {schema_of(app)}.jobs WHERE kind = $1", kind
        )
    return int(value)


async def slots_of(app: aqueue.App, name: str) -> list[datetime]:
    async with app.db.pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT slot FROM {schema_of(app)}.periodic_runs WHERE name = $1 ORDER BY slot",
            name,
        )
    return [r["slot"] for r in rows]


# -- registration ---------------------------------------------------------------------------


def test_registration_errors_are_clear(make_app: Callable[..., aqueue.App]) -> None:
    app = periodic_app(make_app)
    tick = app.registry.require("tick")
    with pytest.raises(aqueue.ConfigurationError, match="not a valid cron expression"):
        app.periodic(tick, cron="61 * * * *")
    with pytest.raises(aqueue.ConfigurationError, match="not a valid cron expression"):
        app.periodic(tick, cron="every day")
    with pytest.raises(aqueue.ConfigurationError, match="time zone"):
        app.periodic(tick, cron="0 9 * * *", timezone="Mars/Olympus")
    with pytest.raises(aqueue.InvalidJobArgs, match="n"):
        app.periodic(tick, cron="0 9 * * *", kwargs={"n": "many"})
    with pytest.raises(aqueue.InvalidJobArgs):
        app.periodic(tick, cron="0 9 * * *", kwargs={"unknown": 1})
    other = periodic_app(make_app)
    with pytest.raises(aqueue.ConfigurationError, match="registered on this App"):
        app.periodic(other.registry.require("tick"), cron="0 9 * * *")
    with pytest.raises(aqueue.ConfigurationError, match="periodic name"):
        app.periodic(tick, cron="0 9 * * *", name="")
    app.periodic(tick, cron="0 9 * * *")
    with pytest.raises(aqueue.ConfigurationError, match="already registered"):
        app.periodic(tick, cron="0 10 * * *")
    app.periodic(tick.options(queue="reports"), cron="0 10 * * *", name="tick-10")
    assert list(app.registry.periodic) == ["tick", "tick-10"]


def test_cron_slots_in_a_time_zone() -> None:
    schedule = CronSchedule("0 9 * * *", "Europe/Paris")
    winter = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert schedule.next_after(winter) == datetime(2026, 1, 16, 8, 0, tzinfo=UTC)
    assert schedule.latest_at_or_before(winter) == datetime(2026, 1, 15, 8, 0, tzinfo=UTC)
    summer = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)
    assert schedule.latest_at_or_before(summer) == datetime(2026, 7, 15, 7, 0, tzinfo=UTC)
    # A moment exactly on a slot is that slot; the next one is strictly after it.
    on_slot = datetime(2026, 1, 15, 8, 0, tzinfo=UTC)
    assert schedule.latest_at_or_before(on_slot) == on_slot
    assert schedule.next_after(on_slot) == datetime(2026, 1, 16, 8, 0, tzinfo=UTC)
    every_second = CronSchedule("* * * * * *")
    moment = datetime(2026, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)
    assert every_second.next_after(moment) == datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)


# -- enqueueing -----------------------------------------------------------------------------


def leaders(workers: list[Worker]) -> list[Worker]:
    return [w for w in workers if w.leader is not None and w.leader.is_leader]


async def test_run_on_start_fires_once_across_three_nodes(
    make_app: Callable[..., aqueue.App],
) -> None:
    apps = [periodic_app(make_app) for _ in range(3)]
    for app in apps:
        # Yearly: only run_on_start can enqueue during the test.
        app.periodic(app.registry.require("tick"), cron="0 0 1 1 *", run_on_start=True)
    async with AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app)
        await apps[0].migrate()
        workers = [await stack.enter_async_context(app.worker({"default": 2})) for app in apps]
        [leader] = await eventually(lambda: leaders(workers), what="a leader")
        await eventually(lambda: leader.periodic.enqueued == 1, what="the start run")
        # Every node has registered and the others compete, but only the leader enqueues.
        assert len((await apps[0].cluster_status()).nodes) == 3
        assert [w.periodic.enqueued for w in workers if w is not leader] == [0, 0]
        # Stop the followers first so leadership never moves during the test.
        for worker in workers:
            if worker is not leader:
                await worker.stop()
        await leader.stop()
    async with apps[0]:
        assert await count_jobs(apps[0], "tick") == 1


async def test_each_slot_is_enqueued_once_through_failovers(
    make_app: Callable[..., aqueue.App],
) -> None:
    apps = [periodic_app(make_app) for _ in range(3)]
    for app in apps:
        app.periodic(app.registry.require("tick"), cron="* * * * * *", name="every-second")
    async with AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app)
        await apps[0].migrate()
        async with AsyncExitStack() as running:
            workers = [
                await running.enter_async_context(app.worker({"default": 2})) for app in apps
            ]
            for _ in range(2):
                [leader] = await eventually(lambda: leaders(workers), what="a leader")
                before = len(await slots_of(apps[0], "every-second"))
                await eventually(
                    lambda b=before: _more_slots(apps[0], b + 2), what="two more slots"
                )
                await leader.stop()
                workers.remove(leader)
            await eventually(lambda: _more_slots(apps[0], before + 3), what="slots after failover")
        slots = await slots_of(apps[0], "every-second")
        assert len(slots) == len(set(slots))
        # One job per recorded slot: no slot enqueued twice, none without its record.
        assert await count_jobs(apps[0], "tick") == len(slots)
        assert all(s.microsecond == 0 for s in slots)


async def _more_slots(app: aqueue.App, at_least: int) -> bool:
    return len(await slots_of(app, "every-second")) >= at_least


async def test_a_slot_missed_without_a_leader_runs_once_on_election(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = periodic_app(make_app)
    tick = app.registry.require("tick")
    # Yearly, so no new slot can come due while the test runs. Registered first and never
    # run before: it must wait for its next slot.
    app.periodic(tick, cron="0 0 1 1 *", kwargs={"n": 2}, name="fresh")
    app.periodic(tick, cron="0 0 1 1 *", kwargs={"n": 1}, name="yearly")
    latest = CronSchedule("0 0 1 1 *").latest_at_or_before(datetime.now(UTC))
    previous = latest.replace(year=latest.year - 1)
    async with app:
        await app.migrate()
        async with app.db.pool.acquire() as conn:
            # The previous slot ran; the latest one passed while no node was leading.
            await conn.execute(
                f"INSERT INTO {schema_of(app)}.periodic_runs (name, slot) VALUES ($1, $2)",
                "yearly",
                previous,
            )
        async with app.worker({"default": 2}) as worker:
            await eventually(lambda: worker.periodic.enqueued >= 1, what="the catch-up")
            [job] = await app.list_jobs(kind="tick")
            assert job.args == {"n": 1}
            done = await app.wait(job.id, timeout=20)
            assert done.result == 1
        assert await slots_of(app, "yearly") == [previous, latest]
        assert await slots_of(app, "fresh") == []
        assert worker.periodic.enqueued == 1


def test_a_fixed_hour_runs_once_when_clocks_go_back() -> None:
    # Paris, 25 October 2026: 03:00 CEST becomes 02:00 CET, so 02:30 happens twice.
    daily = CronSchedule("30 2 * * *", "Europe/Paris")
    before = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    first = daily.next_after(before)
    assert first == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    assert daily.next_after(first) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)
    # During the repeated hour, the latest slot is still the first 02:30.
    assert daily.latest_at_or_before(datetime(2026, 10, 25, 1, 45, tzinfo=UTC)) == first
    # An interval schedule keeps its rhythm through the repeated hour.
    half_hourly = CronSchedule("*/30 * * * *", "Europe/Paris")
    slots = [datetime(2026, 10, 25, 0, 10, tzinfo=UTC)]
    for _ in range(4):
        slots.append(half_hourly.next_after(slots[-1]))
    assert [s.strftime("%H:%M") for s in slots[1:]] == ["00:30", "01:00", "01:30", "02:00"]


async def test_run_on_start_runs_once_per_leadership_term(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = periodic_app(make_app)
    app.periodic(app.registry.require("tick"), cron="0 0 1 1 *", run_on_start=True)
    async with app:
        await app.migrate()
        async with app.worker({"default": 1}) as worker:
            await eventually(lambda: worker.periodic.enqueued == 1, what="the start run")
            assert worker.leader is not None and worker.leader.term is not None
            term = worker.leader.term
            # The duty restarted within the same term (say, after an error) does not rerun it.
            await worker.periodic.take_office(Tenure("leader", term))
            assert worker.periodic.enqueued == 1
            # A new term does.
            await worker.periodic.take_office(Tenure("leader", term + 1))
            assert worker.periodic.enqueued == 2
        assert await count_jobs(app, "tick") == 2
