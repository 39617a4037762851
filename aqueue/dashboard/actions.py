"""The actions (POST): retry, cancel, delete a job; pause, resume, drain a queue; cancel a
workflow or batch; bulk retry or cancel of the jobs a filter selects.

Each goes through the App's public admin calls, nothing else. Each answers with a
redirect back to the page it came from (post/redirect/get, so a reload never repeats an
action) and a one-time message in a cookie. ``read_only`` refuses them all with 403,
and a request whose CSRF token does not check out is refused with 403 too.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..db.browse import JobFilter
from ..errors import AqueueError, JobNotFound, JobStateError, WorkflowNotFound
from ..jobs import JobState
from .readmodels import CANCELLABLE, RETRYABLE
from .security import CSRF_FIELD, csrf_failure, set_flash
from .site import Site

__all__ = ["Actions"]

#: Form bodies are a handful of short fields; anything larger is not ours.
MAX_FORM_BYTES = 16 * 1024
_BATCH = 200


class Refused(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


class Actions:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.render = site.renderer

    async def _form(self, request: Request) -> dict[str, str]:
        """The checked form of an action: read-only mode, size, CSRF token."""
        if self.site.read_only:
            raise Refused(403, "This dashboard is read-only.")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise Refused(413, "The form is too large.")
        fields = {k: v[-1] for k, v in parse_qs(body.decode(errors="replace")).items()}
        problem = csrf_failure(request, fields.get(CSRF_FIELD, ""))
        if problem is not None:
            raise Refused(403, problem)
        return fields

    def _back(self, request: Request, fields: dict[str, str], default: str) -> str:
        """Where to send the browser afterwards: the form's ``next`` when it is a page of
        this dashboard (never another site), else ``default``."""
        prefix = self.render.prefix(request)
        target = fields.get("next", "")
        if target.startswith(prefix + "/") and not target.startswith("//") and "\\" not in target:
            return target
        return prefix + default

    def _done(self, request: Request, target: str, level: str, text: str) -> Response:
        response = RedirectResponse(target, status_code=303)
        set_flash(response, level, text, self.render.cookie_path(request))
        return response

    async def job(self, request: Request) -> Response:
        job_id: int = request.path_params["job_id"]
        try:
            fields = await self._form(request)
        except Refused as refused:
            return self.render.error(request, refused.status_code, str(refused))
        action = fields.get("action")
        back = self._back(request, fields, f"/jobs/{job_id}")
        app = self.site.app
        try:
            if action == "retry":
                job = await app.retry(job_id)
                return self._done(request, back, "ok", f"Job {job_id} is {job.state.value} now.")
            if action == "cancel":
                found = await app.cancel(job_id)
                if found is None:
                    raise JobNotFound(job_id)
                text = (
                    f"Job {job_id} is cancelled."
                    if found.state is JobState.CANCELLED
                    else f"Job {job_id} was told to stop; it is {found.state.value} until "
                    "its worker stops it."
                )
                return self._done(request, back, "ok", text)
            if action == "delete":
                if not await app.delete(job_id):
                    raise JobNotFound(job_id)
                listing = self.render.prefix(request) + "/jobs"
                return self._done(request, listing, "ok", f"Job {job_id} was deleted.")
        except (JobStateError, JobNotFound) as exc:
            return self._done(request, back, "error", str(exc))
        return self.render.error(request, 400, f"Unknown action {action!r}.")

    async def workflow(self, request: Request) -> Response:
        workflow_id: int = request.path_params["workflow_id"]
        try:
            fields = await self._form(request)
        except Refused as refused:
            return self.render.error(request, refused.status_code, str(refused))
        action = fields.get("action")
        if action != "cancel":
            return self.render.error(request, 400, f"Unknown action {action!r}.")
        back = self._back(request, fields, f"/workflows/{workflow_id}")
        if not 1 <= workflow_id < 2**63:
            return self.render.error(request, 404, f"There is no workflow {workflow_id}.")
        # Its kind first, for the message: once the cancel is done, nothing may fail it.
        row = await self.site.app.db.get_workflow(workflow_id)
        what = "Batch" if row is not None and row["kind"] == "batch" else "Workflow"
        try:
            changed = await self.site.app.cancel_workflow(workflow_id)
        except WorkflowNotFound as exc:
            return self._done(request, back, "error", str(exc))
        text = (
            f"{what} {workflow_id}: {changed} job(s) cancelled or told to stop."
            if changed
            else f"{what} {workflow_id} had nothing left to cancel."
        )
        return self._done(request, back, "ok", text)

    async def queue(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        try:
            fields = await self._form(request)
        except Refused as refused:
            return self.render.error(request, refused.status_code, str(refused))
        action = fields.get("action")
        back = self._back(request, fields, "/")
        app = self.site.app
        try:
            if action == "pause":
                changed = await app.pause_queue(name)
                text = f"Queue {name!r} is paused." if changed else f"{name!r} was paused already."
                return self._done(request, back, "ok", text)
            if action == "resume":
                changed = await app.resume_queue(name)
                text = f"Queue {name!r} resumed." if changed else f"{name!r} was not paused."
                return self._done(request, back, "ok", text)
            if action == "drain":
                try:
                    await app.drain(name, timeout=self.site.drain_timeout)
                except TimeoutError as exc:
                    return self._done(request, back, "error", str(exc))
                return self._done(request, back, "ok", f"Queue {name!r} is drained: nothing left.")
        except AqueueError as exc:
            return self._done(request, back, "error", str(exc))
        return self.render.error(request, 400, f"Unknown action {action!r}.")

    async def bulk(self, request: Request) -> Response:
        """Retry or cancel, newest first, up to ``bulk_limit`` jobs the form's filter selects
        (restricted to the states the action applies to)."""
        try:
            fields = await self._form(request)
        except Refused as refused:
            return self.render.error(request, refused.status_code, str(refused))
        action = fields.get("action")
        if action not in ("retry", "cancel"):
            return self.render.error(request, 400, f"Unknown action {action!r}.")
        eligible = RETRYABLE if action == "retry" else CANCELLABLE
        state = fields.get("state") or None
        states = [s for s in eligible if state is None or s == state]
        back = self._back(request, fields, "/jobs")
        if not states:
            return self._done(request, back, "error", f"No {state} job can be {action}d.")
        where = JobFilter(
            states=states,
            queue=fields.get("queue") or None,
            kind=fields.get("kind") or None,
            tag=fields.get("tag") or None,
        )
        done = skipped = 0
        before: int | None = None
        limit = self.site.bulk_limit
        more = False
        while done + skipped < limit:
            ids = await self.site.browse.job_ids(
                where, before=before, limit=min(_BATCH, limit - done - skipped)
            )
            if not ids:
                break
            for job_id in ids:
                try:
                    if action == "retry":
                        await self.site.app.retry(job_id)
                    elif await self.site.app.cancel(job_id) is None:
                        raise JobNotFound(job_id)
                    done += 1
                except (JobStateError, JobNotFound):
                    skipped += 1  # changed state or vanished since it was listed
            before = ids[-1]
        else:
            more = bool(await self.site.browse.job_ids(where, before=before, limit=1))
        verb = "retried" if action == "retry" else "cancelled"
        text = f"{done} job(s) {verb}"
        if skipped:
            text += f", {skipped} skipped (their state changed meanwhile)"
        if more:
            text += f"; more match: this acts on {limit} per click"
        return self._done(request, back, "ok", text + ".")
