"""Helpers for testing code that uses aqueue, and a pytest plugin.

The plugin (loaded automatically when aqueue is installed) provides one session fixture,
``aqueue_database_url``: ``AQUEUE_TEST_DATABASE_URL`` when set, else a throwaway
PostgreSQL started for the session (see ``aqueue.embedded``). Give each test its own
schema (``unique_schema()``) to isolate tests without truncating anything.

``run_until_idle(app, queues)`` runs a real worker until no due job is left in those
queues, for tests that want the jobs they enqueued to have run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping

import anyio
import pytest

from .app import App
from .flow import Queue

__all__ = ["aqueue_database_url", "drop_schema", "run_until_idle", "unique_schema"]


def unique_schema(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def aqueue_database_url() -> Iterator[str]:
    """A PostgreSQL URL for the test session: the env override or a throwaway server."""
    url = os.environ.get("AQUEUE_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from .embedded import EmbeddedPostgres

    with EmbeddedPostgres() as server:
        yield server.url


async def drop_schema(app: App) -> None:
    """Remove everything aqueue created in the app's schema."""
    await app.db.drop_schema()


async def run_until_idle(
    app: App, queues: Mapping[str, int | Queue] | None = None, *, timeout: float = 30.0
) -> None:
    """Run a worker until none of the jobs in ``queues`` is due or running; ``queues``
    defaults to the App's worker queues (``app.worker_queues()``).

    Jobs scheduled in the future, and jobs of a paused queue, are not waited for. Raises
    ``TimeoutError`` if the queues do not become idle within ``timeout`` seconds.
    """
    queues = app.worker_queues(queues)
    with anyio.fail_after(timeout):
        async with app.worker(queues):
            kinds = app.registry.kinds()
            while not await app.db.queues_idle(list(queues), kinds):  # noqa: ASYNC110 - polls the db
                await anyio.sleep(0.01)
