"""``EmbeddedPostgres``: initdb into a fresh folder, run ``postgres`` as our child, stop it.

The server folder ``/tmp/aqpg-*`` holds the data directory, the unix socket and the
server log; it is short so the socket path fits the 107-byte limit, and it carries an
owner file so a later run can tell a dead run's folder from a live one's.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

from ..db import server_admin
from ..errors import EmbeddedPostgresError
from .binary_cache import runnable_binaries
from .discovery import Binaries, Source, resolve_binaries
from .process import (
    DEATH_SIGNAL,
    DIR_PREFIX,
    OWNER_FILE,
    Account,
    Spawner,
    account_kwargs,
    cleanup_stale_dirs,
    die_with_parent,
    server_account,
    terminate,
    tmp_base,
)

__all__ = ["EmbeddedPostgres"]

_T = TypeVar("_T")

_SUPERUSER = "postgres"
# Socket-only servers never collide on the port: each one has its own socket directory.
_PORT = 5432
_LOG_FILE = "server.log"
_START_TIMEOUT = 30.0
_INITDB_TIMEOUT = 120.0
# sun_path is 108 bytes on Linux and 104 on macOS, both including the trailing NUL.
# Over the limit the server starts but silently does not listen.
_SOCKET_PATH_MAX = 103 if sys.platform == "darwin" else 107

# Throwaway data: durability buys nothing and roughly halves insert throughput.
_NON_DURABLE_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
_BASE_SETTINGS = {
    "listen_addresses": "",
    # Test suites open several pools at once; the default of 100 runs out.
    "max_connections": "200",
}


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


def _run_coroutine_in_thread(fn: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run ``asyncio.run(fn())`` on a fresh thread, so it also works inside a running loop."""
    result: list[_T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(fn()))
        except BaseException as exc:  # handed to the calling thread, which re-raises it
            errors.append(exc)

    thread = threading.Thread(target=target, name="aqueue-pg-sql")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


# ------------------------------------------------------------------------- the server


