"""``aqueue workflows ...``: workflows and batches.

    aqueue workflows list [--kind workflow|batch] [--cursor ID] [--limit N]
    aqueue workflows show ID          every job with its state, attempts and timing
    aqueue workflows cancel ID        cancel every job that has not ended

Same target options, ``--json`` and exit statuses as ``aqueue jobs`` (3: no such id).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..app import App
from ..workflow import WorkflowInfo, WorkflowStatus
from . import format
from .admin import _connected
from .exits import EXIT_OK
from .target import add_json_option, target_options

__all__ = ["add_commands"]


def add_commands(sub: Any) -> None:
    common = target_options()
    add_json_option(common)
    group = sub.add_parser(
        "workflows", help="list and show workflows and batches; cancel one"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    p = group.add_parser(
        "list", parents=[common], help="workflows and batches, newest first, with job counts"
    )
    p.add_argument("--kind", choices=("workflow", "batch"), help="only workflows or batches")
    p.add_argument(
        "--cursor",
        "--before",
        dest="before",
        type=int,
        metavar="ID",
        help="only ids below ID: the next page (as `jobs list --cursor`)",
    )
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.set_defaults(handler=_connected(_list))
    p = group.add_parser(
        "show", parents=[common], help="every job of one workflow or batch, with its timing"
    )
    p.add_argument("id", type=int, metavar="ID")
    p.set_defaults(handler=_connected(_show))
    p = group.add_parser(
        "cancel", parents=[common], help="cancel every job of a workflow or batch not ended"
    )
    p.add_argument("id", type=int, metavar="ID")
    p.set_defaults(handler=_connected(_cancel))


def _info_data(info: WorkflowInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "kind": info.kind,
        "name": info.name,
        "state": info.state,
        "jobs": info.steps,
        "counts": dict(info.counts),
        "created_at": info.created_at.isoformat(),
    }


async def _list(app: App, args: argparse.Namespace) -> int:
    found = await app.list_workflows(kind=args.kind, before=args.before, limit=args.limit)
    if args.json:
        print(format.to_json([_info_data(info) for info in found]))
        return EXIT_OK
    rows = [
        (
            info.id,
            info.kind,
            info.name,
            info.state,
            info.steps,
            ", ".join(f"{state} {n}" for state, n in sorted(info.counts.items())),
            format.when(info.created_at),
        )
        for info in found
    ]
    print(format.table(("ID", "KIND", "NAME", "STATE", "JOBS", "BY STATE", "CREATED"), rows))
    more = f"; the next page: --cursor {found[-1].id}" if len(found) == args.limit else ""
    print(f"{len(found)} workflow(s) and batch(es){more}")
    return EXIT_OK


def _status_data(status: WorkflowStatus) -> dict[str, Any]:
    return {
        "id": status.id,
        "kind": status.kind,
        "name": status.name,
        "state": status.state,
        "counts": status.counts,
        "created_at": status.created_at.isoformat(),
        "jobs": [format.job_data(job) for job in status.jobs],
    }


def _ran(status: WorkflowStatus) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for job in status.jobs:
        took = "-"
        if job.attempted_at is not None and job.finalized_at is not None:
            took = f"{(job.finalized_at - job.attempted_at).total_seconds():.3f}s"
        rows.append(
            (
                job.step or "-",
                job.id,
                job.kind,
                job.state.value,
                f"{job.attempt}/{job.max_attempts}",
                format.when(job.attempted_at),
                format.when(job.finalized_at),
                took,
            )
        )
    return rows


async def _show(app: App, args: argparse.Namespace) -> int:
    status = await app.workflow_status(args.id)
    if args.json:
        print(format.to_json(_status_data(status)))
        return EXIT_OK
    print(f"{status.kind} {status.id} {status.name!r}: {status.state}")
    print(", ".join(f"{state} {n}" for state, n in sorted(status.counts.items())))
    header = ("STEP", "JOB", "KIND", "STATE", "ATTEMPT", "STARTED", "ENDED", "TOOK")
    print(format.table(header, _ran(status)))
    return EXIT_OK


async def _cancel(app: App, args: argparse.Namespace) -> int:
    changed = await app.cancel_workflow(args.id)
    if args.json:
        print(format.to_json({"id": args.id, "cancelled": changed}))
    else:
        print(f"{changed} job(s) of {args.id} cancelled or told to stop")
    return EXIT_OK
