"""Migrations, schema isolation and the named statements of ``aqueue/db/queries.sql``."""

from __future__ import annotations

import ast
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest

import aqueue
from aqueue.db.queries import Queries, load_migrations
from aqueue.jobs import JobState
from aqueue.testing import unique_schema

PACKAGE = Path(aqueue.__file__).parent
ALL_MIGRATIONS = [name for _, name, _ in load_migrations("x")]


async def _applied_versions(app: aqueue.App) -> list[int]:
    async with app.db.pool.acquire() as conn:
        return [row["version"] for row in await conn.fetch(app.db.q.applied_migrations.sql)]


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [version for version, _, _ in load_migrations("x")]
    assert versions == list(range(1, len(versions) + 1))
    assert ALL_MIGRATIONS[0] == "0001_init.sql"


async def test_migrate_twice_applies_nothing_the_second_time(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = make_app()
    async with app:
        assert await app.migrate() == ALL_MIGRATIONS
        assert await app.migrate() == []
        assert await _applied_versions(app) == list(range(1, len(ALL_MIGRATIONS) + 1))

        @app.job
        async def works() -> None: ...

        assert (await works.enqueue()).state is JobState.AVAILABLE
        assert await app.migrate() == []  # existing data survives a re-run
        assert len(await app.list_jobs()) == 1


async def test_concurrent_migrations_apply_each_version_once(
    make_app: Callable[..., aqueue.App],
) -> None:
    apps = [make_app() for _ in range(5)]
    applied: list[list[str]] = []

    async def migrate(app: aqueue.App) -> None:
        applied.append(await app.migrate())

    for app in apps:
        await app.open()
    async with anyio.create_task_group() as tg:
        for app in apps:
            tg.start_soon(migrate, app)
    assert len(applied) == 5
    # Exactly one App applied everything; the others found it done.
    assert sorted(applied, key=len) == [[], [], [], [], ALL_MIGRATIONS]
    assert await _applied_versions(apps[0]) == list(range(1, len(ALL_MIGRATIONS) + 1))
    for app in apps:
        assert await app.list_jobs() == []


@pytest.fixture
async def other_schema_app(
    make_app: Callable[..., aqueue.App], aqueue_database_url: str
) -> AsyncIterator[aqueue.App]:
    schema = unique_schema("iso")
    other = make_app(schema=schema)
    try:
        async with other:
            await other.migrate()
            yield other
    finally:
        async with aqueue.App(aqueue_database_url, schema=schema) as cleanup:
            await cleanup.db.drop_schema()


async def test_schemas_are_isolated(app: aqueue.App, other_schema_app: aqueue.App) -> None:
    other = other_schema_app
    assert app.schema != other.schema
    assert app.db.channel != other.db.channel
    ran: list[str] = []

    for each in (app, other):

        @each.job(queue="shared")
        async def same_kind(where: str) -> str:
            ran.append(where)
            return where

    theirs = await other.enqueue("same_kind", {"where": "B"})
    assert await other.get_job(theirs.id) == theirs
    assert await app.list_jobs() == []
    # Ids are per schema: the same id in A is a different job or none at all.
    assert await app.get_job(theirs.id) is None
    assert await app.cancel(theirs.id) is None
    assert await app.delete(theirs.id) is False

    async with app.worker({"shared": 4}):
        # Two jobs in A, one after the other, so A's worker claims at least twice after B's
        # job was written.
        first = await app.enqueue("same_kind", {"where": "A1"})
        await app.wait(first.id, timeout=10)
        second = await app.enqueue("same_kind", {"where": "A2"})
        await app.wait(second.id, timeout=10)
    assert ran == ["A1", "A2"]
    still = await other.get_job(theirs.id)
    assert still is not None and still.state is JobState.AVAILABLE and still.attempt == 0
    assert [j.id for j in await other.list_jobs()] == [theirs.id]
    assert first.id == theirs.id  # both schemas number their jobs from 1


async def test_every_statement_prepares_against_a_migrated_schema(app: aqueue.App) -> None:
    statements = Queries(app.schema).by_name
    assert len(statements) > 10
    async with app.db.pool.acquire() as conn:
        for name, sql in statements.items():
            assert "{" not in sql.replace("'{}'", ""), f"{name}: unrendered placeholder"
            try:
                await conn.prepare(sql)
            except Exception as exc:  # pragma: no cover - the assertion reports it
                pytest.fail(f"statement {name!r} does not prepare: {type(exc).__name__}: {exc}")


def test_every_statement_is_used_by_aqueue() -> None:
    names = set(Queries("aqueue").by_name)
    sources = {path: path.read_text(encoding="utf-8") for path in PACKAGE.rglob("*.py")}
    used = set(re.findall(r"\bq\.(\w+)", "\n".join(sources.values())))
    unused = sorted(names - used)
    assert not unused, f"statements in queries.sql that no aqueue code runs: {unused}"
    missing = sorted(used - names - {"schema", "channel", "by_name"})
    assert not missing, f"aqueue code refers to statements queries.sql lacks: {missing}"

    # A statement wrapped by a Database method is used only if something calls the method.
    database = PACKAGE / "db" / "database.py"
    tree = ast.parse(sources[database])
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Database"]
    everything = "\n".join(sources.values())
    dead = []
    for method in cls.body:
        if not isinstance(method, ast.AsyncFunctionDef | ast.FunctionDef):
            continue
        statements = {
            node.attr
            for node in ast.walk(method)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "q"
            and node.attr in names
        }
        calls = len(re.findall(rf"\.{method.name}\(", everything))
        if statements and calls == 0:
            dead.append(f"Database.{method.name} ({', '.join(sorted(statements))})")
    assert not dead, f"statements only reachable through methods nothing calls: {dead}"


async def _assert_not_migrated(app: aqueue.App) -> None:
    @app.job
    async def anything(n: int = 0) -> None: ...

    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "get_job": lambda: app.get_job(1),
        "list_jobs": lambda: app.list_jobs(),
        "list_jobs(state)": lambda: app.list_jobs(state="available"),
        "enqueue": lambda: anything.enqueue(),
        "enqueue_many": lambda: app.enqueue_many([anything.build(n=1)]),
        "cancel": lambda: app.cancel(1),
        "retry": lambda: app.retry(1),
        "delete": lambda: app.delete(1),
        "wait": lambda: app.wait(1, timeout=1),
    }
    for label, call in calls.items():
        with pytest.raises(aqueue.SchemaNotMigrated) as info:
            await call()
        message = str(info.value)
        assert "migrate" in message, f"{label}: {message}"
        assert app.schema in message, f"{label}: {message}"
        assert "\n" not in message, f"{label}: {message}"
        assert isinstance(info.value, aqueue.DatabaseError)


async def test_unmigrated_schema_raises_schema_not_migrated(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = make_app()
    async with app:
        await _assert_not_migrated(app)


async def test_empty_schema_raises_schema_not_migrated(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = make_app()
    async with app:
        async with app.db.pool.acquire() as conn:
            await conn.execute(app.db.q.create_schema.sql)
        await _assert_not_migrated(app)
        # And migrating fixes it.
        assert await app.migrate() == ALL_MIGRATIONS
        assert await app.list_jobs() == []


async def test_worker_on_unmigrated_schema_fails_fast(
    make_app: Callable[..., aqueue.App],
) -> None:
    app = make_app()

    @app.job
    async def anything() -> None: ...

    async with app:
        with pytest.raises(aqueue.SchemaNotMigrated, match="migrate"):
            async with app.worker({"default": 1}):
                pytest.fail("a worker started on an unmigrated schema")
        with pytest.raises(aqueue.SchemaNotMigrated, match="migrate"):
            await app.run_worker({"default": 1})
