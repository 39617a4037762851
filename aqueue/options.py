"""Enqueue options, written once: the keyword names are the ``TypedDict``s below, which
``@app.job(...)``, ``.options(...)`` and ``app.enqueue(...)`` all take with ``Unpack``,
so one spelling is checked by the type checker everywhere. ``Options`` is their
validated form; a job's defaults are merged with each enqueue's options.

Every check raises ``InvalidOption`` (a ``ValueError``) naming the option, before
anything reaches PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict

from typing_extensions import Unpack

from .backoff import Backoff
from .bounds import MAX_DELAY, SMALLINT_MIN
from .errors import InvalidOption
from .unique import Unique
from .validate import json_text, seconds, smallint, validate_name

__all__ = ["EnqueueOptions", "JobOptions", "Options"]


class JobOptions(TypedDict, total=False):
    """Options a job declares as defaults (``@app.job(...)``); ``None`` means unset."""

    queue: str | None
    priority: int | None
    max_attempts: int | None
    timeout: float | timedelta | None
    tags: Sequence[str] | None
    meta: Mapping[str, Any] | None
    retry: Backoff | None
    unique: Unique | Literal[False] | None


class EnqueueOptions(JobOptions, total=False):
    """Options of one enqueue (``.options(...)``, ``app.enqueue(...)``)."""

    scheduled_at: datetime | None
    schedule_in: float | timedelta | None
    #: The caller's asyncpg connection: the job is inserted in its transaction.
    conn: Any
    #: The job's flow-control partition (aqueue.Partition), overriding ``partition_by``.
    partition_key: str | None


_OPTION_NAMES = EnqueueOptions.__optional_keys__


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    """The options of one enqueue; ``None`` means "not set here, use the next default"."""

    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    scheduled_at: datetime | None = None
    schedule_in: float | None = None
    tags: tuple[str, ...] | None = None
    meta: Mapping[str, Any] | None = None
    retry: Backoff | None = None
    conn: Any = None
    # False turns off a job's default uniqueness for one enqueue.
    unique: Unique | Literal[False] | None = None
    partition_key: str | None = None

    @classmethod
    def create(cls, **options: Unpack[EnqueueOptions]) -> Options:
        """Validate options given by keyword; ``TypeError`` for a name that is no option."""
        unknown = options.keys() - _OPTION_NAMES
        if unknown:
            raise TypeError(
                f"unexpected option(s) {', '.join(sorted(unknown))}; "
                f"options are {', '.join(sorted(_OPTION_NAMES))}"
            )
        queue = options.get("queue")
        priority = options.get("priority")
        max_attempts = options.get("max_attempts")
        timeout = options.get("timeout")
        scheduled_at = options.get("scheduled_at")
        schedule_in = options.get("schedule_in")
        tags = options.get("tags")
        meta = options.get("meta")
        retry = options.get("retry")
        conn = options.get("conn")
        unique = options.get("unique")
        partition_key = options.get("partition_key")
        if partition_key is not None:
            validate_name("partition_key", partition_key)
        if queue is not None:
            validate_name("queue", queue)
        if priority is not None:
            smallint("priority", priority, SMALLINT_MIN)
        if max_attempts is not None:
            smallint("max_attempts", max_attempts, 1)
        timeout_s = seconds("timeout", timeout, allow_zero=False)
        delay_s = seconds("schedule_in", schedule_in, allow_zero=True)
        if delay_s is not None and delay_s > MAX_DELAY:
            # PostgreSQL's timestamps end in year 294276; far beyond, the insert would fail.
            raise InvalidOption(
                "schedule_in", f"must be at most {MAX_DELAY:.0f} seconds, got {delay_s:g}"
            )
        if scheduled_at is not None:
            if not isinstance(scheduled_at, datetime):
                raise InvalidOption("scheduled_at", f"must be a datetime, got {scheduled_at!r}")
            if scheduled_at.tzinfo is None or scheduled_at.utcoffset() is None:
                raise InvalidOption(
                    "scheduled_at", "must be timezone-aware (e.g. datetime.now(UTC))"
                )
            if delay_s is not None:
                raise InvalidOption(
                    "schedule_in", "give either schedule_in or scheduled_at, not both"
                )
        tag_tuple: tuple[str, ...] | None = None
        if tags is not None:
            if isinstance(tags, str) or not isinstance(tags, Sequence):
                raise InvalidOption("tags", f"must be a list of strings, got {tags!r}")
            for tag in tags:
                validate_name("tags", tag)
            tag_tuple = tuple(tags)
        if meta is not None:
            if not isinstance(meta, Mapping):
                raise InvalidOption("meta", f"must be a mapping, got {type(meta).__name__}")
            json_text("meta", meta)
        if retry is not None and not isinstance(retry, Backoff):
            raise InvalidOption("retry", f"must be an aqueue.Backoff, got {retry!r}")
        if unique is not None and unique is not False and not isinstance(unique, Unique):
            raise InvalidOption("unique", f"must be an aqueue.Unique or False, got {unique!r}")
        return cls(
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout_s,
            scheduled_at=scheduled_at,
            schedule_in=delay_s,
            tags=tag_tuple,
            meta=meta,
            retry=retry,
            conn=conn,
            unique=unique,
            partition_key=partition_key,
        )

    def merged(self, override: Options) -> Options:
        """``override``'s set fields win; a schedule in either form replaces the other."""
        changes = {
            f.name: getattr(override, f.name)
            for f in dataclasses.fields(self)
            if getattr(override, f.name) is not None
        }
        # elif: the first branch adds "schedule_in" (as None), which must not clear the other.
        if override.scheduled_at is not None:
            changes["schedule_in"] = None
        elif override.schedule_in is not None:
            changes["scheduled_at"] = None
        return dataclasses.replace(self, **changes)

    def meta_json(self) -> str:
        return json_text("meta", dict(self.meta or {}))
