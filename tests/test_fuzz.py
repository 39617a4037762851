"""Bad input, fuzzed: every generated case succeeds or raises a documented aqueue error.

Over job arguments, enqueue options, kinds, queue names, admin filters, schema names and
CLI arguments (cron strings: not implemented yet). For each case:

- a success stores exactly what was given (read back and compared), so hostile strings
  (quotes, ``$1``, ``{schema}``, SQL fragments) travelled as values, not as SQL text;
- a failure is one of the documented errors, is never a ``DatabaseError`` (bad input is
  caught before PostgreSQL sees it), and writes no row.

Example counts add up to well over 1,000 per run (see ``EXAMPLES``); derandomised so CI
runs the same cases every time, and a failure reproduces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import aqueue
from aqueue.cli import main as cli_main

EXAMPLES = {"enqueue": 500, "names": 250, "schema": 200, "cli": 200}

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Strings that break naive SQL building, JSON handling or length limits.
NASTY = st.sampled_from(
    [
        "",
        " ",
        "'",
        '"',
        "\\",
        "'; DROP TABLE jobs; --",
        '"; DROP SCHEMA public CASCADE; --',
        "$1",
        "%s",
        "{schema}",
        "{channel}",
        "\x00",
        "a\x00b",
        "\ud800",
        "é",
        "🙂",
        "x" * 200,
        "x" * 201,
        "NULL",
        "\n",
        "default",
    ]
)
TEXT = st.one_of(NASTY, st.text(max_size=20), st.text(alphabet="ab'\"\\$%{}; -", max_size=10))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
NOT_JSON = st.sampled_from([object(), {1, 2}, b"\xff", complex(1, 2), Path("/")])
OFFSETS = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)


# Names that pass validation yet would break SQL built by string formatting.
HOSTILE_NAMES = st.sampled_from(
    ["'", '"', "\\", "'; DROP TABLE jobs; --", "$1", "%s", "{schema}", "é", "🙂", "x" * 200]
) | st.text(
    alphabet=st.characters(exclude_characters="\x00", exclude_categories=("Cs",)),
    min_size=1,
    max_size=20,
).filter(str.strip)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def mostly(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> Any:
    """Valid values nine times in ten, so that a case with several options often succeeds."""
    return st.integers(0, 9).flatmap(lambda i: valid if i else invalid)


OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "queue": mostly(st.sampled_from(["default", "emails/v2"]) | HOSTILE_NAMES, TEXT),
        "priority": mostly(
            st.integers(-32768, 32767), st.integers() | st.floats() | st.booleans() | TEXT
        ),
        "max_attempts": mostly(st.integers(1, 32767), st.integers() | st.floats() | st.booleans()),
        "timeout": mostly(
            st.floats(0.001, 1e9) | st.timedeltas(min_value=timedelta(milliseconds=1)),
            st.floats() | st.integers(-3, 0) | TEXT,
        ),
        "schedule_in": mostly(
            st.floats(0, 1e10) | st.timedeltas(min_value=timedelta(0)),
            st.floats() | st.integers() | st.timedeltas(),
        ),
        "scheduled_at": mostly(
            st.datetimes(timezones=st.just(UTC) | OFFSETS), st.datetimes() | TEXT
        ),
        "tags": mostly(
            st.lists(HOSTILE_NAMES, max_size=4),
            TEXT | st.lists(TEXT | st.integers(), min_size=1, max_size=2),
        ),
        "meta": mostly(
            st.dictionaries(TEXT, JSON, max_size=3),
            st.dictionaries(TEXT, NOT_JSON, min_size=1, max_size=1) | st.lists(JSON, max_size=2),
        ),
    },
)
ARG_NAMES = st.sampled_from(["n", "s", "items", "when", "extra"]) | TEXT
ARGS = st.one_of(
    st.fixed_dictionaries({"n": st.integers(), "s": TEXT}),
    st.fixed_dictionaries(
        {"n": st.integers() | JSON, "s": TEXT | JSON},
        optional={"items": st.lists(st.integers()) | JSON, "when": st.datetimes() | JSON},
    ),
    st.dictionaries(ARG_NAMES, JSON | NOT_JSON, max_size=4),
    st.none(),
    st.lists(JSON, max_size=2),
)
KINDS = mostly(st.sampled_from(["typed", "loose"]), st.just("never_registered") | TEXT)

# What bad enqueue input may raise: the documented errors, all ValueError/LookupError.
ENQUEUE_ERRORS = (aqueue.InvalidOption, aqueue.InvalidJobArgs, aqueue.UnknownJobKind)


def as_json_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: as_json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json_value(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


async def count_rows(app: aqueue.App) -> int:
    count: int = await app.db.pool.fetchval(f'SELECT count(*) FROM "{app.schema}".jobs')
    return count


@pytest.fixture
async def fuzz_app(make_app: Callable[..., aqueue.App]) -> AsyncIterator[aqueue.App]:
    app = make_app()

    @app.job
    async def typed(
        n: int, s: str, items: list[int] | None = None, when: datetime | None = None
    ) -> None:
        return None

    @app.job
    async def loose(**kwargs: Any) -> None:
        return None

    async with app:
        await app.migrate()
        yield app


@settings(FUZZ, max_examples=EXAMPLES["enqueue"])
@given(kind=KINDS, args=ARGS, options=OPTIONS, allow_unknown=st.booleans())
async def test_fuzz_enqueue(
    fuzz_app: aqueue.App, kind: Any, args: Any, options: dict[str, Any], allow_unknown: bool
) -> None:
    app = fuzz_app
    before = await count_rows(app)
    try:
        job = await app.enqueue(kind, args, allow_unknown=allow_unknown, **options)
    except ENQUEUE_ERRORS as exc:
        event(f"rejected: {type(exc).__name__}")
        assert str(exc)  # names the field or kind at fault
        assert await count_rows(app) == before, f"{type(exc).__name__} left a row behind"
        return
    event("enqueued")
    assert await count_rows(app) == before + 1
    stored = await app.get_job(job.id)
    assert stored is not None
    # JSON numbers keep their value, not their Python type (jsonb prints 4.0e16 as an
    # integer): compare the arguments as JSON values, everything else exactly.
    assert as_json_value(stored.args) == as_json_value(job.args)
    assert stored == dataclasses.replace(job, args=stored.args, meta=stored.meta)
    assert as_json_value(stored.meta) == as_json_value(job.meta)
    assert stored.kind == kind
    if "queue" in options and options["queue"] is not None:
        assert stored.queue == options["queue"]
    if options.get("tags") is not None:
        assert list(stored.tags) == list(options["tags"])


@settings(FUZZ, max_examples=EXAMPLES["names"])
@given(
    kind=TEXT,
    queue=TEXT,
    filters=st.fixed_dictionaries(
        {},
        optional={
            "state": TEXT | st.sampled_from([s.value for s in aqueue.JobState]),
            "queue": TEXT | st.integers(),
            "kind": TEXT,
            "limit": st.integers(-5, 200_000) | st.floats() | st.booleans(),
        },
    ),
)
async def test_fuzz_kinds_queues_and_filters(
    fuzz_app: aqueue.App, kind: str, queue: str, filters: dict[str, Any]
) -> None:
    app = fuzz_app
    before = await count_rows(app)
    try:
        job = await app.enqueue(kind, {"k": kind}, allow_unknown=True, queue=queue)
    except aqueue.InvalidOption as exc:
        event("enqueue rejected")
        assert exc.field in ("kind", "queue")
        assert await count_rows(app) == before
    else:
        event("enqueued")
        stored = await app.get_job(job.id)
        assert stored is not None and (stored.kind, stored.queue) == (kind, queue)
        found = await app.list_jobs(queue=queue, kind=kind)
        assert job.id in [j.id for j in found]
        assert all((j.kind, j.queue) == (kind, queue) for j in found)
    # Registering a job under the name: accepted names and rejected ones, no third outcome.
    other = aqueue.App("postgresql://nobody@/nowhere", schema="fuzz")
    try:
        other.job(name=kind)(_noop)
    except aqueue.ConfigurationError:
        pass
    except aqueue.InvalidOption as exc:
        assert exc.field == "name"
    try:
        listed = await app.list_jobs(**filters)
    except aqueue.InvalidOption as exc:
        assert exc.field in filters
    else:
        assert len(listed) <= filters.get("limit", 100)


async def _noop() -> None:
    return None


SCHEMA_NAMES = st.one_of(
    NASTY,
    st.text(max_size=70),
    st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_$]{0,70}\Z"),
    st.sampled_from(["pg_x", "PG_toast", "Mixed$Case", "a" * 63, "a" * 64, "é" * 31, "é" * 32]),
)


@settings(FUZZ, max_examples=EXAMPLES["schema"])
@given(schema=SCHEMA_NAMES)
async def test_fuzz_schema_names(aqueue_database_url: str, schema: str) -> None:
    try:
        app = aqueue.App(aqueue_database_url, schema=schema)
    except aqueue.ConfigurationError as exc:
        event("rejected")
        assert "schema" in str(exc)
        return
    event("accepted")
    assert app.schema == schema
    # The name reaches PostgreSQL only as a quoted identifier: a schema that does not exist
    # is reported as such, never as a syntax error.
    async with app:
        try:
            assert await app.get_job(1) is None
        except aqueue.SchemaNotMigrated as exc:
            assert repr(schema) in str(exc)


async def test_hostile_but_valid_schema_name_works_end_to_end(aqueue_database_url: str) -> None:
    app = aqueue.App(aqueue_database_url, schema="Mixed$Case_x", poll_interval=0.2)

    @app.job
    async def echo(text: str) -> str:
        return text

    async with app:
        try:
            await app.migrate()
            job = await echo.options(queue="'; DROP TABLE jobs; --").enqueue(text="$1 {schema}")
            async with app.worker({"'; DROP TABLE jobs; --": 1}):
                done = await app.wait(job.id, timeout=10)
            assert (done.state, done.result) == (aqueue.JobState.COMPLETED, "$1 {schema}")
        finally:
            await app.db.drop_schema()


# -- CLI ------------------------------------------------------------------------------------

CLI_APP = """
import aqueue

