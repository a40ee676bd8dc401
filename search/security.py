"""Browser-facing safety: CSP and framing headers, refusal of cross-site form posts, CORS for the JSON API."""
from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kb.errors import KBError
from kb.settings import Settings

log = logging.getLogger("kb.security")

WIDGET_PATH = "/widget"  # the only page other sites may frame (KB_FRAME_ANCESTORS)
# Vendored Swagger UI and ReDoc: their components set inline styles, ReDoc searches in a blob: worker.
DOCS_PATHS = ("/docs", "/redoc")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# scheme://host[:port], host optionally `*.`-prefixed (CSP source syntax; frame ancestors only) or [IPv6]
ORIGIN = re.compile(r"^https?://(\*\.)?([a-z0-9-]+(\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(:\d{1,5})?$", re.I)
# No inline script anywhere, and no inline style but in the API docs: every page loads /static files only.
POLICY = ("default-src 'self'; script-src 'self'; style-src {styles}; img-src 'self' data:; font-src 'self'; "
          "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors {frames}")
CORS_HEADERS = ["Authorization", "X-API-Key", "Content-Type"]


class CrossSiteRequest(KBError):
    """A browser sent a form post (or a cookie-carrying API call) from another site: refused (CSRF)."""

    status = 403
    code = "cross_site_request"


def parse_origins(text: str, setting: str, wildcards: bool) -> tuple[str, ...]:
    """Origins of a space- or comma-separated setting, lower-cased, without a trailing slash.

    Anything that is not an http(s) origin is dropped with a warning (a `;` must never reach the CSP header);
    `https://*.example.com` is kept only where `wildcards` (CSP frame-ancestors understands it, CORS does not).
    """
    origins = []
    for token in re.split(r"[\s,]+", text or ""):
        origin = token.strip().rstrip("/").lower()
        if not origin:
            continue
        match = ORIGIN.match(origin)
        if match is None or (match.group(1) and not wildcards):
            log.warning("%s: %r is not an origin such as https://helpdesk.example.com; ignored", setting, token)
        elif origin not in origins:
            origins.append(origin)
    return tuple(origins)


def app_path(scope: Scope) -> str:
    """The request path without the root path the service is mounted under."""
    root = scope.get("root_path", "")
    path = scope.get("path", "")
    return path[len(root):] if root and path.startswith(root) else path


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None]:
    parts = urlsplit("//" + netloc)
    try:
        port = parts.port
    except ValueError:
        return ("", None)
    return ((parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme))


def same_origin(origin: str, host: str) -> bool:
    """Whether an Origin header names this service (compared with the Host header; "null" never matches).

    The scheme is taken from the Origin: behind a TLS-terminating proxy the service itself sees http.
    """
    parts = urlsplit(origin)
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc or not host:
        return False
    return _host_port(parts.netloc, parts.scheme) == _host_port(host, parts.scheme)


def is_cross_site(request: Request) -> bool:
    """A state-changing browser request from another site: form posts anywhere, API calls that carry cookies.

    Browsers say where a request comes from in Sec-Fetch-Site (all current ones) or Origin; a request with
    neither (curl, helpdesk servers, webhooks) is not a browser's and is left to authentication.
    """
    if request.method not in UNSAFE_METHODS:
        return False
    if app_path(request.scope).startswith("/api/") and "cookie" not in request.headers:
        return False  # an API call without cookies carries no ambient authority to abuse
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site.lower() not in ("same-origin", "none")
    origin = request.headers.get("origin")
    return origin is not None and not same_origin(origin, request.headers.get("host", ""))


def render_error(request: Request, exc: KBError) -> Response:
    """A KBError answered by a middleware, before routing, as the app's one handler renders it: an HTML page for a
    browser asking for a page, JSON otherwise (the app's exception handlers sit inside the middlewares)."""
    from search.app import wants_html  # one rule for JSON or HTML; imported here as search.app imports this module
    from search.routes.pages import error_page

    if wants_html(request):
        response = error_page(request, exc)
        response.headers.update(exc.headers)
        return response
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=exc.headers)


def refusal(request: Request) -> Response:
    """The 403 for a cross-site request: an HTML page for a browser's form post, JSON otherwise."""
    return render_error(request, CrossSiteRequest("cross-site requests are refused: post forms from this service's "
                                                  "own pages, or call the API with an API key and without cookies"))


class SecurityHeaders:
    """ASGI middleware: security headers on every response; cross-site posts answered 403 before routing."""

    def __init__(self, app: ASGIApp, frame_ancestors: tuple[str, ...] = ()):
        self.app = app
        self.widget_policy = POLICY.format(styles="'self'", frames=" ".join(("'self'", *frame_ancestors)))
        self.page_policy = POLICY.format(styles="'self'", frames="'none'")
        self.docs_policy = POLICY.format(styles="'self' 'unsafe-inline'", frames="'none'") + "; worker-src 'self' blob:"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = app_path(scope)
        widget = path == WIDGET_PATH
        policy = self.widget_policy if widget else self.docs_policy if path in DOCS_PATHS else self.page_policy

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = policy
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "same-origin"
                if not widget:
                    headers["X-Frame-Options"] = "DENY"
            await send(message)

        request = Request(scope)
        if is_cross_site(request):
            log.warning("refused a cross-site %s %s (Origin %s, Sec-Fetch-Site %s)", request.method,
                        app_path(scope), request.headers.get("origin"), request.headers.get("sec-fetch-site"))
            await refusal(request)(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


class ApiCors:
    """Starlette's CORSMiddleware for /api/ only (browser-side helpdesk apps with API keys, no cookies);
    pages and form endpoints are never readable from another origin."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...] = ()):
        self.app = app
        self.cors = CORSMiddleware(app, allow_origins=list(origins), allow_methods=["GET", "POST"],
                                   allow_headers=CORS_HEADERS, allow_credentials=False, max_age=600)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and app_path(scope).startswith("/api/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def install_security(app: FastAPI, settings: Settings) -> None:
    """Add the middlewares to `app`; the widget reads the allowed frame ancestors from app.state."""
    frame_ancestors = parse_origins(settings.frame_ancestors, "KB_FRAME_ANCESTORS", wildcards=True)
    cors_origins = parse_origins(settings.cors_origins, "KB_CORS_ORIGINS", wildcards=False)
    app.state.frame_ancestors = frame_ancestors
    if cors_origins:
        app.add_middleware(ApiCors, origins=cors_origins)
    app.add_middleware(SecurityHeaders, frame_ancestors=frame_ancestors)  # outermost: its headers go on everything
