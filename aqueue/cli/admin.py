"""``aqueue jobs ...`` and ``aqueue queues ...``: the admin commands.

    aqueue jobs list [--state S[,S]|failed] [--queue Q] [--kind K] [--newest]
                     [--since WHEN] [--cursor ID] [--limit N]
    aqueue jobs show|retry|cancel|delete ID
    aqueue jobs rename-kind OLD NEW [--batch-size N] [--allow-unknown]
    aqueue queues list
    aqueue queues pause|resume NAME
    aqueue queues drain NAME [--timeout SECONDS]
    aqueue queues obliterate NAME [--force] --yes

Every command takes ``MODULE:APP`` (first, or as ``--app MODULE:APP``) or ``--url URL
[--schema S]`` (default: the ``AQUEUE_DATABASE_URL`` environment variable, schema
``aqueue``) and ``--json``. Tables
go to stdout for people, ``--json`` prints one JSON document for scripts.

Exit status (see ``exits``): 0 done, 1 error (bad input, database), 2 usage, 3 no such
job, queue or kind, 4 refused because of a job's or queue's state, 5 drain timed out.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from ..app import App
from ..errors import JobNotFound, JobStateError
from ..jobs import Job, JobState
from . import format, listing
from .exits import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    NOT_FOUND,
    UsageError,
    fail,
)
from .target import add_json_option, app_from_args, target_options

__all__ = ["add_commands"]

Handler = Callable[[App, argparse.Namespace], Awaitable[int]]


def add_commands(sub: Any) -> None:
    """Add the ``jobs`` and ``queues`` command groups to the ``aqueue`` parser."""
    common = target_options()
    add_json_option(common)

    def leaf(group: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(
            name, parents=[common], help=help, description=help[0].upper() + help[1:] + "."
        )
        parser.set_defaults(handler=_connected(handler))
        return parser

    jobs = sub.add_parser(
        "jobs", help="list, show, retry, cancel, delete jobs; rename a kind"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    p = leaf(jobs, "list", _jobs_list, "list jobs, oldest first (or --newest first)")
    p.add_argument(
        "--state",
        help=f"one of {', '.join(s.value for s in JobState)}, several separated by commas, "
        "or failed (retryable and discarded)",
    )
    p.add_argument("--queue", help="only this queue")
    p.add_argument("--kind", help="only this kind (as stored; aliases are not expanded)")
    p.add_argument("--newest", action="store_true", help="newest first")
    p.add_argument(
        "--since",
        type=listing.since_value,
        metavar="WHEN",
        help="only jobs active since then (finalized, attempted or created): "
        "30s, 10m, 2h, 7d ago, or an ISO 8601 time",
    )
    p.add_argument(
        "--cursor",
        type=int,
        metavar="ID",
        help="the page after job ID (a full page prints the --cursor of the next)",
    )
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
    p.set_defaults(precheck=_confirm_obliterate)


def _connected(handler: Handler) -> Callable[[argparse.Namespace], Awaitable[int]]:
    # Not-found and refused are told apart from other errors here, for the admin commands
    # only: `main` turns everything else aqueue raises into exit 1.
    async def run(args: argparse.Namespace) -> int:
        # Usage is checked before anything connects: a missing --yes is exit 2 even
        # when the database is down.
        precheck: Callable[[argparse.Namespace], None] | None = getattr(args, "precheck", None)
        if precheck is not None:
            precheck(args)
        app = app_from_args(args)
        try:
            async with app:
                return await handler(app, args)
        except NOT_FOUND as exc:
            return fail(exc, EXIT_NOT_FOUND)
        except JobStateError as exc:
            return fail(exc, EXIT_REFUSED)

    return run


# -- jobs -----------------------------------------------------------------------------------


async def _jobs_list(app: App, args: argparse.Namespace) -> int:
    jobs, cursor = await listing.jobs_page(app, args)
    if args.json:
        print(format.to_json([format.job_data(job) for job in jobs]))
        return EXIT_OK
    print(format.jobs_table(jobs))
    more = f"; the next page: --cursor {cursor}" if cursor is not None else ""
    print(f"{len(jobs)} job(s){more}")
    return EXIT_OK


async def _jobs_show(app: App, args: argparse.Namespace) -> int:
    job = await app.get_job(args.id)
    if job is None:
        raise JobNotFound(args.id)
    print(format.to_json(format.job_data(job)) if args.json else format.job_detail(job))
    return EXIT_OK


async def _jobs_retry(app: App, args: argparse.Namespace) -> int:
    job = await app.retry(args.id)
    _report_job(args, job, f"job {job.id} is {job.state.value} again")
    return EXIT_OK


async def _jobs_cancel(app: App, args: argparse.Namespace) -> int:
    # Read first: a job cancelled just now and one that was already cancelled look the
    # same afterwards, and the text tells them apart.
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
    return EXIT_OK


async def _jobs_delete(app: App, args: argparse.Namespace) -> int:
    if not await app.delete(args.id):
        raise JobNotFound(args.id)
    _report(args, {"id": args.id, "deleted": True}, f"job {args.id} deleted")
    return EXIT_OK


async def _jobs_rename_kind(app: App, args: argparse.Namespace) -> int:
    report = await app.control.rename_kind(
        args.old,
        args.new,
        allow_unknown=args.allow_unknown,
        batch_size=args.batch_size,
    )
    if args.json:
        print(format.to_json(dataclasses.asdict(report)))
        return EXIT_OK
    print(f"moved {report.moved} waiting job(s) from kind {report.old!r} to {report.new!r}")
    if report.running:
        print(
            f"{report.running} job(s) of kind {report.old!r} are running and were left alone: "
            "keep the old name as an alias until they finish, or run this again later"
        )
    return EXIT_OK


# -- queues ---------------------------------------------------------------------------------


async def _queues_list(app: App, args: argparse.Namespace) -> int:
    stats = (await app.queue_stats()).values()
    if args.json:
        print(format.to_json([format.stats_data(s) for s in stats]))
    else:
        print(format.queues_table(stats))
    return EXIT_OK


async def _queues_pause(app: App, args: argparse.Namespace) -> int:
    changed = await app.pause_queue(args.name, allow_unknown=args.allow_unknown)
    _report_queue(args, changed, "paused" if changed else "was already paused")
    return EXIT_OK


async def _queues_resume(app: App, args: argparse.Namespace) -> int:
    changed = await app.resume_queue(args.name)
    _report_queue(args, changed, "resumed" if changed else "was not paused")
    return EXIT_OK


async def _queues_drain(app: App, args: argparse.Namespace) -> int:
    try:
        await app.drain(args.name, timeout=args.timeout)
    except TimeoutError as exc:
        return fail(exc, EXIT_TIMEOUT)
    text = f"queue {args.name!r} is drained: nothing waiting or running"
    _report(args, {"queue": args.name, "drained": True}, text)
    return EXIT_OK


def _confirm_obliterate(args: argparse.Namespace) -> None:
    if not args.yes:
        raise UsageError(
            f"obliterate deletes every job of queue {args.name!r} and cannot be undone: "
            "add --yes to confirm"
        )


async def _queues_obliterate(app: App, args: argparse.Namespace) -> int:
    deleted = await app.obliterate_queue(args.name, force=args.force)
    text = f"queue {args.name!r} obliterated: {deleted} job(s) deleted"
    _report(args, {"queue": args.name, "deleted": deleted}, text)
    return EXIT_OK


# -- reporting ------------------------------------------------------------------------------


def _report(args: argparse.Namespace, data: Any, text: str) -> None:
    print(format.to_json(data) if args.json else text)


def _report_job(args: argparse.Namespace, job: Job, text: str) -> None:
    _report(args, format.job_data(job), text)


def _report_queue(args: argparse.Namespace, changed: bool, text: str) -> None:
    _report(args, {"queue": args.name, "changed": changed}, f"queue {args.name!r} {text}")
