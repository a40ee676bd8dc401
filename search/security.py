"""Browser-facing safety: CSP and framing headers, refusal of cross-site form posts and of foreign Host headers
(DNS rebinding), CORS for the JSON API."""
from __future__ import annotations

import ipaddress
import logging
import re
import socket
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kb.errors import KBError
from kb.settings import Settings
from search.auth import is_loopback

log = logging.getLogger("kb.security")

WIDGET_PATH = "/widget"  # the only page other sites may frame (KB_FRAME_ANCESTORS)
# Vendored Swagger UI and ReDoc: their components set inline styles, ReDoc searches in a blob: worker.
DOCS_PATHS = ("/docs", "/redoc")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# scheme://host[:port], host optionally `*.`-prefixed (CSP source syntax: frame ancestors and images) or [IPv6]
ORIGIN = re.compile(r"^https?://(\*\.)?([a-z0-9-]+(\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(:\d{1,5})?$", re.I)
# No inline script anywhere, and no inline style but in the API docs: every page loads /static files only.
# Images from this service (and data: URLs) only, unless KB_IMAGE_ORIGINS lists more: an article's image from another
# site would tell that site who read which article when (a tracking pixel).
POLICY = ("default-src 'self'; script-src 'self'; style-src {styles}; img-src {images}; font-src 'self'; "
          "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors {frames}")
CORS_HEADERS = ["Authorization", "X-API-Key", "Content-Type"]
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")  # Host names always answered (KB_ALLOWED_HOSTS adds to them)
DNS_NAME = re.compile(r"^(\*\.)?[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$")
MAX_WARNED_HOSTS = 100  # foreign Host headers logged (once each) per worker process


class CrossSiteRequest(KBError):
    """A browser sent a form post (or a cookie-carrying API call) from another site: refused (CSRF)."""

    status = 403
    code = "cross_site_request"


class HostNotAllowed(KBError):
    """A Host header naming none of the names the service answers to: a DNS-rebinding page, or a name the operator
    has yet to list in KB_ALLOWED_HOSTS."""

    status = 400
    code = "host_not_allowed"


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


def parse_hosts(text: str, setting: str = "KB_ALLOWED_HOSTS") -> tuple[str, ...]:
    """Host names of a space- or comma-separated setting, lower-cased: names, `*.example.com` (its subdomains),
    IPv4 and IPv6 addresses (bracketed as in a Host header), or `*` (any). Anything else (a URL, a port) is dropped
    with a warning."""
    hosts: list[str] = []
    for token in re.split(r"[\s,]+", text or ""):
        host = token.strip().lower().rstrip(".")
        if not host:
            continue
        try:
            host = f"[{ipaddress.IPv6Address(host.strip('[]'))}]" if ":" in host else host
        except ValueError:
            host = ""
        if host != "*" and not host.startswith("[") and not DNS_NAME.match(host):
            log.warning("%s: %r is not a host name such as kb.example.com or *.example.com; ignored", setting, token)
        elif host not in hosts:
            hosts.append(host)
    return tuple(hosts)


def host_name(header: str) -> str:
    """The host of a Host header, lower-cased, without its port or a final dot: "[::1]:8000" -> "[::1]"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[:header.find("]") + 1]
    return header.rsplit(":", 1)[0].rstrip(".") if header.count(":") == 1 else header.rstrip(".")


def answered_hosts(settings: Settings) -> tuple[str, ...]:
    """The Host names the service answers to: loopback names, KB_ALLOWED_HOSTS, and the bind address itself; bound
    to a network address (`kb serve --host 0.0.0.0`), also this machine's name."""
    hosts = [*LOOPBACK_HOSTS, *parse_hosts(settings.allowed_hosts)]
    bind = settings.host.strip().lower()
    if bind not in ("", "0.0.0.0", "::", "[::]"):
        hosts += parse_hosts(bind, "KB_HOST")
    if not is_loopback(bind):
        hosts += parse_hosts(socket.gethostname(), "the machine's name")
    return tuple(dict.fromkeys(hosts))


class AllowedHosts:
    """ASGI middleware: a request whose Host header names none of `hosts` gets 400 host_not_allowed before routing.

    Against DNS rebinding: a page of another site whose name was made to resolve to this service's address reaches
    it with that name as Host (and, on loopback, with no API key needed). Also answered: a Host that is the very
    address the connection came in on (an IP literal, never a rebound name), so that `kb serve --host 0.0.0.0`
    is reachable by its addresses and health probes by pod IP work; a request without Host (HTTP/1.0, never a
    browser's) passes. Starlette's TrustedHostMiddleware has the same names and `*.` patterns but answers in plain
    text and knows no connection address; this one answers with the service's JSON (or page) error.
    """

    def __init__(self, app: ASGIApp, hosts: tuple[str, ...] = LOOPBACK_HOSTS):
        self.app = app
        self.any = "*" in hosts
        self.names = frozenset(h for h in hosts if not h.startswith("*."))
        self.suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))  # ".example.com"
        self.warned: set[str] = set()

    def allows(self, host: str, scope: Scope) -> bool:
        if self.any or host in self.names or (self.suffixes and host.endswith(self.suffixes)):
            return True
        server = scope.get("server")
        local = str(server[0]).lower() if server else ""
        return bool(local) and host == (f"[{local}]" if ":" in local else local)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = Headers(scope=scope).get("host") if scope["type"] in ("http", "websocket") else None
        if header is None or self.allows(host_name(header), scope):
            await self.app(scope, receive, send)
            return
        shown = header[:100]
        if len(self.warned) < MAX_WARNED_HOSTS and shown not in self.warned:
            self.warned.add(shown)
            log.warning("refused a request with Host %r (not in KB_ALLOWED_HOSTS; said once per host)", shown)
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        exc = HostNotAllowed(f"Host {shown!r} is not a name this service answers to: if it is this service's own "
                             f"name, add it to KB_ALLOWED_HOSTS")
        await render_error(Request(scope), exc)(scope, receive, send)


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

    def __init__(self, app: ASGIApp, frame_ancestors: tuple[str, ...] = (), image_origins: tuple[str, ...] = ()):
        self.app = app
        images = " ".join(("'self'", "data:", *image_origins))
        self.widget_policy = POLICY.format(styles="'self'", images=images,
                                           frames=" ".join(("'self'", *frame_ancestors)))
        self.page_policy = POLICY.format(styles="'self'", images=images, frames="'none'")
        self.docs_policy = POLICY.format(styles="'self' 'unsafe-inline'", images=images, frames="'none'") + \
            "; worker-src 'self' blob:"

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
    hosts = answered_hosts(settings)
    log.info("answering to Host %s and the address a request comes in on (KB_ALLOWED_HOSTS)", ", ".join(hosts))
    if settings.trusted_proxies and not settings.allowed_hosts:
        log.info("KB_TRUSTED_PROXIES is set: a proxy that passes on the name agents use as Host (oauth2-proxy does) "
                 "needs that name in KB_ALLOWED_HOSTS")
    app.add_middleware(AllowedHosts, hosts=hosts)
    image_origins = parse_origins(settings.image_origins, "KB_IMAGE_ORIGINS", wildcards=True)
    app.add_middleware(SecurityHeaders, frame_ancestors=frame_ancestors,  # outermost: its headers go on everything
                       image_origins=image_origins)
