"""Fan-out of one process's notifications to whoever waits on them.

Payloads (sent by SQL in ``aqueue/db``): ``i:<queue>`` jobs became available,
``c:<id>`` cancel a running job, ``f:<id>,<id>,...`` jobs reached a final state,
``l:<lease>`` a lease was released (whoever waits for it tries to take it now).
Subscribers get callbacks that only set events; no I/O happens in the callback.
When the LISTEN connection is lost and re-established, every subscriber is woken
once, because notifications sent in between are gone and only a re-check finds them.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator

import anyio
from anyio.abc import TaskStatus

from ..errors import DatabaseError
from .listener import Listener

__all__ = ["Notifier"]

Callback = Callable[[], None]


class Notifier:
    def __init__(
        self, url: str, channel: str, *, connect_timeout: float, logger: logging.Logger
    ) -> None:
        self._listener = Listener(url, channel, self._dispatch)
        self._connect_timeout = connect_timeout
        self._logger = logger
        self._lock = anyio.Lock()
        self._queues: defaultdict[str, set[Callback]] = defaultdict(set)
        self._cancel_handlers: set[Callable[[int], None]] = set()
        self._leases: defaultdict[str, set[Callback]] = defaultdict(set)
        self._finals: defaultdict[int, set[anyio.Event]] = defaultdict(set)
        self._closed = False

    async def start(self) -> None:
        """Connect if not connected; safe to call from many tasks."""
        async with self._lock:
            if not self._listener.connected and not self._closed:
                await self._listener.connect(self._connect_timeout)

    async def close(self) -> None:
        self._closed = True
        await self._listener.close()

    # -- subscriptions ----------------------------------------------------------------------

    @contextlib.contextmanager
    def queue_subscription(self, queue: str, callback: Callback) -> Iterator[None]:
        self._queues[queue].add(callback)
        try:
            yield
        finally:
            self._queues[queue].discard(callback)
            if not self._queues[queue]:
                del self._queues[queue]

    @contextlib.contextmanager
    def lease_subscription(self, lease: str, callback: Callback) -> Iterator[None]:
        self._leases[lease].add(callback)
        try:
            yield
        finally:
            self._leases[lease].discard(callback)
            if not self._leases[lease]:
                del self._leases[lease]

    @contextlib.contextmanager
    def cancel_subscription(self, handler: Callable[[int], None]) -> Iterator[None]:
        self._cancel_handlers.add(handler)
        try:
            yield
        finally:
            self._cancel_handlers.discard(handler)

    @contextlib.contextmanager
    def final_subscription(self, job_id: int) -> Iterator[anyio.Event]:
        event = anyio.Event()
        self._finals[job_id].add(event)
        try:
            yield event
        finally:
            self._finals[job_id].discard(event)
            if not self._finals[job_id]:
                del self._finals[job_id]

    def _dispatch(self, payload: str) -> None:
        kind, _, body = payload.partition(":")
        if kind == "i":
            for callback in list(self._queues.get(body, ())):
                callback()
        elif kind == "f":
            if not self._finals:  # nobody in this process waits (app.wait): most workers
                return
            for raw in body.split(","):
                if raw.isdigit():
                    for event in list(self._finals.get(int(raw), ())):
                        event.set()
        elif kind == "l":
            for callback in list(self._leases.get(body, ())):
                callback()
        elif kind == "c" and body.isdigit():
            for handler in list(self._cancel_handlers):
                handler(int(body))

    def _wake_everyone(self) -> None:
        for callbacks in [*self._queues.values(), *self._leases.values()]:
            for callback in list(callbacks):
                callback()
        for events in list(self._finals.values()):
            for event in list(events):
                event.set()

    # -- supervision ------------------------------------------------------------------------

    async def supervise(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Re-open the LISTEN connection whenever it drops; runs until cancelled."""
        task_status.started()
        delay = 0.1
        while True:
            await self._listener.lost.wait()
            if self._closed:
                return
            self._logger.warning("aqueue: LISTEN connection lost; reconnecting")
            while True:
                try:
                    await self.start()
                except DatabaseError as exc:
                    self._logger.warning(
                        "aqueue: reconnect failed (%s); retrying in %.1fs", exc, delay
                    )
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                delay = 0.1
                self._logger.info("aqueue: LISTEN connection re-established")
                self._wake_everyone()
                break
