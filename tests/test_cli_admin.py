"""``aqueue jobs ...`` and ``aqueue queues ...`` through the CLI's entry point, ``main()``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

import aqueue
from aqueue.cli import main
from aqueue.cli.exits import NOT_FOUND
from aqueue.testing import unique_schema

T = TypeVar("T")


class Cli:
    """Runs ``aqueue`` in-process against one fresh schema and captures what it printed."""

    def __init__(self, url: str, schema: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.url = url
        self.schema = schema
        self._capsys = capsys
        self.out = ""
        self.err = ""

    def __call__(self, *args: str) -> int:
        self._capsys.readouterr()
        try:
            status = main([*args, "--url", self.url, "--schema", self.schema])
        except SystemExit as exc:  # argparse's usage errors
            status = int(exc.code or 0)
        captured = self._capsys.readouterr()
        self.out, self.err = captured.out, captured.err
        return status

    def json(self, *args: str) -> Any:
        assert self(*args, "--json") == 0, self.err
        return json.loads(self.out)

    def app(self) -> aqueue.App:
        app = aqueue.App(self.url, schema=self.schema)

        @app.job(queue="mail")
        async def send(to: str) -> str:
            return to

        @app.job
        async def other(n: int = 0) -> None: ...

        return app

    def with_app(self, fn: Callable[[aqueue.App], Awaitable[T]]) -> T:
        async def run() -> T:
            async with self.app() as app:
                return await fn(app)

        return anyio.run(run)


@pytest.fixture
def cli(aqueue_database_url: str, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    runner = Cli(aqueue_database_url, unique_schema(), capsys)
    runner.with_app(lambda app: app.migrate())
    yield runner
    runner.with_app(lambda app: app.db.drop_schema())


def _set_state(job_id: int, state: str) -> Callable[[aqueue.App], Awaitable[None]]:
    async def run(app: aqueue.App) -> None:
        async with app.db.pool.acquire() as conn:
            await conn.execute(
                f'UPDATE "{app.schema}".jobs SET state = $2::text::"{app.schema}".job_state, '
                "attempt = 1 WHERE id = $1",
                job_id,
                state,
            )

    return run


def test_jobs_list_table_json_and_filters(cli: Cli) -> None:
    assert cli("jobs", "list") == 0
    assert "0 job(s)" in cli.out
    jobs = cli.with_app(
        lambda app: app.enqueue_many(
            [app.build("send", {"to": f"u{i}@x"}) for i in range(3)] + [app.build("other")]
        )
    )
    assert cli("jobs", "list") == 0
    lines = cli.out.splitlines()
    assert lines[0].split() == [
        "ID", "KIND", "QUEUE", "STATE", "ATTEMPT", "PRIORITY", "SCHEDULED", "(UTC)"
    ]  # fmt: skip
    assert lines[1].split()[:5] == [str(jobs[0].id), "send", "mail", "available", "0/20"]
    assert lines[-1] == "4 job(s)"
    assert cli("jobs", "list", "--limit", "2") == 0
    assert cli.out.splitlines()[-1] == "2 job(s) (the --limit: there may be more)"
    data = cli.json("jobs", "list", "--queue", "mail", "--limit", "2")
    assert [job["id"] for job in data] == [jobs[0].id, jobs[1].id]
    assert data[0]["args"] == {"to": "u0@x"} and data[0]["state"] == "available"
    assert [j["kind"] for j in cli.json("jobs", "list", "--kind", "other")] == ["other"]
    assert cli.json("jobs", "list", "--state", "completed") == []
    assert cli("jobs", "list", "--state", "finished") == 1
    assert cli.err.startswith("aqueue: error: state: 'finished' is not one of")
    assert cli("jobs", "list", "--limit", "0") == 1
    assert "limit" in cli.err


def test_jobs_show(cli: Cli) -> None:
    job = cli.with_app(lambda app: app.enqueue("send", {"to": "a@b"}, tags=["t1"]))
    assert cli("jobs", "show", str(job.id)) == 0
    assert f"job {job.id}" in cli.out and "kind          send" in cli.out
    assert '{"to": "a@b"}' in cli.out and "t1" in cli.out
    data = cli.json("jobs", "show", str(job.id))
    assert data["id"] == job.id and data["duplicate"] is False and data["tags"] == ["t1"]
    assert cli("jobs", "show", "999999") == 3
    assert cli.err.strip() == "aqueue: error: job 999999 does not exist"
    assert cli("jobs", "show", "0") == 1  # not a valid id
    assert cli("jobs", "show", "abc") == 2  # usage: not an integer


def test_jobs_retry_cancel_delete(cli: Cli) -> None:
    waiting = cli.with_app(lambda app: app.enqueue("send", {"to": "a@b"}))
    assert cli("jobs", "retry", str(waiting.id)) == 4
    assert "is available" in cli.err
    assert cli("jobs", "cancel", str(waiting.id)) == 0
    assert cli.out.strip() == f"job {waiting.id} is cancelled"
    assert cli("jobs", "cancel", str(waiting.id)) == 0
    assert "already cancelled" in cli.out
    assert cli.json("jobs", "retry", str(waiting.id))["state"] == "available"
    cli.with_app(_set_state(waiting.id, "running"))
    assert cli("jobs", "delete", str(waiting.id)) == 4
    assert "running" in cli.err
    assert cli("jobs", "cancel", str(waiting.id)) == 0
    assert "told to cancel" in cli.out
    cli.with_app(_set_state(waiting.id, "available"))
    assert cli.json("jobs", "delete", str(waiting.id)) == {"id": waiting.id, "deleted": True}
    for action in ("retry", "cancel", "delete"):
        assert cli("jobs", action, str(waiting.id)) == 3, action
        assert "does not exist" in cli.err


def test_jobs_rename_kind(cli: Cli) -> None:
    jobs = cli.with_app(
        lambda app: app.enqueue_many([app.build("old.send", {}, allow_unknown=True)] * 3)
    )
    cli.with_app(_set_state(jobs[0].id, "running"))
    assert cli("jobs", "rename-kind", "old.send", "send") == 3
    assert "unknown job kind 'send'" in cli.err  # the CLI's --url App registers no jobs
    assert cli("jobs", "rename-kind", "nope", "send", "--allow-unknown") == 3
    assert "no job of that kind exists" in cli.err
    assert cli("jobs", "rename-kind", "old.send", "send", "--allow-unknown") == 0
    assert "moved 2 waiting job(s) from kind 'old.send' to 'send'" in cli.out
    assert "1 job(s) of kind 'old.send' are running" in cli.out
    report = cli.json("jobs", "rename-kind", "old.send", "send", "--allow-unknown")
    assert report == {"old": "old.send", "new": "send", "moved": 0, "running": 1}
    kinds = [j["kind"] for j in cli.json("jobs", "list")]
    assert kinds == ["old.send", "send", "send"]
    assert cli("jobs", "rename-kind", "send", "x", "--allow-unknown", "--batch-size", "0") == 1


def test_queues_list_pause_resume(cli: Cli) -> None:
    assert cli("queues", "list") == 0 and cli.out.strip() == "no queues"
    cli.with_app(lambda app: app.enqueue("send", {"to": "a@b"}))
    assert cli("queues", "pause", "mail") == 0
    assert cli.out.strip() == "queue 'mail' paused"
    assert cli("queues", "pause", "mail") == 0 and "already paused" in cli.out
    assert cli("queues", "list") == 0
    header, row, *notes = cli.out.splitlines()
    assert header.split()[:5] == ["QUEUE", "STATUS", "NODES", "SCHEDULED", "AVAILABLE"]
    assert row.split()[:5] == ["mail", "paused", "0", "0", "1"]
    assert notes == ["  mail: 1 waiting job(s) of kind 'send': no live worker knows it"]
    [stats] = cli.json("queues", "list")
    assert stats["name"] == "mail" and stats["paused"] is True
    assert stats["counts"]["available"] == 1 and stats["unrunnable"] == {"send": 1}
    assert cli.json("queues", "resume", "mail") == {"queue": "mail", "changed": True}
    assert cli("queues", "resume", "mail") == 0 and "was not paused" in cli.out
    assert cli("queues", "pause", "typo") == 3
    assert cli.err.startswith("aqueue: error: unknown queue 'typo'")
    assert cli("queues", "resume", "typo") == 3
    assert cli("queues", "pause", "later", "--allow-unknown") == 0
    assert [s["name"] for s in cli.json("queues", "list")] == ["later", "mail"]


def test_queues_drain_and_obliterate(cli: Cli) -> None:
    jobs = cli.with_app(
        lambda app: app.enqueue_many([app.build("send", {"to": f"{i}@x"}) for i in range(3)])
    )
    assert cli("queues", "drain", "mail", "--timeout", "0.3") == 5
    assert "still has 3 waiting or running job(s)" in cli.err
    assert cli("queues", "drain", "nope", "--timeout", "1") == 3
    assert cli("queues", "obliterate", "mail") == 1
    assert "add --yes" in cli.err
    cli.with_app(_set_state(jobs[0].id, "running"))
    assert cli("queues", "obliterate", "mail", "--yes") == 4
    assert "1 running job(s)" in cli.err
    assert len(cli.json("jobs", "list")) == 3
    assert cli("queues", "obliterate", "mail", "--yes", "--force") == 0
    assert cli.out.strip() == "queue 'mail' obliterated: 3 job(s) deleted"
    assert cli("queues", "obliterate", "mail", "--yes") == 3  # gone
    cli.with_app(lambda app: app.enqueue("other"))
    assert cli.json("queues", "obliterate", "default", "--yes") == {
        "queue": "default",
        "deleted": 1,
    }
    cli.with_app(lambda app: app.pause_queue("empty", allow_unknown=True))
    assert cli.json("queues", "drain", "empty") == {"queue": "empty", "drained": True}


def test_admin_commands_with_an_app_module(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"jobs_{cli.schema}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            f"""
            import aqueue
            app = aqueue.App({cli.url!r}, schema={cli.schema!r})

            @app.job(name="mail.send", aliases=["send"])
            async def send(to: str) -> None: ...
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    cli.with_app(lambda app: app.enqueue("send", {"to": "a@b"}))
    # The App knows the new kind, so no --allow-unknown is needed.
    status = main(["jobs", "rename-kind", "send", "mail.send", "--app", f"{module}:app"])
    assert status == 0
    assert [j.kind for j in cli.with_app(lambda app: app.list_jobs())] == ["mail.send"]
    assert main(["queues", "list", "--app", f"{module}:app", "--schema", "x"]) == 1


