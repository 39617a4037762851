"""A throwaway local PostgreSQL server for the demo, ``aqueue dev`` and the test suite.

Two sources of server binaries are supported:

* ``system``: an installed PostgreSQL (found via ``pg_config --bindir``, ``postgres`` on
  ``PATH`` or Debian's ``/usr/lib/postgresql/*/bin``). Preferred: fastest to start.
* ``pgserver``: the PostgreSQL build bundled in the optional ``pgserver`` wheel
  (``pip install 'aqueue[embedded]'``).

Both are run the same way: ``initdb`` into a fresh short directory under ``/tmp`` and then
``postgres`` as a direct child process listening only on a unix socket in that directory.
We deliberately do not use ``pg_ctl`` or pgserver's own server management: both detach
the server from this process, so a killed test run leaks servers, and pgserver cannot
pass server settings.

Example::

    with EmbeddedPostgres() as pg:
        conn = await asyncpg.connect(pg.url)
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import importlib.metadata
import importlib.util
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from .errors import EmbeddedPostgresError

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError", "find_system_binaries"]

_T = TypeVar("_T")

Source = Literal["auto", "system", "pgserver"]

_SUPERUSER = "postgres"
# Socket-only servers never collide on the port: each one has its own socket directory.
_PORT = 5432
_DIR_PREFIX = "aqpg-"
_OWNER_FILE = "owner.pid"
_LOG_FILE = "server.log"
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0
_INITDB_TIMEOUT = 120.0
# sun_path is 108 bytes on Linux and 104 on macOS, both including the trailing NUL.
# Over the limit the server starts but silently does not listen.
_SOCKET_PATH_MAX = 103 if sys.platform == "darwin" else 107
# A directory without an owner file is either being created right now or was left by a
# run that died within microseconds of creating it; only the latter is old.
_UNOWNED_GRACE = 60.0
_DEBIAN_ROOTS = (Path("/usr/lib/postgresql"),)

_INSTALL_HINT = (
    "Install PostgreSQL server binaries (Debian/Ubuntu: `apt-get install postgresql`; "
    "Fedora: `dnf install postgresql-server`; macOS: `brew install postgresql`; no "
    "service needs to be running) or the bundled server: `pip install 'aqueue[embedded]'` "
    "(CPython <= 3.12, not on Linux ARM). Alternatively point aqueue at an existing "
    "PostgreSQL server with a database URL."
)

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

_PR_SET_PDEATHSIG = 1
# SIGQUIT makes the postmaster do an immediate shutdown: it takes its backends down with
# it and releases shared memory and the socket. SIGKILL would leave a SysV segment behind.
_DEATH_SIGNAL = signal.SIGQUIT


@dataclass(frozen=True)
class _Binaries:
    bindir: Path
    version: str
    description: str


# --------------------------------------------------------------------------- discovery


def find_system_binaries() -> Path | None:
    """Return the bin directory of an installed PostgreSQL server, or None."""
    return _find_system_binaries(None, _DEBIAN_ROOTS)


def _find_system_binaries(search_path: str | None, roots: Sequence[Path]) -> Path | None:
    for candidate in _system_candidates(search_path, roots):
        if _is_server_bindir(candidate):
            return candidate
    return None


def _system_candidates(search_path: str | None, roots: Sequence[Path]) -> list[Path]:
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config", path=search_path)
    if pg_config is not None:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            candidates.append(Path(out))
    postgres = shutil.which("postgres", path=search_path)
    if postgres is not None:
        # Often a symlink (e.g. /usr/local/bin/postgres); initdb lives next to the target.
        candidates.append(Path(postgres).resolve().parent)
    for root in roots:
        with contextlib.suppress(OSError):
            versions = sorted(root.glob("*/bin"), key=lambda p: _version_key(p.parent.name))
            candidates.extend(reversed(versions))
    return candidates


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (-1,)


def _is_server_bindir(bindir: Path) -> bool:
    # pg_config and client tools are often installed without the server.
    return all(
        (bindir / exe).is_file() and os.access(bindir / exe, os.X_OK)
        for exe in ("postgres", "initdb")
    )


def _pgserver_bindir() -> Path | None:
    # Only locate the package: importing it has side effects (lock files, warnings about
    # XDG_RUNTIME_DIR, and as root it creates an OS user and chmods folders).
    try:
        spec = importlib.util.find_spec("pgserver")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        bindir = Path(location) / "pginstall" / "bin"
        if _is_server_bindir(bindir):
            return bindir
    return None


@functools.lru_cache(maxsize=8)
def _server_version(bindir: Path) -> str:
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmbeddedPostgresError(f"cannot run {bindir / 'postgres'}: {exc}") from exc
    match = re.search(r"\(PostgreSQL\)\s+(\S+)", out)
    if match is None:
        raise EmbeddedPostgresError(f"unexpected output of postgres --version: {out!r}")
    return match.group(1)


def _resolve_binaries(source: Source, search_path: str | None) -> _Binaries:
    roots: Sequence[Path] = _DEBIAN_ROOTS if search_path is None else ()
    if source in ("auto", "system"):
        bindir = _find_system_binaries(search_path, roots)
        if bindir is not None:
            version = _server_version(bindir)
            return _Binaries(bindir, version, f"PostgreSQL {version} (system binaries in {bindir})")
        if source == "system":
            raise EmbeddedPostgresError(
                "No PostgreSQL server binaries found (looked at `pg_config --bindir`, "
                "`postgres` on PATH and /usr/lib/postgresql/*/bin). Install them, e.g. "
                "`apt-get install postgresql` (Debian/Ubuntu), `dnf install "
                "postgresql-server` (Fedora) or `brew install postgresql` (macOS); "
                "no service needs to be running."
            )
    bindir = _pgserver_bindir()
    if bindir is not None:
        version = _server_version(bindir)
        try:
            pgserver_version = importlib.metadata.version("pgserver")
        except importlib.metadata.PackageNotFoundError:
            pgserver_version = "unknown version"
        return _Binaries(
            bindir, version, f"PostgreSQL {version} (bundled pgserver {pgserver_version})"
        )
    if source == "pgserver":
        raise EmbeddedPostgresError(
            "The optional pgserver package is not installed: "
            "`pip install 'aqueue[embedded]'` (wheels exist for CPython <= 3.12, "
            "not for Linux ARM)."
        )
    raise EmbeddedPostgresError(
        "No PostgreSQL server binaries found (looked at `pg_config --bindir`, `postgres` "
        "on PATH and /usr/lib/postgresql/*/bin) and pgserver is not installed. " + _INSTALL_HINT
    )


# ------------------------------------------------------------------- process plumbing


@dataclass(frozen=True)
class _Account:
    name: str
    uid: int
    gid: int


def _server_account() -> _Account | None:
    """The unprivileged account to run initdb/postgres as, if we are root (they refuse root)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return _Account(name, entry.pw_uid, entry.pw_gid)
    raise EmbeddedPostgresError(
        "PostgreSQL refuses to run as root and there is no 'postgres' or 'nobody' account "
        "to run it as; create one (e.g. `useradd --system postgres`) or run as a normal user."
    )


