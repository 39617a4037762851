"""The dashboard end to end: headless Chromium against a real uvicorn server, on a real
database, with real workers where jobs have to run.

One browser per module (starting Chromium is the slow part); every test gets its own
schema, its own server and a fresh browser context (no cookies carried over). Waits are
Playwright's auto-waiting assertions and ``eventually``: conditions with deadlines.

Set ``AQUEUE_DASHBOARD_SCREENSHOTS=docs/images`` to refresh the screenshots in the docs.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

import aqueue
from aqueue.dashboard import create_app
from aqueue.db.browse import Browse
from aqueue.testing import unique_schema
from tests.support import CLUSTER, eventually, schema_of, served

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

    release = anyio.Event()

    @app.job
    async def import_catalog(ctx: aqueue.JobContext, source: str) -> None:
        await ctx.step("download", lambda: {"rows": 10_000, "bytes": 18_340_112})
        await ctx.progress(0.62, "6,200 of 10,000 rows")
        await release.wait()

    app.periodic(build_report, cron="0 9 * * MON", kwargs={"team": "ops"})
    app.periodic(resize_image, cron="*/15 * * * *", kwargs={"path": "logo.png", "width": 64})

    await app.enqueue_many(
        [send_email.build(to=f"user{i}@example.com", subject="Welcome") for i in range(400)]
        + [resize_image.build(path=f"img/{i}.png", width=200 + i) for i in range(150)]
    )
    failing = await build_report.enqueue(team="finance")
    # The schedule ran before (30 minutes ago): the new leader catches up its latest slot.
    await set_sql(
        app,
        "INSERT INTO {schema}.periodic_runs (name, slot) VALUES ('resize_image', $1)",
        datetime.now(UTC) - timedelta(minutes=30),
    )
    queues = {
        "mail": 4,
        "reports/v2": aqueue.Queue(concurrency=1, global_limit=2, partition=aqueue.Partition(1)),
        "default": 4,
    }
    async with app.worker(queues):
        await app.wait(failing.id, timeout=10)
        await eventually(
            lambda: _all_final(app, ["mail", "default"]), what="the first jobs finished"
        )
        # Spread the finished jobs over the last hour, as an hour of real work would be,
        # and show a traceback from an application rather than from this test file.
        await set_sql(
            app,
            """UPDATE {schema}.jobs AS j
               SET created_at = j.created_at - o.shift,
                   scheduled_at = j.scheduled_at - o.shift,
                   attempted_at = j.attempted_at - o.shift,
                   finalized_at = j.attempted_at - o.shift + o.ran
               FROM (SELECT id,
                            floor(55 * random() * random()) * interval '1 minute'
                              + random() * interval '40 seconds' AS shift,
                            random() * interval '1.5 seconds' AS ran
                     FROM {schema}.jobs WHERE finalized_at IS NOT NULL) AS o
               WHERE j.id = o.id""",
        )
        await set_sql(
            app,
            "UPDATE {schema}.jobs"
            " SET errors = jsonb_set(jsonb_set(errors, '{0,traceback}', to_jsonb($1::text)),"
            " '{0,at}', to_jsonb(finalized_at)) WHERE id = $2",
            APP_TRACEBACK,
            failing.id,
        )
        waiting = [send_email.build(to=f"late{i}@example.com", subject="Digest") for i in range(7)]
        await app.pause_queue("mail")
        await app.enqueue_many(waiting)
        await resize_image.options(schedule_in=3600, tags=["thumbnails"]).enqueue(
            path="big.png", width=1024
        )
        importing = await import_catalog.enqueue(source="s3://catalog/2026-12.csv")
        await eventually(lambda: _progress_of(app, importing.id), what="the import's progress")
        await eventually(lambda: _leader_and_replicas(app), what="leader and both replicas")
        await eventually(lambda: _periodic_caught_up(app), what="the periodic catch-up")

        async with dashboard(app) as base:
            await page.goto(base + "/")
            await expect(page.locator("#queues tr[data-queue='mail']")).to_contain_text("paused")
            row = page.locator("#queues tr[data-queue='mail']")
            await expect(row.locator("td").nth(2)).to_have_text("7")  # available
            await expect(page.locator("#overview-stats")).to_contain_text("completed, last hour")
            limits = page.locator("#queues tr[data-queue='reports/v2'] td.limits")
            await expect(limits).to_contain_text("0/2")
            await expect(limits).to_contain_text("≤1/key")
            await expect(page.locator("#queues tr[data-queue='mail'] td.limits")).to_have_text("—")
            assert await page.locator("#throughput svg rect.bar-completed").count() > 20
            await _shoot(page, shots, "overview")

            await page.click("nav >> text=Jobs")
            await expect(jobs_in_table(page)).to_have_count(50)
            running = page.locator(f"tr[data-job-id='{importing.id}']")
            await expect(running.locator("progress")).to_have_attribute("value", "0.62")
            await _shoot(page, shots, "jobs", full_page=False)

            await page.goto(base + f"/jobs/{importing.id}")
            await expect(page.locator("#job-progress")).to_contain_text("62%")
            await expect(page.locator("#job-steps")).to_contain_text("download")
            await _shoot(page, shots, "job-running", full_page=False)

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
            await expect(page.locator("#queue-limits")).to_contain_text("0/2")
            await expect(page.locator("#queue-counts")).to_contain_text("discarded")
            await page.goto(base + "/queues/mail")
            await expect(page.locator("#queue-status")).to_contain_text("paused")
            await _shoot(page, shots, "queue", full_page=False)

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
            await expect(schedules.nth(1).locator(".state")).to_have_text(
                re.compile("available|running|completed")
            )
            await _shoot(page, shots, "periodic")
        release.set()


APP_TRACEBACK = """Traceback (most recent call last):
  File "/srv/shop/reports/jobs.py", line 41, in build_report
    rows = await warehouse.query(team, timeout=30)
  File "/srv/shop/reports/warehouse.py", line 88, in query
    raise RuntimeError(f"warehouse timed out for {team}")
