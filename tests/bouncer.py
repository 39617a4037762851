"""A real PgBouncer (Debian's ``pgbouncer`` binary) in front of the suite's server.

The test starts it itself: its own folder, a free port on 127.0.0.1, ``pool_mode =
transaction`` and a small server pool, and the upstream taken from the suite's database
URL (the throwaway server's unix socket, or whatever ``AQUEUE_TEST_DATABASE_URL`` names).
As root it runs as the account the throwaway server runs as, because PgBouncer refuses
root. ``restart()`` kills it (SIGTERM: immediate shutdown, every connection dropped) and
starts it again on the same port, as an operator's restart would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import aqueue
from aqueue.embedded.process import account_kwargs, server_account

__all__ = ["ROLE", "SERVER_POOL", "Bouncer", "create_role", "find_pgbouncer"]

#: The suite's bouncer: a server pool smaller than the client connections of the tests
#: (three processes with pools of 4 + 2 each), so PgBouncer really multiplexes them.
SERVER_POOL = 4
#: The role PgBouncer logs in as: its server connections are the backends of this role.
ROLE = "aqueue_bouncer"

_START_TIMEOUT = 15.0


def find_pgbouncer() -> str | None:
    """The binary, also where Debian puts it (/usr/sbin, not on every PATH)."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None


async def create_role(url: str) -> None:
    """Create ``ROLE`` on the server of ``url`` unless it exists."""
    app = aqueue.App(url)
    async with app, app.transaction() as conn:
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", ROLE)
        if not exists:
            await conn.execute(f"CREATE ROLE {ROLE} LOGIN SUPERUSER")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _upstream(url: str) -> tuple[str, int, str, str]:
    """(host or socket folder, port, user, database) of a postgresql:// URL."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "localhost"])[0]
    port = int(query.get("port", [parts.port or 5432])[0])
    user = unquote(parts.username or os.environ.get("USER", "postgres"))
    database = unquote(parts.path.lstrip("/")) or user
    return host, port, user, database


class Bouncer:
    def __init__(
        self, binary: str, upstream_url: str, *, pool_size: int, role: str | None = None
    ) -> None:
        """``role`` (which must exist upstream; default: the URL's user) is who PgBouncer
        logs in as and who the clients name: a role of its own makes its backends in
        ``pg_stat_activity`` PgBouncer's and no one else's."""
        self.binary = binary
        self.pool_size = pool_size
        self.port = _free_port()
        self._host, self._upstream_port, user, self.database = _upstream(upstream_url)
        self.user = role or user
        self._account = server_account() if os.geteuid() == 0 else None
        self.folder = Path(tempfile.mkdtemp(prefix="aqueue-pgb-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _write_config(self) -> None:
        (self.folder / "users.txt").write_text(f'"{self.user}" ""\n')
        (self.folder / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{self.database} = host={self._host} port={self._upstream_port} "
            f"dbname={self.database} user={self.user}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.folder / 'users.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            "reserve_pool_size = 0\n"
            "max_client_conn = 1000\n"
            f"logfile = {self.folder / 'pgbouncer.log'}\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
            # A server connection broken by a restart of PgBouncer is not retried for 15 s
            # by default; the tests restart on purpose.
            "server_login_retry = 1\n"
        )
        if self._account is not None:
            for path in (self.folder, *self.folder.iterdir()):
                os.chown(path, self._account.uid, self._account.gid)

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [self.binary, str(self.folder / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **account_kwargs(self._account),
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited at start:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"pgbouncer did not listen within {_START_TIMEOUT}s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.folder / "pgbouncer.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
