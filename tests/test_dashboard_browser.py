"""The dashboard end to end: headless Chromium against a real uvicorn server, on a real
database, with real workers where jobs have to run.

One browser per module (starting Chromium is the slow part); every test gets its own
schema, its own server and a fresh browser context (no cookies carried over). Waits are
Playwright's auto-waiting assertions and ``eventually``: conditions with deadlines.

Set ``AQUEUE_DASHBOARD_SCREENSHOTS=docs/images`` to refresh the screenshots in the docs.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import pytest_asyncio
import uvicorn

import aqueue
from aqueue.dashboard import create_app
from aqueue.testing import unique_schema
from tests.support import CLUSTER, eventually, schema_of

playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect

CHROMIUM = Path("/usr/bin/chromium")
# The flags this machine's Chromium needs: no sandbox as root, and no background
# connections to the internet (there is none; each would fail, many at a time).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="browser tests need Debian's chromium at /usr/bin/chromium "
        "(.ci/run installs it: apt-get install chromium)",
    ),
    pytest.mark.asyncio(loop_scope="module"),
]

#: Playwright's waits (and our own) never exceed this.
DEADLINE_MS = 15_000
expect.set_options(timeout=DEADLINE_MS)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Any) -> AsyncIterator[Any]:
    """A page in a fresh browser context that fails the test on any script error.

    Dialogs (the confirmations of delete and bulk actions) are dismissed unless a test
    accepts them itself (``page.once("dialog", ...)``)."""
    context = await browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(DEADLINE_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        await context.close()
    assert not errors, errors


@pytest_asyncio.fixture(loop_scope="module")
async def app(aqueue_database_url: str) -> AsyncIterator[aqueue.App]:
    """An open, migrated App on a fresh schema (dropped afterwards), on a fast clock."""
    app = aqueue.App(aqueue_database_url, schema=unique_schema("dash"), **CLUSTER)
    async with app:
        await app.migrate()
        try:
            yield app
        finally:
            await app.db.drop_schema()


@contextlib.asynccontextmanager
async def served(asgi: Any) -> AsyncIterator[str]:
    """Serve ``asgi`` with uvicorn on a free loopback port; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", lifespan="off"))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            await eventually(lambda: server.started, what="uvicorn started")
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
    finally:
        sock.close()


def dashboard(app: aqueue.App, **options: Any) -> contextlib.AbstractAsyncContextManager[str]:
    return served(create_app(app, **options))


async def set_sql(app: aqueue.App, sql: str, *args: Any) -> None:
    """A test's own write (backdating rows); the dashboard itself never writes SQL."""
    async with app.db.pool.acquire() as conn:
        await conn.execute(sql.replace("{schema}", schema_of(app)), *args)


def jobs_in_table(page: Any) -> Any:
    return page.locator("table.jobs tbody tr[data-job-id]")


# -- pages ---------------------------------------------------------------------------------


