"""``aqueue worker --processes N`` and ``--reload``: a parent that runs worker processes.

The parent claims no job and opens no connection of its own: each child is a complete
``aqueue worker`` (a node of its own, with its heartbeat, its share of leadership and
rescue), started as ``python -m aqueue.cli worker ...`` with the parent's options. A
fresh interpreter per child, never a fork: a forked child would inherit the parent's
event loop and any connection the user's module opened at import.

- **Restart.** A child that exits while the parent is not stopping is started again
  after a delay doubling from ``RESTART_DELAY`` up to ``RESTART_DELAY_MAX``, reset once
  a child has stayed up for ``STABLE_AFTER``; every exit is logged with its status. A
  module that fails at import thus restarts slowly instead of spinning.
- **Stop.** On SIGTERM or SIGINT the parent sends SIGTERM to every child (each then shuts
  down gracefully: stops claiming, lets running jobs finish within ``shutdown_timeout``)
  and waits for them for ``shutdown_timeout`` plus ``EXIT_GRACE``; a child still running
  after that is killed, and its jobs are rescued by another node as after any crash.
- **Reload** (development). A poller compares the modification times of the ``.py``
  files under the current directory every ``RELOAD_POLL`` seconds; on a change every
  child is stopped as above and started again at once. A stat poller, not an OS
  notification library: no dependency, and a second is quick enough for a person.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
from anyio.abc import Process

__all__ = ["Supervisor", "child_command", "python_files"]

RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 30.0
#: A child up this long is healthy: its next crash restarts after RESTART_DELAY again.
STABLE_AFTER = 30.0
#: Beyond shutdown_timeout, for a child to flush outcomes and close its connections.
EXIT_GRACE = 10.0
RELOAD_POLL = 1.0
_SKIP_DIRS = {"__pycache__", "node_modules", "venv", "site-packages"}


def child_command(args: argparse.Namespace, label: str) -> list[str]:
    """The ``aqueue worker`` command line of one child: the parent's, less what only the
    parent does (``--processes``, ``--reload``, ``--migrate``)."""
    target = args.target or args.app
    command = [sys.executable, "-m", "aqueue.cli", "worker", target]
    for queue in args.queue:
        command += ["-q", queue]
    if args.no_queues:
        command.append("--no-queues")
    if args.verbose:
        command.append("-v")
    command += ["--summary-every", f"{args.summary_every:g}", "--process-label", label]
    return command


def python_files(root: Path) -> Iterator[Path]:
    """The ``.py`` files under ``root``, skipping hidden, cache and environment folders."""
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS]
        for name in files:
            if name.endswith(".py"):
                yield Path(directory, name)


def _snapshot(root: Path) -> dict[Path, int]:
    found: dict[Path, int] = {}
    for path in python_files(root):
        try:
            found[path] = path.stat().st_mtime_ns
        except OSError:  # deleted between the walk and the stat: a change next round
            continue
    return found


class Supervisor:
    """Keeps ``count`` children running until ``stop`` is set, then stops them all."""

    def __init__(
        self,
        command: Callable[[str], list[str]],
        count: int,
        *,
        shutdown_timeout: float,
        logger: logging.Logger,
        reload: bool = False,
        root: Path | None = None,
    ) -> None:
        self._command = command
        self._count = count
        self._grace = shutdown_timeout + EXIT_GRACE
        self._logger = logger
        self._reload = reload
        self._root = root or Path.cwd()
        self._children: dict[int, Process] = {}
        self._stopping = False
        # Children stopped for a reload start again at once, without the crash backoff.
        self._reloading: set[int] = set()
        #: pids of every child started so far, in order (tests and logs read it).
        self.started: list[int] = []

    async def run(self, stop: anyio.Event) -> None:
        async with anyio.create_task_group() as tg:
            for index in range(self._count):
                tg.start_soon(self._keep_running, index, stop)
            if self._reload:
                tg.start_soon(self._watch, stop)
            self._logger.info(
                "aqueue: supervising %d worker process(es)%s",
                self._count,
                f", reloading on changes under {self._root}" if self._reload else "",
            )
            await stop.wait()
            self._stopping = True
            self._logger.info(
                "aqueue: stopping %d worker process(es) (shutdown_timeout %gs each)",
                len(self._children),
                self._grace - EXIT_GRACE,
            )
            await self._stop_children(list(self._children))
            tg.cancel_scope.cancel()

    async def _keep_running(self, index: int, stop: anyio.Event) -> None:
        delay = RESTART_DELAY
        label = f"process {index + 1} of {self._count}"
        while not self._stopping:
            # A session of its own: Ctrl-C in the terminal reaches the parent only, which
            # sends each child one SIGTERM; a child sent both would take the second
            # signal as "stop now" and abandon its running jobs.
            process = await anyio.open_process(
                self._command(label),
                stdin=subprocess.DEVNULL,
                stdout=None,
                stderr=None,
                start_new_session=True,
            )
            self._children[index] = process
            self.started.append(process.pid)
            if self._stopping:  # started while the others were being stopped
                _signal(process, signal.SIGTERM)
            began = time.monotonic()
            # Shielded: a stopping parent must still see its child exit (run() waits).
            with anyio.CancelScope(shield=True):
                status = await process.wait()
            self._children.pop(index, None)
            if self._stopping:
                return
            if index in self._reloading:
                self._reloading.discard(index)
                continue
            if time.monotonic() - began >= STABLE_AFTER:
                delay = RESTART_DELAY
            self._logger.warning(
                "aqueue: worker %s (pid %d) exited with %s; restarting in %.1fs",
                label,
                process.pid,
                _describe(status),
                delay,
            )
            with anyio.move_on_after(delay):
                await stop.wait()
            delay = min(delay * 2, RESTART_DELAY_MAX)

    async def _stop_children(self, indexes: list[int]) -> None:
        processes = [self._children[i] for i in indexes if i in self._children]
        for process in processes:
            _signal(process, signal.SIGTERM)
        with anyio.move_on_after(self._grace):
            for process in processes:
                await process.wait()
        for process in processes:
            if process.returncode is None:
                self._logger.warning(
                    "aqueue: worker pid %d still running %.0fs after SIGTERM: killed",
                    process.pid,
                    self._grace,
                )
                _signal(process, signal.SIGKILL)
                with anyio.CancelScope(shield=True):
                    await process.wait()

    async def _watch(self, stop: anyio.Event) -> None:
        before = await anyio.to_thread.run_sync(_snapshot, self._root)
        while not stop.is_set():
            await anyio.sleep(RELOAD_POLL)
            now = await anyio.to_thread.run_sync(_snapshot, self._root)
            changed = sorted(p for p in before.keys() | now.keys() if before.get(p) != now.get(p))
            before = now
            if not changed or self._stopping:
                continue
            self._logger.warning(
                "aqueue: %s changed%s: restarting the worker(s)",
                changed[0].relative_to(self._root),
                f" (and {len(changed) - 1} more)" if len(changed) > 1 else "",
            )
            indexes = list(self._children)
            self._reloading.update(indexes)
            await self._stop_children(indexes)


def _signal(process: Process, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # exited meanwhile
        process.send_signal(signum)


def _describe(status: int) -> str:
    if status < 0:
        try:
            return f"signal {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"status {status}"
