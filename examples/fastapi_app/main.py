"""The web service: signups enqueue a welcome email in the request's own transaction, and
a report endpoint waits for a job's result.

Run it (after ``aqueue dev`` printed a database URL to export)::

    uvicorn --factory examples.fastapi_app.main:create_api

With ``RUN_WORKER=0`` the web process only enqueues, and workers run elsewhere::

    aqueue worker examples.fastapi_app.worker:app
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import aqueue

from .jobs import Jobs, LogMailer, Mailer, create_jobs, create_tables, signups_table


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str | None = None  # None: AQUEUE_DATABASE_URL
    schema: str = "signups"
    #: Run a worker inside the web process (one deployable), or leave the jobs to
    #: `aqueue worker` processes.
    run_worker: bool = True
    #: Create or upgrade the tables at startup (a real deploy runs `aqueue migrate`).
    migrate: bool = True

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            schema=os.environ.get("SIGNUPS_SCHEMA", "signups"),
            run_worker=os.environ.get("RUN_WORKER", "1") != "0",
            migrate=os.environ.get("MIGRATE", "1") != "0",
        )


class SignupIn(BaseModel):
    email: str


class SignupOut(BaseModel):
    id: int
    email: str
    job_id: int | None = None
    message_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Service:
    api: FastAPI
    jobs: Jobs
    #: The lifespan FastAPI runs; tests enter it themselves (``async with lifespan(api)``)
    #: because httpx's ASGITransport does not run it.
    lifespan: Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]


def create_service(settings: Settings, mailer: Mailer | None = None) -> Service:
    jobs = create_jobs(settings.database_url, schema=settings.schema, mailer=mailer or LogMailer())
    app = jobs.app

    @contextlib.asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        if settings.migrate:
            async with app:  # before a worker starts: it needs aqueue's tables
                await app.migrate()
                await create_tables(app)
        # Opens the App's pool and, when asked, runs a worker in this process; leaving it
        # stops the worker gracefully, then closes the pool.
        async with aqueue.lifespan(app, worker=settings.run_worker):
            yield

    api = FastAPI(lifespan=lifespan)

    @api.post("/signups", status_code=201)
    async def signup(body: SignupIn) -> SignupOut:
        # One transaction for the row and the job: the email is sent only for a signup
        # that committed, and a failed signup enqueues nothing.
        try:
            async with app.transaction() as conn:
                signup_id = await conn.fetchval(
                    f"INSERT INTO {signups_table(app)} (email) VALUES ($1) RETURNING id",
                    body.email,
                )
                job = await jobs.send_welcome.options(conn=conn).enqueue(
                    signup_id=signup_id, email=body.email
                )
        except asyncpg.UniqueViolationError:
            raise HTTPException(409, f"{body.email} has signed up already") from None
        return SignupOut(id=signup_id, email=body.email, job_id=job.id)

    @api.get("/signups/{signup_id}")
    async def get_signup(signup_id: int) -> SignupOut:
        async with app.connection() as conn:
            row = await conn.fetchrow(
                f"SELECT id, email, message_id FROM {signups_table(app)} WHERE id = $1",
                signup_id,
            )
        if row is None:
            raise HTTPException(404, "no such signup")
        return SignupOut(**dict(row))

    @api.get("/reports/signups")
    async def signups_report(domain: str, timeout: float = 5.0) -> dict[str, Any]:
        job = await jobs.count_signups.enqueue(domain=domain)
        try:
            done = await app.wait(job.id, timeout=timeout)
        except TimeoutError:
            # The job is still queued (or running) and will finish; the caller may
            # come back for it.
            raise HTTPException(504, f"report job {job.id} is not done yet") from None
        if done.state is not aqueue.JobState.COMPLETED:
            raise HTTPException(500, f"report job {job.id} ended {done.state}")
        result: dict[str, Any] = done.result
        return result

    return Service(api=api, jobs=jobs, lifespan=lifespan)


def create_api() -> FastAPI:
    """For ``uvicorn --factory``: the service configured from the environment."""
    return create_service(Settings.from_env()).api
