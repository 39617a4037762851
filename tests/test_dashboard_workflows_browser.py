# ruff: noqa: F811  (the fixtures imported below are the parameters of the tests)
"""The dashboard's workflow and batch pages end to end: headless Chromium against a real
uvicorn server, on a real database, with real workers (the fixtures and the set-up are
those of test_dashboard_browser.py).

Set ``AQUEUE_DASHBOARD_SCREENSHOTS=docs/images`` to refresh the workflow screenshots.
"""

from __future__ import annotations

import os
import re
from typing import Any

import anyio
import pytest

import aqueue
from tests.support import eventually
from tests.test_dashboard_browser import (  # noqa: F401  (fixtures)
    XSS,
    _shoot,
    app,
    browser,
    dashboard,
    expect,
    page,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


def steps_in_table(page: Any) -> Any:
    return page.locator("#workflow-steps tbody tr[data-job-id]")


async def _state_of(app: aqueue.App, job_id: int, *states: str) -> bool:
    job = await app.get_job(job_id)
    return job is not None and job.state.value in states


async def test_open_a_workflow_see_its_steps_and_cancel_it(
    app: aqueue.App,
    page: Any,
) -> None:
    shots = os.environ.get("AQUEUE_DASHBOARD_SCREENSHOTS")
    release = anyio.Event()

    def download(day: str) -> dict[str, Any]:
        return {"day": day, "rows": 3}

    @app.job
    async def fetch(ctx: aqueue.JobContext, day: str) -> dict[str, Any]:
        return await ctx.step("download", download, day)

    @app.job
    async def clean(ctx: aqueue.JobContext) -> None:
        await ctx.progress(0.4, "cleaned 4 of 10 files")
        await release.wait()

    @app.job
    async def load(ctx: aqueue.JobContext) -> None: ...

    wf = aqueue.Workflow("nightly-etl")
    wf.add("fetch", fetch.build(day="2026-12-01"))
    wf.add("clean", clean.build(), deps=["fetch"])
    wf.add("report", load.build(), deps=["fetch"])
    wf.add("load", load.build(), deps=["clean", "report"])

    @app.job(max_attempts=1)
    async def thumbnail(n: int) -> None:
        if n == 4:
            raise OSError("corrupt image")

    # Older ones first, so the list has more to show than the workflow under test.
    earlier = aqueue.Workflow("welcome-series")
    earlier.add("email", load.build())
    earlier.add("follow-up", load.build(), deps=["email"])
    finished = await app.enqueue_workflow(earlier)
    failed = await app.enqueue_batch([thumbnail.build(n=i) for i in range(6)], name="thumbnails")
    batch = await app.enqueue_batch(
        [load.options(schedule_in=3600).build() for _ in range(3)], name="resend-invoices"
    )
    run = await app.enqueue_workflow(wf)
    ids = {name: job.id for name, job in run.jobs.items()}
    try:
        async with app.worker({"default": 2}), dashboard(app, live_interval=0.2) as base:
            await eventually(lambda: _state_of(app, ids["clean"], "running"), what="clean running")
            await eventually(
                lambda: _state_of(app, ids["report"], "completed"), what="report completed"
            )
            for job in [finished.jobs["follow-up"], *failed.jobs]:
                await app.wait(job.id, timeout=10)
            await page.goto(base + "/")
            await page.click("nav >> text=Workflows")
            rows = page.locator("#workflow-list tbody tr")
            await expect(rows).to_have_count(4)
            # Newest first, with the jobs counted by state.
            await expect(rows.nth(0)).to_contain_text("nightly-etl")
            await expect(rows.nth(0).locator(".state")).to_have_text("running")
            await expect(rows.nth(1)).to_contain_text("resend-invoices")
            await expect(rows.nth(1)).to_contain_text("batch")
            await expect(rows.nth(2).locator(".state")).to_have_text("failed")
            await expect(rows.nth(3).locator(".state")).to_have_text("completed")
            await _shoot(page, shots, "workflows", full_page=False)

            await rows.nth(0).locator("a", has_text="nightly-etl").click()
            await expect(page).to_have_url(base + f"/workflows/{run.id}")
            await expect(page.locator("h1")).to_contain_text(f"Workflow {run.id}")
            steps = steps_in_table(page)
            await expect(steps).to_have_count(4)
            clean_row = page.locator("tr[data-step='clean']")
            await expect(clean_row.locator(".state")).to_have_text("running")
            await expect(clean_row.locator("progress")).to_have_attribute("value", "0.4")
            await expect(page.locator("tr[data-step='fetch'] .state")).to_have_text("completed")
            await expect(page.locator("tr[data-step='load'] .state")).to_have_text("pending")
            await expect(page.locator("tr[data-step='load'] td.deps a")).to_have_text(
                ["clean", "report"]
            )
            await expect(page.locator("tr[data-step='fetch'] td.deps")).to_have_text("—")
            await expect(page.locator("#workflow-counts")).to_contain_text("pending")
            await _shoot(page, shots, "workflow")

            # A step's job page links back and shows the recorded resumable step.
            await page.locator("tr[data-step='fetch'] a", has_text=str(ids["fetch"])).click()
            await expect(page.locator("#job-workflow")).to_contain_text(
                f"workflow {run.id} · step fetch"
            )
            recorded = page.locator("#job-steps tbody tr")
            await expect(recorded).to_have_count(1)
            await expect(recorded.nth(0)).to_contain_text("download")
            await expect(recorded.nth(0).locator(".step-result")).to_contain_text('"rows": 3')
            await page.click("#job-workflow a")
            await expect(page).to_have_url(base + f"/workflows/{run.id}")

            # Cancel it: asked first (dismissed: nothing happens), then confirmed.
            await page.click("button[data-action=cancel]")
            await expect(page.locator("tr[data-step='load'] .state")).to_have_text("pending")
            page.once("dialog", lambda dialog: dialog.accept())
            await page.click("button[data-action=cancel]")
            await expect(page.locator(".flash-ok")).to_contain_text(
                f"Workflow {run.id}: 2 job(s) cancelled or told to stop."
            )
            await expect(page.locator("tr[data-step='load'] .state")).to_have_text("cancelled")
            # The running step is told to stop; the page follows it live.
            await expect(clean_row.locator(".state")).to_have_text("cancelled")
            await expect(page.locator("#workflow-state")).to_have_text("cancelled")
            await expect(page.locator("button[data-action=cancel]")).to_have_count(0)
    finally:
        release.set()
    status = await app.workflow_status(run.id)
    assert {n: j.state.value for n, j in status.steps.items()} == {
        "fetch": "completed",
        "report": "completed",
        "clean": "cancelled",
        "load": "cancelled",
    }
    untouched = await app.workflow_status(batch.id)
    assert untouched.counts == {"scheduled": 3}


async def test_a_batch_page_and_its_job(app: aqueue.App, page: Any) -> None:
    @app.job
    async def member(n: int) -> int:
        return n

    @app.job
    async def done() -> None: ...

    batch = await app.enqueue_batch(
        [member.build(n=i) for i in range(3)], callback=done.build(), name="squares"
    )
    assert batch.callback is not None
    async with app.worker({"default": 2}):
        await app.wait(batch.callback.id, timeout=10)
    async with dashboard(app) as base:
        await page.goto(base + f"/workflows/{batch.id}")
        await expect(page.locator("h1")).to_contain_text(f"Batch {batch.id}")
        await expect(page.locator("#workflow-state")).to_have_text("completed")
        await expect(steps_in_table(page)).to_have_count(4)
        await expect(page.locator("tr[data-step='callback'] .state")).to_have_text("completed")
        # Nothing left to cancel: no button.
        await expect(page.locator("button[data-action=cancel]")).to_have_count(0)
        await page.goto(base + f"/jobs/{batch.jobs[0].id}")
        await expect(page.locator("#job-batch")).to_contain_text(f"batch {batch.id}")
        await expect(page.locator("#job-steps")).to_contain_text("recorded no resumable step")
        await page.goto(base + "/workflows/987654")
        await expect(page.locator("main")).to_contain_text("There is no workflow or batch 987654.")


async def test_cancelling_a_batch_says_batch(app: aqueue.App, page: Any) -> None:
    @app.job
    async def member(n: int) -> int:
        return n

    @app.job
    async def done() -> None: ...

    later = member.options(schedule_in=3600)
    batch = await app.enqueue_batch([later.build(n=i) for i in range(3)], callback=done.build())
    async with dashboard(app) as base:
        # The overview counts the callback waiting on the batch: pending.
        await page.goto(base + "/")
        row = page.locator("#queues tr[data-queue='default']")
        await expect(page.locator("#queues thead")).to_contain_text("pending")
        await expect(row.locator("td").nth(3)).to_have_text("3")  # scheduled
        await expect(row.locator("td").nth(4)).to_have_text("1")  # pending
        await page.goto(base + f"/workflows/{batch.id}")
        page.once("dialog", lambda dialog: dialog.accept())
        await page.click("button[data-action=cancel]")
        await expect(page.locator(".flash-ok")).to_contain_text(
            f"Batch {batch.id}: 4 job(s) cancelled or told to stop."
        )
        await expect(page.locator("#workflow-state")).to_have_text("cancelled")
    assert (await app.workflow_status(batch.id)).counts == {"cancelled": 4}


async def test_kind_filter_and_paging(app: aqueue.App, page: Any) -> None:
    @app.job
    async def later(n: int) -> None: ...

    workflows = []
    for i in range(52):
        wf = aqueue.Workflow(f"wf-{i}")
        wf.add("only", later.options(schedule_in=3600).build(n=i))
        workflows.append(await app.enqueue_workflow(wf))
    batches = [
        await app.enqueue_batch([later.options(schedule_in=3600).build(n=i)], name=f"b-{i}")
        for i in range(2)
    ]
    async with dashboard(app) as base:
        await page.goto(base + "/workflows")
        rows = page.locator("#workflow-list tbody tr[data-workflow-id]")
        await expect(rows).to_have_count(50)
        await expect(rows.first).to_contain_text("b-1")
        await page.click("a[rel=next]")
        await expect(rows).to_have_count(4)
        await expect(rows.last).to_contain_text("wf-0")
        await expect(page.locator("a[rel=next]")).to_have_count(0)

        await page.goto(base + "/workflows")
        await page.select_option("select[name=kind]", "batch")
        await page.click("button:text-is('Filter')")
        await expect(page).to_have_url(re.compile(r"kind=batch"))
        await expect(rows).to_have_count(2)
        assert await rows.evaluate_all("rs => rs.map(r => r.dataset.workflowId)") == [
            str(b.id) for b in reversed(batches)
        ]
        await page.goto(base + "/workflows?kind=workflow")
        await expect(rows).to_have_count(50)
        await page.click("a[rel=next]")
        await expect(page).to_have_url(re.compile(r"kind=workflow"))
        await expect(rows).to_have_count(2)
        await expect(rows.first).to_contain_text("wf-1")
        await page.goto(base + "/workflows?kind=bogus")
        await expect(page.locator(".flash-error")).to_contain_text("unknown kind 'bogus'")
        await expect(rows).to_have_count(50)
    assert len(workflows) == 52


async def test_read_only_hides_and_refuses_cancel_workflow(
    app: aqueue.App,
    page: Any,
) -> None:
    @app.job
    async def later() -> None: ...

    wf = aqueue.Workflow("kept")
    wf.add("a", later.options(schedule_in=3600).build())
    wf.add("b", later.build(), deps=["a"])
    run = await app.enqueue_workflow(wf)
    async with dashboard(app, read_only=True) as base:
        for url in ["/workflows", f"/workflows/{run.id}"]:
            response = await page.goto(base + url)
            assert response.status == 200, url
            await expect(page.locator("main")).to_contain_text("kept")
            assert await page.locator("form[method=post], button[data-action]").count() == 0
        answer = await page.request.post(
            base + f"/workflows/{run.id}", form={"action": "cancel", "csrf_token": "x" * 43}
        )
        assert answer.status == 403
        assert "read-only" in await answer.text()
    async with dashboard(app) as base:
        # Writable, but a forged post (no token) is refused as well.
        answer = await page.request.post(base + f"/workflows/{run.id}", form={"action": "cancel"})
        assert answer.status == 403
    assert (await app.workflow_status(run.id)).counts == {"scheduled": 1, "pending": 1}


async def test_xss_in_workflow_names_and_step_results_stays_inert(
    app: aqueue.App,
    page: Any,
) -> None:
    def payload() -> dict[str, str]:
        return {"html": XSS}

    @app.job
    async def risky(ctx: aqueue.JobContext) -> None:
        await ctx.step(XSS, payload)

    wf = aqueue.Workflow(XSS)
    wf.add(XSS, risky.build())
    run = await app.enqueue_workflow(wf)
    batch = await app.enqueue_batch([risky.options(schedule_in=3600).build()], name=XSS)
    async with app.worker({"default": 1}):
        await app.wait(run.jobs[XSS].id, timeout=10)
    async with dashboard(app) as base:
        urls = ["/workflows", f"/workflows/{run.id}", f"/workflows/{batch.id}"]
        urls.append(f"/jobs/{run.jobs[XSS].id}")
        for url in urls:
            await page.goto(base + url)
            await expect(page.locator("main")).to_contain_text('onerror="window.__xss = 2">')
            assert await page.locator("main img, main script").count() == 0, url
            assert await page.locator("script").count() == 1, url  # dashboard.js only
            assert await page.evaluate("window.__xss") is None, url
        await page.goto(base + f"/workflows/{run.id}")
        await expect(page.locator("#workflow-name")).to_have_text(XSS)
        await expect(steps_in_table(page).locator("td.step-name")).to_have_text(XSS)
        await page.goto(base + f"/jobs/{run.jobs[XSS].id}")
        row = page.locator("#job-steps tbody tr")
        await expect(row.locator("td").first).to_have_text(XSS)
        await expect(row.locator(".step-result")).to_contain_text('onerror=\\"window.__xss = 2\\"')
