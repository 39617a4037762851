"""A schema per test: ``unique_schema``, ``isolated(app)`` and ``drop_schema``."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import anyio

from ..app import App
from ..errors import ConfigurationError

__all__ = ["drop_schema", "isolated", "unique_schema"]

#: How long ``isolated`` may take to drop its schema on the way out.
_DROP_TIMEOUT = 30.0


def unique_schema(prefix: str = "t") -> str:
    """A schema name no other test uses, such as ``t_3f9c0a1b2d4e``.

    Example::

        app = aqueue.App(aqueue_database_url, schema=unique_schema())
    """
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def drop_schema(app: App) -> None:
    """Remove everything aqueue created in the app's schema (the schema too).

    Example::

        async with app:
            await app.migrate()
            yield app
            await drop_schema(app)
    """
    await app.db.drop_schema()


@contextlib.asynccontextmanager
async def isolated(
    app: App, *, url: str | None = None, schema: str | None = None
) -> AsyncIterator[App]:
    """Move ``app`` into a fresh schema for the block: open it, migrate, and on the way out
    drop the schema, close the App and move it back where it was.

    ``url`` points it at another database for the block (say the ``aqueue_database_url``
    fixture, for an App made at import time from ``AQUEUE_DATABASE_URL``); ``schema``
    names the schema (default: a fresh ``unique_schema()``). The App must not be open;
    the block may close and reopen it (a web app's lifespan does). Example::

        async def test_signup_enqueues_a_welcome(aqueue_database_url: str) -> None:
            async with isolated(jobs, url=aqueue_database_url):
                await signup("ada@example.com")
                await assert_enqueued(jobs, send_welcome, args={"email": "ada@example.com"})
    """
    if app.testing == "inline":
        raise ConfigurationError("isolated: this App runs jobs inline and has no database")
    if app.db.is_open:
        raise ConfigurationError(
            "isolated: the App is open already; enter isolated(app) before opening it"
        )
    fresh = schema if schema is not None else unique_schema("aq")
    before = app.url, app.listen_url
    target = url if url is not None else app.url
    # A URL given here is used for everything; the App's own URL keeps its listen_url.
    listen_url = None if url is not None else app.db.explicit_listen_url
    previous = app.db.retarget(target, fresh, listen_url)
    app.url, app.listen_url = target, app.db.listen_url
    try:
        await app.open()
        try:
            await app.migrate()
            yield app
        finally:
            with anyio.CancelScope(shield=True), anyio.fail_after(_DROP_TIMEOUT):
                await app.open()  # the block may have closed it
                await app.db.drop_schema()
                await app.close()
    finally:
        app.db.retarget(*previous)
        app.url, app.listen_url = before
