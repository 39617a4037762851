"""The pages (GET): each renders its whole content on the server.

So every page works with scripts off, can be bookmarked and shared, and the live-update
script needs no API of its own: it re-fetches the page it is on (see static/dashboard.js).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..db.browse import JobFilter
from ..errors import InvalidOption, UnknownQueue
from ..jobs import JobState
from .charts import throughput_chart
from .readmodels import (
    STATE_COLUMNS,
    RecordedStep,
    job_actions,
    job_timing,
    leader_node,
    overview_view,
    periodic_view,
    persistent_view,
)
from .site import Site

__all__ = ["Pages"]

STATES = tuple(state.value for state in JobState)


class Pages:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.render = site.renderer

    async def overview(self, request: Request) -> Response:
        view = await overview_view(self.site.app, self.site.browse)
        return self.render.page(
            request,
            "overview.html",
            title="Overview",
            section="/",
            view=view,
            states=STATE_COLUMNS,
        )

    async def jobs(self, request: Request) -> Response:
        params = request.query_params
        problems = []
        state = params.get("state") or None
        if state is not None and state not in STATES:
            problems.append(f"unknown state {state!r}: showing every state")
            state = None
        where = JobFilter(
            states=[state] if state else None,
            queue=params.get("queue") or None,
            kind=params.get("kind") or None,
            tag=params.get("tag") or None,
        )
        before = _cursor(params.get("before"))
        after = _cursor(params.get("after")) if before is None else None
        page = await self.site.browse.jobs(
            where, before=before, after=after, limit=self.site.page_size
        )
        registry = self.site.app.registry
        queues = sorted(
            {"default"} | {d.defaults.queue for d in registry.definitions() if d.defaults.queue}
        )
        filters = {"state": state, "queue": where.queue, "kind": where.kind, "tag": where.tag}
        return self.render.page(
            request,
            "jobs.html",
            title="Jobs",
            section="/jobs",
            page=page,
            filters=filters,
            filtered=any(filters.values()),
            problems=problems,
            states=STATES,
            known_queues=queues,
            known_kinds=registry.kinds(),
            job_actions=job_actions,
        )

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        job = await self.site.app.get_job(job_id) if 1 <= job_id < 2**63 else None
        if job is None:
            return self.render.error(request, 404, f"There is no job {job_id}.")
        recorded = [
            RecordedStep(row["name"], row["attempt"], row["result"], row["recorded_at"])
            for row in await self.site.app.db.job_steps([job.id])
        ]
        return self.render.page(
            request,
            "job.html",
            title=f"Job {job.id}",
            section="/jobs",
            job=job,
            actions=job_actions(job.state.value),
            timing=job_timing(job),
            recorded=recorded,
        )

    async def queue(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            stats = (await self.site.app.queue_stats(name)).get(name)
        except (UnknownQueue, InvalidOption):
            stats = None
        if stats is None:
            return self.render.error(request, 404, f"No job, pause or worker knows queue {name!r}.")
        chart = throughput_chart(await self.site.browse.throughput(name))
        recent = await self.site.browse.jobs(JobFilter(queue=name), limit=10)
        cluster = await self.site.app.cluster_status()
        nodes = {node.id: node for node in cluster.nodes}
        return self.render.page(
            request,
            "queue.html",
            title=f"Queue {name}",
            section="/",
            stats=stats,
            chart=chart,
            recent=recent,
            nodes=nodes,
            states=STATE_COLUMNS,
            job_actions=job_actions,
        )

    async def cluster(self, request: Request) -> Response:
        cluster = await self.site.app.cluster_status()
        nodes = {node.id: node for node in cluster.nodes}
        return self.render.page(
            request,
            "cluster.html",
            title="Cluster",
            section="/cluster",
            cluster=cluster,
            leader=leader_node(cluster),
            drift=[(d, d.describe(nodes)) for d in cluster.drift],
        )

    async def persistent(self, request: Request) -> Response:
        cluster = await self.site.app.cluster_status()
        return self.render.page(
            request,
            "persistent.html",
            title="Persistent workers",
            section="/persistent",
            replicas=persistent_view(self.site.app, cluster),
            drift=[d for d in cluster.drift if d.section == "persistent"],
        )

    async def periodic(self, request: Request) -> Response:
        cluster = await self.site.app.cluster_status()
        latest = await self.site.browse.periodic_latest()
        return self.render.page(
            request,
            "periodic.html",
            title="Periodic schedules",
            section="/periodic",
            schedules=periodic_view(self.site.app, latest, cluster),
            leader=leader_node(cluster),
        )

    async def not_found(self, request: Request, exc: Exception) -> Response:
        return self.render.error(request, 404, "There is no such page.")


def _cursor(raw: str | None) -> int | None:
    """A keyset cursor from the query string; anything but a positive id is ignored."""
    if raw is None or not raw.isdigit():
        return None
    value = int(raw)
    return value if 0 < value < 2**63 else None
