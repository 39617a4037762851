"""The example service's tests, written with aqueue's testing kit: the plugin's
``aqueue_database_url`` and ``aqueue_schema`` fixtures, ``isolated``,
``assert_enqueued``/``refute_enqueued``, ``drain_queue`` and ``perform_job``.

httpx's ``ASGITransport`` does not run the app's lifespan, so the tests enter it
themselves (``async with service.lifespan(service.api)``); the lifespan opens the App and,
in the test that asks for it, runs a worker in the process.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

import aqueue
from aqueue.testing import assert_enqueued, drain_queue, isolated, perform_job, refute_enqueued
from examples.fastapi_app.main import Service, Settings, create_service


class RecordingMailer:
    """Keeps what it was asked to send; ``failing`` makes every send raise."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.failing = False

    async def send(self, to: str, subject: str, body: str) -> str:
        if self.failing:
            raise ConnectionError("mail provider is down")
        self.sent.append(to)
        return f"m-{len(self.sent)}"


@contextlib.asynccontextmanager
async def running(
    url: str, mailer: RecordingMailer, *, run_worker: bool
) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    service = create_service(Settings(database_url=url, run_worker=run_worker), mailer)
    transport = httpx.ASGITransport(app=service.api)
    async with (
        isolated(service.jobs.app),  # a fresh schema for this test, dropped after it
        service.lifespan(service.api),  # what uvicorn would run at startup and shutdown
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield service, client


@pytest.fixture
def mailer() -> RecordingMailer:
    return RecordingMailer()


@pytest.fixture
async def service(
    aqueue_database_url: str, mailer: RecordingMailer
) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    """The service with no worker in the process: jobs wait until a test runs them."""
    async with running(aqueue_database_url, mailer, run_worker=False) as pair:
        yield pair


async def test_signup_enqueues_a_welcome_email(
    service: tuple[Service, httpx.AsyncClient], mailer: RecordingMailer
) -> None:
    svc, client = service
    response = await client.post("/signups", json={"email": "ada@example.com"})
    assert response.status_code == 201
    signup = response.json()
    await assert_enqueued(
        svc.jobs.app,
        svc.jobs.send_welcome,
        args={"signup_id": signup["id"], "email": "ada@example.com"},
        queue="mail",
        count=1,
    )
    assert mailer.sent == []  # enqueued, not run: no worker here


async def test_a_failed_signup_enqueues_nothing(
    service: tuple[Service, httpx.AsyncClient],
) -> None:
    svc, client = service
    assert (await client.post("/signups", json={"email": "ada@example.com"})).status_code == 201
    again = await client.post("/signups", json={"email": "ada@example.com"})
    assert again.status_code == 409  # the INSERT failed, and the enqueue rolled back with it
    await assert_enqueued(svc.jobs.app, svc.jobs.send_welcome, count=1)
    assert (await client.post("/signups", json={"mail": "x"})).status_code == 422
    await refute_enqueued(svc.jobs.app, svc.jobs.send_welcome, args={"email": "x"})


async def test_the_welcome_email_is_sent_and_recorded(
    service: tuple[Service, httpx.AsyncClient], mailer: RecordingMailer
) -> None:
    svc, client = service
    signup = (await client.post("/signups", json={"email": "ada@example.com"})).json()
    assert await drain_queue(svc.jobs.app, "mail") == {aqueue.JobState.COMPLETED: 1}
    assert mailer.sent == ["ada@example.com"]
    # The after_process hook recorded the message id on the signup.
    shown = (await client.get(f"/signups/{signup['id']}")).json()
    assert shown["message_id"] == "m-1"


async def test_send_welcome_through_perform_job(
    service: tuple[Service, httpx.AsyncClient], mailer: RecordingMailer
) -> None:
    svc, client = service
    signup = (await client.post("/signups", json={"email": "ada@example.com"})).json()
    mailer.failing = True
    failed = await perform_job(svc.jobs.send_welcome, signup_id=signup["id"], email="x@y.z")
    assert failed.state is aqueue.JobState.RETRYABLE
    assert isinstance(failed.error, ConnectionError)
    mailer.failing = False
    done = await perform_job(svc.jobs.send_welcome, signup_id=signup["id"], email="x@y.z")
    assert done.state is aqueue.JobState.COMPLETED and done.result == {"message_id": "m-1"}
    # perform_job ran the hook, as a worker would have.
    assert (await client.get(f"/signups/{signup['id']}")).json()["message_id"] == "m-1"


async def test_a_report_waits_for_its_job_in_the_in_process_worker(
    aqueue_database_url: str, mailer: RecordingMailer
) -> None:
    async with running(aqueue_database_url, mailer, run_worker=True) as (_, client):
        for email in ["a@example.com", "b@example.com", "c@other.org"]:
            assert (await client.post("/signups", json={"email": email})).status_code == 201
        response = await client.get("/reports/signups", params={"domain": "example.com"})
        assert response.status_code == 200
        assert response.json() == {"domain": "example.com", "signups": 2}


async def test_a_report_times_out_when_no_worker_runs(
    service: tuple[Service, httpx.AsyncClient],
) -> None:
    svc, client = service
    response = await client.get(
        "/reports/signups", params={"domain": "example.com", "timeout": 0.2}
    )
    assert response.status_code == 504
    [job] = await assert_enqueued(svc.jobs.app, svc.jobs.count_signups, state="available")
    assert await drain_queue(svc.jobs.app, "reports") == {aqueue.JobState.COMPLETED: 1}
    done = await svc.jobs.app.get_job(job.id)
    assert done is not None and done.result == {"domain": "example.com", "signups": 0}


async def test_the_service_starts_on_an_empty_schema(
    aqueue_database_url: str, aqueue_schema: str, mailer: RecordingMailer
) -> None:
    # As in production: the lifespan migrates, then starts the worker (aqueue_schema is
    # dropped after the test).
    settings = Settings(database_url=aqueue_database_url, schema=aqueue_schema)
    service = create_service(settings, mailer)
    transport = httpx.ASGITransport(app=service.api)
    async with (
        service.lifespan(service.api),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        signup = (await client.post("/signups", json={"email": "ada@example.com"})).json()
        done = await service.jobs.app.wait(signup["job_id"], timeout=10)
    assert done.state is aqueue.JobState.COMPLETED and mailer.sent == ["ada@example.com"]
