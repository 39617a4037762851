"""Shared plumbing for the benchmark scripts: the server, fresh databases, machine facts,
statistics, tables and JSON results.

Every script is runnable on its own (``python benchmarks/drain.py``) and importable by
``run_all.py``; both paths go through ``Bench`` here, so a scenario never has to know
whether it owns the server or borrows one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

T = TypeVar("T")


def _use_aqueue_source() -> None:
    """``AQUEUE_SRC=/some/folder`` measures the ``aqueue`` package in that folder instead of
    the installed one, e.g. a ``git archive`` snapshot of one commit while the working tree
    keeps changing. Runs at import, before anything imports aqueue; worker subprocesses
    inherit the variable and import this module first, so they measure the same code.
    The editable install's import hook is dropped: it would win over ``sys.path``.
    """
    src = os.environ.get("AQUEUE_SRC")
    if not src:
        return
    sys.path.insert(0, src)
    sys.meta_path[:] = [
        finder
        for finder in sys.meta_path
        if not getattr(finder, "__module__", "").startswith("__editable__")
    ]


_use_aqueue_source()

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# A 1-minute load average above this when a scenario starts earns its table a warning.
BUSY_LOAD = 1.0
BENCH_DIR = Path(__file__).resolve().parent

# Distributions whose versions go into every result file, so numbers can be traced back.
TRACKED_PACKAGES = (
    "aqueue",
    "asyncpg",
    "uvloop",
    "anyio",
    "pydantic",
    "pgqueuer",
    "procrastinate",
    "psycopg",
    "psycopg-binary",
    "psycopg-pool",
)


# --------------------------------------------------------------------------- event loop


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn()`` on a fresh event loop; uvloop when installed.

    Every system is measured on the same loop implementation. aqueue's and pgqueuer's CLIs
    both pick uvloop when it is installed, so that is how users run them too.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(fn())  # type: ignore[arg-type]
    return uvloop.run(fn())  # type: ignore[arg-type]


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


# --------------------------------------------------------------------------- the server


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


class Server:
    """One PostgreSQL server for a whole benchmark run.

    Either a throwaway ``EmbeddedPostgres(durable=True)`` (fsync, synchronous_commit and
    full_page_writes as PostgreSQL ships them, so numbers are durable ones) or an existing
    server given by ``--url``. Every system and scenario gets a database of its own,
    dropped after use, so tables, dead tuples and triggers of one never touch another.
    """

    def __init__(self, url: str | None = None) -> None:
        self._given_url = url
        # The postmaster's pid when we run the server ourselves, for CPU accounting.
        self.pid: int | None = None
        self._embedded: Any = None
        self.admin_url = ""
        self.info: dict[str, Any] = {}

    def start(self) -> None:
        if self._given_url is not None:
            self.admin_url = self._given_url
        else:
            from aqueue.embedded import EmbeddedPostgres

            self._embedded = EmbeddedPostgres(durable=True)
            self._embedded.start()
            self.admin_url = self._embedded.url
            self.pid = self._embedded.pid
        self.info = run_async(self._describe)
        self.info["source"] = (
            self._embedded.source_description if self._embedded is not None else "--url"
        )

    def stop(self) -> None:
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _describe(self) -> dict[str, Any]:
        conn = await asyncpg.connect(self.admin_url)
        try:
            info: dict[str, Any] = {"version": await conn.fetchval("SHOW server_version")}
            for setting in (
                "fsync",
                "synchronous_commit",
                "full_page_writes",
                "shared_buffers",
                "max_connections",
                "wal_level",
            ):
                info[setting] = await conn.fetchval(f"SHOW {setting}")
            return info
        finally:
            await conn.close()

    async def create_database(self, label: str) -> str:
        """A fresh, empty database; returns its URL. Names are unique per call so that runs
        against a shared ``--url`` server never collide."""
        # Lazily, like every aqueue import here: _use_aqueue_source() must run first.
        from aqueue.db.queries import quote_ident

        name = f"aqb_{label}_{uuid.uuid4().hex[:8]}"[:63]
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f"CREATE DATABASE {quote_ident(name)}")
        finally:
            await conn.close()
        return _with_database(self.admin_url, name)

    async def drop_database(self, url: str) -> None:
        from aqueue.db.queries import quote_ident

        name = urlsplit(url).path.lstrip("/")
        conn = await asyncpg.connect(self.admin_url)
        try:
            # FORCE: a worker that failed to shut down must not keep the database alive.
            await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        finally:
            await conn.close()


# --------------------------------------------------------------------------- machine facts


def machine_facts() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count() or 0
    versions = {}
    for package in TRACKED_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return {
        "aqueue_source": aqueue_source(),
        "nproc": nproc,
        "cpu_model": cpu_model or platform.processor() or "unknown",
        "ram_gib": mem_total_gib,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "event_loop": loop_name(),
        "packages": versions,
    }


def aqueue_source() -> dict[str, Any]:
    """Which aqueue was measured: its folder and, inside a git checkout, the commit and
    whether aqueue/ had uncommitted changes (numbers of a dirty tree are not reproducible).
    """
    import subprocess

    import aqueue

    folder = Path(aqueue.__file__).resolve().parent
    info: dict[str, Any] = {"path": str(folder)}
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return info
    info.update({"commit": commit, "dirty": bool(dirty)})
    return info


def describe_machine(machine: dict[str, Any], server: dict[str, Any]) -> str:
    source = machine.get("aqueue_source", {})
    where = source.get("path", "?")
    if "commit" in source:
        where += f" at {source['commit']}" + (" + uncommitted changes" if source["dirty"] else "")
    return (
        f"aqueue:  {where}\n"
        f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), "
        f"{machine['ram_gib']} GiB RAM, Python {machine['python']}, {machine['event_loop']}\n"
        f"server:  PostgreSQL {server.get('version')} ({server.get('source')}); "
        f"fsync={server.get('fsync')} synchronous_commit={server.get('synchronous_commit')} "
        f"full_page_writes={server.get('full_page_writes')} "
        f"shared_buffers={server.get('shared_buffers')}"
    )


# --------------------------------------------------------------------------- CPU use


class CpuMeter:
    """CPU seconds used by this process and by the PostgreSQL server (postmaster and
    backends, when we started it) between ``start()`` and ``stop()``.

    Tells a client-bound run (this process near 100% of a core) from a server-bound one.
    Needs psutil for the server side; backends that exit before ``stop()`` are missed.
    """

    def __init__(self, server_pid: int | None) -> None:
        self._server_pid = server_pid
        self._self_start = 0.0
        self._server_start: dict[int, float] = {}
        self._wall_start = 0.0

    def _server_times(self) -> dict[int, float]:
        if self._server_pid is None:
            return {}
        try:
            import psutil
        except ImportError:
            return {}
        times: dict[int, float] = {}
        try:
            root = psutil.Process(self._server_pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    cpu = proc.cpu_times()
                    times[proc.pid] = cpu.user + cpu.system
        except psutil.Error:
            return {}
        return times

    def start(self) -> None:
        self._wall_start = time.perf_counter()
        self._self_start = time.process_time()
        self._server_start = self._server_times()

    def stop(self) -> dict[str, float | None]:
        wall = time.perf_counter() - self._wall_start
        client = time.process_time() - self._self_start
        now = self._server_times()
        server = (
            sum(cpu - self._server_start.get(pid, 0.0) for pid, cpu in now.items()) if now else None
        )
        return {
            "wall_s": wall,
            "client_cpu_s": client,
            "client_cpu_pct": 100 * client / wall if wall else None,
            "server_cpu_s": server,
            "server_cpu_pct": 100 * server / wall if wall and server is not None else None,
        }


# --------------------------------------------------------------------------- statistics


def median(values: Sequence[float]) -> float | None:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(clean) if clean else None


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.2f}"
    if unit == "MB":
        return f"{value:.1f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of a scenario's table: a system (or a variant of the scenario) and a metric
    measured ``len(runs)`` times. ``higher_is_better`` orients the ratio column."""

    system: str
    metric: str
    unit: str
    runs: list[float]
    higher_is_better: bool = True
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return median(self.runs)


