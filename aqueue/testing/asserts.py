"""What a test enqueued: ``assert_enqueued``, ``refute_enqueued`` and ``all_enqueued``.

They read the App's jobs (``app.list_jobs``: the database, or the jobs an inline App ran)
and compare in Python, so a failed assertion can say how each job of the kind differs
from what was expected. A job matches when every filter given matches:

- ``args``: every key given is among the job's arguments with an equal value (a subset:
  keys left out are not compared). Values are compared as JSON, the way they are stored,
  so ``date(2026, 12, 1)`` matches the stored ``"2026-12-01"``;
- ``queue``, ``state``: equal.

Jobs of any state count as enqueued unless ``state`` says otherwise: a job a worker has
already run was enqueued all the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic_core

from ..admin import LIST_LIMIT_MAX
from ..app import App
from ..definition import ConfiguredJob, JobDefinition
from ..jobs import Job, JobState

__all__ = ["JobRef", "all_enqueued", "assert_enqueued", "refute_enqueued"]

#: A job, by its definition (``send_email``, ``send_email.options(...)``) or kind name.
JobRef = JobDefinition[Any, Any] | ConfiguredJob[Any, Any] | str
#: Jobs listed in a failure message, at most.
_SHOWN = 20
_MISSING = object()


async def all_enqueued(
    app: App,
    job: JobRef | None = None,
    *,
    args: Mapping[str, Any] | None = None,
    queue: str | None = None,
    state: JobState | str | None = None,
) -> list[Job]:
    """The jobs matching every filter given, oldest first (every job when none is given).

    Example::

        jobs = await all_enqueued(app, send_email, queue="mail")
        assert [job.args["to"] for job in jobs] == ["a@example.com", "b@example.com"]
    """
    expected = _expected_args(args)
    jobs = await _read(app, job, state)
    return [j for j in jobs if not _differences(j, expected, queue, state)]


async def assert_enqueued(
    app: App,
    job: JobRef,
    *,
    args: Mapping[str, Any] | None = None,
    queue: str | None = None,
    state: JobState | str | None = None,
    count: int | None = None,
) -> list[Job]:
    """Fail unless a job of ``job`` matching the filters was enqueued (exactly ``count``
    of them, when given); returns the matching jobs.

    The failure message lists the jobs of that kind that were enqueued and how each one
    differs (or, when there is none of that kind, the jobs of other kinds). Example::

        await signup(email="ada@example.com")
        await assert_enqueued(app, send_welcome, args={"email": "ada@example.com"})
        [job] = await assert_enqueued(app, "send_welcome", queue="mail", count=1)
    """
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ValueError(f"count: must be a non-negative integer, got {count!r}")
    expected = _expected_args(args)
    kind = _kind(job)
    jobs = await _read(app, kind, None)
    matches = [j for j in jobs if not _differences(j, expected, queue, state)]
    if (count is None and matches) or (count is not None and len(matches) == count):
        return matches
    wanted = _describe_wanted(kind, expected, queue, state)
    amount = f"{count} job(s)" if count is not None else "a job"
    if jobs:
        lines = [f"expected {amount} {wanted}, found {len(matches)}."]
        lines.append(f"Jobs of kind {kind!r} enqueued ({len(jobs)}):")
        for found in jobs[:_SHOWN]:
            lines.append("  " + _describe(found))
            lines.extend("      " + d for d in _differences(found, expected, queue, state))
    else:
        others = await _read(app, None, None)
        lines = [f"expected {amount} {wanted}, but no job of kind {kind!r} was enqueued."]
        lines.append(f"Jobs enqueued ({len(others)}):" if others else "No job was enqueued.")
        lines.extend("  " + _describe(found) for found in others[:_SHOWN])
        jobs = others
    if len(jobs) > _SHOWN:
        lines.append(f"  ... and {len(jobs) - _SHOWN} more")
    raise AssertionError("\n".join(lines))


async def refute_enqueued(
    app: App,
    job: JobRef,
    *,
    args: Mapping[str, Any] | None = None,
    queue: str | None = None,
    state: JobState | str | None = None,
) -> None:
    """Fail if a job of ``job`` matching the filters was enqueued; the message lists them.

    Example::

        with pytest.raises(EmailTaken):
            await signup(email="taken@example.com")
        await refute_enqueued(app, send_welcome, args={"email": "taken@example.com"})
    """
    expected = _expected_args(args)
    kind = _kind(job)
    matches = [
        j for j in await _read(app, kind, None) if not _differences(j, expected, queue, state)
    ]
    if matches:
        wanted = _describe_wanted(kind, expected, queue, state)
        lines = [f"expected no job {wanted}, found {len(matches)}:"]
        lines.extend("  " + _describe(found) for found in matches[:_SHOWN])
        raise AssertionError("\n".join(lines))


def _kind(job: JobRef) -> str:
    if isinstance(job, str):
        return job
    if isinstance(job, JobDefinition | ConfiguredJob):
        return job.definition.kind
    raise TypeError(f"expected a job (its definition or kind name), got {job!r}")


async def _read(app: App, job: JobRef | None, state: JobState | str | None) -> list[Job]:
    kind = None if job is None else _kind(job)
    jobs = await app.list_jobs(kind=kind, state=state, limit=LIST_LIMIT_MAX)
    if len(jobs) == LIST_LIMIT_MAX:
        raise AssertionError(
            f"aqueue.testing reads at most {LIST_LIMIT_MAX} jobs at once, and more exist"
        )
    return jobs


def _expected_args(args: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if args is None:
        return None
    if not isinstance(args, Mapping):
        raise TypeError(f"args: expected a mapping of argument names to values, got {args!r}")
    # As stored: the JSON form of each value (dates as ISO text, models as objects).
    jsonable: dict[str, Any] = pydantic_core.to_jsonable_python(dict(args))
    return jsonable


def _differences(
    job: Job,
    args: Mapping[str, Any] | None,
    queue: str | None,
    state: JobState | str | None,
) -> list[str]:
    """How ``job`` differs from the filters, one line per difference (none: it matches)."""
    found: list[str] = []
    if queue is not None and job.queue != queue:
        found.append(f"queue: {job.queue!r}, expected {queue!r}")
    if state is not None and job.state != state:
        found.append(f"state: {job.state.value!r}, expected {str(state)!r}")
    for key, value in (args or {}).items():
        actual = job.args.get(key, _MISSING)
        if actual is _MISSING:
            found.append(f"args[{key!r}]: missing, expected {value!r}")
        elif actual != value:
            found.append(f"args[{key!r}]: {actual!r}, expected {value!r}")
    return found


def _describe(job: Job) -> str:
    return (
        f"job {job.id} {job.kind} ({job.state.value}) queue={job.queue!r} args={dict(job.args)!r}"
    )


def _describe_wanted(
    kind: str, args: Mapping[str, Any] | None, queue: str | None, state: object
) -> str:
    parts = [repr(kind)]
    if args is not None:
        parts.append(f"with args {args!r}")
    if queue is not None:
        parts.append(f"in queue {queue!r}")
    if state is not None:
        parts.append(f"in state {str(state)!r}")
    return " ".join(parts)
