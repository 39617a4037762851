"""aqueue's pytest plugin, registered through the ``pytest11`` entry point: the fixtures
``aqueue_database_url`` (one PostgreSQL for the session) and ``aqueue_schema`` (a fresh
schema name per test, dropped after it)."""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Iterator

import anyio
import pytest

from ..app import App
from .schemas import unique_schema

__all__ = ["aqueue_database_url", "aqueue_schema"]


@pytest.fixture(scope="session")
def aqueue_database_url() -> Iterator[str]:
    """A PostgreSQL URL for the test session: ``AQUEUE_TEST_DATABASE_URL`` when set, else
    a throwaway server started for the session and removed after it."""
    url = os.environ.get("AQUEUE_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from ..embedded import EmbeddedPostgres

    with EmbeddedPostgres() as server:
        yield server.url


@pytest.fixture
def aqueue_schema(aqueue_database_url: str) -> Iterator[str]:
    """A schema name no other test uses, dropped (with everything in it) after the test.

    Example::

        async def test_signup(aqueue_database_url: str, aqueue_schema: str) -> None:
            app = create_app(aqueue_database_url, schema=aqueue_schema)
            async with app:
                await app.migrate()
                ...
    """
    schema = unique_schema()
    yield schema
    # A plain fixture, so it works under any async test plugin: the drop runs on an event
    # loop of its own, in a thread, whatever loop the test ran on.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(anyio.run, _drop, aqueue_database_url, schema).result()


async def _drop(url: str, schema: str) -> None:
    app = App(url, schema=schema)
    async with app:
        await app.db.drop_schema()
