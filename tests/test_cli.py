"""The ``aqueue`` command, run as a real subprocess through its entry point."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import anyio
import pytest

import aqueue
from aqueue.cli import main
from aqueue.cli.target import parse_queues
from aqueue.testing import unique_schema

AQUEUE = [sys.executable, "-m", "aqueue.cli"]

WORKER_MODULE = textwrap.dedent(
    """
    import os
    import anyio
    import aqueue

    app = aqueue.App(os.environ["AQUEUE_DATABASE_URL"], schema=os.environ["AQ_SCHEMA"],
                     poll_interval=0.2, shutdown_timeout=10)

    @app.job
    async def double(n: int) -> int:
        return n * 2

    @app.job
    async def slow(seconds: float, started: str = "") -> str:
        if started:  # tells the test the job is in flight (claimed is not enough)
            open(started, "w").close()
        await anyio.sleep(seconds)
        return "finished"
    """
)


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AQUEUE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("command", [[], ["worker"], ["cluster"], ["migrate"], ["demo"], ["dev"]])
def test_help_for_every_command(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: aqueue" in result.stdout


def test_migrate_applies_once(aqueue_database_url: str) -> None:
    schema = unique_schema()
    first = run_cli("migrate", "--url", aqueue_database_url, "--schema", schema)
    assert first.returncode == 0, first.stderr
    assert "0001_init.sql" in first.stdout
    second = run_cli("migrate", "--url", aqueue_database_url, "--schema", schema)
    assert second.returncode == 0 and "up to date" in second.stdout


def test_migrate_with_an_app_module_uses_its_schema(
    tmp_path: Path, aqueue_database_url: str
) -> None:
    (tmp_path / "cli_jobs_migrate.py").write_text(WORKER_MODULE)
    env = {
        "AQUEUE_DATABASE_URL": aqueue_database_url,
        "AQ_SCHEMA": unique_schema(),
        "PYTHONPATH": str(tmp_path),
    }
    first = run_cli("migrate", "--app", "cli_jobs_migrate:app", env=env)
    assert first.returncode == 0, first.stderr
    assert "0001_init.sql" in first.stdout
    again = run_cli("migrate", "--app", "cli_jobs_migrate:app", env=env)
    assert again.returncode == 0 and "up to date" in again.stdout
    # The positional form names the same App.
    positional = run_cli("migrate", "cli_jobs_migrate:app", env=env)
    assert positional.returncode == 0 and "up to date" in positional.stdout
    # The same rule, and the same words, as the admin commands' --app: a usage error.
    mixed = run_cli("migrate", "--app", "cli_jobs_migrate:app", "--schema", "x", env=env)
    assert mixed.returncode == 2
    assert mixed.stderr.splitlines() == [
        "aqueue: error: --schema goes with --url; an App (MODULE:APP or --app) brings its own"
    ]


def test_unreachable_database_is_one_clear_line() -> None:
    result = run_cli("migrate", "--url", "postgresql://nobody@127.0.0.1:1/none", timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aqueue: error: cannot connect to PostgreSQL")
    assert "Traceback" not in result.stderr


def test_worker_rejects_a_target_that_is_not_an_app() -> None:
    result = run_cli("worker", "os:path")
    assert result.returncode == 1
    assert "is not an aqueue.App" in result.stderr
    result = run_cli("worker", "no_such_module_xyz:app")
    assert result.returncode == 1 and "cannot import" in result.stderr


def test_bad_queue_argument_is_rejected(tmp_path: Path, aqueue_database_url: str) -> None:
    (tmp_path / "cli_jobs_bad.py").write_text(WORKER_MODULE)
    env = {
        "AQUEUE_DATABASE_URL": aqueue_database_url,
        "AQ_SCHEMA": unique_schema(),
        "PYTHONPATH": str(tmp_path),
    }
    result = run_cli("worker", "cli_jobs_bad:app", "-q", "default=lots", env=env)
    assert result.returncode == 2 and "NAME=CONCURRENCY" in result.stderr  # like argparse's
    # A well-formed value out of range is aqueue's to refuse: exit 1, naming the rule.
    result = run_cli("worker", "cli_jobs_bad:app", "-q", "default=0", env=env)
    assert result.returncode == 1 and "concurrency" in result.stderr


async def _wait_for(predicate: Callable[[], bool], timeout: float = 20) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.05)


async def test_worker_runs_jobs_and_stops_gracefully_on_sigterm(
    tmp_path: Path, aqueue_database_url: str
) -> None:
    schema = unique_schema()
    (tmp_path / "cli_jobs.py").write_text(WORKER_MODULE)
    env = {
        **os.environ,
        "AQUEUE_DATABASE_URL": aqueue_database_url,
        "AQ_SCHEMA": schema,
        "PYTHONPATH": str(tmp_path),
    }
    app = aqueue.App(aqueue_database_url, schema=schema)

    @app.job
    async def double(n: int) -> int:
        raise AssertionError("runs in the worker process only")

    @app.job
    async def slow(seconds: float, started: str = "") -> str:
        raise AssertionError("runs in the worker process only")

    log_path = tmp_path / "worker.log"
    async with app:
        await app.migrate()
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [*AQUEUE, "worker", "cli_jobs:app", "-q", "default=4"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            job = await double.enqueue(n=21)
            done = await app.wait(job.id, timeout=30)
            assert (done.state, done.result) == (aqueue.JobState.COMPLETED, 42)

            # A job in flight when SIGTERM arrives finishes within shutdown_timeout. "In
            # flight" is the job's own word: a job merely claimed when the signal lands
            # never starts and is handed back `available` (attempt refunded), which is
            # the documented shutdown behaviour, not what this test is about.
            marker = tmp_path / "slow-started"
            running = await slow.enqueue(seconds=1.0, started=str(marker))
            await _wait_for(marker.exists)
            proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            await _wait_for(lambda: proc.poll() is not None, timeout=30)
            assert proc.returncode == 0, log_path.read_text()
            assert time.monotonic() - started < 15
            finished = await app.get_job(running.id)
            assert finished is not None
            assert (finished.state, finished.result) == (aqueue.JobState.COMPLETED, "finished")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def test_demo_runs_real_jobs_and_exits_zero() -> None:
    result = run_cli("demo", "--jobs", "200", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "flaky_sync" in result.stdout and "completed" in result.stdout
    assert "discarded" in result.stdout
    assert "hook: send_welcome" in result.stdout
    assert "200 bulk jobs" in result.stdout


def test_no_queues_excludes_queue_arguments(tmp_path: Path, aqueue_database_url: str) -> None:
    (tmp_path / "cli_jobs_noq.py").write_text(WORKER_MODULE)
    env = {
        "AQUEUE_DATABASE_URL": aqueue_database_url,
        "AQ_SCHEMA": unique_schema(),
        "PYTHONPATH": str(tmp_path),
    }
    result = run_cli("worker", "cli_jobs_noq:app", "--no-queues", "-q", "default=2", env=env)
    assert result.returncode == 2 and "exclude each other" in result.stderr
    # An App with neither persistent workers nor periodic jobs has nothing to run.
    result = run_cli("worker", "cli_jobs_noq:app", "--no-queues", "--migrate", env=env)
    assert result.returncode == 1 and "at least one queue" in result.stderr


async def test_cluster_shows_nodes_leader_and_json(
    tmp_path: Path, aqueue_database_url: str
) -> None:
    schema = unique_schema()
    (tmp_path / "cli_jobs_cluster.py").write_text(WORKER_MODULE)
    env = {
        "AQUEUE_DATABASE_URL": aqueue_database_url,
        "AQ_SCHEMA": schema,
        "PYTHONPATH": str(tmp_path),
    }
    app = aqueue.App(aqueue_database_url, schema=schema, poll_interval=0.2)

    @app.job
    async def double(n: int) -> int:
        return n * 2

    async with app:
        await app.migrate()
        async with app.worker({"default": 1}) as worker:
            await _wait_for(lambda: worker.leader is not None and worker.leader.is_leader)
            text = await anyio.to_thread.run_sync(
                lambda: run_cli("cluster", "cli_jobs_cluster:app", env=env)
            )
            assert text.returncode == 0, text.stderr
            assert f"leader: {worker.node_id[:8]}" in text.stdout
            assert "nodes (1):" in text.stdout and "[leader]" in text.stdout
            raw = await anyio.to_thread.run_sync(
                lambda: run_cli("cluster", "cli_jobs_cluster:app", "--json", env=env)
            )
            assert raw.returncode == 0, raw.stderr
            status = json.loads(raw.stdout)
            assert [n["id"] for n in status["nodes"]] == [worker.node_id]
            # ISO 8601, as every other --json prints times.
            heartbeat = status["nodes"][0]["heartbeat_at"]
            assert "T" in heartbeat and datetime.fromisoformat(heartbeat).tzinfo is not None
            assert status["nodes"][0]["queues"] == {"default": 1}
            assert [lease["name"] for lease in status["leases"]] == ["leader"]


def test_parse_queues_reads_name_equals_concurrency() -> None:
    assert parse_queues([]) == {}  # no -q: the App's own queues (App.worker_queues)
    assert parse_queues(["mail"]) == {"mail": 10}
    # The concurrency follows the last "=": a queue name may itself contain one.
    assert parse_queues(["a=b=5", "mail=2", "mail=3"]) == {"a=b": 5, "mail": 3}


def test_console_script_and_python_m_run_the_same_main() -> None:
    [script] = importlib.metadata.entry_points(group="console_scripts", name="aqueue")
    assert script.load() is main
    result = run_cli("--help")  # python -m aqueue.cli, through aqueue/cli/__main__.py
    assert result.returncode == 0 and result.stdout.startswith("usage: aqueue ")


def test_cli_loads_the_embedded_server_only_for_demo_and_dev() -> None:
    code = (
        "import sys, aqueue.cli; "
        "print(sorted(m for m in ('aqueue.embedded', 'aqueue.demo') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_only_the_cli_installs_signal_handlers() -> None:
    # STYLE: library code never installs signal handlers; the `aqueue` command does.
    package = Path(aqueue.__file__).parent
    installs = re.compile(r"open_signal_receiver|add_signal_handler|signal\.signal\(")
    found = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if installs.search(path.read_text())
    }
    assert found == {"cli/commands.py"}
