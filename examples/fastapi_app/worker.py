"""For ``aqueue worker examples.fastapi_app.worker:app`` when the web process runs no
worker (``RUN_WORKER=0``): the same jobs, configured from the same environment."""

from __future__ import annotations

from .jobs import LogMailer, create_jobs
from .main import Settings

app = create_jobs(None, schema=Settings.from_env().schema, mailer=LogMailer()).app
