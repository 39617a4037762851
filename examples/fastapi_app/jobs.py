"""The service's background jobs: a welcome email after each signup, and a report that an
endpoint waits for.

The App is made by a function, not at import time, so that tests make their own (on the
test database) and nothing connects when this module is imported.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any, Protocol

import aqueue

logger = logging.getLogger(__name__)


class Mailer(Protocol):
    """Sends one email; returns the provider's message id."""

    async def send(self, to: str, subject: str, body: str) -> str: ...


class LogMailer:
    """A mailer for running the example: it logs instead of sending."""

    async def send(self, to: str, subject: str, body: str) -> str:
        message_id = f"m-{uuid.uuid4().hex[:8]}"
        logger.info("email %s to %s: %s", message_id, to, subject)
        return message_id


def signups_table(jobs: aqueue.App) -> str:
    """The service keeps its table in the schema that holds aqueue's, quoted for SQL."""
    return '"' + jobs.schema.replace('"', '""') + '".signups'


@dataclasses.dataclass(frozen=True)
class Jobs:
    """The App and its job definitions, for the endpoints (and the tests) to use."""

    app: aqueue.App
    send_welcome: aqueue.JobDefinition[..., dict[str, str]]
    count_signups: aqueue.JobDefinition[..., dict[str, Any]]


def create_jobs(url: str | None, *, schema: str, mailer: Mailer, **settings: Any) -> Jobs:
    jobs = aqueue.App(url, schema=schema, **settings)

    @jobs.job(queue="mail", max_attempts=5, timeout=30)
    async def send_welcome(signup_id: int, email: str) -> dict[str, str]:
        message_id = await mailer.send(email, "Welcome!", "Thanks for signing up.")
        return {"message_id": message_id}

    @send_welcome.after_process
    async def mark_welcomed(job: aqueue.Job, outcome: aqueue.Outcome) -> None:
        # Runs once the outcome is committed; outcome.result is what the job returned.
        if outcome.state is not aqueue.JobState.COMPLETED:
            return
        async with jobs.connection() as conn:
            await conn.execute(
                f"UPDATE {signups_table(jobs)} SET message_id = $2 WHERE id = $1",
                job.args["signup_id"],
                outcome.result["message_id"],
            )

    @jobs.job(queue="reports", timeout=60)
    async def count_signups(domain: str) -> dict[str, Any]:
        async with jobs.connection() as conn:
            count = await conn.fetchval(
                f"SELECT count(*) FROM {signups_table(jobs)} WHERE email LIKE '%@' || $1",
                domain,
            )
        return {"domain": domain, "signups": count}

    return Jobs(app=jobs, send_welcome=send_welcome, count_signups=count_signups)


async def create_tables(jobs: aqueue.App) -> None:
    """The service's own table, next to aqueue's (a real service has migrations for it)."""
    async with jobs.connection() as conn:
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {signups_table(jobs)} (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                email text NOT NULL UNIQUE,
                message_id text
            )"""
        )
