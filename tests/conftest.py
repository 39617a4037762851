"""Fixtures: one throwaway PostgreSQL per session (aqueue's own pytest plugin provides
``aqueue_database_url``), one fresh schema per test, and a PgBouncer in front of the
server for the tests that need one (``bouncer``, started on first use)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest

import aqueue
from aqueue.testing import unique_schema
from tests.bouncer import ROLE, SERVER_POOL, Bouncer, create_role, find_pgbouncer

FAST = {"poll_interval": 0.2, "shutdown_timeout": 5.0}


@pytest.fixture
async def make_app(aqueue_database_url: str) -> AsyncIterator[Callable[..., aqueue.App]]:
    """Build Apps on one fresh schema (several Apps = several nodes); all open and migrated
    lazily by ``open_app``; schema dropped afterwards."""
    schema = unique_schema()
    apps: list[aqueue.App] = []

    def factory(**settings: Any) -> aqueue.App:
        app = aqueue.App(
            aqueue_database_url, schema=settings.pop("schema", schema), **{**FAST, **settings}
        )
        apps.append(app)
        return app

    yield factory
    for app in apps:
        await app.close()
    cleanup = aqueue.App(aqueue_database_url, schema=schema)
    async with cleanup:
        await cleanup.db.drop_schema()


@pytest.fixture
async def app(make_app: Callable[..., aqueue.App]) -> AsyncIterator[aqueue.App]:
    """An open, migrated App on this test's schema."""
    app = make_app()
    async with app:
        await app.migrate()
        yield app


@pytest.fixture(scope="session")
def bouncer(aqueue_database_url: str) -> Iterator[Bouncer]:
    """Debian's PgBouncer in transaction mode in front of the suite's server."""
    binary = find_pgbouncer()
    if binary is None:
        pytest.skip("Debian's pgbouncer binary is not installed (apt-get install pgbouncer)")
    anyio.run(create_role, aqueue_database_url)
    bouncer = Bouncer(binary, aqueue_database_url, pool_size=SERVER_POOL, role=ROLE)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.close()
