"""Loads the named statements of ``sql/*.sql`` and the migrations, with the schema injected.

A file holds statements (``-- name: NAME``) and fragments (``-- fragment: NAME``), each
running until the next marker. Placeholders, replaced once when loaded:

- ``{schema}``: the schema name, quoted as an identifier. This is the one place a
  schema name enters SQL text, after ``config.validate_schema_name`` has vetted it.
- ``{channel}``: the schema's NOTIFY channel, as a string literal.
- ``{job_columns}`` / ``{job_columns:ALIAS}``: the columns ``jobs.job_from_row`` reads.
- ``{@NAME}``: the text of fragment NAME (shared pieces, e.g. the claim's body).
- ``:name``: a named parameter. A statement uses either named parameters or ``$n``;
  named ones become ``$1, $2 ...`` in order of first use, and ``Statement.bind(obj)``
  reads them off ``obj`` by name (``db/params.py``), so no order is kept by hand.

Whole-line comments are dropped from what is sent: they explain the SQL in the files.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from typing import Any

__all__ = [
    "JOB_COLUMN_NAMES",
    "Queries",
    "Statement",
    "channel_for",
    "load_migrations",
    "load_schema",
    "quote_ident",
]

_MARKER_RE = re.compile(r"^-- (name|fragment): (\w+)\s*$", re.MULTILINE)
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
    "progress",
    "progress_note",
    "progress_attempt",
    "workflow_id",
    "batch_id",
    "step",
)
#: The names a ``{job_columns}`` row has (what ``jobs.job_from_row`` reads).
JOB_COLUMN_NAMES = tuple(column.rpartition(" AS ")[2] for column in _JOB_COLUMNS)
_JOB_COLUMNS_RE = re.compile(r"\{job_columns(?::(\w+))?\}")
_FRAGMENT_RE = re.compile(r"\{@(\w+)\}")
# ":name", but not the second colon of a "::type" cast nor a colon inside a word; string
# literals are matched first and left as they are ('i:' || queue, '{"a":1}').
_NAMED_RE = re.compile(r"('(?:[^']|'')*')|(?<![:\w]):([a-z_][a-z0-9_]*)")
_NUMBERED_RE = re.compile(r"\$\d")
_COMMENT_LINE_RE = re.compile(r"^\s*--.*\n?", re.MULTILINE)
SQL_FILES = (
    "jobs.sql",
    "claims.sql",
    "outcomes.sql",
    "cluster.sql",
    "periodic.sql",
    "queues.sql",
    "migrations.sql",
    "browse.sql",
    "metrics.sql",
    "workflows.sql",
    "steps.sql",
)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def channel_for(schema: str) -> str:
    """The NOTIFY channel of one schema."""
    return "aqueue_" + hashlib.md5(schema.encode(), usedforsecurity=False).hexdigest()[:16]


class Statement:
    """A rendered statement and the names of its parameters (empty when it uses ``$n``)."""

    __slots__ = ("name", "params", "sql")

    def __init__(self, name: str, sql: str, params: tuple[str, ...] = ()) -> None:
        self.name = name
        self.sql = sql
        self.params = params

    def __repr__(self) -> str:
        return f"<Statement {self.name} {self.params}>"

    def bind(self, values: object) -> list[Any]:
        """The positional arguments for this statement, read off ``values`` by name."""
        return [getattr(values, name) for name in self.params]

    def args(self, **values: Any) -> list[Any]:
        """The positional arguments for this statement, given by name."""
        if values.keys() != set(self.params):
            raise TypeError(f"statement takes {self.params}, got {sorted(values)}")
        return [values[name] for name in self.params]


def _render(text: str, schema: str, fragments: dict[str, str] | None = None) -> str:
    def columns(match: re.Match[str]) -> str:
        alias = match.group(1)
        if not alias:
            return ", ".join(_JOB_COLUMNS)
        return ", ".join(f"{alias}.{col}" for col in _JOB_COLUMNS)

    def fragment(match: re.Match[str]) -> str:
        name = match.group(1)
        if fragments is None or name not in fragments:
            raise LookupError(f"unknown SQL fragment {name!r}")
        return fragments[name]

    text = _FRAGMENT_RE.sub(fragment, text)
    text = _JOB_COLUMNS_RE.sub(columns, text)
    return text.replace("{schema}", quote_ident(schema)).replace(
        "{channel}", "'" + channel_for(schema) + "'"
    )


def _named(name: str, sql: str, numbered: bool) -> Statement:
    """``sql`` with its ``:name`` parameters numbered; ``numbered``: the source (before the
    schema name, which may hold a ``$``, went in) also uses ``$n``."""
    order: list[str] = []

    def number(match: re.Match[str]) -> str:
        literal, param = match.groups()
        if literal is not None:
            return literal
        if param not in order:
            order.append(param)
        return f"${order.index(param) + 1}"

    converted = _NAMED_RE.sub(number, sql)
    if order and numbered:
        raise ValueError(f"statement {name!r} mixes named (:x) and numbered ($n) parameters")
    return Statement(name, converted, tuple(order))


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _blocks(source: str) -> list[tuple[str, str, str]]:
    """(kind, name, body) for each statement or fragment of one file."""
    parts = _MARKER_RE.split(source)
    return [
        (kind, name, body.strip())
        for kind, name, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True)
    ]


class Queries:
    """Every named statement, rendered for one schema."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.channel = channel_for(schema)
        blocks = [block for file in SQL_FILES for block in _blocks(_read(f"sql/{file}"))]
        fragments: dict[str, str] = {}
        for kind, name, body in blocks:
            if kind == "fragment":
                fragments[name] = _COMMENT_LINE_RE.sub("", body).strip()
        self.statements: dict[str, Statement] = {}
        for kind, name, body in blocks:
            if kind != "name":
                continue
            if name in self.statements:
                raise ValueError(f"statement {name!r} is defined twice in aqueue/db/sql")
            source = _FRAGMENT_RE.sub(lambda m: fragments.get(m.group(1), ""), body)
            numbered = _NUMBERED_RE.search(_COMMENT_LINE_RE.sub("", source)) is not None
            sql = _COMMENT_LINE_RE.sub("", _render(body, schema, fragments)).strip().rstrip(";")
            self.statements[name] = _named(name, sql, numbered)
        #: The SQL text of every statement, by name.
        self.by_name = {name: statement.sql for name, statement in self.statements.items()}

    def __getattr__(self, name: str) -> Statement:
        try:
            return self.statements[name]
        except KeyError:
            raise AttributeError(f"no statement named {name!r} in aqueue/db/sql") from None


def load_schema(schema: str) -> str:
    """``schema.sql`` rendered for ``schema``: the current schema in one piece (with
    ``schema_flow.sql``, its flow-control functions, kept in a file of their own)."""
    return _render(_read("schema.sql") + "\n" + _read("schema_flow.sql"), schema)


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
