"""``aqueue dashboard MODULE:APP``: serve the dashboard alone, with uvicorn.

Without ``--auth`` anyone who can reach the port can retry, cancel and delete jobs, so the
server then listens on the loopback interface only and says so; binding another address
needs an auth callable (``--auth MODULE:FUNC``). The App is opened around the server's
lifetime, since there is no host application to do it.

This module is part of the command line, the one place that handles signals: SIGINT and
SIGTERM stop the server gracefully, then the App's pool is closed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import ipaddress
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import uvicorn

from ..errors import AqueueError, ConfigurationError
from .factory import create_app
from .security import AuthFn

if TYPE_CHECKING:
    from ..app import App

__all__ = ["add_command", "serve", "serve_async"]

LOOPBACK = "127.0.0.1"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, auth: AuthFn | None) -> None:
    """Refuse to expose an unauthenticated dashboard beyond this machine."""
    if auth is None and not _is_loopback(host):
        raise ConfigurationError(
            f"dashboard: refusing to listen on {host!r} without auth: anyone reaching it "
            "could retry, cancel and delete jobs. Pass an auth callable (--auth MODULE:FUNC) "
            f"or listen on {LOOPBACK}."
        )


async def serve_async(
    app: App,
    host: str = LOOPBACK,
    port: int = 8000,
    *,
    auth: AuthFn | None = None,
    read_only: bool = False,
    base_path: str = "",
    log_level: str = "warning",
) -> None:
    """Open ``app``, serve its dashboard until SIGINT or SIGTERM, then close it."""
    check_bind(host, auth)
    asgi = create_app(app, auth=auth, read_only=read_only, base_path=base_path)
    config = uvicorn.Config(asgi, host=host, port=port, log_level=log_level, lifespan="off")
    server = _Server(config)
    where = f"http://{host}:{port}{base_path}/"
    if auth is None:
        print(f"aqueue dashboard: no auth configured, listening on {where} only (this machine)")
    else:
        print(f"aqueue dashboard: listening on {where}")
    if read_only:
        print("aqueue dashboard: read-only: actions are disabled")
    sys.stdout.flush()
    async with app, anyio.create_task_group() as tg:
        tg.start_soon(_until_signal, server)
        await server.serve()
        tg.cancel_scope.cancel()


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: ``_until_signal`` stops it.

    uvicorn's handlers re-raise the signal once the server has stopped, which would
    interrupt closing the App's pool with a KeyboardInterrupt."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _until_signal(server: uvicorn.Server) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            server.should_exit = True
            return


def serve(
    app: App,
    host: str = LOOPBACK,
    port: int = 8000,
    *,
    auth: AuthFn | None = None,
    read_only: bool = False,
    base_path: str = "",
) -> None:
    """Serve the dashboard of ``app`` (blocking), e.g. from a script."""
    anyio.run(
        lambda: serve_async(app, host, port, auth=auth, read_only=read_only, base_path=base_path),
        backend="asyncio",
    )


def load_object(target: str, what: str) -> Any:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise AqueueError(f"{what}: expected MODULE:NAME (e.g. myapp.auth:check), got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AqueueError(f"{what}: cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise AqueueError(f"{what}: {module_name!r} has no {attr!r}") from None


def add_command(subparsers: Any, load_app: Callable[[str], App]) -> None:
    """Register ``aqueue dashboard`` on the ``aqueue`` parser's sub-commands."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "dashboard",
        help="serve the web dashboard of an App",
        description="Serve the web dashboard of MODULE:APP with uvicorn until Ctrl-C. "
        f"Without --auth it listens on {LOOPBACK} only.",
    )
    p.add_argument("app", metavar="MODULE:APP", help="where the App lives, e.g. myapp.jobs:app")
    p.add_argument("--host", default=LOOPBACK, help=f"address to listen on (default {LOOPBACK})")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument(
        "--auth",
        metavar="MODULE:FUNC",
        help="auth(request) -> bool, sync or async; required to listen beyond loopback",
    )
    p.add_argument("--read-only", action="store_true", help="show everything, allow no action")
    p.add_argument("--base-path", default="", help="URL prefix added by a reverse proxy")

    async def handler(args: argparse.Namespace) -> int:
        auth = load_object(args.auth, "--auth") if args.auth else None
        if auth is not None and not callable(auth):
            raise AqueueError(f"--auth: {args.auth!r} is not callable")
        await serve_async(
            load_app(args.app),
            args.host,
            args.port,
            auth=auth,
            read_only=args.read_only,
            base_path=args.base_path,
        )
        return 0

    p.set_defaults(handler=handler)