RuntimeError: warehouse timed out for finance"""


async def _progress_of(app: aqueue.App, job_id: int) -> bool:
    job = await app.get_job(job_id)
    return job is not None and job.progress is not None


async def _periodic_caught_up(app: aqueue.App) -> bool:
    latest = await Browse(app.db).periodic_latest()
    return "resize_image" in latest and latest["resize_image"].job_id is not None


async def _all_final(app: aqueue.App, queues: list[str]) -> bool:
    stats = await app.queue_stats()
    return all(stats[q].waiting == 0 and stats[q].running == 0 for q in queues)


async def _leader_and_replicas(app: aqueue.App) -> bool:
    status = await app.cluster_status()
    held = [lease for lease in status.leases if lease.name.startswith("persistent:") and lease.held]
    return status.leader is not None and len(held) == 2


async def _shoot(page: Any, folder: str | None, name: str, *, full_page: bool = True) -> None:
    if folder:
        await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
        path = str(Path(folder) / f"dashboard-{name}.png")
        await page.screenshot(path=path, full_page=full_page)


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
    async with app.worker({"default": 2}), dashboard(app, live_interval=0.3) as base:
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


async def test_a_running_job_shows_its_progress_and_it_moves_live(
    app: aqueue.App, page: Any
) -> None:
    step = anyio.Event()
    finish = anyio.Event()

    @app.job
    async def copy_files() -> None: ...

    @app.job
    async def copy(ctx: aqueue.JobContext) -> None:
        await ctx.progress(0.3, "copied 3 of 10 files")
        await step.wait()
        await ctx.progress(0.6, "copied 6 of 10 files")
        await finish.wait()

    job = await copy.enqueue()
    waiting = await copy_files.options(schedule_in=3600).enqueue()
    try:
        async with app.worker({"default": 1}), dashboard(app, live_interval=0.2) as base:
            await eventually(lambda: _reported(app, job.id), what="the first report")
            await page.goto(base + "/jobs")
            row = page.locator(f"tr[data-job-id='{job.id}']")
            await expect(row.locator("progress")).to_have_attribute("value", "0.3")
            await expect(row.locator(".progress")).to_contain_text("30%")
            await expect(row.locator(".progress")).to_contain_text("copied 3 of 10 files")
            # Only running jobs have a bar.
            await expect(page.locator(f"tr[data-job-id='{waiting.id}'] progress")).to_have_count(0)
            await page.goto(base + f"/jobs/{job.id}")
            bar = page.locator("#job-progress progress")
            await expect(bar).to_have_attribute("value", "0.3")
            step.set()
            # The live update moves the bar without a reload.
            await expect(bar).to_have_attribute("value", "0.6")
            await expect(page.locator("#job-progress")).to_contain_text("copied 6 of 10 files")
            finish.set()
            await app.wait(job.id, timeout=10)
    finally:
        step.set()
        finish.set()


async def _reported(app: aqueue.App, job_id: int) -> bool:
    job = await app.get_job(job_id)
    return job is not None and job.progress is not None


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


async def test_drain_waits_until_the_queue_is_empty(app: aqueue.App, page: Any) -> None:
    @app.job(queue="mail")
    async def send_email(n: int) -> None:
        await anyio.sleep(0.05)

    await app.enqueue_many([send_email.build(n=i) for i in range(20)])
    async with dashboard(app) as base:
        await page.goto(base + "/queues/mail")
        await expect(page.locator("#queue-counts")).to_contain_text("20")
        async with app.worker({"mail": 2}):
            await page.click("button[data-action=drain]")
            await expect(page.locator(".flash-ok")).to_have_text(
                "Queue 'mail' is drained: nothing left."
            )
    assert (await app.queue_stats("mail"))["mail"].counts["completed"] == 20


async def test_bulk_retry_and_cancel_of_a_filtered_set(app: aqueue.App, page: Any) -> None:
    @app.job
    async def alpha(n: int) -> None: ...

    @app.job
    async def beta(n: int) -> None: ...

    later = [alpha.options(schedule_in=3600).build(n=i) for i in range(4)]
    others = [beta.options(schedule_in=3600).build(n=i) for i in range(2)]
    for job in await app.enqueue_many(later + others):
        await app.cancel(job.id)
    fresh = await app.enqueue_many([beta.options(queue="bulk").build(n=i) for i in range(3)])

    async with dashboard(app) as base:
        await page.goto(base + "/jobs?kind=alpha&state=cancelled")
        await expect(jobs_in_table(page)).to_have_count(4)
        page.once("dialog", lambda dialog: dialog.accept())
        await page.click("button[data-action=bulk-retry]")
        await expect(page.locator(".flash-ok")).to_have_text("4 job(s) retried.")
        await expect(page).to_have_url(re.compile(r"/jobs\?kind=alpha&state=cancelled$"))
        await expect(page.locator("td.empty")).to_have_text("No jobs match.")

        # Without confirmation nothing happens (the page fixture dismisses dialogs).
        await page.goto(base + "/jobs?queue=bulk")
        await page.click("button[data-action=bulk-cancel]")
        await expect(jobs_in_table(page).locator(".state-available")).to_have_count(3)
        page.once("dialog", lambda dialog: dialog.accept())
        await page.click("button[data-action=bulk-cancel]")
        await expect(page.locator(".flash-ok")).to_have_text("3 job(s) cancelled.")
        await expect(jobs_in_table(page).locator(".state-cancelled")).to_have_count(3)

    states: dict[str, set[tuple[str, str]]] = {"alpha": set(), "beta": set()}
    for job in await app.list_jobs():
        states[job.kind].add((job.queue, job.state.value))
    assert states["alpha"] == {("default", "available")}
    assert states["beta"] == {("default", "cancelled"), ("bulk", "cancelled")}
    assert {j.id for j in await app.list_jobs(queue="bulk", state="cancelled")} == {
        j.id for j in fresh
    }


# -- security ------------------------------------------------------------------------------

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


async def test_xss_payloads_in_every_field_stay_inert_text(app: aqueue.App, page: Any) -> None:
    queue = 'q"><img src=x onerror="window.__xss = 3">'

    @app.job(queue=queue, max_attempts=1)
    async def fails(html: str) -> None:
        raise ValueError(XSS)

    @app.job(queue=queue)
    async def returns(html: str) -> dict[str, str]:
        return {"html": XSS}

    failed = await fails.options(tags=[XSS], meta={"note": XSS}).enqueue(html=XSS)
    done = await returns.enqueue(html=XSS)
    async with app.worker({queue: 2}):
        await app.wait(failed.id, timeout=10)
        await app.wait(done.id, timeout=10)

    async with dashboard(app) as base:
        urls = ["/", "/jobs", f"/jobs?tag={XSS}", f"/jobs/{failed.id}", f"/jobs/{done.id}"]
        await page.goto(base + "/")
        await page.click(f"#queues tr[data-queue='{queue}'] a.strong")
        await expect(page.locator("h1")).to_have_text(f"Queue {queue}")
        urls.append(page.url[len(base) :])
        for url in urls:
            await page.goto(base + url)
            await expect(page.locator("main")).to_contain_text('onerror="window.__xss = 3">')
            # Escaped, not merely blocked by the CSP: no element came out of a payload.
            assert await page.locator("main img, main script").count() == 0, url
            assert await page.locator("script").count() == 1, url  # dashboard.js only
            assert await page.evaluate("window.__xss") is None, url
        await page.goto(base + f"/jobs/{failed.id}")
        await expect(page.locator("#job-args")).to_contain_text(XSS.replace('"', '\\"'))
        await expect(page.locator("#job-outcome .error-message")).to_have_text(XSS)
        await page.goto(base + f"/jobs/{done.id}")
        await expect(page.locator("#job-result")).to_contain_text('onerror=\\"window.__xss = 2\\"')


async def test_read_only_hides_every_button_and_refuses_actions(app: aqueue.App, page: Any) -> None:
    @app.job
    async def later() -> None: ...

    job = await later.options(schedule_in=3600).enqueue()
    async with dashboard(app, read_only=True) as base:
        for url in ["/", "/jobs", f"/jobs/{job.id}", "/queues/default"]:
            response = await page.goto(base + url)
            assert response.status == 200, url
            await expect(page.locator(".topbar")).to_contain_text("read-only")
            assert await page.locator("form[method=post], button[data-action]").count() == 0
        for target, action in [(f"/jobs/{job.id}", "cancel"), ("/queues/default", "pause")]:
            answer = await page.request.post(
                base + target, form={"action": action, "csrf_token": "x" * 43}
            )
            assert answer.status == 403
            assert "read-only" in await answer.text()
        answer = await page.request.post(base + "/jobs", form={"action": "cancel"})
        assert answer.status == 403
    unchanged = await app.get_job(job.id)
    assert unchanged is not None and unchanged.state is aqueue.JobState.SCHEDULED
    assert not (await app.queue_stats("default"))["default"].paused


async def test_csrf_refuses_forged_and_cross_site_posts(
    app: aqueue.App, browser: Any, page: Any
) -> None:
    @app.job
    async def later() -> None: ...

    job = await later.options(schedule_in=3600).enqueue()
    async with dashboard(app) as base:
        # No token at all, then a made-up token next to the browser's real cookie.
        answer = await page.request.post(base + f"/jobs/{job.id}", form={"action": "cancel"})
        assert answer.status == 403
        await page.goto(base + f"/jobs/{job.id}")
        cookies = {c["name"]: c for c in await page.context.cookies()}
        assert cookies["aqueue_csrf"]["httpOnly"] and cookies["aqueue_csrf"]["sameSite"] == "Strict"
        answer = await page.request.post(
            base + f"/jobs/{job.id}", form={"action": "cancel", "csrf_token": "y" * 43}
        )
        assert answer.status == 403 and "mismatch" in await answer.text()

        # A page on another site that posts the form a user would: refused.
        target = base + f"/jobs/{job.id}"
        attacker = Starlette(routes=[Route("/", lambda request: HTMLResponse(_forged(target)))])
        async with served(attacker) as evil:
            await page.goto(evil.replace("127.0.0.1", "localhost") + "/")
            await expect(page.locator("body")).to_contain_text("refused")
            # Same host, other port: same-site but cross-origin, refused as well.
            await page.goto(evil + "/")
            await expect(page.locator("body")).to_contain_text("refused")
    still = await app.get_job(job.id)
    assert still is not None and still.state is aqueue.JobState.SCHEDULED


def _forged(target: str) -> str:
    return (
        f'<form id="f" method="post" action="{target}">'
        '<input name="action" value="cancel"><input name="csrf_token" value="' + "z" * 43 + '">'
        '</form><script>document.getElementById("f").submit()</script>'
    )


async def test_auth_callable_guards_every_request(app: aqueue.App, browser: Any) -> None:
    async def only_ops(request: Any) -> bool:
        return request.headers.get("x-user") == "ops"

    async with dashboard(app, auth=only_ops) as base:
        stranger = await browser.new_context()
        ops = await browser.new_context(extra_http_headers={"x-user": "ops"})
        try:
            for url in ["/", "/jobs", "/cluster", "/static/dashboard.css", "/jobs/1"]:
                assert (await stranger.request.get(base + url)).status == 401, url
            assert (await stranger.request.post(base + "/queues/default")).status == 401
            for url in ["/", "/jobs", "/cluster", "/static/dashboard.css"]:
                assert (await ops.request.get(base + url)).status == 200, url
        finally:
            await stranger.close()
            await ops.close()

    # Only a real True admits: a truthy mistake does not.
    async with dashboard(app, auth=lambda request: "yes") as base:
        assert (await browser.new_context()).request is not None
        context = await browser.new_context()
        try:
            assert (await context.request.get(base + "/")).status == 401
        finally:
            await context.close()


async def test_basic_auth_example_from_the_docs(app: aqueue.App, browser: Any) -> None:
    async with dashboard(app, auth=basic_auth) as base:
        anonymous = await browser.new_context()
        wrong = await browser.new_context(http_credentials={"username": "ops", "password": "no"})
        right = await browser.new_context(
            http_credentials={"username": "ops", "password": "s3cret"}
        )
        try:
            answer = await anonymous.request.get(base + "/")
            assert answer.status == 401
            assert answer.headers["www-authenticate"] == 'Basic realm="aqueue"'
            page = await wrong.new_page()
            assert (await page.goto(base + "/")).status == 401
            page = await right.new_page()
            assert (await page.goto(base + "/")).status == 200
            await expect(page.locator("h1")).to_have_text("Overview")
        finally:
            for context in (anonymous, wrong, right):
                await context.close()


# The basic-auth example of docs/howto/dashboard.md, verbatim.
def basic_auth(request: Request) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() == "basic":
        user, _, password = base64.b64decode(encoded).decode().partition(":")
        if secrets.compare_digest(f"{user}:{password}", "ops:s3cret"):
            return True
    raise HTTPException(401, headers={"WWW-Authenticate": 'Basic realm="aqueue"'})


# -- live updates, no scripts, mounting ----------------------------------------------------


async def test_live_updates_change_figures_without_a_reload(app: aqueue.App, page: Any) -> None:
    @app.job(queue="mail")
    async def send_email(n: int) -> None: ...

    await send_email.enqueue(n=0)
    async with dashboard(app, live_interval=0.2) as base:
        await page.goto(base + "/")
        available = page.locator("#queues tr[data-queue='mail'] td").nth(2)
        await expect(available).to_have_text("1")
        await page.evaluate("window.__same_document = true")
        await app.enqueue_many([send_email.build(n=i) for i in range(4)])
        await expect(available).to_have_text("5")
        await expect(page.locator("#live-toggle")).to_have_text("Live")
        assert await page.evaluate("window.__same_document") is True
        # Paused by the user: figures stay as they are.
        await page.click("#live-toggle")
        await expect(page.locator("#live-toggle")).to_have_text("Paused")
        await send_email.enqueue(n=9)
        await page.wait_for_timeout(600)  # three refresh periods: none may happen
        await expect(available).to_have_text("5")
        await page.click("#live-toggle")
        await expect(available).to_have_text("6")


async def test_pages_work_with_scripts_off(app: aqueue.App, browser: Any) -> None:
    @app.job
    async def later(n: int) -> None: ...

    job = await later.options(schedule_in=3600).enqueue(n=1)
    context = await browser.new_context(java_script_enabled=False)
    try:
        page = await context.new_page()
        async with dashboard(app) as base:
            await page.goto(base + "/jobs?state=scheduled")
            await expect(jobs_in_table(page)).to_have_count(1)
            await expect(page.locator("#live-toggle")).to_be_hidden()
            await page.click(f"a:text-is('{job.id}')")
            await expect(page.locator("#job-state")).to_have_text("scheduled")
            await page.click("button[data-action=cancel]")
            await expect(page.locator(".flash-ok")).to_have_text(f"Job {job.id} is cancelled.")
            await expect(page.locator("#job-state")).to_have_text("cancelled")
            # A reload repeats nothing (post/redirect/get) and the message is gone.
            await page.reload()
            await expect(page.locator(".flash")).to_have_count(0)
    finally:
        await context.close()


async def test_mounted_under_a_prefix_in_a_host_application(app: aqueue.App, page: Any) -> None:
    @app.job(queue="emails/v2")
    async def later() -> None: ...

    job = await later.options(schedule_in=3600).enqueue()
    host = Starlette(
        routes=[
            Route("/", lambda request: HTMLResponse("<h1>the host app</h1>")),
            Mount("/admin/queues", app=create_app(app)),
        ]
    )
    async with served(host) as base:
        await page.goto(base + "/admin/queues/")
        await expect(page.locator("h1")).to_have_text("Overview")
        assert await page.evaluate("document.styleSheets[0].cssRules.length") > 10
        await page.click("#queues a:text-is('emails/v2')")
        await expect(page).to_have_url(base + "/admin/queues/queues/emails%2Fv2")
        await page.click(f"a:text-is('{job.id}')")
        await expect(page).to_have_url(base + f"/admin/queues/jobs/{job.id}")
        await page.click("button[data-action=cancel]")
        await expect(page).to_have_url(base + f"/admin/queues/jobs/{job.id}")
        await expect(page.locator(".flash-ok")).to_have_text(f"Job {job.id} is cancelled.")
        await page.click("nav >> text=Overview")
        await expect(page).to_have_url(base + "/admin/queues/")
        await page.goto(base + "/")
        await expect(page.locator("h1")).to_have_text("the host app")
