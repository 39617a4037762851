"""Registration and enqueue on real PostgreSQL: kinds, aliases, arguments, options,
scheduling, transactional enqueue and priority order."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg
import pydantic
import pytest

import aqueue
from aqueue.bounds import MAX_DELAY as MAX_SCHEDULE_IN
from aqueue.jobs import JobState


async def _count(app: aqueue.App) -> int:
    return len(await app.list_jobs(limit=100_000))


# -- registration ---------------------------------------------------------------------------


async def test_kind_defaults_to_function_name_and_name_overrides(app: aqueue.App) -> None:
    @app.job
    async def plain() -> None: ...

    @app.job(name="custom.kind")
    async def renamed() -> None: ...

    assert plain.kind == "plain"
    assert renamed.kind == "custom.kind"
    assert (await plain.enqueue()).kind == "plain"
    assert (await renamed.enqueue()).kind == "custom.kind"
    assert app.registry.get("renamed") is None


def test_duplicate_kind_is_rejected(make_app: Callable[..., aqueue.App]) -> None:
    app = make_app()

    @app.job
    async def send() -> None: ...

    with pytest.raises(aqueue.DuplicateJobKind, match="'send'"):

        @app.job(name="send")
        async def other() -> None: ...

    # The first registration still stands.
    assert app.registry.get("send") is send


def test_alias_clashing_with_a_kind_is_rejected(make_app: Callable[..., aqueue.App]) -> None:
    app = make_app()

    @app.job
    async def first() -> None: ...

    with pytest.raises(aqueue.DuplicateJobKind, match="'first'"):

        @app.job(aliases=["first"])
        async def second() -> None: ...

    @app.job(aliases=["old.name"])
    async def third() -> None: ...

    with pytest.raises(aqueue.DuplicateJobKind, match=re.escape("'old.name'")):

        @app.job(name="old.name")
        async def fourth() -> None: ...

    assert app.registry.get("second") is None and app.registry.get("fourth") is None


def test_plain_def_is_registered_to_run_in_a_thread(make_app: Callable[..., aqueue.App]) -> None:
    app = make_app()

    def sync_job(x: int) -> int:
        return x

    definition = app.job(sync_job)
    assert app.registry.get("sync_job") is definition
    assert definition.schema.names == ("x",)  # validated from the function's signature

    def numbers() -> Iterator[int]:
        yield 1

    with pytest.raises(aqueue.ConfigurationError, match="generator"):
        app.job(numbers)
    assert app.registry.get("numbers") is None


def test_positional_only_parameter_is_rejected(make_app: Callable[..., aqueue.App]) -> None:
    app = make_app()

    async def posonly(a: int, /, b: int) -> None: ...

    with pytest.raises(aqueue.ConfigurationError, match="'a'"):
        app.job(posonly)

    async def varargs(*items: int) -> None: ...

    with pytest.raises(aqueue.ConfigurationError, match="'items'"):
        app.job(varargs)
    assert app.registry.kinds() == []


# -- enqueue by definition, options, kind name and alias --------------------------------------


async def test_enqueue_stores_args_and_options(app: aqueue.App) -> None:
    @app.job(queue="mail", priority=3, max_attempts=5, tags=["a"], meta={"team": "ops"})
    async def send_email(to: str, subject: str) -> None: ...

    job = await send_email.enqueue(to="a@b.c", subject="hi")
    assert (job.kind, job.queue, job.state) == ("send_email", "mail", JobState.AVAILABLE)
    assert job.args == {"to": "a@b.c", "subject": "hi"}
    assert (job.priority, job.max_attempts, job.attempt) == (3, 5, 0)
    assert list(job.tags) == ["a"] and job.meta == {"team": "ops"}
    assert job.duplicate is False

    opt = await send_email.options(
        queue="bulk", priority=-2, max_attempts=1, tags=["x", "y"], meta={"n": 1}
    ).enqueue(to="c", subject="s")
    assert (opt.queue, opt.priority, opt.max_attempts) == ("bulk", -2, 1)
    assert list(opt.tags) == ["x", "y"] and opt.meta == {"n": 1}

    stored = await app.get_job(opt.id)
    assert stored == opt


async def test_options_chain_and_do_not_change_the_definition(app: aqueue.App) -> None:
    @app.job(queue="q1")
    async def job_a() -> None: ...

    configured = job_a.options(priority=7).options(queue="q2")
    chained = await configured.enqueue()
    assert (chained.queue, chained.priority) == ("q2", 7)
    plain = await job_a.enqueue()
    assert (plain.queue, plain.priority) == ("q1", 0)


async def test_enqueue_by_kind_name_and_by_alias(app: aqueue.App) -> None:
    @app.job(queue="mail", aliases=["myapp.jobs.SendMail"])
    async def send_mail(to: str) -> str:
        return to

    by_name = await app.enqueue("send_mail", {"to": "a"})
    by_alias = await app.enqueue("myapp.jobs.SendMail", {"to": "b"}, priority=4)
    built = await app.enqueue_many([app.build("myapp.jobs.SendMail", {"to": "c"})])
    for job in (by_name, by_alias, *built):
        assert job.kind == "send_mail"  # stored under the canonical kind
        assert job.queue == "mail"  # the definition's defaults apply
    assert by_alias.priority == 4

    with pytest.raises(aqueue.InvalidJobArgs):
        await app.enqueue("myapp.jobs.SendMail", {"to": "b", "cc": "x"})

    async with app.worker({"mail": 2}):
        results = [(await app.wait(j.id, timeout=10)).result for j in (by_name, by_alias, *built)]
    assert results == ["a", "b", "c"]


async def test_unknown_kind_is_rejected_unless_allowed(app: aqueue.App) -> None:
    @app.job
    async def known() -> None: ...

    with pytest.raises(aqueue.UnknownJobKind, match=re.escape("'nope.missing'")) as info:
        await app.enqueue("nope.missing", {"a": 1})
    assert info.value.kind == "nope.missing"
    assert isinstance(info.value, LookupError)
    with pytest.raises(aqueue.UnknownJobKind, match=re.escape("'nope.missing'")):
        app.build("nope.missing")
    assert await _count(app) == 0

    job = await app.enqueue("other.service.Job", {"a": [1, 2]}, allow_unknown=True, queue="ext")
    assert (job.kind, job.queue, job.args) == ("other.service.Job", "ext", {"a": [1, 2]})
    assert await app.get_job(job.id) == job


async def test_unknown_kind_is_not_claimed_by_a_worker(app: aqueue.App) -> None:
    @app.job
    async def known() -> None: ...

    foreign = await app.enqueue("foreign", {}, allow_unknown=True)
    mine = await known.enqueue()
    async with app.worker({"default": 2}):
        await app.wait(mine.id, timeout=10)
    after = await app.get_job(foreign.id)
    assert after is not None and after.state is JobState.AVAILABLE and after.attempt == 0


async def test_enqueue_many_one_statement_in_order(
    app: aqueue.App, aqueue_database_url: str
) -> None:
    @app.job
    async def item(n: int) -> int:
        return n

    assert await app.enqueue_many([]) == []

    listener = await asyncpg.connect(aqueue_database_url)
    got: list[str] = []
    sentinel = anyio.Event()

    def on_notify(*args: Any) -> None:
        got.append(args[3])
        if args[3] == "sentinel":
            sentinel.set()

    try:
        await listener.add_listener(app.db.channel, on_notify)
        requests = [item.build(n=i) for i in range(50)]
        requests.insert(25, item.options(queue="other").build(n=-1))
        jobs = await app.enqueue_many(requests)
        # A sentinel on a fresh statement: every notification of the batch precedes it.
        await listener.execute("SELECT pg_notify($1, 'sentinel')", app.db.channel)
        with anyio.fail_after(5):
            await sentinel.wait()
    finally:
        await listener.close()

    assert [j.args["n"] for j in jobs] == [*range(25), -1, *range(25, 50)]
    assert [j.id for j in jobs] == sorted(j.id for j in jobs)
    # One statement: one transaction timestamp, one notification per queue.
    assert len({j.created_at for j in jobs}) == 1
    assert sorted(got[:-1]) == ["i:default", "i:other"]
    assert [j.args["n"] for j in await app.list_jobs(limit=1000)] == [j.args["n"] for j in jobs]


@pytest.mark.parametrize("size", [3, 200])
async def test_enqueue_many_returns_the_jobs_as_stored(app: aqueue.App, size: int) -> None:
    """Small batches build their Jobs after the insert, big ones while it runs
    (aqueue/overlap.py); either way each is the row as a read gives it back."""

    @app.job
    async def item(n: int) -> None: ...

    later = item.options(schedule_in=600, tags=["t"], meta={"m": 1}, priority=3)
    requests = [(later if n % 3 == 0 else item).build(n=n) for n in range(size)]
    jobs = await app.enqueue_many(requests)

    for job in jobs:
        assert job == await app.get_job(job.id)
    assert {job.state for job in jobs} == {JobState.SCHEDULED, JobState.AVAILABLE}
    assert [job.args["n"] for job in jobs] == list(range(size))


async def test_enqueue_many_failure_is_the_database_error_and_writes_nothing(
    app: aqueue.App,
) -> None:
    @app.job
    async def item(n: int) -> None: ...

    async with app.connection() as conn:
        transaction = conn.transaction()
        await transaction.start()
        with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
            await conn.execute("SELECT 1/0")
        # The transaction is aborted: the insert fails, as itself, not in an exception
        # group (the big batch's insert runs in a task of its own).
        with pytest.raises(aqueue.DatabaseError, match="25P02") as caught:
            await app.enqueue_many([item.build(n=n) for n in range(100)], conn=conn)
        assert isinstance(caught.value.__cause__, asyncpg.PostgresError)
        await transaction.rollback()
    assert await _count(app) == 0


async def test_enqueue_many_rejects_bad_input(app: aqueue.App) -> None:
    @app.job
    async def item(n: int) -> None: ...

    with pytest.raises(aqueue.InvalidOption, match="requests"):
        await app.enqueue_many(item.build(n=1))  # type: ignore[arg-type]
    with pytest.raises(aqueue.InvalidOption, match="requests"):
        await app.enqueue_many([item.build(n=1), {"n": 2}])  # type: ignore[list-item]
    assert await _count(app) == 0


# -- arguments ----------------------------------------------------------------------------


async def test_positional_args_are_stored_by_name(app: aqueue.App) -> None:
    @app.job
    async def add(a: int, b: int, c: int = 10) -> int:
        return a + b + c

    job = await add.enqueue(2, 3)
    assert job.args == {"a": 2, "b": 3}
    mixed = await add.enqueue(1, b=2, c=3)
    assert mixed.args == {"a": 1, "b": 2, "c": 3}
    with pytest.raises(aqueue.InvalidJobArgs):
        await add.enqueue(1, 2, 3, 4)  # type: ignore[call-arg]
    async with app.worker({"default": 2}):
        assert (await app.wait(job.id, timeout=10)).result == 15
        assert (await app.wait(mixed.id, timeout=10)).result == 6


class Address(pydantic.BaseModel):
    street: str
    zip_code: int


class Person(pydantic.BaseModel):
    name: str
    address: Address
    born: datetime


async def test_pydantic_model_parameters_round_trip(app: aqueue.App) -> None:
    received: list[Person] = []

    @app.job
    async def greet(person: Person, others: list[Address] | None = None) -> str:
        received.append(person)
        assert others is None or all(isinstance(o, Address) for o in others)
        return person.address.street

    born = datetime(1990, 5, 17, 8, 30, tzinfo=UTC)
    person = Person(name="Ada", address=Address(street="Main", zip_code=12345), born=born)
    job = await greet.enqueue(person=person, others=[Address(street="B", zip_code=1)])
    assert job.args["person"] == {
        "name": "Ada",
        "address": {"street": "Main", "zip_code": 12345},
        "born": "1990-05-17T08:30:00Z",
    }
    # A plain dict validates into the model too (e.g. when enqueued by kind name).
    by_name = await app.enqueue(
        "greet",
        {
            "person": {
                "name": "Bob",
                "born": born.isoformat(),
                "address": {"street": "X", "zip_code": 2},
            }
        },
    )
    with pytest.raises(aqueue.InvalidJobArgs, match=r"person\.address\.zip_code"):
        await app.enqueue(
            "greet",
            {
                "person": {
                    "name": "C",
                    "born": born.isoformat(),
                    "address": {"street": "X", "zip_code": "no"},
                }
            },
        )
    async with app.worker({"default": 1}):
        assert (await app.wait(job.id, timeout=10)).result == "Main"
        assert (await app.wait(by_name.id, timeout=10)).state is JobState.COMPLETED
    assert [type(p) for p in received] == [Person, Person]
    assert received[0] == person
    assert received[1].address == Address(street="X", zip_code=2)


async def test_job_context_first_parameter(app: aqueue.App) -> None:
    seen: list[aqueue.JobContext] = []

    @app.job
    async def with_ctx(ctx: aqueue.JobContext, x: int) -> int:
        seen.append(ctx)
        return x * 2

    assert with_ctx.schema.wants_context
    job = await with_ctx.enqueue(x=4)
    assert job.args == {"x": 4}  # the context is not an argument
    positional = await with_ctx.enqueue(5)
    async with app.worker({"default": 1}):
        assert (await app.wait(job.id, timeout=10)).result == 8
        assert (await app.wait(positional.id, timeout=10)).result == 10
    ctx = seen[0]
    assert isinstance(ctx, aqueue.JobContext)
    assert ctx.app is app and ctx.job.id == job.id and ctx.job.kind == "with_ctx"
    assert ctx.attempt == 1 and ctx.job.state is JobState.RUNNING


async def test_invalid_args_name_the_field_and_write_nothing(app: aqueue.App) -> None:
    @app.job
    async def send(to: str, count: int, flag: bool = False) -> None: ...

    with pytest.raises(aqueue.InvalidJobArgs, match="count") as missing:
        await send.enqueue(to="x")  # type: ignore[call-arg]
    assert missing.value.fields == ["count"] and missing.value.kind == "send"
    assert isinstance(missing.value, ValueError)

    with pytest.raises(aqueue.InvalidJobArgs, match="count") as wrong:
        await send.enqueue(to="x", count="many")  # type: ignore[arg-type]
    assert wrong.value.fields == ["count"]

    with pytest.raises(aqueue.InvalidJobArgs, match="bogus") as extra:
        await send.enqueue(to="x", count=1, bogus=2)  # type: ignore[call-arg]
    assert extra.value.fields == ["bogus"]

    with pytest.raises(aqueue.InvalidJobArgs, match="count"):
        await app.enqueue("send", {"to": "x"})
    with pytest.raises(aqueue.InvalidJobArgs, match="count"):
        await app.enqueue_many([send.build(to="a", count=1), send.build(to="b")])  # type: ignore[call-arg]
    with pytest.raises(aqueue.InvalidJobArgs, match="count"):
        await send.options(queue="q").enqueue(to="x", count=[1])  # type: ignore[arg-type]
    assert await _count(app) == 0


async def test_non_json_args_for_unknown_kind_write_nothing(app: aqueue.App) -> None:
    with pytest.raises(aqueue.InvalidJobArgs, match="args"):
        await app.enqueue("foreign", {"x": object()}, allow_unknown=True)
    with pytest.raises(aqueue.InvalidJobArgs, match="args"):
        await app.enqueue("foreign", {"x": "\ud800"}, allow_unknown=True)
    assert await _count(app) == 0


async def test_args_postgres_cannot_store_are_refused_before_writing(app: aqueue.App) -> None:
    @app.job
    async def store(text: str, other: Any = None) -> None: ...

    # A NUL character is valid Python and JSON, but jsonb rejects it: refuse it up front,
    # naming the argument, rather than failing inside PostgreSQL.
    with pytest.raises(aqueue.InvalidJobArgs, match=r"other.*NUL") as info:
        await store.enqueue(text="fine", other={"deep": ["a\x00"]})
    assert info.value.fields == ["other"]
    with pytest.raises(aqueue.InvalidJobArgs, match=r"text.*NUL"):
        await app.enqueue_many([store.build(text="ok"), store.build(text="\x00")])
    with pytest.raises(aqueue.InvalidJobArgs, match=r"x.*NUL") as unknown:
        await app.enqueue("foreign", {"x": "\x00", "y": 1}, allow_unknown=True)
    assert unknown.value.fields == ["x"]
    with pytest.raises(aqueue.InvalidJobArgs):
        await store.enqueue(text="\ud800")  # a lone surrogate is not UTF-8
    assert await _count(app) == 0
    # A backslash followed by "u0000" is ordinary text, not a NUL.
    literal = await store.enqueue(text="\\u0000", other="\\\\u0000")
    assert literal.args == {"text": "\\u0000", "other": "\\\\u0000"}
    assert await app.get_job(literal.id) == literal


# -- option validation --------------------------------------------------------------------

NOW_NAIVE = datetime(2030, 1, 1, 12, 0)

BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"max_attempts": 0}, "max_attempts"),
    ({"max_attempts": 32768}, "max_attempts"),
    ({"max_attempts": True}, "max_attempts"),
    ({"max_attempts": 2.0}, "max_attempts"),
    ({"priority": 32768}, "priority"),
    ({"priority": -32769}, "priority"),
    ({"priority": False}, "priority"),
    ({"timeout": -1}, "timeout"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": timedelta(0)}, "timeout"),
    ({"timeout": float("nan")}, "timeout"),
    ({"schedule_in": -0.5}, "schedule_in"),
    ({"schedule_in": timedelta(seconds=-1)}, "schedule_in"),
    ({"scheduled_at": NOW_NAIVE}, "scheduled_at"),
    ({"scheduled_at": "2030-01-01T00:00:00Z"}, "scheduled_at"),
    ({"schedule_in": 5, "scheduled_at": datetime.now(UTC)}, "schedule_in"),
    ({"tags": "urgent"}, "tags"),
    ({"tags": ["ok", 3]}, "tags"),
    ({"meta": {"obj": object()}}, "meta"),
    ({"meta": ["not", "a", "mapping"]}, "meta"),
    # PostgreSQL's jsonb cannot hold NUL characters; its timestamps end in year 294276.
    ({"meta": {"note": "a\x00b"}}, "meta"),
    ({"meta": {"k\x00": 1}}, "meta"),
    ({"schedule_in": 1e15}, "schedule_in"),
    ({"schedule_in": timedelta.max}, "schedule_in"),
    ({"queue": ""}, "queue"),
]


@pytest.mark.parametrize(
    ("options", "field"),
    BAD_OPTIONS,
    ids=[f"{i}-{field}" for i, (_, field) in enumerate(BAD_OPTIONS)],
)
async def test_invalid_option_names_it_and_writes_nothing(
    app: aqueue.App, options: dict[str, Any], field: str
) -> None:
    @app.job
    async def target() -> None: ...

    attempts: list[Callable[[], Awaitable[aqueue.Job]]] = [
        lambda: target.options(**options).enqueue(),
        lambda: app.enqueue("target", {}, **options),
    ]
    for attempt in attempts:
        with pytest.raises(aqueue.InvalidOption) as info:
            await attempt()
        assert isinstance(info.value, ValueError)
        assert info.value.field == field
        assert str(info.value).startswith(f"{field}:")

    defaults = {k: v for k, v in options.items() if k not in ("schedule_in", "scheduled_at")}
    if defaults:
        with pytest.raises(aqueue.InvalidOption, match=f"^{field}:"):
            app.job(name="defaults_" + field, **defaults)(target.fn)
    assert await _count(app) == 0


async def test_option_bounds_that_are_valid(app: aqueue.App) -> None:
    @app.job
    async def target() -> None: ...

    low = await target.options(priority=-32768, max_attempts=1).enqueue()
    high = await target.options(priority=32767, max_attempts=32767, timeout=0.001).enqueue()
    assert (low.priority, low.max_attempts) == (-32768, 1)
    assert (high.priority, high.max_attempts) == (32767, 32767)
    far = await target.options(schedule_in=timedelta(days=365 * 999)).enqueue()
    assert far.state is JobState.SCHEDULED
    assert far.scheduled_at - far.created_at == timedelta(days=365 * 999)
    last = datetime(9000, 1, 1, tzinfo=UTC)
    latest = await target.options(scheduled_at=last).enqueue()
    assert latest.scheduled_at == last and await app.get_job(latest.id) == latest


# -- scheduling ---------------------------------------------------------------------------


async def test_job_scheduled_in_the_future_is_not_run(app: aqueue.App) -> None:
    ran: list[str] = []

    @app.job
    async def later(tag: str) -> None:
        ran.append(tag)

    before = datetime.now(UTC)
    future = await later.options(schedule_in=60).enqueue(tag="future")
    at = await later.options(scheduled_at=before + timedelta(hours=1)).enqueue(tag="at")
    assert future.state is JobState.SCHEDULED and at.state is JobState.SCHEDULED
    assert future.scheduled_at - future.created_at == timedelta(seconds=60)
    assert at.scheduled_at == before + timedelta(hours=1)
    now_job = await later.enqueue(tag="now")
    async with app.worker({"default": 5}):
        await app.wait(now_job.id, timeout=10)
        # Several more claim rounds (poll_interval is 0.2s) before checking.
        marker = await later.enqueue(tag="marker")
        await app.wait(marker.id, timeout=10)
    assert sorted(ran) == ["marker", "now"]
    for job in (future, at):
        stored = await app.get_job(job.id)
        assert stored is not None and stored.state is JobState.SCHEDULED and stored.attempt == 0


async def test_scheduled_job_runs_once_due(app: aqueue.App) -> None:
    @app.job
    async def soon() -> str:
        return "done"

    job = await soon.options(schedule_in=0.3).enqueue()
    assert job.state is JobState.SCHEDULED
    past = await soon.options(scheduled_at=datetime.now(UTC) - timedelta(minutes=5)).enqueue()
    assert past.state is JobState.AVAILABLE
    async with app.worker({"default": 2}):
        done = await app.wait(job.id, timeout=10)
        await app.wait(past.id, timeout=10)
    assert done.state is JobState.COMPLETED and done.result == "done"
    assert done.attempted_at is not None and done.attempted_at >= job.scheduled_at


# -- transactional enqueue ------------------------------------------------------------------


async def test_transactional_enqueue_rolled_back_writes_nothing(
    app: aqueue.App, aqueue_database_url: str
) -> None:
    @app.job
    async def txn_job(n: int) -> None: ...

    conn = await asyncpg.connect(aqueue_database_url)
    try:
        tr = conn.transaction()
        await tr.start()
        job = await txn_job.options(conn=conn).enqueue(n=1)
        many = await app.enqueue_many([txn_job.build(n=2)], conn=conn)
        # Visible inside the transaction, not outside it.
        assert job.state is JobState.AVAILABLE and len(many) == 1
        assert await app.get_job(job.id) is None
        await tr.rollback()
    finally:
        await conn.close()
    assert await app.get_job(job.id) is None
    assert await _count(app) == 0


async def test_transactional_enqueue_committed_wakes_a_running_worker(
    make_app: Callable[..., aqueue.App], aqueue_database_url: str
) -> None:
    # Polling is slow here, so only the commit-time NOTIFY can start the job in time.
    app = make_app(poll_interval=60.0)
    ran = anyio.Event()

    @app.job
    async def txn_job(n: int) -> int:
        ran.set()
        return n

    async with app:
        await app.migrate()
        async with app.worker({"default": 2}):
            conn = await asyncpg.connect(aqueue_database_url)
            try:
                async with conn.transaction():
                    job = await txn_job.options(conn=conn).enqueue(n=7)
                    assert await app.get_job(job.id) is None
            finally:
                await conn.close()
            with anyio.fail_after(5):
                await ran.wait()
            done = await app.wait(job.id, timeout=5)
    assert done.state is JobState.COMPLETED and done.result == 7


async def test_transactional_enqueue_with_user_json_codec(
    app: aqueue.App, aqueue_database_url: str
) -> None:
    @app.job
    async def coded(payload: dict[str, Any]) -> None: ...

    conn = await asyncpg.connect(aqueue_database_url)
    try:
        for typename in ("json", "jsonb"):
            await conn.set_type_codec(
                typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
        async with conn.transaction():
            job = await coded.options(conn=conn, meta={"m": [1]}, tags=["t"]).enqueue(
                payload={"a": {"b": 1}}
            )
            [other] = await app.enqueue_many(
                [coded.options(retry=aqueue.Backoff(base=2)).build(payload={"c": 2})], conn=conn
            )
            by_name = await app.enqueue("coded", {"payload": {}}, conn=conn, timeout=5)
        # The user's codec still works on their connection afterwards.
        assert await conn.fetchval("SELECT $1::jsonb", {"x": 1}) == {"x": 1}
    finally:
        await conn.close()
    assert job.args == {"payload": {"a": {"b": 1}}} and job.meta == {"m": [1]}
    assert list(job.tags) == ["t"]
    for j in (job, other, by_name):
        assert await app.get_job(j.id) == j
    assert other.args == {"payload": {"c": 2}}


async def test_enqueue_many_refuses_two_connections(
    app: aqueue.App, aqueue_database_url: str
) -> None:
    @app.job
    async def item() -> None: ...

    a = await asyncpg.connect(aqueue_database_url)
    b = await asyncpg.connect(aqueue_database_url)
    try:
        with pytest.raises(aqueue.InvalidOption, match="conn"):
            await app.enqueue_many([item.options(conn=a).build(), item.options(conn=b).build()])
    finally:
        await a.close()
        await b.close()
    assert await _count(app) == 0


# -- priority -----------------------------------------------------------------------------


async def test_lower_priority_value_runs_first(app: aqueue.App) -> None:
    order: list[int] = []

    @app.job
    async def ranked(p: int) -> None:
        order.append(p)

    priorities = [5, -3, 0, 10, -3, 2, 1, 32767, -32768]
    jobs = [await ranked.options(priority=p).enqueue(p=p) for p in priorities]
    async with app.worker({"default": 1}):
        for job in jobs:
            await app.wait(job.id, timeout=10)
    assert order == sorted(priorities)


async def test_later_schedule_option_replaces_the_earlier_form(app: aqueue.App) -> None:
    @app.job
    async def sched() -> None: ...

    far = datetime.now(UTC) + timedelta(days=1)
    at_wins = await sched.options(schedule_in=60).options(scheduled_at=far).enqueue()
    assert at_wins.scheduled_at == far and at_wins.state is JobState.SCHEDULED
    in_wins = await sched.options(scheduled_at=far).options(schedule_in=0).enqueue()
    assert in_wins.state is JobState.AVAILABLE
    assert in_wins.scheduled_at == in_wins.created_at
    by_name = await app.enqueue("sched", scheduled_at=far)
    assert by_name.scheduled_at == far and by_name.state is JobState.SCHEDULED


# -- retry policy and delays PostgreSQL can store ---------------------------------------------


def test_retry_option_is_validated() -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"base": -1}, "retry.base"),
        ({"factor": float("nan")}, "retry.factor"),
        ({"max_delay": float("inf")}, "retry.max_delay"),
        ({"max_delay": 1e20}, "retry.max_delay"),
        ({"jitter": 1.5}, "retry.jitter"),
        ({"base": True}, "retry.base"),
    ]
    for kwargs, field in bad:
        with pytest.raises(aqueue.InvalidOption, match=f"^{re.escape(field)}:"):
            aqueue.Backoff(**kwargs)
    # Huge factors cap at max_delay instead of overflowing a float.
    policy = aqueue.Backoff(base=1, factor=1000, max_delay=60, jitter=0)
    assert policy.delay(1) == 1 and policy.delay(200) == 60 and policy.delay(5000) == 60


async def test_retry_option_must_be_a_backoff(app: aqueue.App) -> None:
    @app.job
    async def t() -> None: ...

    with pytest.raises(aqueue.InvalidOption, match=r"^retry:"):
        await t.options(retry={"base": 1}).enqueue()  # type: ignore[arg-type]
    assert await _count(app) == 0


def test_snooze_seconds_are_validated() -> None:
    for seconds in (-1, float("nan"), float("inf"), 1e15, True, "5"):
        with pytest.raises(ValueError, match="Snooze"):
            aqueue.Snooze(seconds)  # type: ignore[arg-type]
    assert aqueue.Snooze(0).seconds == 0.0
    assert aqueue.Snooze(3.15e10).seconds == 3.15e10


async def test_longest_delays_are_stored_and_the_worker_carries_on(app: aqueue.App) -> None:
    @app.job(retry=aqueue.Backoff(base=MAX_SCHEDULE_IN, max_delay=MAX_SCHEDULE_IN))
    async def fails() -> None:
        raise RuntimeError("again")

    @app.job
    async def snoozes_forever() -> None:
        raise aqueue.Snooze(1e15)  # refused: becomes an ordinary error, never a worker crash

    @app.job
    async def fine() -> str:
        return "ok"

    failing = await fails.options(max_attempts=5).enqueue()
    snoozing = await snoozes_forever.options(max_attempts=1).enqueue()
    after = await fine.enqueue()
    async with app.worker({"default": 1}):
        snoozed = await app.wait(snoozing.id, timeout=10)
        assert (await app.wait(after.id, timeout=10)).result == "ok"
        retried = await app.get_job(failing.id)
    assert snoozed.state is JobState.DISCARDED
    assert snoozed.errors[0]["type"] == "ValueError" and "Snooze" in snoozed.errors[0]["message"]
    assert retried is not None and retried.state is JobState.RETRYABLE
    assert retried.scheduled_at > datetime.now(UTC) + timedelta(days=365 * 800)


async def test_queue_names_are_data_not_sql(app: aqueue.App) -> None:
    @app.job
    async def echo(n: int) -> int:
        return n

    names = ["emails/v2", "it's; DROP TABLE jobs; --", "ünïcode queue", "x" * 200]
    jobs = [await echo.options(queue=name).enqueue(n=i) for i, name in enumerate(names)]
    assert [j.queue for j in jobs] == names
    async with app.worker(dict.fromkeys(names, 1)):
        results = [(await app.wait(j.id, timeout=10)).result for j in jobs]
    assert results == [0, 1, 2, 3]
    assert [j.id for j in await app.list_jobs(queue="it's; DROP TABLE jobs; --")] == [jobs[1].id]
    with pytest.raises(aqueue.InvalidOption, match=r"^queue:"):
        await echo.options(queue="x" * 201).enqueue(n=0)
    with pytest.raises(aqueue.InvalidOption, match=r"^queue:"):
        await echo.options(queue="a\x00b").enqueue(n=0)


async def test_args_must_be_a_mapping(app: aqueue.App) -> None:
    @app.job
    async def t(x: int = 0) -> None: ...

    for args in (["x"], "x=1", 5):
        with pytest.raises(aqueue.InvalidJobArgs, match="mapping"):
            await app.enqueue("t", args)  # type: ignore[arg-type]
        with pytest.raises(aqueue.InvalidJobArgs, match="mapping"):
            await app.enqueue("unknown", args, allow_unknown=True)  # type: ignore[arg-type]
    assert (await app.enqueue("t")).args == {}
    assert await _count(app) == 1


async def test_an_unknown_option_is_a_type_error_naming_it(app: aqueue.App) -> None:
    @app.job
    async def some(n: int) -> None: ...

    with pytest.raises(TypeError, match="priorty"):
        some.options(priorty=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="priorty"):
        await app.enqueue("some", {"n": 1}, priorty=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="schedule_in"):

        @app.job(schedule_in=5)  # type: ignore[call-overload]
        async def other() -> None: ...

    assert await app.list_jobs() == []
