"""The dashboard's pieces without a browser: the chart, formatting, settings checks, and
the ``aqueue dashboard`` command served for real in a child process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

import aqueue
from aqueue.cli import _parser
from aqueue.dashboard import create_app
from aqueue.dashboard.charts import throughput_chart
from aqueue.dashboard.render import ago, duration
from aqueue.dashboard.serve import check_bind
from aqueue.testing import unique_schema


def test_chart_stacks_minutes_and_keeps_rare_failures_visible() -> None:
    completed = [0] * 60
    completed[59] = 1000
    completed[0] = 10
    discarded = [0] * 60
    discarded[59] = 1
    chart = throughput_chart({"completed": completed, "discarded": discarded})
    assert chart.peak == 1001
    assert chart.totals == {"completed": 1010, "discarded": 1, "cancelled": 0}
    assert len(chart.bars) == 60
    assert chart.bars[0].minutes_ago == 59 and chart.bars[59].minutes_ago == 0
    now = chart.bars[59]
    assert [s.state for s in now.segments] == ["completed", "discarded"]
    assert now.segments[1].height >= 1.5  # one failure among a thousand still shows
    assert now.segments[0].y + now.segments[0].height == pytest.approx(chart.height)
    assert now.label == "this minute: 1000 completed, 1 discarded"
    assert chart.bars[30].segments == [] and "nothing finished" in chart.bars[30].label
    empty = throughput_chart({})
    assert empty.peak == 0 and all(not bar.segments for bar in empty.bars)


def test_times_and_durations_read_naturally() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert ago(None) == "—"
    assert ago(now, now) == "now"
    assert ago(now - timedelta(seconds=12), now) == "12 s ago"
    assert ago(now - timedelta(minutes=5, seconds=3), now) == "5 min ago"
    assert ago(now + timedelta(hours=3), now) == "in 3 h"
    assert ago(now - timedelta(days=2), now) == "2 d ago"
    assert duration(None) == "—"
    assert duration(0.25) == "250 ms"
    assert duration(3.5) == "3.50 s"
    assert duration(125) == "2 min 5 s"
    assert duration(7300) == "2 h 1 min"


def test_an_unauthenticated_dashboard_stays_on_this_machine() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "192.0.2.10", "example.com"):
        with pytest.raises(aqueue.ConfigurationError, match="without auth"):
            check_bind(host, None)
        check_bind(host, lambda request: True)


def test_create_app_checks_its_settings() -> None:
    app = aqueue.App("postgresql://localhost/x")
    with pytest.raises(aqueue.ConfigurationError, match="auth must be a callable"):
        create_app(app, auth="admin")  # type: ignore[arg-type]
    with pytest.raises(aqueue.ConfigurationError, match="read_only"):
        create_app(app, read_only="yes")  # type: ignore[arg-type]
    with pytest.raises(aqueue.ConfigurationError, match="base_path"):
        create_app(app, base_path="admin")
    with pytest.raises(aqueue.ConfigurationError, match="live_interval"):
        create_app(app, live_interval=0)
    assert create_app(app, base_path="/admin/").routes


def test_the_cli_parses_the_dashboard_command() -> None:
    args = _parser().parse_args(["dashboard", "m:app", "--port", "9000", "--read-only"])
    assert (args.host, args.port, args.read_only, args.auth) == ("127.0.0.1", 9000, True, None)
    assert callable(args.handler)


CLI = ["-m", "aqueue.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_the_dashboard_command_serves_an_app(
    aqueue_database_url: str, tmp_path: Path
) -> None:
    schema = unique_schema("dashcli")
    async with aqueue.App(aqueue_database_url, schema=schema) as app:
        await app.migrate()
        try:
            (tmp_path / "myjobs.py").write_text(
                textwrap.dedent(f"""
                import aqueue
                app = aqueue.App({aqueue_database_url!r}, schema={schema!r})

                @app.job(queue="mail")
                async def send_email(to: str) -> None: ...

                def allow(request):
                    return request.headers.get("x-token") == "t0ken"
                """)
            )
            await app.enqueue("send_email", {"to": "a@b.c"}, allow_unknown=True, queue="mail")
            command = [sys.executable, *CLI, "dashboard", "myjobs:app"]

            refused = subprocess.run(
                [*command, "--host", "0.0.0.0"], cwd=tmp_path, capture_output=True, text=True
            )
            assert refused.returncode == 1
            assert "refusing to listen on '0.0.0.0' without auth" in refused.stderr

            port = _free_port()
            child = subprocess.Popen(
                [*command, "--port", str(port)],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                assert child.stdout is not None
                line = await anyio.to_thread.run_sync(child.stdout.readline)
                assert line.strip() == (
                    f"aqueue dashboard: no auth configured, listening on "
                    f"http://127.0.0.1:{port}/ only (this machine)"
                )
                status, body = await _poll(f"http://127.0.0.1:{port}/")
                assert status == 200 and "mail" in body
            finally:
                child.send_signal(signal.SIGINT)
                _, err = await anyio.to_thread.run_sync(lambda: child.communicate(timeout=15))
            assert child.returncode == 0, err

            port = _free_port()
            with subprocess.Popen(
                [*command, "--port", str(port), "--auth", "myjobs:allow", "--read-only"],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ) as child:
                try:
                    assert child.stdout is not None
                    line = await anyio.to_thread.run_sync(child.stdout.readline)
                    assert (
                        line.strip() == f"aqueue dashboard: listening on http://127.0.0.1:{port}/"
                    )
                    status, _ = await _poll(f"http://127.0.0.1:{port}/")
                    assert status == 401
                finally:
                    child.send_signal(signal.SIGINT)
                    await anyio.to_thread.run_sync(lambda: child.communicate(timeout=15))
                assert child.returncode == 0
        finally:
            await app.db.drop_schema()


async def _poll(url: str) -> tuple[int, str]:
    """GET ``url`` once the server listens (it starts after printing its address)."""
    with anyio.fail_after(15):
        while True:
            try:
                return await anyio.to_thread.run_sync(_get, url)
            except (ConnectionError, urllib.error.URLError):
                await anyio.sleep(0.05)


def test_the_core_package_does_not_import_the_dashboard() -> None:
    code = (
        "import sys, aqueue, aqueue.cli\n"
        "print(sorted(m for m in ('starlette', 'jinja2', 'uvicorn') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_workflow_steps_join_jobs_with_their_dependencies() -> None:
    from aqueue.dashboard.workflow_views import workflow_steps
    from aqueue.jobs import JobState, new_job

    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def job(job_id: int, step: str, state: JobState, ran: float | None) -> aqueue.Job:
        attempted = start + timedelta(seconds=2) if ran is not None else None
        finished = attempted + timedelta(seconds=ran) if attempted and ran else None
        return new_job(
            job_id, "k", "default", state, {}, 0, 1, 20, start, start, attempted, finished,
            [], None, [], {}, workflow_id=7, step=step,
        )  # fmt: skip

    jobs = [
        job(1, "fetch", JobState.COMPLETED, 0.5),
        job(2, "clean", JobState.RUNNING, None),
        job(3, "load", JobState.PENDING, None),
    ]
    # An edge to a job that is gone (deleted) is left out rather than shown as a ghost.
    steps = workflow_steps(jobs, [(2, 1), (3, 1), (3, 2), (3, 99)])
    assert [s.job.step for s in steps] == ["fetch", "clean", "load"]
    assert [[d.step for d in s.deps] for s in steps] == [[], ["fetch"], ["fetch", "clean"]]
    assert steps[0].waited == 2.0 and steps[0].ran == 0.5
    assert steps[2].waited is None and steps[2].ran is None