async def test_every_page_renders_with_real_data(app: aqueue.App, page: Any) -> None:
    """Load each page with a cluster running: the figures the database holds are shown.
    Screenshots go to AQUEUE_DASHBOARD_SCREENSHOTS when set (the docs' images)."""
    shots = os.environ.get("AQUEUE_DASHBOARD_SCREENSHOTS")

    @app.job(queue="mail")
    async def send_email(to: str, subject: str) -> dict[str, str]:
        return {"message_id": f"<{to}>"}

    @app.job(queue="reports/v2", max_attempts=1)
    async def build_report(team: str) -> None:
        raise RuntimeError(f"warehouse timed out for {team}")

    @app.job
    async def resize_image(path: str, width: int) -> int:
        return width

    @app.persistent(name="feed-consumer", replicas=2)
    async def consume(ctx: aqueue.PersistentContext) -> None:
        await anyio.sleep_forever()

    app.periodic(build_report, cron="0 9 * * MON", kwargs={"team": "ops"})
    app.periodic(resize_image, cron="*/15 * * * *", kwargs={"path": "logo.png", "width": 64})

    await app.enqueue_many(
        [send_email.build(to=f"user{i}@example.com", subject="Welcome") for i in range(120)]
        + [resize_image.build(path=f"img/{i}.png", width=200 + i) for i in range(40)]
    )
    failing = await build_report.enqueue(team="finance")
    queues = {"mail": 4, "reports/v2": 1, "default": 4}
    async with app.worker(queues):
        await app.wait(failing.id, timeout=10)
        await eventually(
            lambda: _all_final(app, ["mail", "default"]), what="the first jobs finished"
        )
        # Spread the finished jobs over the last hour, as a real hour of work would be.
        await set_sql(
            app,
            "UPDATE {schema}.jobs SET finalized_at = now() - (id % 55) * interval '1 minute'"
            " WHERE finalized_at IS NOT NULL",
        )
        waiting = [send_email.build(to=f"late{i}@example.com", subject="Digest") for i in range(7)]
        await app.pause_queue("mail")
        await app.enqueue_many(waiting)
        await resize_image.options(schedule_in=3600, tags=["thumbnails"]).enqueue(
            path="big.png", width=1024
        )
        await eventually(lambda: _leader_and_replicas(app), what="leader and both replicas")

        async with dashboard(app) as base:
            await page.goto(base + "/")
            await expect(page.locator("#queues tr[data-queue='mail']")).to_contain_text("paused")
            row = page.locator("#queues tr[data-queue='mail']")
            await expect(row.locator("td").nth(2)).to_have_text("7")  # available
            await expect(page.locator("#overview-stats")).to_contain_text("completed, last hour")
            assert await page.locator("#throughput svg rect.bar-completed").count() > 20
            await _shoot(page, shots, "overview")

            await page.click("nav >> text=Jobs")
            await expect(jobs_in_table(page)).to_have_count(50)
            await _shoot(page, shots, "jobs")

            await page.goto(base + f"/jobs/{failing.id}")
            await expect(page.locator("#job-state")).to_have_text("discarded")
            await expect(page.locator("#job-outcome")).to_contain_text(
                "warehouse timed out for finance"
            )
            await expect(page.locator("#job-args")).to_contain_text('"team": "finance"')
            await _shoot(page, shots, "job")

            await page.goto(base + "/")
            await page.click("#queues a:text-is('reports/v2')")
            await expect(page).to_have_url(re.compile(r"/queues/reports%2Fv2$"))
            await expect(page.locator("h1")).to_have_text("Queue reports/v2")
            await expect(page.locator("#queue-counts")).to_contain_text("discarded")
            await page.goto(base + "/queues/mail")
            await expect(page.locator("#queue-status")).to_contain_text("paused")
            await _shoot(page, shots, "queue")

            await page.click("nav >> text=Cluster")
            await expect(page.locator("#cluster-nodes")).to_contain_text("alive")
            await expect(page.locator("#cluster-nodes .pill-accent")).to_have_text("leader")
            await _shoot(page, shots, "cluster")

            await page.click("nav >> text=Persistent")
            rows = page.locator("#persistent-list tbody tr")
            await expect(rows).to_have_count(2)
            await expect(rows.nth(0)).to_contain_text("held")
            await _shoot(page, shots, "persistent")

            await page.click("nav >> text=Periodic")
            schedules = page.locator("#periodic-list tbody tr")
            await expect(schedules).to_have_count(2)
            await expect(schedules.nth(0)).to_contain_text("0 9 * * MON")
            await expect(schedules.nth(1)).to_contain_text("*/15 * * * *")
            await _shoot(page, shots, "periodic")


async def _all_final(app: aqueue.App, queues: list[str]) -> bool:
    stats = await app.queue_stats()
    return all(stats[q].waiting == 0 and stats[q].running == 0 for q in queues)


async def _leader_and_replicas(app: aqueue.App) -> bool:
    status = await app.cluster_status()
    held = [lease for lease in status.leases if lease.name.startswith("persistent:") and lease.held]
    return status.leader is not None and len(held) == 2


async def _shoot(page: Any, folder: str | None, name: str) -> None:
    if folder:
        await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(folder) / f"dashboard-{name}.png"), full_page=True)


