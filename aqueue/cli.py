"""The ``aqueue`` command. The only place that installs signal handlers.

    aqueue migrate  --app MODULE:APP | --url URL [--schema S]
    aqueue worker   MODULE:APP -q default=10 -q mail=5   (or --no-queues)
    aqueue cluster  MODULE:APP [--json]   nodes, leader, leases, drift
    aqueue demo     enqueue and run a mix of jobs on a throwaway PostgreSQL
    aqueue dev      start a throwaway PostgreSQL, print its URL, run until Ctrl-C
    aqueue jobs | queues   admin commands (see cli_admin.py)

Errors aqueue knows about (bad input, unreachable database) print one line to stderr
and exit with status 1; usage errors exit with 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from .app import App
from .cli_admin import add_commands as add_admin_commands
from .embedded import EmbeddedPostgresError
from .errors import AqueueError
from .worker.worker import validate_queues

__all__ = ["main"]


def _run(fn: Callable[[], Awaitable[int]]) -> int:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        options: dict[str, Any] = {}
    else:
        options = {"use_uvloop": True}
    return anyio.run(fn, backend="asyncio", backend_options=options)


def load_app(target: str) -> App:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise AqueueError(f"expected MODULE:APP (e.g. myproject.jobs:app), got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AqueueError(f"cannot import {module_name!r}: {exc}") from None
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise AqueueError(f"{target!r} is not an aqueue.App (found {type(app).__name__})")
    return app


def parse_queues(values: Sequence[str]) -> dict[str, int]:
    queues: dict[str, int] = {}
    for value in values:
        name, sep, raw = value.rpartition("=")
        if not sep:
            name, raw = value, "10"
        try:
            queues[name] = int(raw)
        except ValueError:
            raise AqueueError(f"-q {value!r}: expected NAME=CONCURRENCY, e.g. -q mail=5") from None
    return queues or {"default": 10}


async def _until_signal(scope: anyio.CancelScope, logger: logging.Logger) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            logger.warning(
                "aqueue: received %s, shutting down gracefully", signal.Signals(signum).name
            )
            scope.cancel()
            return


async def _cmd_worker(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    if args.no_queues and args.queue:
        raise AqueueError("--no-queues and -q exclude each other")
    # With --no-queues the worker runs persistent workers and leader duties only.
    queues = {} if args.no_queues else validate_queues(parse_queues(args.queue))
    async with app:
        if args.migrate:
            await app.migrate()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_until_signal, tg.cancel_scope, app.logger)
            await app.run_worker(queues)
    return 0


async def _cmd_cluster(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    async with app:
        status = await app.cluster_status()
    if args.json:
        print(json.dumps(dataclasses.asdict(status), default=str, indent=2))
        return 0
    leader = status.leader
    print(f"leader: {leader.holder[:8]} (term {leader.term})" if leader else "leader: none")
    print(f"nodes ({len(status.nodes)}):")
    for node in status.nodes:
        flag = "" if node.alive else "  [expired]"
        lead = "  [leader]" if leader and leader.holder == node.id else ""
        print(
            f"  {node.id[:8]}  {node.host}:{node.pid}  queues={node.queues}  "
            f"heartbeat {node.heartbeat_at:%H:%M:%S}{lead}{flag}"
        )
    others = [lease for lease in status.leases if lease.name != "leader"]
    if others:
        print("leases:")
        for lease in others:
            held = f"held by {lease.holder[:8]}" if lease.held else "free"
            print(f"  {lease.name}  {held}  term {lease.term}  {json.dumps(lease.info)}")
    nodes = {n.id: n for n in status.nodes}
    for drift in status.drift:
        print(f"drift: {drift.describe(nodes)}")
    return 0


async def _cmd_migrate(args: argparse.Namespace) -> int:
    if args.app and args.schema:
        raise AqueueError("--schema goes with --url; an --app brings its own schema")
    app = load_app(args.app) if args.app else App(args.url, schema=args.schema or "aqueue")
    async with app:
        applied = await app.migrate()
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0


async def _cmd_dev(args: argparse.Namespace) -> int:
    from .embedded import EmbeddedPostgres

    server = EmbeddedPostgres()
    await anyio.to_thread.run_sync(server.start)
    try:
        app = App(server.url, schema=args.schema)
        async with app:
            await app.migrate()
        print(f"PostgreSQL {server.version} running: {server.source_description}")
        print(f"AQUEUE_DATABASE_URL={server.url}")
        print("schema migrated; press Ctrl-C to stop and delete it", flush=True)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
    finally:
        await anyio.to_thread.run_sync(server.stop)
    print("stopped")
    return 0


async def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return await run_demo(jobs=args.jobs)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aqueue", description="aqueue: asyncio-native background jobs on PostgreSQL."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "worker",
        help="run a worker for an App until SIGTERM/SIGINT",
        description="Run a worker for MODULE:APP until SIGTERM or Ctrl-C, "
        "then shut down gracefully (shutdown_timeout).",
    )
    p.add_argument("app", metavar="MODULE:APP", help="where the App lives, e.g. myapp.jobs:app")
    p.add_argument(
        "-q",
        "--queue",
        action="append",
        default=[],
        metavar="NAME=N",
        help="a queue and its concurrency; repeat for more (default: default=10)",
    )
    p.add_argument(
        "--no-queues",
        action="store_true",
        help="claim no jobs: run only persistent workers and leader duties",
    )
    p.add_argument("--migrate", action="store_true", help="apply migrations before starting")
    p.set_defaults(handler=_cmd_worker)

    p = sub.add_parser(
        "cluster",
        help="show worker nodes, the leader, leases and configuration drift",
        description="Show the cluster as the database sees it: worker nodes and their "
        "heartbeats, the leader, persistent-worker leases, configuration drift.",
    )
    p.add_argument("app", metavar="MODULE:APP", help="where the App lives, e.g. myapp.jobs:app")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(handler=_cmd_cluster)

    p = sub.add_parser(
        "migrate",
        help="create or upgrade aqueue's tables",
        description="Create or upgrade aqueue's schema; safe to run concurrently.",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument("--app", metavar="MODULE:APP", help="use this App's URL and schema")
    target.add_argument("--url", help="database URL (default: $AQUEUE_DATABASE_URL)")
    p.add_argument("--schema", help="schema name, with --url (default: aqueue)")
    p.set_defaults(handler=_cmd_migrate)

    p = sub.add_parser(
        "demo",
        help="enqueue and run jobs on a throwaway PostgreSQL",
        description="Start a throwaway PostgreSQL, enqueue a mix of jobs "
        "(one retries, one has a hook), run them, print what "
        "happened.",
    )
    p.add_argument("--jobs", type=int, default=2000, help="bulk jobs to drain (default 2000)")
    p.set_defaults(handler=_cmd_demo)

    p = sub.add_parser(
        "dev",
        help="run a throwaway PostgreSQL until Ctrl-C",
        description="Start a throwaway PostgreSQL, migrate the schema, print "
        "its URL, and run until Ctrl-C.",
    )
    p.add_argument("--schema", default="aqueue", help="schema to migrate (default: aqueue)")
    p.set_defaults(handler=_cmd_dev)
    add_admin_commands(sub, load_app)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    handler: Callable[[argparse.Namespace], Awaitable[int]] = args.handler
    try:
        return _run(lambda: handler(args))
    except (AqueueError, EmbeddedPostgresError) as exc:
        print(f"aqueue: error: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        known, rest = group.split((AqueueError, EmbeddedPostgresError))
        if known is None or rest is not None:
            raise
        print(f"aqueue: error: {_first_leaf(known)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


if __name__ == "__main__":
    sys.exit(main())