@dataclass
class ScenarioResult:
    name: str
    title: str
    params: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    systems: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # 1/5/15-minute load averages when the scenario started and ended: other work on the
    # machine (a test suite, a build) skews numbers, and this is where it shows.
    load: dict[str, list[float]] = field(default_factory=dict)
    # The system every other row of the same metric is compared to (aqueue's label).
    baseline: str | None = None

    def row(self, system: str, metric: str) -> Row | None:
        for row in self.rows:
            if row.system == system and row.metric == metric:
                return row
        return None

    def ratio(self, row: Row) -> float | None:
        """aqueue's median divided by this row's median (same metric)."""
        if self.baseline is None or row.system == self.baseline:
            return None
        base = self.row(self.baseline, row.metric)
        if base is None or base is row or not base.median or not row.median:
            return None
        return base.median / row.median

    def table(self) -> str:
        header = ["system", "metric", "median", "runs", "aqueue/this"]
        lines = [header]
        for row in self.rows:
            ratio = self.ratio(row)
            runs = " ".join(fmt(v, row.unit) for v in row.runs) or "-"
            lines.append(
                [
                    row.system,
                    f"{row.metric} ({row.unit}, {'higher' if row.higher_is_better else 'lower'}"
                    " is better)",
                    fmt(row.median, row.unit),
                    runs,
                    f"{ratio:.2f}x" if ratio is not None else "",
                ]
            )
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
        out = [f"== {self.title}"]
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        out.append(f"   {params}")
        for i, line in enumerate(lines):
            cells = [
                str(c).rjust(widths[j]) if j in (2, 4) else str(c).ljust(widths[j])
                for j, c in enumerate(line)
            ]
            out.append("   " + "  ".join(cells).rstrip())
            if i == 0:
                out.append("   " + "  ".join("-" * w for w in widths))
        for name, info in self.systems.items():
            if info.get("config"):
                out.append(f"   [{name}] {info['config']}")
        start_load = self.load.get("start", [0.0])[0]
        if start_load > BUSY_LOAD:
            out.append(
                f"   WARNING: load average {start_load:.2f} when this scenario started: other "
                "work on the machine may have lowered these numbers"
            )
        for note in self.notes:
            out.append(f"   note: {note}")
        for error in self.errors:
            out.append(f"   ERROR: {error}")
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "params": self.params,
            "systems": self.systems,
            "notes": self.notes,
            "errors": self.errors,
            "load_average": self.load,
            "rows": [
                {
                    "system": row.system,
                    "metric": row.metric,
                    "unit": row.unit,
                    "higher_is_better": row.higher_is_better,
                    "median": row.median,
                    "runs": row.runs,
                    "aqueue_ratio": self.ratio(row),
                    "note": row.note,
                    "extra": row.extra,
                }
                for row in self.rows
            ],
        }


