"""``create_app``: the dashboard as a Starlette application, to serve or to mount."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..db.browse import Browse
from ..errors import ConfigurationError
from .actions import Actions
from .prometheus import metrics_route
from .render import Renderer
from .security import AuthFn, AuthGate, SecurityHeaders
from .site import Site
from .views import Pages
from .workflow_views import WorkflowPages

if TYPE_CHECKING:
    from ..app import App
    from ..metrics import JobMetrics

__all__ = ["create_app"]


def create_app(
    app: App,
    auth: AuthFn | None = None,
    read_only: bool = False,
    base_path: str = "",
    *,
    live_interval: float = 3.0,
    metrics: JobMetrics | None = None,
) -> Starlette:
    """The dashboard of ``app`` as an ASGI application.

    ``auth(request)`` (sync or async) must return True for a request to get in; False
    answers 401. ``read_only=True`` hides every button and answers 403 to every action.
    ``base_path`` is the URL prefix the dashboard's links start with, for a reverse proxy
    that strips one; when mounted (``Mount("/queues", create_app(app))``) the mount path
    is used by itself. ``live_interval`` is how often (seconds) open pages refresh their
    figures in the browser. ``metrics`` (from ``aqueue.metrics.instrument(app)``) is what
    ``/metrics`` serves; without it, and with the prometheus extra installed, ``/metrics``
    serves the queue gauges only (job counters live in the processes that run jobs).

    The dashboard does not open ``app``: the host application does, in its lifespan
    (``async with app:``), as it does for enqueueing. ``aqueue dashboard`` does it for you.
    """
    if auth is not None and not callable(auth):
        raise ConfigurationError(f"dashboard: auth must be a callable, got {auth!r}")
    if not isinstance(read_only, bool):
        raise ConfigurationError(f"dashboard: read_only must be True or False, got {read_only!r}")
    if not isinstance(base_path, str) or (base_path and not base_path.startswith("/")):
        raise ConfigurationError(
            f"dashboard: base_path must be empty or start with '/', got {base_path!r}"
        )
    if not isinstance(live_interval, int | float) or not live_interval > 0:
        raise ConfigurationError(
            f"dashboard: live_interval must be a number of seconds > 0, got {live_interval!r}"
        )
    renderer = Renderer.create(
        base_path=base_path.rstrip("/"),
        read_only=read_only,
        live_interval=float(live_interval),
        schema=app.schema,
    )
    site = Site(app=app, browse=Browse(app.db), renderer=renderer, read_only=read_only)
    pages = Pages(site)
    actions = Actions(site)
    workflows = WorkflowPages(site)
    routes = [
        Route("/", pages.overview, name="overview"),
        Route("/jobs", pages.jobs, name="jobs"),
        Route("/jobs", actions.bulk, methods=["POST"]),
        Route("/jobs/{job_id:int}", pages.job, name="job"),
        Route("/jobs/{job_id:int}", actions.job, methods=["POST"]),
        Route("/workflows", workflows.workflows, name="workflows"),
        Route("/workflows/{workflow_id:int}", workflows.workflow, name="workflow"),
        Route("/workflows/{workflow_id:int}", actions.workflow, methods=["POST"]),
        # Queue names may hold slashes ("emails/v2"): the rest of the path is the name.
        Route("/queues/{name:path}", pages.queue, name="queue"),
        Route("/queues/{name:path}", actions.queue, methods=["POST"]),
        Route("/cluster", pages.cluster, name="cluster"),
        Route("/persistent", pages.persistent, name="persistent"),
        Route("/periodic", pages.periodic, name="periodic"),
        Mount("/static", StaticFiles(packages=[("aqueue.dashboard", "static")]), name="static"),
    ]
    scrape = metrics_route(app, metrics)
    if scrape is not None:
        routes.append(scrape)
    middleware = [Middleware(SecurityHeaders)]
    if auth is not None:
        middleware.append(Middleware(AuthGate, auth=auth))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={404: pages.not_found},
    )