async def test_filters_and_keyset_paging(app: aqueue.App, page: Any) -> None:
    @app.job(queue="mail")
    async def send_email(to: str) -> None: ...

    @app.job
    async def other(n: int) -> None: ...

    await app.enqueue_many([send_email.build(to=f"u{i}") for i in range(60)])
    await app.enqueue_many([other.options(tags=["blue"]).build(n=i) for i in range(70)])
    await app.enqueue_many([other.build(n=i) for i in range(5)])

    async with dashboard(app) as base:
        await page.goto(base + "/jobs")
        await expect(jobs_in_table(page)).to_have_count(50)
        first = jobs_in_table(page).first
        await expect(first.locator("td").first).to_have_text("135")  # newest first

        await page.fill("input[name=kind]", "send_email")
        await page.click("button:text-is('Filter')")
        await expect(page).to_have_url(re.compile(r"kind=send_email"))
        await expect(jobs_in_table(page)).to_have_count(50)
        await expect(page.locator("table.jobs")).not_to_contain_text("other")
        await page.click("a[rel=next]")
        await expect(jobs_in_table(page)).to_have_count(10)
        await expect(jobs_in_table(page).last.locator("td").first).to_have_text("1")
        await expect(page.locator("a[rel=next]")).to_have_count(0)
        await page.click("a[rel=prev]")
        await expect(jobs_in_table(page)).to_have_count(50)
        await expect(jobs_in_table(page).first.locator("td").first).to_have_text("60")

        # A bookmarked filter: tag and state from the URL alone.
        await page.goto(base + "/jobs?tag=blue&state=available&queue=default")
        await expect(jobs_in_table(page)).to_have_count(50)
        await expect(page.locator("select[name=state]")).to_have_value("available")
        await page.click("a[rel=next]")
        await expect(jobs_in_table(page)).to_have_count(20)
        await page.goto(base + "/jobs?state=completed")
        await expect(page.locator("td.empty")).to_have_text("No jobs match.")
        await page.goto(base + "/jobs?state=bogus")
        await expect(page.locator(".flash-error")).to_contain_text("unknown state 'bogus'")


async def test_retry_from_the_job_page_and_watch_it_complete(app: aqueue.App, page: Any) -> None:
    calls: list[int] = []

    @app.job(max_attempts=1)
    async def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first attempt fails")
        return "second attempt works"

    job = await flaky.enqueue()
    async with app.worker({"default": 2}), dashboard(app) as base:
        await app.wait(job.id, timeout=10)
        await page.goto(base + f"/jobs/{job.id}")
        await expect(page.locator("#job-state")).to_have_text("discarded")
        await expect(page.locator("#job-outcome")).to_contain_text("first attempt fails")
        await page.click("button[data-action=retry]")
        await expect(page.locator(".flash-ok")).to_contain_text(f"Job {job.id} is")
        # The worker runs it; the page shows it without a reload (live update).
        await expect(page.locator("#job-state")).to_have_text("completed")
        await expect(page.locator("#job-result")).to_contain_text("second attempt works")
        await expect(page.locator("button[data-action=retry]")).to_have_count(0)
    done = await app.get_job(job.id)
    assert done is not None and done.state is aqueue.JobState.COMPLETED


async def test_cancel_and_delete_a_job(app: aqueue.App, page: Any) -> None:
    @app.job
    async def later() -> None: ...

    job = await later.options(schedule_in=3600).enqueue()
    async with dashboard(app) as base:
        await page.goto(base + f"/jobs/{job.id}")
        await expect(page.locator("#job-state")).to_have_text("scheduled")
        await page.click("button[data-action=cancel]")
        await expect(page.locator(".flash-ok")).to_have_text(f"Job {job.id} is cancelled.")
        await expect(page.locator("#job-state")).to_have_text("cancelled")
        page.once("dialog", lambda dialog: dialog.accept())
        await page.click("button[data-action=delete]")
        await expect(page).to_have_url(base + "/jobs")
        await expect(page.locator(".flash-ok")).to_have_text(f"Job {job.id} was deleted.")
        assert await app.get_job(job.id) is None
        await page.goto(base + f"/jobs/{job.id}")
        await expect(page.locator("main")).to_contain_text(f"There is no job {job.id}.")


async def test_pause_and_resume_a_queue_from_the_overview(app: aqueue.App, page: Any) -> None:
    @app.job(queue="mail")
    async def send_email() -> None: ...

    await send_email.enqueue()
    async with dashboard(app) as base:
        await page.goto(base + "/")
        row = page.locator("#queues tr[data-queue='mail']")
        await expect(row).to_contain_text("active")
        await row.locator("button[data-action=pause]").click()
        await expect(page.locator(".flash-ok")).to_have_text("Queue 'mail' is paused.")
        await expect(row).to_contain_text("paused")
        assert (await app.queue_stats("mail"))["mail"].paused
        await row.locator("button[data-action=resume]").click()
        await expect(page.locator(".flash-ok")).to_have_text("Queue 'mail' resumed.")
        await expect(row).to_contain_text("active")
        assert not (await app.queue_stats("mail"))["mail"].paused
