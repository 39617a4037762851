"""Templates and the helpers they use: links under the mount path, times, JSON.

Every template is rendered with autoescaping on and no ``|safe`` anywhere: job arguments,
results, errors, tracebacks, kinds, queue and node names are text, whatever they hold.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from .security import clear_flash, csrf_token, read_flash, set_csrf_cookie

__all__ = ["Renderer"]

NAV = (
    ("/", "Overview"),
    ("/jobs", "Jobs"),
    ("/workflows", "Workflows"),
    ("/cluster", "Cluster"),
    ("/persistent", "Persistent"),
    ("/periodic", "Periodic"),
)


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """``"12 s ago"``, ``"in 3 min"``: coarse on purpose, exact time is in the tooltip."""
    if moment is None:
        return "—"
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 1:
        return "now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size:
            text = f"{int(seconds // size)} {unit}"
            return f"in {text}" if future else f"{text} ago"
    raise AssertionError("unreachable")


def clock(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def moment(value: Any) -> datetime | None:
    """A time stored as ISO text inside JSON (an error's ``at``), or None."""
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class Renderer:
    """Renders pages for one dashboard: its templates, its mount path, its mode."""

    env: jinja2.Environment
    base_path: str
    read_only: bool
    live_interval: float
    schema: str

    @classmethod
    def create(
        cls, *, base_path: str, read_only: bool, live_interval: float, schema: str
    ) -> Renderer:
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("aqueue.dashboard", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(
            ago=ago,
            clock=clock,
            duration=duration,
            moment=moment,
            pretty_json=pretty_json,
        )
        return cls(env, base_path, read_only, live_interval, schema)

    def prefix(self, request: Request) -> str:
        """Where the dashboard lives: ``base_path`` if given, else the mount path."""
        root = self.base_path or str(request.scope.get("root_path", ""))
        return root.rstrip("/")

    def here(self, request: Request) -> str:
        """This page's address (path and query) as the browser sees it: an action's
        return address."""
        path = str(request.scope["path"])
        root = str(request.scope.get("root_path", ""))
        if root and path.startswith(root):
            path = path[len(root) :]
        query = request.url.query
        return self.prefix(request) + path + ("?" + query if query else "")

    def cookie_path(self, request: Request) -> str:
        return self.prefix(request) or "/"

    def page(
        self,
        request: Request,
        template: str,
        *,
        title: str,
        section: str,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        prefix = self.prefix(request)
        token, fresh = csrf_token(request)
        flash = read_flash(request)

        def url(path: str, **params: Any) -> str:
            query = {k: v for k, v in params.items() if v not in (None, "")}
            return prefix + path + ("?" + urlencode(query, doseq=True) if query else "")

        def queue_url(name: str) -> str:
            return f"{prefix}/queues/{quote(name, safe='')}"

        html = self.env.get_template(template).render(
            request=request,
            url=url,
            queue_url=queue_url,
            title=title,
            section=section,
            nav=NAV,
            read_only=self.read_only,
            csrf_token=token,
            flash=flash,
            live_interval_ms=int(self.live_interval * 1000),
            schema=self.schema,
            now=datetime.now(UTC),
            full_path=self.here(request),
            **context,
        )
        response = HTMLResponse(html, status_code=status_code)
        response.headers["cache-control"] = "no-store"
        if fresh and not self.read_only:
            set_csrf_cookie(response, request, token, self.cookie_path(request))
        if flash is not None:
            clear_flash(response, self.cookie_path(request))
        return response

    def error(self, request: Request, status_code: int, message: str) -> HTMLResponse:
        return self.page(
            request,
            "error.html",
            title=f"{status_code}",
            section="",
            status_code=status_code,
            message=message,
        )
