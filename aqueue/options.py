"""Enqueue options: validated once, merged from the job's defaults and ``.options()``.

Every check raises ``InvalidOption`` (a ``ValueError``) naming the option, before
anything reaches PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import pydantic_core

from .errors import ConfigurationError, InvalidOption
from .unique import Unique

__all__ = ["Backoff", "Options", "validate_name"]

SMALLINT_MIN, SMALLINT_MAX = -32768, 32767
NAME_MAX = 200
MAX_SCHEDULE_IN = 1000 * 365.25 * 86400.0  # a thousand years
_UNSET: Any = object()


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: ``base * factor ** (attempt - 1)``, capped at ``max_delay``.

    ``jitter`` spreads each delay uniformly by ±that fraction so that jobs failing together
    do not retry together.
    """

    base: float = 1.0
    factor: float = 2.0
    max_delay: float = 3600.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        for name in ("base", "factor", "max_delay", "jitter"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0 or not math.isfinite(value):
                raise InvalidOption(f"retry.{name}", f"must be a finite number >= 0, got {value!r}")
        if self.jitter > 1:
            raise InvalidOption("retry.jitter", f"must be between 0 and 1, got {self.jitter!r}")
        if self.max_delay > MAX_SCHEDULE_IN:
            raise InvalidOption(
                "retry.max_delay",
                f"must be at most {MAX_SCHEDULE_IN:.0f} seconds, got {self.max_delay:g}",
            )

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        exponent = max(attempt - 1, 0)
        # Cap the exponent before computing so huge attempt counts cannot overflow a float.
        try:
            raw = (
                self.max_delay
                if exponent > 1000
                else min(self.base * self.factor**exponent, self.max_delay)
            )
        except OverflowError:  # e.g. factor=1000 at attempt 200: beyond any float
            raw = self.max_delay
        spread = raw * self.jitter
        uniform = (rng or random).uniform(-spread, spread)
        return max(raw + uniform, 0.0)

    def to_json(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Backoff:
        return cls(**{k: float(v) for k, v in data.items() if k in cls.__dataclass_fields__})


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_name(field: str, value: object) -> str:
    if not isinstance(value, str) or not value or not value.strip():
        raise InvalidOption(field, f"must be a non-empty string, got {value!r}")
    if len(value) > NAME_MAX:
        raise InvalidOption(field, f"must be at most {NAME_MAX} characters, got {len(value)}")
    if "\x00" in value:
        raise InvalidOption(field, "must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            # A lone surrogate (e.g. from a bad decode): no UTF-8 text, so no PostgreSQL text.
            raise InvalidOption(
                field, f"must be valid Unicode text (no lone surrogates), got {value!r}"
            ) from None
    return value


def validate_registered_name(field: str, value: object) -> str:
    """``validate_name`` for names given at registration: a ConfigurationError."""
    try:
        return validate_name(field, value)
    except InvalidOption as exc:
        raise ConfigurationError(str(exc)) from None


def _smallint(field: str, value: object, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidOption(field, f"must be an integer, got {value!r}")
    if not low <= value <= SMALLINT_MAX:
        raise InvalidOption(field, f"must be between {low} and {SMALLINT_MAX}, got {value}")
    return value


def _json_text(field: str, value: object) -> str:
    try:
        text = pydantic_core.to_json(value).decode()
    except pydantic_core.PydanticSerializationError as exc:
        raise InvalidOption(field, f"must be JSON-serialisable: {exc}") from None
    problems = json_nul_problems(text, field)
    if problems:
        key, problem = problems[0]
        raise InvalidOption(field, problem if key == field else f"key {key!r} {problem}")
    return text


# A JSON "\u0000" escape (not an escaped backslash followed by "u0000"): jsonb rejects it.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_NUL_PROBLEM = "contains a NUL character (\\u0000), which PostgreSQL cannot store"


def json_nul_problems(text: str, whole: str) -> list[tuple[str, str]]:
    """(top-level key, problem) for each part of a JSON object holding a NUL character, which
    PostgreSQL's jsonb cannot store; ``whole`` names the value when no key is to blame."""
    if not _JSON_NUL.search(text):
        return []
    data = json.loads(text)
    keys = [
        key.replace("\x00", "\\x00")
        for key, value in (data.items() if isinstance(data, dict) else ())
        if "\x00" in key or _JSON_NUL.search(json.dumps(value))
    ]
    return [(key, _NUL_PROBLEM) for key in keys] or [(whole, _NUL_PROBLEM)]


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

    @classmethod
    def create(
        cls,
        *,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | timedelta | None = None,
        scheduled_at: datetime | None = None,
        schedule_in: float | timedelta | None = None,
        tags: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
        retry: Backoff | None = None,
        conn: Any = None,
        unique: Unique | Literal[False] | None = None,
    ) -> Options:
        if queue is not None:
            validate_name("queue", queue)
        if priority is not None:
            _smallint("priority", priority, SMALLINT_MIN)
        if max_attempts is not None:
            _smallint("max_attempts", max_attempts, 1)
        timeout_s = _seconds("timeout", timeout, allow_zero=False)
        delay_s = _seconds("schedule_in", schedule_in, allow_zero=True)
        if delay_s is not None and delay_s > MAX_SCHEDULE_IN:
            # PostgreSQL's timestamps end in year 294276; far beyond, the insert would fail.
            raise InvalidOption(
                "schedule_in", f"must be at most {MAX_SCHEDULE_IN:.0f} seconds, got {delay_s:g}"
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
            _json_text("meta", meta)
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
        return _json_text("meta", dict(self.meta or {}))


def _seconds(field: str, value: float | timedelta | None, *, allow_zero: bool) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if not _is_number(value) or not math.isfinite(value):
        raise InvalidOption(field, f"must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidOption(field, f"must be {bound} seconds, got {value}")
    return float(value)
