"""Who may see the dashboard, and proof that an action was meant.

- **Auth** is the user's callable, ``auth(request) -> bool | Awaitable[bool]``, asked on
  every request (pages, actions, static files) before anything else runs, so sessions,
  SSO or basic auth of the host application plug in unchanged. False answers 401. The
  callable may also raise ``starlette.exceptions.HTTPException`` to answer in its own way
  (a ``WWW-Authenticate`` challenge, a 403, a redirect to a login page).
- **CSRF**: every action is a POST carrying a token that must equal the one in the
  ``aqueue_csrf`` cookie (a random per-browser token, ``HttpOnly``, ``SameSite=Strict``).
  A cross-site page can neither read the cookie nor make the browser send it, so it
  cannot produce a matching pair. Requests the browser marks as coming from another site
  (``Sec-Fetch-Site``) are refused before the token is even compared.
- **Headers**: a strict Content-Security-Policy (scripts and styles from the dashboard
  only, no inline script) as a second wall behind escaping, no framing, no sniffing.
"""

from __future__ import annotations

import hmac
import inspect
import secrets
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import quote, unquote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "AuthFn",
    "AuthGate",
    "SecurityHeaders",
    "clear_flash",
    "csrf_failure",
    "csrf_token",
    "read_flash",
    "set_csrf_cookie",
    "set_flash",
]

AuthFn = Callable[[Request], "bool | Awaitable[bool]"]

CSRF_COOKIE = "aqueue_csrf"
CSRF_FIELD = "csrf_token"
FLASH_COOKIE = "aqueue_flash"
_FLASH_MAX = 400

_HEADERS: Mapping[str, str] = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


class AuthGate:
    """ASGI middleware asking ``auth`` about every HTTP request."""

    def __init__(self, app: ASGIApp, auth: AuthFn) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            verdict = self.auth(request)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except HTTPException as exc:
            refusal: Response = PlainTextResponse(
                exc.detail, status_code=exc.status_code, headers=exc.headers
            )
            await refusal(scope, receive, send)
            return
        if verdict is not True:
            # Only a real True lets a request in: a forgotten ``return`` (None) or a truthy
            # object returned by mistake must not open the dashboard.
            await PlainTextResponse("authentication required", status_code=401)(
                scope, receive, send
            )
            return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware adding the headers of ``_HEADERS`` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in _HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def csrf_token(request: Request) -> tuple[str, bool]:
    """This browser's token, and whether it is new (the response must set the cookie)."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if len(token) >= 32:
        return token, False
    return secrets.token_urlsafe(32), True


def set_csrf_cookie(response: Response, request: Request, token: str, path: str) -> None:
    response.set_cookie(
        CSRF_COOKIE,
        token,
        path=path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def csrf_failure(request: Request, submitted: str) -> str | None:
    """Why this POST must be refused, or None when its token checks out."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if len(cookie) < 32 or not submitted:
        return "missing CSRF token: reload the page and try again"
    if not hmac.compare_digest(cookie.encode(), submitted.encode()):
        return "CSRF token mismatch: reload the page and try again"
    return None


def set_flash(response: Response, level: str, text: str, path: str) -> None:
    """A one-time message for the page the action redirects to."""
    value = quote(f"{level}:{text[:_FLASH_MAX]}", safe="")
    response.set_cookie(FLASH_COOKIE, value, path=path, httponly=True, samesite="strict")


def read_flash(request: Request) -> tuple[str, str] | None:
    """The pending message (level, text), if any; ``clear_flash`` once it is shown."""
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    level, _, text = unquote(raw).partition(":")
    if level not in ("ok", "error"):
        return None
    return level, text[:_FLASH_MAX]


def clear_flash(response: Response, path: str) -> None:
    response.delete_cookie(FLASH_COOKIE, path=path, httponly=True, samesite="strict")
