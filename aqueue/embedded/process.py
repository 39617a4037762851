"""Child-process plumbing for the throwaway server: who it runs as, how it dies with us,
and sweeping the folders of runs that died without cleaning up.

The server must never outlive the Python process that started it: a killed test run must
not leave servers behind. On Linux the kernel does that for us (a parent-death signal set
in the child between fork and exec); everywhere, ``stop()`` and an atexit hook do it, and
the next start removes any folder a dead run left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import EmbeddedPostgresError

__all__ = [
    "DEATH_SIGNAL",
    "DIR_PREFIX",
    "OWNER_FILE",
    "Account",
    "Spawner",
    "account_kwargs",
    "cannot_run_as",
    "cleanup_stale_dirs",
    "die_with_parent",
    "pid_alive",
    "server_account",
    "terminate",
    "tmp_base",
]

_T = TypeVar("_T")
_Job = tuple[Callable[[], Any], Future[Any]]

DIR_PREFIX = "aqpg-"
OWNER_FILE = "owner.pid"
_STOP_TIMEOUT = 10.0
# A directory without an owner file is either being created right now or was left by a
# run that died within microseconds of creating it; only the latter is old.
_UNOWNED_GRACE = 60.0

_PR_SET_PDEATHSIG = 1
# SIGQUIT makes the postmaster do an immediate shutdown: it takes its backends down with
# it and releases shared memory and the socket. SIGKILL would leave a SysV segment behind.
DEATH_SIGNAL = signal.SIGQUIT


# ------------------------------------------------------------------------- accounts


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


def server_account() -> Account | None:
    """The unprivileged account to run initdb/postgres as, if we are root (they refuse root)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return Account(name, entry.pw_uid, entry.pw_gid)
    raise EmbeddedPostgresError(
        "PostgreSQL refuses to run as root and there is no 'postgres' or 'nobody' account "
        "to run it as; create one (e.g. `useradd --system postgres`) or run as a normal user."
    )


def account_kwargs(account: Account | None) -> dict[str, Any]:
    """``subprocess`` arguments that run the child as ``account`` (nothing when None)."""
    if account is None:
        return {}
    # Root's supplementary groups must not leak into the server.
    return {"user": account.uid, "group": account.gid, "extra_groups": []}


def cannot_run_as(account: Account, exe: Path) -> str | None:
    """Why ``exe --version`` fails when run as ``account``, or None when it works.

    Asking the account itself, rather than reading mode bits of every folder above
    ``exe``, also honours ACLs, noexec mounts and the shared libraries ``exe`` loads.
    """
    try:
        result = subprocess.run(
            [str(exe), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            **account_kwargs(account),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if result.returncode != 0:
        return (result.stderr or result.stdout).strip() or f"exit code {result.returncode}"
    return None


# ------------------------------------------------------------- dying with the parent


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


def die_with_parent(sig: int) -> Callable[[], None] | None:
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


class Spawner:
    """A thread that forks the server, owned by one ``EmbeddedPostgres`` from ``start()``
    to ``stop()``.

    The parent-death signal fires when the *thread* that forked the child exits, not when
    the process does. Forking from whatever thread calls ``start()`` would tie the server's
    life to that thread: ``await asyncio.to_thread(pg.start)`` would lose the server as
    soon as the executor retires its worker. So every fork of the postmaster happens on
    this thread, which ends only in ``stop()``, after the server has been reaped.

    The thread is a daemon on purpose: at interpreter exit Python joins non-daemon threads
    *before* it runs atexit hooks, and the hook that stops the server (and then this
    thread) would never run.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    @property
    def running(self) -> bool:
        # A forked child inherits this object but not the thread.
        return self._thread is not None and self._pid == os.getpid() and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread; no-op while it runs."""
        if self.running:
            return
        self._pid = os.getpid()
        # A fresh queue: one inherited through fork may hold a job of the parent's.
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._serve, args=(self._jobs,), name="aqueue-pg-spawner", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """End the thread. Idempotent, and safe on a spawner that never started.

        Call it only once the children it forked are gone: its exit sends them the
        parent-death signal.
        """
        thread, self._thread = self._thread, None
        if thread is None or self._pid != os.getpid():
            return
        self._jobs.put(None)
        thread.join(_STOP_TIMEOUT)

    def call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the spawner thread and return its result (or raise its error)."""
        if not self.running:
            raise RuntimeError("the spawner thread is not running")
        future: Future[_T] = Future()
        self._jobs.put((fn, future))
        return future.result()

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[_Job | None]) -> None:
        while (job := jobs.get()) is not None:
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, which re-raises it
                future.set_exception(exc)


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT: disconnect clients), SIGKILL after a bound; then reap."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


# ------------------------------------------------------------------ stale folders


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (zombies count as dead)."""
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


def tmp_base() -> Path:
    """Where server folders go."""
    # Not tempfile.gettempdir(): TMPDIR is often long (macOS, pytest) and the socket
    # path must stay short.
    tmp = Path("/tmp")
    return tmp if tmp.is_dir() else Path(tempfile.gettempdir())


def _dir_in_use(directory: Path) -> bool:
    """Whether a /tmp/aqpg-* directory may still belong to a live run. Errs on 'yes'."""
    try:
        owner_text = (directory / OWNER_FILE).read_text()
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
        if pid_alive(owner_pid):
            return True
    try:
        pid_line = (directory / "data" / "postmaster.pid").read_text().split("\n", 1)[0]
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        return pid_alive(int(pid_line))
    except ValueError:
        return True


def cleanup_stale_dirs(base: Path) -> None:
    """Remove the server folders of runs that are gone (their owner and server both dead)."""
    for directory in base.glob(DIR_PREFIX + "*"):
        try:
            if directory.is_symlink() or not directory.is_dir() or _dir_in_use(directory):
                continue
        except OSError:
            continue
        # Another run may be sweeping the same directory concurrently.
        shutil.rmtree(directory, ignore_errors=True)
