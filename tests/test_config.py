"""App configuration: the database URL, schema names, settings, and connection failures."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import aqueue


def test_no_url_and_no_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AQUEUE_DATABASE_URL", raising=False)
    with pytest.raises(aqueue.ConfigurationError, match="AQUEUE_DATABASE_URL"):
        aqueue.App()
    with pytest.raises(aqueue.ConfigurationError, match="AQUEUE_DATABASE_URL"):
        aqueue.App(None, schema="s")
    monkeypatch.setenv("AQUEUE_DATABASE_URL", "")
    with pytest.raises(aqueue.ConfigurationError, match="AQUEUE_DATABASE_URL"):
        aqueue.App(None)


async def test_env_var_is_used_when_no_url_is_given(
    monkeypatch: pytest.MonkeyPatch, aqueue_database_url: str
) -> None:
    monkeypatch.setenv("AQUEUE_DATABASE_URL", aqueue_database_url)
    app = aqueue.App(schema="env_schema_test")
    assert app.url == aqueue_database_url
    async with app:
        # Connected to the server the variable names: the schema is simply not there yet.
        assert app.db.is_open
        with pytest.raises(aqueue.SchemaNotMigrated):
            await app.get_job(1)
    # An explicit URL wins over the variable.
    monkeypatch.setenv("AQUEUE_DATABASE_URL", "postgresql://env@host/db")
    assert aqueue.App("postgresql://explicit@host/db").url == "postgresql://explicit@host/db"


@pytest.mark.parametrize(
    "url",
    [
        "mysql://user@host/db",
        "http://host/db",
        "host=localhost dbname=x",
        "postgresql:/missing-slash",
        "",
    ],
)
def test_invalid_url_scheme(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AQUEUE_DATABASE_URL", raising=False)
    with pytest.raises(aqueue.ConfigurationError) as info:
        aqueue.App(url)
    assert "postgresql://" in str(info.value) or "AQUEUE_DATABASE_URL" in str(info.value)


def test_postgres_scheme_alias_is_accepted() -> None:
    assert aqueue.App("postgres://u@h/d").url == "postgres://u@h/d"


@pytest.mark.parametrize(
    "schema",
    [
        "1abc",
        'a"b',
        "pg_x",
        "PG_catalog2",
        "a" * 64,
        "",
        "a-b",
        "a b",
        "ü" * 10,
        "a;drop",
    ],
)
def test_bad_schema_names(schema: str) -> None:
    with pytest.raises(aqueue.ConfigurationError, match="schema") as info:
        aqueue.App("postgresql://u@h/d", schema=schema)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("schema", ["aqueue", "_x", "a" * 63, "Jobs_2", "a$b"])
def test_good_schema_names(schema: str) -> None:
    assert aqueue.App("postgresql://u@h/d", schema=schema).schema == schema


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": -1}, "poll_interval"),
        ({"heartbeat_interval": 0}, "heartbeat_interval"),
        ({"node_ttl": 2.0, "heartbeat_interval": 2.0}, "node_ttl"),
        ({"node_ttl": 1.0, "heartbeat_interval": 5.0}, "node_ttl"),
        ({"pool_size": 1}, "pool_size"),
        ({"pool_size": 0}, "pool_size"),
        ({"shutdown_timeout": -1}, "shutdown_timeout"),
        ({"retention": 0}, "retention"),
        ({"leader_ttl": 0}, "leader_ttl"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"completer_batch": 0}, "completer_batch"),
        ({"poll_interval": "fast"}, "poll_interval"),
    ],
)
def test_bad_settings_name_the_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(aqueue.ConfigurationError, match=field) as info:
        aqueue.App("postgresql://u@h/d", **settings)
    assert "\n" not in str(info.value)


def test_unknown_setting_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="pol_interval"):
        aqueue.App("postgresql://u@h/d", pol_interval=1.0)  # type: ignore[call-arg]


def test_valid_settings_are_kept() -> None:
    app = aqueue.App(
        "postgresql://u@h/d",
        schema="s1",
        poll_interval=0.5,
        heartbeat_interval=1,
        node_ttl=3,
        pool_size=2,
        shutdown_timeout=0,
    )
    s = app.settings
    assert (s.poll_interval, s.heartbeat_interval, s.node_ttl) == (0.5, 1, 3)
    assert (s.pool_size, s.shutdown_timeout, app.schema) == (2, 0, "s1")


async def test_unreachable_database_is_a_one_line_database_error() -> None:
    app = aqueue.App("postgresql://nobody:s3cret@127.0.0.1:1/x", connect_timeout=2)
    with pytest.raises(aqueue.DatabaseError) as info:
        async with app:
            pytest.fail("the App opened without a database")
    message = str(info.value)
    assert "\n" not in message
    assert "127.0.0.1:1" in message
    assert "s3cret" not in message  # the password is never shown
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not isinstance(info.value, aqueue.SchemaNotMigrated)
    assert not app.db.is_open
    # A failed open leaves the App closed and usable once the cause is fixed.
    with pytest.raises(aqueue.AppNotOpen):
        await app.get_job(1)


async def test_database_that_refuses_is_a_database_error(aqueue_database_url: str) -> None:
    parts = urlsplit(aqueue_database_url)
    missing = urlunsplit(parts._replace(path="/no_such_database_here"))
    app = aqueue.App(missing, connect_timeout=5)
    with pytest.raises(aqueue.DatabaseError, match="no_such_database_here") as info:
        await app.open()
    assert "\n" not in str(info.value)
    assert not app.db.is_open


async def test_app_not_open(aqueue_database_url: str) -> None:
    app = aqueue.App(aqueue_database_url, schema="never_opened")
    with pytest.raises(aqueue.AppNotOpen, match="async with app"):
        await app.get_job(1)
    with pytest.raises(aqueue.AppNotOpen):
        await app.migrate()

    @app.job
    async def j() -> None: ...

    with pytest.raises(aqueue.AppNotOpen):
        await j.enqueue()


def test_listen_url_and_pooler() -> None:
    url = "postgresql://u@pooler/db"
    app = aqueue.App(url)
    assert app.listen_url == url and app.settings.pooler is None
    direct = "postgresql://u@primary/db"
    app = aqueue.App(url, listen_url=direct, pooler="transaction")
    assert app.listen_url == direct and app.settings.pooler == "transaction"
    with pytest.raises(aqueue.ConfigurationError, match="listen_url must start with"):
        aqueue.App(url, listen_url="mysql://x")
    with pytest.raises(aqueue.ConfigurationError, match="pooler"):
        aqueue.App(url, pooler="session")  # type: ignore[arg-type]
    with pytest.raises(aqueue.ConfigurationError, match="worker_pool_size"):
        aqueue.App(url, worker_pool_size=0)