def test_not_found_means_exactly_no_such_job_queue_kind_or_workflow() -> None:
    # Not LookupError as a whole: a KeyError from a bug must not exit 3 as if the user had
    # mistyped an id. Each is exercised through a real command (workflows: in
    # test_cli_workflows.py).
    assert set(NOT_FOUND) == {
        aqueue.UnknownQueue,
        aqueue.UnknownJobKind,
        aqueue.JobNotFound,
        aqueue.WorkflowNotFound,
    }
    assert all(issubclass(exc, LookupError) for exc in NOT_FOUND)


@pytest.mark.parametrize(
    "command",
    [
        ["jobs"],
        ["jobs", "list"],
        ["jobs", "rename-kind"],
        ["queues"],
        ["queues", "drain"],
        ["queues", "obliterate"],
    ],
)
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: aqueue" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["jobs"], ["queues", "explode"], ["jobs", "show"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2, argv


def test_entry_point_in_a_subprocess(cli: Cli) -> None:
    cli.with_app(lambda app: app.enqueue("send", {"to": "a@b"}))
    result = subprocess.run(
        [sys.executable, "-m", "aqueue.cli", "queues", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AQUEUE_DATABASE_URL": cli.url},
        check=False,
    )
    # No --schema: the default schema "aqueue" is not migrated in this database.
    assert result.returncode == 1
    assert "migrate" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "aqueue.cli", "queues", "list", "--json", "--schema", cli.schema],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AQUEUE_DATABASE_URL": cli.url},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [s["name"] for s in json.loads(result.stdout)] == ["mail"]