# Unreachable on purpose: a command that gets past argument checks fails to connect at
# once (no such socket) instead of running.
app = aqueue.App("postgresql://nobody@/nowhere?host=/nonexistent-aqueue-fuzz", schema="fuzz")
"""


@pytest.fixture(scope="module")
def cli_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("fuzzcli")
    (folder / "aqueue_fuzz_cli_app.py").write_text(CLI_APP)
    sys.path.insert(0, str(folder))
    try:
        yield "aqueue_fuzz_cli_app:app"
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("aqueue_fuzz_cli_app", None)


QUEUE_ARGS = st.one_of(
    st.builds(lambda n, c: f"{n}={c}", TEXT, st.integers(-5, 20_000) | TEXT), TEXT
)
CLI_ARGV = st.one_of(
    st.builds(
        lambda target, queues, flags: ["worker", target, *flags, *queues],
        st.sampled_from(["APP", "missing_mod_for_aqueue_fuzz:app", "aqueue:App"]) | TEXT,
        st.lists(QUEUE_ARGS, max_size=3).map(lambda qs: [x for q in qs for x in ("-q", q)]),
        st.lists(st.sampled_from(["--migrate", "-v", "--bogus"]), max_size=2),
    ),
    st.builds(
        lambda url, schema: ["migrate", *url, *schema],
        st.one_of(
            st.just([]),
            st.builds(
                lambda db: ["--url", f"postgresql://nobody@/{db}?host=/nonexistent-aqueue-fuzz"],
                st.text(alphabet="abc'\"$%; ", max_size=8),
            ),
            st.builds(lambda u: ["--url", u], TEXT),
            st.just(["--app", "APP"]),
        ),
        st.one_of(st.just([]), st.builds(lambda s: ["--schema", s], SCHEMA_NAMES)),
    ),
    st.lists(TEXT, max_size=4),
)


@settings(FUZZ, max_examples=EXAMPLES["cli"])
@given(argv=CLI_ARGV)
def test_fuzz_cli_arguments(
    cli_module: str, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = [cli_module if a == "APP" else a for a in argv]
    # The "no URL given" path must fail on the missing variable, not find a real database.
    monkeypatch.delenv("AQUEUE_DATABASE_URL", raising=False)
    if any("\x00" in a for a in argv):
        return  # cannot be passed to a real process either
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli_main(argv)
        except SystemExit as exc:  # argparse: usage error or --help
            code = exc.code if isinstance(exc.code, int) else 2
    # 0 only for help; 1 is one "aqueue: error:" line, 2 a usage message. Never a traceback.
    event(f"exit {code}")
    assert code in (0, 1, 2), (argv, code, err.getvalue())
    if code == 1:
        lines = err.getvalue().splitlines()
        assert lines and lines[0].startswith("aqueue: error: "), err.getvalue()
    assert "Traceback" not in err.getvalue()
