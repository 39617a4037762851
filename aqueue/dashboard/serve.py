"""``aqueue dashboard MODULE:APP``: serve the dashboard alone, with uvicorn.

Without ``--auth`` anyone who can reach the port can retry, cancel and delete jobs, so the
server then listens on the loopback interface only and says so; binding another address
needs an auth callable (``--auth MODULE:FUNC``). The App is opened around the server's
lifetime, since there is no host application to do it.

This module is part of the command line, the one place that handles signals: SIGINT and
SIGTERM stop the server gracefully, then the App's pool is closed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio
import uvicorn

from ..errors import ConfigurationError
from .factory import create_app
from .security import AuthFn

if TYPE_CHECKING:
    from ..app import App

__all__ = ["LOOPBACK", "check_bind", "serve_async"]

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
    stop: anyio.Event,
    auth: AuthFn | None = None,
    read_only: bool = False,
    base_path: str = "",
    log_level: str = "warning",
) -> None:
    """Open ``app`` and serve its dashboard until ``stop`` is set, then close it.

    The caller decides what stops it (the ``aqueue dashboard`` command: SIGINT/SIGTERM);
    library code installs no signal handler."""
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

    async def exit_when_stopped() -> None:
        await stop.wait()
        server.should_exit = True

    async with app, anyio.create_task_group() as tg:
        tg.start_soon(exit_when_stopped)
        await server.serve()
        tg.cancel_scope.cancel()


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: ``stop`` ends it.

    uvicorn's handlers re-raise the signal once the server has stopped, which would
    interrupt closing the App's pool with a KeyboardInterrupt."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
