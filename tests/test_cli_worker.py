"""``aqueue worker`` as a user meets it: what it says, which queues it serves, and its
supervised processes (``--processes``, ``--reload``), run as real subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import aqueue
from aqueue.cli import main
from aqueue.cli.target import processes_count
from aqueue.testing import unique_schema
from tests.support import eventually

MODULE = textwrap.dedent(
    """
    import os
    import anyio
    import aqueue

    app = aqueue.App(os.environ["AQUEUE_DATABASE_URL"], schema=os.environ["AQ_SCHEMA"],
                     poll_interval=0.2, heartbeat_interval=0.25, node_ttl=3,
                     shutdown_timeout=10)

    @app.job(queue="mail")
    async def greet(ctx: aqueue.JobContext, name: str) -> str:
        ctx.logger.info("greeting %s from the job", name)
        return "hello " + name

    @app.job(max_attempts=1)
    async def broken() -> None:
        raise RuntimeError("the printer is on fire")

    @app.job
    async def slow(started: str) -> str:
        open(started, "w").close()
        await anyio.sleep(1.0)
        return "finished"
    """
)


class Worker:
    """One ``aqueue worker ...`` subprocess whose output goes to a file."""

    def __init__(self, cwd: Path, env: dict[str, str], *args: str) -> None:
        self.log = cwd / f"worker-{len(list(cwd.glob('worker-*.log')))}.log"
        with self.log.open("w") as out:
            # A session of its own, like a shell's foreground job: killpg is Ctrl-C.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aqueue.cli", "worker", *args],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def text(self) -> str:
        return self.log.read_text()

    async def says(self, words: str) -> None:
        await eventually(lambda: words in self.text, what=f"{words!r} in the worker's log")

    async def exits(self, timeout: float = 40) -> int:
        await eventually(lambda: self.proc.poll() is not None, timeout=timeout, what="exit")
        return self.proc.returncode


@pytest.fixture
def project(tmp_path: Path, aqueue_database_url: str) -> Iterator[tuple[Path, dict[str, str]]]:
    module = tmp_path / "talk_jobs.py"
    module.write_text(MODULE)
    env = {
        **os.environ,
        "AQUEUE_DATABASE_URL": aqueue_database_url,
        "AQ_SCHEMA": unique_schema(),
        "PYTHONPATH": str(tmp_path),
    }
    yield tmp_path, env


def _app(env: dict[str, str]) -> aqueue.App:
    app = aqueue.App(env["AQUEUE_DATABASE_URL"], schema=env["AQ_SCHEMA"])

    @app.job(queue="mail")
    async def greet(name: str) -> str: ...

    @app.job(max_attempts=1)
    async def broken() -> None: ...

    @app.job
    async def slow(started: str) -> str: ...

    return app


def _stop(*workers: Worker) -> None:
    for worker in workers:
        if worker.proc.poll() is None:
            worker.proc.kill()
        worker.proc.wait(timeout=30)


async def test_worker_talks_and_serves_the_queues_its_jobs_name(
    project: tuple[Path, dict[str, str]],
) -> None:
    cwd, env = project
    app = _app(env)
    async with app:
        await app.migrate()
        # -v after the subcommand; no -q: every queue a job names (default and mail).
        worker = Worker(cwd, env, "-v", "talk_jobs:app", "--summary-every", "0.5")
        try:
            await worker.says("ready")
            greet = await app.enqueue("greet", {"name": "ada"})
            assert (await app.wait(greet.id, timeout=30)).result == "hello ada"
            broken = await app.enqueue("broken")
            assert (await app.wait(broken.id, timeout=30)).state is aqueue.JobState.DISCARDED
            await worker.says("completed")  # the summary line
            worker.proc.send_signal(signal.SIGTERM)
            assert await worker.exits() == 0
        finally:
            _stop(worker)
    text = worker.text
    assert "default (concurrency 10), mail (concurrency 10)" in text
    assert "kinds       default: broken, slow; mail: greet" in text
    assert "INFO greeting ada from the job" in text  # ctx.logger, shown by default
    assert (
        f"WARNING aqueue: job {broken.id} (broken) attempt 1 -> discarded: "
        "RuntimeError: the printer is on fire"
    ) in text
    summary = [line for line in text.splitlines() if "aqueue: last " in line]
    assert any("1 completed" in line and "1 discarded" in line for line in summary), summary
    assert "does not serve" not in text


async def test_worker_warns_about_kinds_whose_queue_it_does_not_serve(
    project: tuple[Path, dict[str, str]],
) -> None:
    cwd, env = project
    app = _app(env)
    async with app:
        await app.migrate()
    worker = Worker(cwd, env, "--app", "talk_jobs:app", "-q", "default=2")
    try:
        await worker.says(
            "this worker does not serve queue 'mail': jobs of 'greet' wait there until a "
            "worker does (one started with -q mail)"
        )
        worker.proc.send_signal(signal.SIGINT)
        assert await worker.exits() == 0
    finally:
        _stop(worker)
    assert "queues      default (concurrency 2)\n" in worker.text


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_processes_restart_a_killed_child_and_stop_together(
    project: tuple[Path, dict[str, str]],
) -> None:
    cwd, env = project
    app = _app(env)
    async with app:
        await app.migrate()
        parent = Worker(cwd, env, "talk_jobs:app", "--processes", "2", "--summary-every", "0")
        try:

            async def pids() -> set[int]:
                status = await app.cluster_status()
                return {n.pid for n in status.nodes if n.alive}

            async def two_nodes() -> set[int] | None:
                found = await pids()
                return found if len(found) == 2 else None

            first = await eventually(two_nodes, what="two worker processes, each a node")
            # And both told so (the node row is written before the banner).
            await eventually(lambda: parent.text.count("ready (process ") == 2, what="banners")
            assert parent.proc.pid not in first  # the parent is no node
            victim = min(first)
            os.kill(victim, signal.SIGKILL)
            await parent.says(f"(pid {victim}) exited with signal SIGKILL; restarting in")

            async def replaced() -> bool:
                now = await pids()
                return len(now - first) == 1 and (first - {victim}) <= now

            await eventually(replaced, what="a new child in the killed one's place")
            children = (await pids()) - {victim}

            # SIGTERM to the parent: every child stops gracefully, in-flight jobs finish.
            marker = cwd / "slow-started"
            job = await app.enqueue("slow", {"started": str(marker)})
            await eventually(marker.exists, what="the slow job in flight")
            parent.proc.send_signal(signal.SIGTERM)
            assert await parent.exits() == 0, parent.text
            done = await app.get_job(job.id)
            assert done is not None and (done.state, done.result) == (
                aqueue.JobState.COMPLETED,
                "finished",
            )
            assert not any(_alive(pid) for pid in children)
        finally:
            _stop(parent)
    assert parent.text.count("ready (process ") == 3, parent.text  # two, then the restarted one


async def test_ctrl_c_to_the_process_group_lets_in_flight_jobs_finish(
    project: tuple[Path, dict[str, str]],
) -> None:
    # The terminal sends SIGINT to the whole foreground group. The children are in a
    # session of their own, so each gets one signal (the parent's SIGTERM), not two:
    # a second signal would mean "stop now" and abandon the job.
    cwd, env = project
    app = _app(env)
    async with app:
        await app.migrate()
        parent = Worker(cwd, env, "talk_jobs:app", "--processes", "1", "--summary-every", "0")
        try:
            await parent.says("ready (process 1 of 1)")
            marker = cwd / "slow-started"
            job = await app.enqueue("slow", {"started": str(marker)})
            await eventually(marker.exists, what="the slow job in flight")
            os.killpg(parent.proc.pid, signal.SIGINT)
            assert await parent.exits() == 0, parent.text
            done = await app.get_job(job.id)
            assert done is not None and done.result == "finished", parent.text
        finally:
            _stop(parent)
    assert parent.text.count("received SIGTERM, shutting down gracefully") == 1


async def test_reload_restarts_the_worker_when_a_file_changes(
    project: tuple[Path, dict[str, str]],
) -> None:
    cwd, env = project
    app = _app(env)
    async with app:
        await app.migrate()
        worker = Worker(cwd, env, "talk_jobs:app", "--reload", "--summary-every", "0")
        try:

            async def node_pids() -> list[int]:
                return [n.pid for n in (await app.cluster_status()).nodes if n.alive]

            [before] = await eventually(node_pids, what="the worker's node")
            module = cwd / "talk_jobs.py"
            module.write_text(MODULE.replace("hello ", "hi "))
            await worker.says("talk_jobs.py changed: restarting the worker(s)")

            async def restarted() -> bool:
                return any(pid != before for pid in await node_pids())

            await eventually(restarted, what="a new worker process")
            job = await app.enqueue("greet", {"name": "bo"})
            assert (await app.wait(job.id, timeout=30)).result == "hi bo"  # the new code
            worker.proc.send_signal(signal.SIGTERM)
            assert await worker.exits() == 0
        finally:
            _stop(worker)
    assert "exited with" not in worker.text  # a reload is no crash


def test_processes_option_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert processes_count("3") == 3
    assert processes_count("auto") >= 1
    for bad in ("0", "many", "1000"):
        with pytest.raises(SystemExit) as info:
            main(["worker", "x:app", "--processes", bad])
        assert info.value.code == 2
        assert "--processes" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker"]) == 2
    assert "MODULE:APP" in capsys.readouterr().err
    assert main(["worker", "a:app", "--app", "b:app"]) == 2
    assert main(["worker", "a:app", "--summary-every", "-1"]) == 2
    # Checked before connecting: the database here does not exist.
    unreachable = "postgresql://nobody@127.0.0.1:1/none"
    assert main(["queues", "obliterate", "mail", "--url", unreachable]) == 2
    assert "add --yes" in capsys.readouterr().err


def test_missing_url_names_the_option_and_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AQUEUE_DATABASE_URL", raising=False)
    for argv in (["migrate"], ["queues", "list"], ["cluster"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "--url" in err and "AQUEUE_DATABASE_URL" in err, err


def test_an_unmigrated_schema_names_the_command_that_migrates_it(
    aqueue_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = unique_schema()
    assert main(["queues", "list", "--url", aqueue_database_url, "--schema", schema]) == 1
    err = capsys.readouterr().err
    assert f"run 'aqueue migrate --schema {schema}'" in err, err
