"""One dedicated LISTEN connection, outside the pool.

asyncpg calls the notification callback on the event loop; the callback only hands the
payload on (the subscriber sets events), never does I/O. When the server drops the
connection, ``lost`` is set so a supervisor can reconnect and make everyone re-poll.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import asyncpg

from ..bounds import LISTEN_CLOSE_TIMEOUT
from ..errors import DatabaseError
from .connector import describe_url

__all__ = ["Listener"]


class Listener:
    def __init__(self, url: str, channel: str, on_payload: Callable[[str], None]) -> None:
        self._url = url
        self._channel = channel
        self._on_payload = on_payload
        self._conn: asyncpg.Connection | None = None
        self.lost = anyio.Event()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def connect(self, timeout: float) -> None:
        if self.connected:
            return
        self.lost = anyio.Event()
        try:
            conn = await asyncpg.connect(
                self._url, timeout=timeout, server_settings={"application_name": "aqueue-listen"}
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseError(
                f"cannot open the LISTEN connection to {describe_url(self._url)}: {exc}"
            ) from None
        conn.add_termination_listener(self._terminated)
        try:
            await conn.add_listener(self._channel, self._notified)
        except (
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
        ) as exc:
            # The server went away between connect and LISTEN (a restart in progress): the
            # supervisor must see this as a failed attempt and retry, not crash.
            conn.terminate()
            raise DatabaseError(f"cannot LISTEN on {describe_url(self._url)}: {exc}") from None
        self._conn = conn

    def _notified(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        self._on_payload(str(payload))

    def _terminated(self, conn: Any) -> None:
        self.lost.set()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        with anyio.move_on_after(LISTEN_CLOSE_TIMEOUT, shield=True):
            try:
                await conn.close()
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass
        conn.terminate()
