"""``/metrics``: the Prometheus scrape endpoint, present when the ``aqueue[prometheus]``
extra is installed (``prometheus_client`` importable), behind the dashboard's ``auth``
like every other route.

Without a collector of its own the dashboard serves the queue gauges only: they come from
the database, so any process can serve them, while job counters exist only in a process
that runs jobs. Mounted in a web app that also runs ``app.worker()``, pass
``create_app(app, metrics=aqueue.metrics.instrument(app))`` to serve both.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

if TYPE_CHECKING:
    from ..app import App
    from ..metrics import JobMetrics

__all__ = ["metrics_route"]


def metrics_route(app: App, metrics: JobMetrics | None) -> Route | None:
    """The ``/metrics`` route, or None when ``prometheus_client`` is not installed."""
    if metrics is None and importlib.util.find_spec("prometheus_client") is None:
        return None
    # Imported here: the dashboard itself must load without the prometheus extra.
    from ..metrics import QueueGauges, exposition

    collector: Any = metrics if metrics is not None else QueueGauges(app)

    async def scrape(request: Request) -> Response:
        body, content_type = await exposition(collector)
        return Response(body, headers={"content-type": content_type})

    return Route("/metrics", scrape, name="metrics")
