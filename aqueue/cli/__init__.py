"""The ``aqueue`` command. The only place in aqueue that installs signal handlers.

    aqueue migrate  --app MODULE:APP | --url URL [--schema S]
    aqueue worker   MODULE:APP -q default=10 -q mail=5   (or --no-queues)
    aqueue cluster  MODULE:APP [--json]   nodes, leader, leases, drift
    aqueue demo     enqueue and run a mix of jobs on a throwaway PostgreSQL
    aqueue dev      start a throwaway PostgreSQL, print its URL, run until Ctrl-C
    aqueue jobs | queues | workflows   admin commands

One concept per module:

- ``target``: which App a command acts on (``MODULE:APP`` or ``--url``), ``-q`` parsing
  and the options every command spells the same way;
- ``commands``: ``worker``, ``cluster``, ``migrate``, ``demo``, ``dev`` (and the signal
  handling of the two that run until stopped);
- ``admin``: ``jobs ...`` and ``queues ...``;
- ``workflows``: ``workflows ...``;
- ``format``: tables and JSON documents;
- ``exits``: exit statuses and the one-line error report.

Errors aqueue knows about (bad input, unreachable database) print one line to stderr
and exit with status 1; usage errors exit with 2 (``exits`` has the full table).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from ..errors import AqueueError
from . import admin, commands, workflows
from .exits import EXIT_ERROR, EXIT_INTERRUPTED, fail, first_leaf

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``aqueue`` command with ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    args = _parser().parse_args(argv)
    # Logging is configured here and nowhere else in aqueue: the library only logs.
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    handler: Callable[[argparse.Namespace], Awaitable[int]] = args.handler
    try:
        return _run(lambda: handler(args))
    except AqueueError as exc:
        return fail(exc, EXIT_ERROR)
    except BaseExceptionGroup as group:
        # A task group (the worker's, anyio's) wraps what its tasks raise. A group made
        # only of aqueue's errors is reported like one; anything else is a bug and keeps
        # its traceback.
        known, rest = group.split(AqueueError)
        if known is None or rest is not None:
            raise
        return fail(first_leaf(known), EXIT_ERROR)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aqueue", description="aqueue: asyncio-native background jobs on PostgreSQL."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_commands(sub)
    admin.add_commands(sub)
    workflows.add_commands(sub)
    return parser


def _run(fn: Callable[[], Awaitable[int]]) -> int:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        options: dict[str, Any] = {}
    else:
        options = {"use_uvloop": True}
    return anyio.run(fn, backend="asyncio", backend_options=options)
