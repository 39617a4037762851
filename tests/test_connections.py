"""``app.transaction()`` and ``app.connection()``: the App's own pool for the caller's SQL,
shared with transactional enqueues, with the caller's own errors left as asyncpg's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import asyncpg
import pytest

import aqueue
from tests.support import schema_of


async def make_table(app: aqueue.App) -> str:
    table = f"{schema_of(app)}.orders"
    async with app.connection() as conn:
        await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, item text)")
    return table


async def test_own_sql_and_the_enqueue_commit_together(app: aqueue.App) -> None:
    table = await make_table(app)

    @app.job
    async def ship(order_id: int) -> None: ...

    async with app.transaction() as conn:
        await conn.execute(f"INSERT INTO {table} VALUES (1, 'book')")
        job = await ship.options(conn=conn).enqueue(order_id=1)
    async with app.connection() as conn:
        assert await conn.fetchval(f"SELECT item FROM {table} WHERE id = 1") == "book"
    [stored] = await app.list_jobs()
    assert stored.id == job.id


async def test_own_sql_errors_reach_the_caller_as_asyncpg_raised_them(app: aqueue.App) -> None:
    table = await make_table(app)

    @app.job
    async def ship(order_id: int) -> None: ...

    async with app.transaction() as conn:
        await conn.execute(f"INSERT INTO {table} VALUES (1, 'book')")
    with pytest.raises(asyncpg.UniqueViolationError):
        async with app.transaction() as conn:
            await ship.options(conn=conn).enqueue(order_id=1)
            await conn.execute(f"INSERT INTO {table} VALUES (1, 'again')")
    assert await app.list_jobs() == []  # the enqueue rolled back with the insert


async def test_connection_runs_its_own_transactions_and_enqueues(app: aqueue.App) -> None:
    table = await make_table(app)

    @app.job
    async def ship(order_id: int) -> None: ...

    async with app.connection() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await app.enqueue("ship", {"order_id": 2}, conn=conn)
                await conn.execute(f"INSERT INTO {table} VALUES (2, 'pen')")
                raise RuntimeError("roll back")
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0
        await ship.options(conn=conn).enqueue(order_id=3)  # autocommit
    assert [j.args["order_id"] for j in await app.list_jobs()] == [3]


async def test_connections_go_back_to_the_pool_even_when_cancelled(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = make_app(pool_size=2)
    async with app:
        await app.migrate()
        for _ in range(10):  # more than the pool holds: each one came back
            with pytest.raises(ZeroDivisionError):
                async with app.transaction() as conn:
                    await conn.execute("SELECT 1")
                    raise ZeroDivisionError
        for _ in range(4):
            with anyio.move_on_after(0.05) as scope:
                async with app.connection() as conn:
                    await conn.execute("SELECT pg_sleep(5)")
            assert scope.cancelled_caught
        with anyio.fail_after(10):
            async with app.connection() as a, app.connection() as b:
                assert await a.fetchval("SELECT 1") == await b.fetchval("SELECT 1") == 1


async def test_connection_needs_an_open_app(make_app: Callable[..., aqueue.App]) -> None:
    app = make_app()
    with pytest.raises(aqueue.AppNotOpen):
        async with app.connection():
            pass
    with pytest.raises(aqueue.AppNotOpen):
        async with app.transaction():
            pass


async def test_a_connection_killed_in_the_block_does_not_hide_the_callers_error(
    app: aqueue.App,
) -> None:
    with pytest.raises(ValueError, match="mine"):
        async with app.connection() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            async with app.connection() as other:
                assert await other.fetchval("SELECT pg_terminate_backend($1)", pid)
            raise ValueError("mine")
    async with app.connection() as conn:  # the pool replaced it
        assert await conn.fetchval("SELECT 1") == 1


async def test_the_callers_session_state_does_not_outlive_the_block(
    make_app: Callable[..., aqueue.App],
) -> None:
    """aqueue's pool skips asyncpg's reset query for its own statements (they leave no
    session state); a connection lent to the caller is reset before it goes back."""
    app = make_app(pool_size=2)

    @app.job
    async def ship(order_id: int) -> None: ...

    async with app:
        await app.migrate()
        async with app.connection() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("SET application_name = 'mine'")
            await conn.execute("SET statement_timeout = 1")
            await conn.execute("SELECT pg_advisory_lock(42)")
            await conn.execute("LISTEN somewhere")
        for n in range(4):  # on the pool's connections, that one among them
            await ship.enqueue(order_id=n)
        async with app.connection() as a, app.connection() as b:  # the whole pool
            [conn] = [c for c in (a, b) if await c.fetchval("SELECT pg_backend_pid()") == pid]
            assert await conn.fetchval("SHOW application_name") == "aqueue"
            assert await conn.fetchval("SHOW statement_timeout") == "0"
            held = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1", pid
            )
            assert held == 0
            assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
        assert sorted(j.args["order_id"] for j in await app.list_jobs()) == [0, 1, 2, 3]


async def test_a_transaction_ended_by_a_deadlock_is_tried_again(app: aqueue.App) -> None:
    tries: list[int] = []

    def failing(times: int, sqlstate: str) -> Callable[[], Any]:
        async def attempt() -> str:
            tries.append(1)
            if len(tries) <= times:
                raise aqueue.DatabaseError("ended", sqlstate)
            return "done"

        return attempt

    assert await app.db.retrying_deadlocks(failing(2, "40P01")) == "done"
    assert len(tries) == 3
    tries.clear()
    with pytest.raises(aqueue.DatabaseError):  # three deadlocks in a row: given up
        await app.db.retrying_deadlocks(failing(3, "40P01"))
    assert len(tries) == 3
    tries.clear()
    with pytest.raises(aqueue.DatabaseError):  # any other error: at once
        await app.db.retrying_deadlocks(failing(1, "23505"))
    assert len(tries) == 1