class EmbeddedPostgres:
    """A throwaway PostgreSQL server in a temporary directory, reachable over a unix socket.

    ``durable=False`` (default) turns off fsync, synchronous_commit and full_page_writes:
    the data is thrown away anyway. ``durable=True`` keeps PostgreSQL's defaults, for
    quoting realistic numbers. ``settings`` are extra server settings (``-c key=value``).

    When the Python process dies (even by SIGKILL, on Linux) the server dies with it; the
    directory it leaves behind is removed by the next ``start()`` of any instance.

    As root, the server runs as the ``postgres`` account (or ``nobody``). When that account
    cannot reach pgserver's bundle (a virtualenv below a 0700 folder), it runs a root-owned
    copy of it under ``/tmp`` instead (``binary_cache``); the user's folders are left alone.
    """

    def __init__(
        self,
        *,
        source: Source = "auto",
        settings: Mapping[str, str] | None = None,
        durable: bool = False,
        _search_path: str | None = None,
    ) -> None:
        """``_search_path`` is for tests: when given, system binaries are looked for only
        in these ``os.pathsep``-separated directories (not PATH or /usr/lib/postgresql)."""
        if source not in ("auto", "system", "pgserver"):
            raise ValueError(f"unknown source {source!r}")
        self._source: Source = source
        self._settings = dict(settings or {})
        self._durable = durable
        self._search_path = _search_path
        self._lock = threading.RLock()
        self._binaries: Binaries | None = None
        self._account: Account | None = None
        self._root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        # Runs from start() to stop(): the postmaster dies when the thread that forked it
        # exits (see Spawner).
        self._spawner = Spawner()
        self._owner_pid = os.getpid()
        self._url: str | None = None

    # -- public properties

    @property
    def url(self) -> str:
        """Connection URL of the ``postgres`` database, for asyncpg or libpq."""
        if self._url is None:
            raise EmbeddedPostgresError("the server has not been started")
        return self._url

    @property
    def version(self) -> str:
        """Server version, e.g. ``"15.18"``."""
        return self._require_binaries().version

    @property
    def source_description(self) -> str:
        """Human-readable origin, e.g. ``"PostgreSQL 15.18 (system binaries in ...)"``."""
        return self._require_binaries().description

    @property
    def pid(self) -> int | None:
        """PID of the postmaster while it runs (for fault-injection tests)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def socket_dir(self) -> Path | None:
        """The temporary directory holding the socket, data and log; None when stopped."""
        return self._root

    def _require_binaries(self) -> Binaries:
        if self._binaries is None:
            raise EmbeddedPostgresError("the server has not been started")
        return self._binaries

    # -- lifecycle

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server (blocking). No-op if it is running; relaunches it on the same
        directory if it died."""
        with self._lock:
            if self._root is not None and self._owner_pid == os.getpid():
                if self._proc is not None and self._proc.poll() is None:
                    return
                self._launch(after_crash=True)
                return
            self._start_fresh()

    def stop(self) -> None:
        """Fast shutdown, then remove the temporary directory. Idempotent."""
        with self._lock:
            atexit.unregister(self._stop_at_exit)
            if self._owner_pid != os.getpid():
                # A forked child must not stop its parent's server or delete its files.
                self._proc = None
                self._root = None
                self._spawner.stop()  # only forgets the parent's thread
                return
            proc, root = self._proc, self._root
            self._proc = None
            self._root = None
            if proc is not None:
                terminate(proc)
            # Only now: the spawner's exit would signal a server still running.
            self._spawner.stop()
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)

    def restart(self) -> None:
        """Fast shutdown and start again on the same data directory and socket; ``url``
        stays valid and the data persists."""
        with self._lock:
            if self._root is None or self._owner_pid != os.getpid():
                self.start()
                return
            if self._proc is not None:
                terminate(self._proc)
                self._proc = None
            self._launch(after_crash=True)

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database (optionally from a template) and return its URL.

        Blocking, and safe to call from inside a running event loop (async fixtures do).
        """
        url = self.url
        _run_coroutine_in_thread(
            lambda: server_admin.create_database(
                url, name, template, connect_timeout=_START_TIMEOUT
            )
        )
        return self._url_for(name)

    def __repr__(self) -> str:
        state = f"url={self._url!r}" if self._root is not None else "stopped"
        return f"<EmbeddedPostgres source={self._source!r} {state}>"

    # -- internals

    def _url_for(self, database: str) -> str:
        assert self._root is not None
        return (
            f"postgresql://{_SUPERUSER}@/{quote(database, safe='')}"
            f"?host={quote(str(self._root), safe='/')}&port={_PORT}"
        )

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()

    def _start_fresh(self) -> None:
        base = tmp_base()
        cleanup_stale_dirs(base)
        binaries = resolve_binaries(self._source, self._search_path)
        account = server_account()
        # As root the server runs as `account`, which may not reach the binaries.
        binaries = runnable_binaries(binaries, account, base)
        root = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=base))
        try:
            (root / OWNER_FILE).write_text(f"{os.getpid()}\n")
            socket_path = root / f".s.PGSQL.{_PORT}"
            if len(os.fsencode(socket_path)) > _SOCKET_PATH_MAX:
                raise EmbeddedPostgresError(f"unix socket path too long: {socket_path}")
            if account is not None:
                os.chown(root, account.uid, account.gid)
            self._binaries, self._account = binaries, account
            self._owner_pid = os.getpid()
            self._root = root
            self._url = self._url_for("postgres")
            self._initdb()
            self._launch(after_crash=False)
        except BaseException:
            self._root = None
            self._spawner.stop()
            shutil.rmtree(root, ignore_errors=True)
            raise
        atexit.register(self._stop_at_exit)

    def _permission_hint(self) -> str:
        if self._account is None or self._binaries is None:
            return ""
        return (
            f"\n(Running as root, so PostgreSQL runs as the '{self._account.name}' account, "
            f"which must be able to read and execute {self._binaries.bindir} and every "
            "folder above it.)"
        )

    def _initdb(self) -> None:
        assert self._binaries is not None and self._root is not None
        cmd = [
            str(self._binaries.bindir / "initdb"),
            "-D",
            str(self._root / "data"),
            "-U",
            _SUPERUSER,
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            # The C locale always exists; the caller's LANG may name one that does not.
            "--locale=C",
        ]
        try:
            result = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_INITDB_TIMEOUT,
                preexec_fn=die_with_parent(signal.SIGKILL),
                **account_kwargs(self._account),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise EmbeddedPostgresError(f"initdb failed: {exc}{self._permission_hint()}") from exc
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"initdb failed with exit code {result.returncode}:\n"
                f"{result.stdout}{result.stderr}{self._permission_hint()}"
            )

    def _server_command(self) -> list[str]:
        assert self._binaries is not None and self._root is not None
        settings = dict(_BASE_SETTINGS)
        if not self._durable:
            settings.update(_NON_DURABLE_SETTINGS)
        settings.update(self._settings)
        cmd = [
            str(self._binaries.bindir / "postgres"),
            "-D",
            str(self._root / "data"),
            "-p",
            str(_PORT),
            "-k",
            str(self._root),
        ]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        return cmd

    def _launch(self, *, after_crash: bool) -> None:
        """Start postgres on the existing data directory and wait until it accepts connections."""
        assert self._root is not None
        self._spawner.start()
        cmd = self._server_command()
        log_path = self._root / _LOG_FILE
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            log_offset = log_path.stat().st_size if log_path.exists() else 0
            proc = self._spawn(cmd, log_path)
            self._proc = proc
            try:
                self._wait_ready(proc, deadline)
                return
            except EmbeddedPostgresError:
                self._proc = None
                terminate(proc)
                # After a crash, orphaned backends of the old server keep its shared memory
                # attached for a moment and the new postmaster refuses to start.
                if (
                    after_crash
                    and time.monotonic() < deadline
                    and self._shmem_busy(log_path, log_offset)
                ):
                    time.sleep(0.05)
                    continue
                raise
            except BaseException:
                self._proc = None
                terminate(proc)
                raise

    @staticmethod
    def _shmem_busy(log_path: Path, offset: int) -> bool:
        try:
            with log_path.open("rb") as f:
                f.seek(offset)
                return b"is still in use" in f.read()
        except OSError:
            return False

    def _spawn(self, cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        as_account = account_kwargs(self._account)

        def popen() -> subprocess.Popen[bytes]:
            with log_path.open("ab") as log:
                return subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Own session: a Ctrl-C meant for the app must not shut the database
                    # down under it while it is still finishing jobs.
                    start_new_session=True,
                    preexec_fn=die_with_parent(DEATH_SIGNAL),
                    **as_account,
                )

        try:
            return self._spawner.call(popen)
        except OSError as exc:
            raise EmbeddedPostgresError(
                f"cannot start {cmd[0]}: {exc}{self._permission_hint()}"
            ) from exc

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        assert self._root is not None
        pid_file = self._root / "data" / "postmaster.pid"
        socket_path = self._root / f".s.PGSQL.{_PORT}"
        log_path = self._root / _LOG_FILE
        delay = 0.002
        while True:
            code = proc.poll()
            if code is not None:
                raise EmbeddedPostgresError(
                    f"PostgreSQL exited with code {code} during startup; server log:\n"
                    f"{_log_tail(log_path)}{self._permission_hint()}"
                )
            if socket_path.exists() and self._pid_file_ready(pid_file, proc.pid):
                return
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"PostgreSQL did not become ready within {_START_TIMEOUT:.0f} s; "
                    f"server log:\n{_log_tail(log_path)}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    @staticmethod
    def _pid_file_ready(pid_file: Path, pid: int) -> bool:
        # Line 1 is the postmaster's pid (a file left by a crashed server has another),
        # line 8 its status, which reads "ready" once it accepts connections.
        try:
            lines = pid_file.read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"
