"""App settings, validated once at construction; their defaults are documented in
docs/reference/configuration.md."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Literal, TypedDict

import pydantic

from .errors import ConfigurationError

__all__ = [
    "NO_DATABASE_URL",
    "Settings",
    "SettingsOptions",
    "build_settings",
    "resolve_database_url",
    "resolve_listen_url",
    "validate_schema_name",
]

_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


class Settings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    #: Checked by build_settings (validate_schema_name), which every App goes through.
    schema_name: str = "aqueue"
    #: Fallback polling when no notification arrives (seconds).
    poll_interval: float = pydantic.Field(1.0, gt=0, le=3600)
    #: How often a worker process refreshes its node row (seconds).
    heartbeat_interval: float = pydantic.Field(2.0, gt=0, le=3600)
    #: A node whose heartbeat is older than this is dead; its running jobs are rescued.
    node_ttl: float = pydantic.Field(15.0, gt=0, le=86400)
    #: How long a stopping worker waits for running jobs before cancelling them.
    shutdown_timeout: float = pydantic.Field(30.0, ge=0, le=86400)
    #: How long completed, cancelled and discarded jobs are kept (seconds).
    retention: float = pydantic.Field(7 * 86400.0, gt=0)
    #: How often the leader deletes finished jobs older than ``retention`` (seconds).
    prune_interval: float = pydantic.Field(60.0, gt=0, le=86400)
    #: How long a lease (the leader's, a persistent worker's) lasts without renewal (seconds).
    leader_ttl: float = pydantic.Field(10.0, gt=0, le=3600)
    #: Connections in the App's pool: enqueues, admin calls, ``app.transaction()`` and
    #: whatever jobs do with the App. Worker machinery has its own (``worker_pool_size``).
    pool_size: int = pydantic.Field(10, ge=2, le=1000)
    #: Connections reserved for a running worker's own statements (claims, outcome
    #: writes, lease renewals, maintenance, periodic enqueues), so jobs holding every
    #: connection of the App's pool cannot stall them. Opened lazily: an App that runs no
    #: worker opens none.
    worker_pool_size: int = pydantic.Field(2, ge=1, le=100)
    #: Whether the node heartbeat has a connection of its own (over ``listen_url``) or
    #: shares the worker pool: one server connection fewer per worker process.
    dedicated_heartbeat: bool = True
    #: ``"transaction"`` when ``url`` goes through a transaction-pooling proxy without
    #: prepared-statement support (PgBouncer before 1.21, or with max_prepared_statements
    #: = 0): statements are then sent unnamed (never cached per connection) and the
    #: session features need ``listen_url``. ``None``: a direct connection (or a session
    #: pooler); statements are prepared once per connection and reused.
    pooler: Literal["transaction"] | None = None
    #: Seconds to wait for PostgreSQL when opening the pool.
    connect_timeout: float = pydantic.Field(10.0, gt=0, le=600)
    #: A persistent worker that returns or fails restarts after a delay doubling from
    #: ``restart_delay`` up to ``restart_delay_max`` (seconds).
    restart_delay: float = pydantic.Field(1.0, gt=0, le=3600)
    restart_delay_max: float = pydantic.Field(60.0, gt=0, le=86400)
    #: Most outcomes the completer writes in one statement.
    completer_batch: int = pydantic.Field(1000, ge=1, le=10000)

    @pydantic.model_validator(mode="after")
    def _ttl_vs_heartbeat(self) -> Settings:
        if self.node_ttl <= self.heartbeat_interval:
            raise ValueError("node_ttl must be greater than heartbeat_interval")
        return self


class SettingsOptions(TypedDict, total=False):
    """The keyword arguments of ``aqueue.App`` besides url, schema and logger: the fields
    of ``Settings``, whose defaults and bounds are written there once."""

    poll_interval: float
    heartbeat_interval: float
    node_ttl: float
    shutdown_timeout: float
    retention: float | timedelta
    prune_interval: float
    leader_ttl: float
    pool_size: int
    worker_pool_size: int
    dedicated_heartbeat: bool
    pooler: Literal["transaction"] | None
    connect_timeout: float
    restart_delay: float
    restart_delay_max: float
    completer_batch: int


_SETTING_NAMES = SettingsOptions.__optional_keys__


def validate_schema_name(value: str) -> str:
    # Quoting makes any name safe in SQL; the stricter rule keeps names usable from psql
    # and notification channels readable.
    if not isinstance(value, str) or not _SCHEMA_RE.match(value) or len(value.encode()) > 63:
        raise ConfigurationError(
            f"schema: {value!r} is not a valid schema name "
            "(letters, digits, _ or $, not starting with a digit, at most 63 bytes)"
        )
    if value.lower().startswith("pg_"):
        raise ConfigurationError(f"schema: {value!r} is reserved by PostgreSQL (pg_ prefix)")
    return value


def build_settings(schema: str, options: SettingsOptions) -> Settings:
    """Validated settings; an unknown name is a ``TypeError``, as for any keyword."""
    unknown = options.keys() - _SETTING_NAMES
    if unknown:
        raise TypeError(f"App() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    # Checked here, once, for a message that names the rule ("schema: ...").
    validate_schema_name(schema)
    values: dict[str, object] = dict(options)
    retention = values.get("retention")
    if isinstance(retention, timedelta):
        values["retention"] = retention.total_seconds()
    try:
        return Settings(schema_name=schema, **values)  # type: ignore[arg-type]
    except pydantic.ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigurationError(f"invalid App settings: {details}") from None


#: The URL of an inline App given none: never connected to (``.invalid`` never resolves).
NO_DATABASE_URL = "postgresql://no-database.invalid/inline"


def resolve_database_url(url: str | None, *, required: bool = True) -> str:
    """``url``, else ``AQUEUE_DATABASE_URL``; neither is an error unless not ``required``
    (an inline App, which never connects)."""
    if url is None:
        url = os.environ.get("AQUEUE_DATABASE_URL")
        if not url and not required:
            return NO_DATABASE_URL
        if not url:
            raise ConfigurationError(
                "no database URL: pass one to aqueue.App(...) or set AQUEUE_DATABASE_URL "
                "(e.g. postgresql://user@localhost/db)"
            )
    if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError(f"database URL must start with postgresql:// (got {url!r:.60})")
    return url


def resolve_listen_url(listen_url: str | None, url: str) -> str:
    """The URL for session-scoped connections (LISTEN, the heartbeat): ``url`` by default."""
    if listen_url is None:
        return url
    if not isinstance(listen_url, str) or not listen_url.startswith(
        ("postgresql://", "postgres://")
    ):
        raise ConfigurationError(
            f"listen_url must start with postgresql:// (got {listen_url!r:.60})"
        )
    return listen_url