def write_json(name: str, payload: dict[str, Any], out_dir: Path = RESULTS_DIR) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


# --------------------------------------------------------------------------- command line


@dataclass
class Bench:
    """What a scenario needs from its caller: the server, the options, where to write."""

    server: Server
    args: argparse.Namespace
    machine: dict[str, Any]

    @property
    def smoke(self) -> bool:
        return bool(self.args.smoke)

    @property
    def runs(self) -> int:
        return 1 if self.args.smoke else self.args.runs

    def log(self, message: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def fresh_database(self, label: str) -> str:
        return run_async(lambda: self.server.create_database(label))

    def drop_database(self, url: str) -> None:
        run_async(lambda: self.server.drop_database(url))

    @contextlib.contextmanager
    def database(self, label: str) -> Iterator[str]:
        url = self.fresh_database(label)
        try:
            yield url
        finally:
            gc.collect()
            self.drop_database(url)


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--url",
        help="use this existing PostgreSQL server (any database URL "
        "on it; fresh databases are created and dropped next to it)",
    )
    parser.add_argument("--runs", type=int, default=3, help="measured runs per system (median)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes and one run: checks that every path works (CI)",
    )
    parser.add_argument(
        "--systems",
        default="aqueue,pgqueuer,procrastinate",
        help="comma-separated systems for scenarios with peers",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for JSON results")
    return parser


def result_payload(bench: Bench, result: ScenarioResult) -> dict[str, Any]:
    return {
        "scenario": result.to_json(),
        "machine": bench.machine,
        "server": bench.server.info,
        "smoke": bench.smoke,
        "runs": bench.runs,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def run_scenario(scenario: Callable[[Bench], ScenarioResult], bench: Bench) -> ScenarioResult:
    """Run one scenario, recording the machine's load around it."""
    start = load_average()
    result = scenario(bench)
    result.load = {"start": start, "end": load_average()}
    return result


def main_for(
    name: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    scenario: Callable[[Bench], ScenarioResult],
    argv: Sequence[str] | None = None,
) -> int:
    """The ``__main__`` of every scenario script: parse, start the server, run, print, write."""
    parser = base_parser(description)
    add_arguments(parser)
    args = parser.parse_args(argv)
    machine = machine_facts()
    with Server(args.url) as server:
        bench = Bench(server, args, machine)
        print(describe_machine(machine, server.info), flush=True)
        result = run_scenario(scenario, bench)
    print(result.table(), flush=True)
    path = write_json(name, result_payload(bench, result), args.out)
    print(f"   JSON: {path}", flush=True)
    return 1 if result.errors else 0


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.002
) -> None:
    """Poll ``predicate`` until true; ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.perf_counter() + timeout
    while not await predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"condition not met within {timeout:.0f}s")
        await asyncio.sleep(interval)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
