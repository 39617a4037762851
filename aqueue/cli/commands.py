"""The top-level commands: ``worker``, ``cluster``, ``migrate``, ``demo``, ``dev``.

``worker`` and ``dev`` run until SIGTERM or SIGINT. They are the only code in aqueue that
listens for signals: a library must leave that to the program that embeds it, and the
``aqueue`` command is such a program.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from typing import Any

import anyio

from ..app import App
from ..errors import AqueueError
from ..flow import Queue, resolve_queues
from . import format, talk
from .exits import EXIT_OK, UsageError
from .target import (
    add_json_option,
    app_from_args,
    load_object,
    parse_queues,
    processes_count,
    target_options,
)

__all__ = ["add_commands"]

# Kept here, not imported from aqueue.dashboard: that needs the optional extra.
_LOOPBACK = "127.0.0.1"


def add_commands(sub: Any) -> None:
    """Add ``worker``, ``cluster``, ``migrate``, ``demo`` and ``dev`` to the parser."""
    p = sub.add_parser(
        "worker",
        parents=[target_options(url=False)],
        help="run a worker for an App until SIGTERM/SIGINT",
        description="Run a worker for MODULE:APP until SIGTERM or Ctrl-C, "
        "then shut down gracefully (shutdown_timeout).",
    )
    p.add_argument(
        "-q",
        "--queue",
        action="append",
        default=[],
        metavar="NAME=N",
        help="a queue and its concurrency; repeat for more (default: App(queues=...), "
        "else every queue the App's jobs name, concurrency 10)",
    )
    p.add_argument(
        "--no-queues",
        action="store_true",
        help="claim no jobs: run only persistent workers and leader duties",
    )
    p.add_argument("--migrate", action="store_true", help="apply migrations before starting")
    p.add_argument(
        "--processes",
        metavar="N",
        type=processes_count,
        help="run N supervised worker processes (auto: one per CPU); "
        "a process that dies is restarted",
    )
    p.add_argument(
        "--reload",
        action="store_true",
        help="development: restart the worker when a .py file under the current directory changes",
    )
    p.add_argument(
        "--summary-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="log a throughput summary this often (default 60; 0: never)",
    )
    # Set by a supervising parent (--processes, --reload) on the workers it starts.
    p.add_argument("--process-label", default="", help=argparse.SUPPRESS)
    p.set_defaults(handler=_worker)

    p = sub.add_parser(
        "cluster",
        parents=[target_options()],
        help="show worker nodes, the leader, leases and configuration drift",
        description="Show the cluster as the database sees it: worker nodes and their "
        "heartbeats, the leader, persistent-worker leases, configuration drift.",
    )
    add_json_option(p)
    p.set_defaults(handler=_cluster)

    p = sub.add_parser(
        "migrate",
        parents=[target_options()],
        help="create or upgrade aqueue's tables",
        description="Create or upgrade aqueue's schema; safe to run concurrently.",
    )
    p.set_defaults(handler=_migrate)

    p = sub.add_parser(
        "demo",
        help="enqueue and run jobs on a throwaway PostgreSQL",
        description="Start a throwaway PostgreSQL, enqueue a mix of jobs "
        "(one retries, one has a hook), run them, print what "
        "happened.",
    )
    p.add_argument("--jobs", type=int, default=2000, help="bulk jobs to drain (default 2000)")
    p.set_defaults(handler=_demo)

    p = sub.add_parser(
        "dev",
        help="run a throwaway PostgreSQL until Ctrl-C",
        description="Start a throwaway PostgreSQL, migrate the schema, print "
        "its URL, and run until Ctrl-C.",
    )
    p.add_argument("--schema", default="aqueue", help="schema to migrate (default: aqueue)")
    p.set_defaults(handler=_dev)

    p = sub.add_parser(
        "dashboard",
        parents=[target_options()],
        help="serve the web dashboard of an App",
        description="Serve the web dashboard of MODULE:APP with uvicorn until Ctrl-C. "
        f"Without --auth it listens on {_LOOPBACK} only. Needs aqueue[dashboard].",
    )
    p.add_argument("--host", default=_LOOPBACK, help=f"address to listen on (default {_LOOPBACK})")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument(
        "--auth",
        metavar="MODULE:FUNC",
        help="auth(request) -> bool, sync or async; required to listen beyond loopback",
    )
    p.add_argument("--read-only", action="store_true", help="show everything, allow no action")
    p.add_argument("--base-path", default="", help="URL prefix added by a reverse proxy")
    p.set_defaults(handler=_dashboard)


def _signals() -> AbstractContextManager[AsyncIterator[signal.Signals]]:
    # Opened before the command starts anything, so that a signal during startup is
    # queued here (and handled gracefully) instead of raising KeyboardInterrupt.
    return anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT)


async def _cancel_on_signal(
    signals: AsyncIterator[signal.Signals], scope: anyio.CancelScope, logger: logging.Logger
) -> None:
    async for signum in signals:
        logger.warning("aqueue: received %s, shutting down gracefully", signum.name)
        # Cancelling reaches run_worker as a stop request: it stops claiming and lets
        # running jobs finish within shutdown_timeout (App._run_shielded).
        scope.cancel()
        return


async def _set_on_signal(
    signals: AsyncIterator[signal.Signals], event: anyio.Event, logger: logging.Logger | None
) -> None:
    async for signum in signals:
        if logger is not None:
            logger.warning("aqueue: received %s, stopping", signum.name)
        event.set()
        return


async def _dashboard(args: argparse.Namespace) -> int:
    try:
        from ..dashboard.serve import serve_async
    except ImportError as exc:
        raise AqueueError(
            f"the dashboard needs its extra: pip install 'aqueue[dashboard]' ({exc})"
        ) from None
    auth = (
        load_object(args.auth, "--auth: ", "MODULE:FUNC (e.g. myapp.auth:check)")
        if args.auth
        else None
    )
    if args.auth and not callable(auth):
        raise AqueueError(f"--auth: {args.auth!r} is not a callable (found {type(auth).__name__})")
    app = app_from_args(args)
    stop = anyio.Event()
    with _signals() as signals:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_set_on_signal, signals, stop, None)
            await serve_async(
                app,
                args.host,
                args.port,
                stop=stop,
                auth=auth,
                read_only=args.read_only,
                base_path=args.base_path,
            )
            tg.cancel_scope.cancel()
    return EXIT_OK


async def _worker(args: argparse.Namespace) -> int:
    if args.no_queues and args.queue:
        raise UsageError("--no-queues and -q exclude each other")
    if args.summary_every < 0:
        raise UsageError("--summary-every: seconds must be 0 (never) or more")
    app = app_from_args(args, needs_jobs=True)
    # With --no-queues the worker runs persistent workers and leader duties only. -q
    # names the queues to run and their local concurrency; limits the App declares for
    # them (App(queues=...)) still hold. Without -q the App decides.
    local = parse_queues(args.queue)
    resolve_queues(local, allow_empty=True)  # names and concurrencies, before connecting
    queues: dict[str, int | Queue] = {}
    if not args.no_queues:
        chosen = app.worker_queues(concurrency=local)
        queues = {name: chosen[name] for name in local} if local else chosen
    if args.processes is not None or args.reload:
        return await _supervise(app, args)
    _talk_at_info(app.logger, args)
    async with app:
        if args.migrate:
            await app.migrate()
        with _signals() as signals:
            await _run_worker(app, queues, signals, args)
    return EXIT_OK


async def _run_worker(
    app: App,
    queues: dict[str, int | Queue],
    signals: AsyncIterator[signal.Signals],
    args: argparse.Namespace,
) -> None:
    async with app.worker(queues) as worker:
        label = f" ({args.process_label})" if args.process_label else ""
        for line in talk.banner(worker, app.registry, processes=label):
            app.logger.info("%s", line)
        for queue, kinds in talk.unserved_kinds(app.registry, worker.queues).items():
            app.logger.warning(
                "aqueue: this worker does not serve queue %r: jobs of %s wait there "
                "until a worker does (one started with -q %s)",
                queue,
                ", ".join(repr(k) for k in kinds),
                queue,
            )
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_on_signal, signals, tg.cancel_scope, app.logger)
            if args.summary_every:
                tg.start_soon(talk.summarize_every, args.summary_every, worker, app.logger)
            await worker.wait_stopped()
            tg.cancel_scope.cancel()


def _talk_at_info(logger: logging.Logger, args: argparse.Namespace) -> None:
    # A worker shows its banner, failures, summaries and the jobs' own ctx.logger lines
    # by default (-v: everything aqueue logs). A level the user's program set is kept.
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)


async def _supervise(app: App, args: argparse.Namespace) -> int:
    from .processes import Supervisor, child_command

    if args.migrate:
        async with app:
            await app.migrate()
    count = args.processes or 1
    logger = app.logger
    _talk_at_info(logger, args)
    supervisor = Supervisor(
        lambda label: child_command(args, label),
        count,
        shutdown_timeout=app.settings.shutdown_timeout,
        logger=logger,
        reload=args.reload,
    )
    stop = anyio.Event()
    with _signals() as signals:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_set_on_signal, signals, stop, logger)
            await supervisor.run(stop)
            tg.cancel_scope.cancel()
    return EXIT_OK


async def _cluster(args: argparse.Namespace) -> int:
    app = app_from_args(args)
    async with app:
        status = await app.cluster_status()
    print(format.cluster_json(status) if args.json else format.cluster_text(status))
    return EXIT_OK


async def _migrate(args: argparse.Namespace) -> int:
    app = app_from_args(args)
    async with app:
        applied = await app.migrate()
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return EXIT_OK


async def _dev(args: argparse.Namespace) -> int:
    # Imported here, as in `demo`: only these two start a throwaway server, so the other
    # commands never load the embedded-server module.
    from ..embedded import EmbeddedPostgres

    server = EmbeddedPostgres()
    await anyio.to_thread.run_sync(server.start)
    try:
        app = App(server.url, schema=args.schema)
        async with app:
            await app.migrate()
        print(f"PostgreSQL {server.version} running: {server.source_description}")
        # Always single-quoted, for the shell: a URL may hold characters it interprets
        # (&, ?, $), and a line that is quoted only sometimes looks like two formats.
        quoted = "'" + server.url.replace("'", "'\\''") + "'"
        print(f"export AQUEUE_DATABASE_URL={quoted}")
        with _signals() as signals:
            print("schema migrated; press Ctrl-C to stop and delete it", flush=True)
            async for _ in signals:
                break
    finally:
        await anyio.to_thread.run_sync(server.stop)
    print("stopped")
    return EXIT_OK


async def _demo(args: argparse.Namespace) -> int:
    # Imported here: only `demo` needs its example jobs and the server they run on.
    from ..demo import run_demo

    return await run_demo(jobs=args.jobs)