def _account_kwargs(account: _Account | None) -> dict[str, Any]:
    if account is None:
        return {}
    # Root's supplementary groups must not leak into the server.
    return {"user": account.uid, "group": account.gid, "extra_groups": []}


@functools.cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4  # type: ignore[attr-defined]
    prctl.restype = ctypes.c_int  # type: ignore[attr-defined]
    return prctl


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to signal the child when this process dies.

    subprocess runs preexec_fn after switching uid/gid, which matters: a credential change
    clears the parent-death signal. Linux only; elsewhere the atexit handler and the
    stale-directory sweep are all we have.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        # The parent may have died between fork and prctl; then no signal would ever come.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class _Spawner:
    """Starts the server processes from one thread that lives as long as the process.

    The parent-death signal fires when the *thread* that forked the child exits, not the
    process. Without this, ``await asyncio.to_thread(pg.start)`` would kill the server as
    soon as the executor retires its worker thread.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="aqueue-pg-spawner", daemon=True).start()

    def _serve(self) -> None:
        while True:
            fn, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def call(self, fn: Callable[[], _T]) -> _T:
        future: Future[_T] = Future()
        self._jobs.put((fn, future))
        return future.result()


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _get_spawner() -> _Spawner:
    global _spawner
    with _spawner_lock:
        # A forked child inherits the object but not the thread.
        if _spawner is None or _spawner.pid != os.getpid():
            _spawner = _Spawner()
        return _spawner


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # An orphaned server that nobody reaps stays a zombie; it is dead for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True
    fields = stat.rpartition(")")[2].split()
    return not fields or fields[0] != "Z"


def _tmp_base() -> Path:
    # Not tempfile.gettempdir(): TMPDIR is often long (macOS, pytest) and the socket
    # path must stay short.
    tmp = Path("/tmp")
    return tmp if tmp.is_dir() else Path(tempfile.gettempdir())


def _dir_in_use(directory: Path) -> bool:
    """Whether a /tmp/aqpg-* directory may still belong to a live run. Errs on 'yes'."""
    try:
        owner_text = (directory / _OWNER_FILE).read_text()
    except FileNotFoundError:
        owner_text = None
    except OSError:
        return True
    if owner_text is None:
        try:
            if time.time() - directory.stat().st_mtime < _UNOWNED_GRACE:
                return True
        except OSError:
            return True
    else:
        try:
            owner_pid = int(owner_text.split()[0])
        except (ValueError, IndexError):
            return True
        if _pid_alive(owner_pid):
            return True
    try:
        pid_line = (directory / "data" / "postmaster.pid").read_text().split("\n", 1)[0]
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        return _pid_alive(int(pid_line))
    except ValueError:
        return True


def _cleanup_stale_dirs(base: Path) -> None:
    for directory in base.glob(_DIR_PREFIX + "*"):
        try:
            if directory.is_symlink() or not directory.is_dir() or _dir_in_use(directory):
                continue
        except OSError:
            continue
        # Another run may be sweeping the same directory concurrently.
        shutil.rmtree(directory, ignore_errors=True)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


def _run_coroutine_in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``asyncio.run(fn())`` on a fresh thread, so it also works inside a running loop."""
    import asyncio

    result: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(fn()))
        except BaseException as exc:
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
        self._binaries: _Binaries | None = None
        self._account: _Account | None = None
        self._root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
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

    @property
    def data_dir(self) -> Path | None:
        return None if self._root is None else self._root / "data"

    def _require_binaries(self) -> _Binaries:
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
                return
            proc, root = self._proc, self._root
            self._proc = None
            self._root = None
            if proc is not None:
                self._terminate(proc)
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
                self._terminate(self._proc)
                self._proc = None
            self._launch(after_crash=True)

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database (optionally from a template) and return its URL."""
        sql = f"CREATE DATABASE {_quote_ident(name)}"
        if template is not None:
            sql += f" TEMPLATE {_quote_ident(template)}"
        self._execute(sql)
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

    def _execute(self, sql: str) -> None:
        import asyncpg

        url = self.url

        async def run() -> None:
            conn = await asyncpg.connect(url, timeout=_START_TIMEOUT)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        _run_coroutine_in_thread(run)

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()

    def _start_fresh(self) -> None:
        base = _tmp_base()
        _cleanup_stale_dirs(base)
        binaries = _resolve_binaries(self._source, self._search_path)
        account = _server_account()
        root = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX, dir=base))
        try:
            (root / _OWNER_FILE).write_text(f"{os.getpid()}\n")
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
                preexec_fn=_die_with_parent(signal.SIGKILL),
                **_account_kwargs(self._account),
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
                self._terminate(proc)
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
                self._terminate(proc)
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
        account_kwargs = _account_kwargs(self._account)

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
                    preexec_fn=_die_with_parent(_DEATH_SIGNAL),
                    **account_kwargs,
                )

        try:
            return _get_spawner().call(popen)
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

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)  # "fast" shutdown: disconnect clients
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()
