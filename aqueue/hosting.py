"""``aqueue.lifespan``: an App inside another program's lifespan (a FastAPI or Starlette
app), with or without a worker in the same process.

Written by hand, a lifespan that runs a worker only when a setting says so has to enter
``app.worker()`` on one branch and not on the other, around one ``yield``; this is that
code once. Leaving it stops the worker gracefully (``shutdown_timeout``), then closes the
pool. An inline App (``testing="inline"``) runs no worker: its jobs ran at enqueue.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING

from .flow import Queue

if TYPE_CHECKING:
    from .app import App

__all__ = ["Lifespan", "lifespan"]


class Lifespan:
    """What ``aqueue.lifespan(...)`` returns: an async context manager, and a callable
    taking the web app, so it can be given to ``FastAPI(lifespan=...)`` as it is."""

    def __init__(self, app: App, *, worker: bool, queues: Mapping[str, int | Queue] | None) -> None:
        self._app = app
        self._worker = worker
        self._queues = queues
        self._stack: contextlib.AsyncExitStack | None = None

    def __call__(self, web_app: object) -> Lifespan:
        """A fresh lifespan for ``web_app`` (Starlette calls this at startup)."""
        return Lifespan(self._app, worker=self._worker, queues=self._queues)

    async def __aenter__(self) -> None:
        if self._stack is not None:
            raise RuntimeError("this aqueue.lifespan is already entered; call it for another")
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self._app)
            if self._worker and self._app.testing != "inline":
                await stack.enter_async_context(self._app.worker(self._queues))
            self._stack = stack.pop_all()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        if stack is None:
            return None
        return await stack.__aexit__(exc_type, exc, traceback)


def lifespan(
    app: App, *, worker: bool = True, queues: Mapping[str, int | Queue] | None = None
) -> Lifespan:
    """Open ``app`` for the lifespan of a web app and, with ``worker`` (the default), run a
    worker in the same process for ``queues`` (default: ``app.worker_queues()``).

    Give it to FastAPI as it is, or enter it inside a lifespan of your own::

        api = FastAPI(lifespan=aqueue.lifespan(jobs, worker=settings.run_worker))

        @contextlib.asynccontextmanager
        async def lifespan(api: FastAPI) -> AsyncIterator[None]:
            async with aqueue.lifespan(jobs, worker=settings.run_worker):
                yield
    """
    return Lifespan(app, worker=worker, queues=queues)
