"""``aqueue jobs ...`` and ``aqueue queues ...``: the admin commands, wired into ``cli.py``.

    aqueue jobs list [--state S] [--queue Q] [--kind K] [--limit N]
    aqueue jobs show|retry|cancel|delete ID
    aqueue jobs rename-kind OLD NEW [--batch-size N] [--allow-unknown]
    aqueue queues list
    aqueue queues pause|resume NAME
    aqueue queues drain NAME [--timeout SECONDS]
    aqueue queues obliterate NAME [--force] --yes

Every command takes ``--app MODULE:APP`` or ``--url URL [--schema S]`` (default: the
``AQUEUE_DATABASE_URL`` environment variable, schema ``aqueue``) and ``--json``. Tables
go to stdout for people, ``--json`` prints one JSON document for scripts.

Exit status: 0 done, 1 error (bad input, database), 2 usage, 3 no such job, queue or
kind, 4 refused because of a job's or queue's state, 5 drain timed out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from . import control
from .app import App
from .errors import AqueueError, JobNotFound, JobStateError, UnknownJobKind, UnknownQueue
from .jobs import Job, JobState

__all__ = ["EXIT_NOT_FOUND", "EXIT_REFUSED", "EXIT_TIMEOUT", "add_commands"]

EXIT_NOT_FOUND = 3
EXIT_REFUSED = 4
EXIT_TIMEOUT = 5

Handler = Callable[[App, argparse.Namespace], Awaitable[int]]
LoadApp = Callable[[str], App]


def add_commands(sub: Any, load_app: LoadApp) -> None:
    """Add the ``jobs`` and ``queues`` command groups to the ``aqueue`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    target = common.add_mutually_exclusive_group()
    target.add_argument("--app", metavar="MODULE:APP", help="use this App's URL and schema")
    target.add_argument("--url", help="database URL (default: $AQUEUE_DATABASE_URL)")
    common.add_argument("--schema", help="schema name, with --url (default: aqueue)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")

    def leaf(group: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(
            name, parents=[common], help=help, description=help[0].upper() + help[1:] + "."
        )
        parser.set_defaults(handler=_connected(handler, load_app))
        return parser

    jobs = sub.add_parser(
        "jobs", help="list, show, retry, cancel, delete jobs; rename a kind"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    p = leaf(jobs, "list", _jobs_list, "list jobs, oldest first")
    p.add_argument("--state", help=f"one of {', '.join(s.value for s in JobState)}")
    p.add_argument("--queue", help="only this queue")
    p.add_argument("--kind", help="only this kind (as stored; aliases are not expanded)")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    for name, handler, text in (
        ("show", _jobs_show, "show one job in full"),
        ("retry", _jobs_retry, "make a scheduled, retryable, discarded or cancelled job run now"),
        ("cancel", _jobs_cancel, "cancel a job (a running one at its next await)"),
        ("delete", _jobs_delete, "delete a job that is not running"),
    ):
        leaf(jobs, name, handler, text).add_argument("id", type=int, metavar="ID")
    p = leaf(
        jobs,
        "rename-kind",
        _jobs_rename_kind,
        "move waiting jobs of kind OLD to kind NEW (running jobs are left alone)",
    )
    p.add_argument("old", metavar="OLD")
    p.add_argument("new", metavar="NEW")
    p.add_argument("--batch-size", type=int, default=1000, help="rows per statement (1000)")
    p.add_argument(
        "--allow-unknown",
        action="store_true",
        help="move jobs to NEW even if no App or live worker knows that kind",
    )

    queues = sub.add_parser(
        "queues", help="list, pause, resume, drain, obliterate queues"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    leaf(queues, "list", _queues_list, "list queues with their job counts")
    p = leaf(queues, "pause", _queues_pause, "stop every worker claiming from a queue")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--allow-unknown", action="store_true", help="pause a queue nothing names yet")
    leaf(queues, "resume", _queues_resume, "let a paused queue be claimed again").add_argument(
        "name", metavar="NAME"
    )
    p = leaf(queues, "drain", _queues_drain, "wait until a queue has nothing waiting or running")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--timeout", type=float, help="give up after this many seconds (exit 5)")
    p = leaf(queues, "obliterate", _queues_obliterate, "delete every job of a queue")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--force", action="store_true", help="also delete running jobs (their runs are cancelled)"
    )
    p.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")


def _connected(handler: Handler, load_app: LoadApp) -> Callable[[argparse.Namespace], Any]:
    async def run(args: argparse.Namespace) -> int:
        if args.app and args.schema:
            raise AqueueError("--schema goes with --url; an --app brings its own schema")
        app = load_app(args.app) if args.app else App(args.url, schema=args.schema or "aqueue")
        try:
            async with app:
                return await handler(app, args)
        except (UnknownQueue, UnknownJobKind, JobNotFound) as exc:
            return _fail(exc, EXIT_NOT_FOUND)
        except JobStateError as exc:
            return _fail(exc, EXIT_REFUSED)

    return run


def _fail(exc: BaseException, status: int) -> int:
    print(f"aqueue: error: {exc}", file=sys.stderr)
    return status


# -- output ---------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, JobState):
        return value.value
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _print_json(data: Any) -> None:
    print(json.dumps(data, default=_plain, indent=2, sort_keys=False))


def _job_data(job: Job) -> dict[str, Any]:
    data = dataclasses.asdict(job)
    data["state"] = job.state.value
    return data


def _when(value: datetime | None) -> str:
    # Server timestamps are timezone-aware; print them in UTC so every reader agrees.
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(header), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _show(job: Job) -> str:
    lines = [
        f"job {job.id}",
        f"  kind          {job.kind}",
        f"  queue         {job.queue}",
        f"  state         {job.state.value}",
        f"  attempt       {job.attempt} of {job.max_attempts}",
        f"  priority      {job.priority}",
        f"  args          {json.dumps(job.args)}",
        f"  created at    {_when(job.created_at)} UTC",
        f"  scheduled at  {_when(job.scheduled_at)} UTC",
        f"  attempted at  {_when(job.attempted_at)}",
        f"  finalized at  {_when(job.finalized_at)}",
    ]
    if job.tags:
        lines.append(f"  tags          {', '.join(job.tags)}")
    if job.meta:
        lines.append(f"  meta          {json.dumps(job.meta)}")
    if job.result is not None:
        lines.append(f"  result        {json.dumps(job.result)}")
    for error in job.errors:
        lines.append(
            f"  error         attempt {error.get('attempt')}: "
            f"{error.get('type')}: {error.get('message')}"
        )
    return "\n".join(lines)


# -- jobs -----------------------------------------------------------------------------------


async def _jobs_list(app: App, args: argparse.Namespace) -> int:
    jobs = await app.list_jobs(state=args.state, queue=args.queue, kind=args.kind, limit=args.limit)
    if args.json:
        _print_json([_job_data(job) for job in jobs])
        return 0
    rows = [
        (
            job.id,
            job.kind,
            job.queue,
            job.state.value,
            f"{job.attempt}/{job.max_attempts}",
            job.priority,
            _when(job.scheduled_at),
        )
        for job in jobs
    ]
    header = ("ID", "KIND", "QUEUE", "STATE", "ATTEMPT", "PRIORITY", "SCHEDULED (UTC)")
    print(_table(header, rows))
    more = " (the --limit: there may be more)" if len(jobs) == args.limit else ""
    print(f"{len(jobs)} job(s){more}")
    return 0


async def _jobs_show(app: App, args: argparse.Namespace) -> int:
    job = await app.get_job(args.id)
    if job is None:
        raise JobNotFound(args.id)
    print(json.dumps(_job_data(job), default=_plain, indent=2) if args.json else _show(job))
    return 0


async def _jobs_retry(app: App, args: argparse.Namespace) -> int:
    job = await app.retry(args.id)
    _report_job(args, job, f"job {job.id} is {job.state.value} again")
    return 0


async def _jobs_cancel(app: App, args: argparse.Namespace) -> int:
    before = await app.get_job(args.id)
    job = await app.cancel(args.id) if before is not None else None
    if before is None or job is None:
        raise JobNotFound(args.id)
    if before.state.is_final:
        text = f"job {job.id} was already {before.state.value}: nothing to cancel"
    elif job.state is JobState.RUNNING:
        text = f"job {job.id} is running: its worker was told to cancel it"
    else:
        text = f"job {job.id} is {job.state.value}"
    _report_job(args, job, text)
    return 0


async def _jobs_delete(app: App, args: argparse.Namespace) -> int:
    if not await app.delete(args.id):
        raise JobNotFound(args.id)
    if args.json:
        _print_json({"id": args.id, "deleted": True})
    else:
        print(f"job {args.id} deleted")
    return 0


def _report_job(args: argparse.Namespace, job: Job, text: str) -> None:
    if args.json:
        _print_json(_job_data(job))
    else:
        print(text)


async def _jobs_rename_kind(app: App, args: argparse.Namespace) -> int:
    report = await control.rename_kind(
        app,
        args.old,
        args.new,
        allow_unknown=args.allow_unknown,
        batch_size=args.batch_size,
    )
    if args.json:
        _print_json(dataclasses.asdict(report))
        return 0
    print(f"moved {report.moved} waiting job(s) from kind {report.old!r} to {report.new!r}")
    if report.running:
        print(
            f"{report.running} job(s) of kind {report.old!r} are running and were left alone: "
            "keep the old name as an alias until they finish, or run this again later"
        )
    return 0


# -- queues ---------------------------------------------------------------------------------


async def _queues_list(app: App, args: argparse.Namespace) -> int:
    stats = await app.queue_stats()
    if args.json:
        _print_json([_stats_data(s) for s in stats.values()])
        return 0
    states = (
        JobState.SCHEDULED,
        JobState.AVAILABLE,
        JobState.RETRYABLE,
        JobState.RUNNING,
        JobState.COMPLETED,
        JobState.CANCELLED,
        JobState.DISCARDED,
    )
    rows = [
        (
            s.name,
            "paused" if s.paused else "active",
            s.nodes,
            *(s.counts[state] for state in states),
            _age(s.oldest_available_age),
            sum(s.unrunnable.values()),
        )
        for s in stats.values()
    ]
    header = (
        "QUEUE",
        "STATUS",
        "NODES",
        *(s.value.upper() for s in states),
        "OLDEST",
        "UNRUNNABLE",
    )
    print(_table(header, rows) if rows else "no queues")
    for s in stats.values():
        for kind, count in sorted(s.unrunnable.items()):
            print(f"  {s.name}: {count} waiting job(s) of kind {kind!r}: no live worker knows it")
    return 0


def _stats_data(stats: control.QueueStats) -> dict[str, Any]:
    data = dataclasses.asdict(stats)
    data["counts"] = {str(state): count for state, count in stats.counts.items()}
    return data


async def _queues_pause(app: App, args: argparse.Namespace) -> int:
    changed = await app.pause_queue(args.name, allow_unknown=args.allow_unknown)
    _report_queue(args, changed, "paused" if changed else "was already paused")
    return 0


async def _queues_resume(app: App, args: argparse.Namespace) -> int:
    changed = await app.resume_queue(args.name)
    _report_queue(args, changed, "resumed" if changed else "was not paused")
    return 0


def _report_queue(args: argparse.Namespace, changed: bool, text: str) -> None:
    if args.json:
        _print_json({"queue": args.name, "changed": changed})
    else:
        print(f"queue {args.name!r} {text}")


async def _queues_drain(app: App, args: argparse.Namespace) -> int:
    try:
        await app.drain(args.name, timeout=args.timeout)
    except TimeoutError as exc:
        return _fail(exc, EXIT_TIMEOUT)
    if args.json:
        _print_json({"queue": args.name, "drained": True})
    else:
        print(f"queue {args.name!r} is drained: nothing waiting or running")
    return 0


async def _queues_obliterate(app: App, args: argparse.Namespace) -> int:
    if not args.yes:
        raise AqueueError(
            f"obliterate deletes every job of queue {args.name!r} and cannot be undone: "
            "add --yes to confirm"
        )
    deleted = await app.obliterate_queue(args.name, force=args.force)
    if args.json:
        _print_json({"queue": args.name, "deleted": deleted})
    else:
        print(f"queue {args.name!r} obliterated: {deleted} job(s) deleted")
    return 0
