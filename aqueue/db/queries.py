"""Loads the named statements of ``queries.sql`` (and the dashboard's read-only
``browse.sql``) and migrations, with the schema injected.

This is the one place a schema name enters SQL text: quoted as an identifier, after
``config.validate_schema_name`` has vetted it.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources

__all__ = ["Queries", "channel_for", "load_migrations", "quote_ident"]

#: Files of named statements; a name must be unique across all of them.
STATEMENT_FILES = ("queries.sql", "browse.sql")
_NAME_RE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_JOB_COLUMNS = (
    "id",
    "kind",
    "queue",
    "state::text AS state",
    "args::text AS args",
    "priority",
    "attempt",
    "max_attempts",
    "scheduled_at",
    "created_at",
    "attempted_at",
    "finalized_at",
    "errors::text AS errors",
    "result::text AS result",
    "tags",
    "meta::text AS meta",
)
_JOB_COLUMNS_RE = re.compile(r"\{job_columns(?::(\w+))?\}")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def channel_for(schema: str) -> str:
    """The NOTIFY channel of one schema; the insert trigger derives the same name in SQL."""
    return "aqueue_" + hashlib.md5(schema.encode(), usedforsecurity=False).hexdigest()[:16]


def _render(text: str, schema: str) -> str:
    def columns(match: re.Match[str]) -> str:
        alias = match.group(1)
        if not alias:
            return ", ".join(_JOB_COLUMNS)
        return ", ".join(f"{alias}.{col}" for col in _JOB_COLUMNS)

    text = _JOB_COLUMNS_RE.sub(columns, text)
    return text.replace("{schema}", quote_ident(schema)).replace(
        "{channel}", "'" + channel_for(schema) + "'"
    )


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


class Queries:
    """Every named statement, rendered for one schema."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.channel = channel_for(schema)
        self.by_name: dict[str, str] = {}
        for file_name in STATEMENT_FILES:
            parts = _NAME_RE.split(_read(file_name))
            for name, body in zip(parts[1::2], parts[2::2], strict=True):
                if name in self.by_name:
                    raise ValueError(f"statement {name!r} is defined twice ({file_name})")
                self.by_name[name] = _render(body.strip().rstrip(";"), schema)

    def __getattr__(self, name: str) -> str:
        try:
            return self.by_name[name]
        except KeyError:
            raise AttributeError(f"no statement named {name!r} in {STATEMENT_FILES}") from None


def load_migrations(schema: str) -> list[tuple[int, str, str]]:
    """(version, file name, rendered SQL), in version order."""
    folder = resources.files(__package__).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = re.match(r"^(\d{4})_\w+\.sql$", entry.name)
        if match:
            found.append(
                (int(match.group(1)), entry.name, _render(entry.read_text("utf-8"), schema))
            )
    return sorted(found)
