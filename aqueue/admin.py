"""Job admin: read, list, cancel, retry, delete and wait for single jobs.

``cancel`` works on any node: a waiting job is cancelled in the statement itself; a
running one is flagged and its node is told through NOTIFY (and finds the flag by
polling if the notification is lost), then records the cancellation when the job stops.
``wait`` subscribes to the final-state notifications and re-reads the job, polling as
a fallback, so a lost notification only delays the answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from .db.database import Database
from .db.notifier import Notifier
from .errors import InvalidOption, JobNotFound, JobStateError
from .jobs import Job, JobState, job_from_row
from .validate import validate_name

__all__ = ["JobAdmin", "check_job_id"]

LIST_LIMIT_MAX = 100_000


def check_job_id(job_id: object) -> int:
    if not isinstance(job_id, int) or isinstance(job_id, bool) or not 1 <= job_id < 2**63:
        raise InvalidOption("job_id", f"must be a positive integer, got {job_id!r}")
    return job_id


class JobAdmin:
    def __init__(
        self, db: Database, notifier: Callable[[], Awaitable[Notifier]], *, poll_interval: float
    ) -> None:
        self._db = db
        self._notifier = notifier
        self._poll_interval = poll_interval

    async def get(self, job_id: int) -> Job | None:
        row = await self._db.get_job(check_job_id(job_id))
        return job_from_row(row) if row is not None else None

    async def list(
        self,
        *,
        state: JobState | str | None = None,
        queue: str | None = None,
        kind: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        if state is not None:
            try:
                state = JobState(state).value
            except ValueError:
                raise InvalidOption(
                    "state", f"{state!r} is not one of {', '.join(s.value for s in JobState)}"
                ) from None
        if queue is not None:
            validate_name("queue", queue)
        if kind is not None:
            validate_name("kind", kind)
        if (
            not isinstance(limit, int)
            or isinstance(limit, bool)
            or not 1 <= limit <= LIST_LIMIT_MAX
        ):
            raise InvalidOption(
                "limit", f"must be an integer from 1 to {LIST_LIMIT_MAX}, got {limit!r}"
            )
        rows = await self._db.list_jobs(state, queue, kind, limit)
        return [job_from_row(row) for row in rows]

    async def cancel(self, job_id: int) -> Job | None:
        found = await self._db.cancel_job(check_job_id(job_id), "cancelled by app.cancel")
        if found is None:
            return None
        return await self.get(job_id)

    async def retry(self, job_id: int) -> Job:
        found = await self._db.retry_job(check_job_id(job_id))
        if found is None:
            raise JobNotFound(job_id)
        if found["has_dependents"]:
            raise JobStateError(
                f"job {job_id} is a {found['state']} workflow or batch job whose dependents "
                "were already settled by its ending; enqueue the work again instead"
            )
        if found["deps_unfinished"]:
            raise JobStateError(
                f"job {job_id} is a workflow step whose dependencies have not all ended; "
                "it cannot run before they do"
            )
        if not found["changed"]:
            raise JobStateError(
                f"job {job_id} is {found['state']}: only scheduled, retryable, "
                "discarded or cancelled jobs can be retried"
            )
        job = await self.get(job_id)
        if job is None:
            raise JobNotFound(job_id, "was deleted meanwhile")
        return job

    async def delete(self, job_id: int) -> bool:
        found = await self._db.delete_job(check_job_id(job_id))
        if found is None:
            return False
        if not found["changed"]:
            raise JobStateError(f"job {job_id} is running: cancel it first, then delete it")
        return True

    async def wait(self, job_id: int, timeout: float | None = None) -> Job:
        job_id = check_job_id(job_id)
        if timeout is not None and (
            not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0
        ):
            raise InvalidOption("timeout", f"must be a number >= 0, got {timeout!r}")
        notifier = await self._notifier()
        job = await self.get(job_id)  # a final job returns even with timeout=0
        if job is not None and job.state.is_final:
            return job
        with anyio.move_on_after(timeout if timeout is not None else float("inf")):
            while True:
                with notifier.final_subscription(job_id) as finalized:
                    job = await self.get(job_id)
                    if job is None:
                        raise JobNotFound(job_id)
                    if job.state.is_final:
                        return job
                    # Polling covers a notification lost while the listener reconnects.
                    with anyio.move_on_after(self._poll_interval * 5):
                        await finalized.wait()
        raise TimeoutError(f"job {job_id} did not finish within {timeout}s")
