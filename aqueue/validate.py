"""Checks shared by every input aqueue takes: names, smallints, seconds, JSON, queues.

Each raises ``InvalidOption`` (a ``ValueError``) naming the field, before anything
reaches PostgreSQL; ``validate_registered_name`` raises ``ConfigurationError`` because
it checks what a program declares, not what it sends.
"""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta
from typing import Any

import pydantic_core

from .bounds import NAME_MAX, SMALLINT_MAX
from .errors import ConfigurationError, InvalidOption

__all__ = [
    "has_json_nul",
    "is_number",
    "json_nul_problems",
    "json_text",
    "seconds",
    "smallint",
    "to_storable_json",
    "validate_name",
    "validate_registered_name",
]


def is_number(value: object) -> bool:
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


def smallint(field: str, value: object, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidOption(field, f"must be an integer, got {value!r}")
    if not low <= value <= SMALLINT_MAX:
        raise InvalidOption(field, f"must be between {low} and {SMALLINT_MAX}, got {value}")
    return value


def seconds(field: str, value: float | timedelta | None, *, allow_zero: bool) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if not is_number(value) or not math.isfinite(value):
        raise InvalidOption(field, f"must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidOption(field, f"must be {bound} seconds, got {value}")
    return float(value)


# A JSON "\u0000" escape (not an escaped backslash followed by "u0000"): jsonb rejects it.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_NUL_PROBLEM = "contains a NUL character (\\u0000), which PostgreSQL cannot store"


def has_json_nul(text: str) -> bool:
    """Whether JSON text holds a NUL character, which PostgreSQL's jsonb cannot store."""
    # The substring test first: it is far cheaper than the regex, and almost always false.
    return "\\u0000" in text and _JSON_NUL.search(text) is not None


def json_nul_problems(text: str, whole: str) -> list[tuple[str, str]]:
    """(top-level key, problem) for each part of a JSON object holding a NUL character;
    ``whole`` names the value when no key is to blame."""
    if not has_json_nul(text):
        return []
    data = json.loads(text)
    keys = [
        key.replace("\x00", "\\x00")
        for key, value in (data.items() if isinstance(data, dict) else ())
        if "\x00" in key or has_json_nul(json.dumps(value))
    ]
    return [(key, _NUL_PROBLEM) for key in keys] or [(whole, _NUL_PROBLEM)]


def json_text(field: str, value: object) -> str:
    """``value`` as JSON text jsonb accepts, or ``InvalidOption`` naming ``field``."""
    try:
        # NaN and infinities are not JSON: null, as in arguments and results.
        text = pydantic_core.to_json(value, inf_nan_mode="null").decode()
    except pydantic_core.PydanticSerializationError as exc:
        raise InvalidOption(field, f"must be JSON-serialisable: {exc}") from None
    problems = json_nul_problems(text, field)
    if problems:
        key, problem = problems[0]
        raise InvalidOption(field, problem if key == field else f"key {key!r} {problem}")
    return text


def to_storable_json(value: Any) -> str:
    """JSON text PostgreSQL's jsonb accepts; ``ValueError`` for what it would reject.

    NaN and infinities become ``null`` (pydantic's JSON default; ``NaN`` is not JSON), and
    strings holding NUL characters are refused, so a bad result never fails a whole batch
    of outcome writes.
    """
    if value is None:  # what most jobs return
        return "null"
    text = pydantic_core.to_json(value, inf_nan_mode="null").decode()
    if has_json_nul(text):
        raise ValueError("it contains a NUL character (\\u0000), which PostgreSQL cannot store")
    return text
