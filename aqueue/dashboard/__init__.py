"""aqueue's web dashboard: ``create_app(app)`` returns a Starlette ASGI application.

Install the extra (``pip install 'aqueue[dashboard]'``), then mount it in a FastAPI or
Starlette application, or serve it alone with ``aqueue dashboard MODULE:APP``. See
docs/howto/dashboard.md.

Live updates are short polling, not server-sent events: every few seconds an open page
fetches its own URL again and swaps in the regions marked ``data-live``. The server keeps
no connection or task per browser tab, so it mounts in any ASGI host and passes any proxy
unchanged (SSE streams get buffered or cut by proxies and hold a connection per tab), the
refresh renders exactly what a reload would (one code path, escaped once), and a hidden
tab stops asking. PostgreSQL offers no cheap feed of count changes to push anyway: an SSE
stream would poll the database on the server instead of the browser doing it.
"""

from __future__ import annotations

from .factory import create_app

__all__ = ["create_app"]
