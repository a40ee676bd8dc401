"""Who is calling and may they: API keys, trusted-proxy agents, signed sessions, and the scope each route needs."""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from kb.audit import AuditLog
from kb.database import side_database
from kb.errors import BadRequest, Forbidden, KeyInvalid, Unauthorized
from kb.keys import SCOPES, ApiKey, KeyStore
from kb.settings import Settings

log = logging.getLogger("kb.auth")

SESSION_COOKIE = "kb_session"
AGENT_SCOPES = frozenset({"search", "suggest", "feedback", "internal"})
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}

# Routes anyone may call: health for load balancers, the API contract, the sign-in pages and the widget's
# shell (it holds no data; the widget's own API calls carry a key or a session).
OPEN_ROUTES = {"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/signin", "/signout",
               "/widget", "/static"}
# (method, route path) -> scope; then path prefixes; anything else needs `admin` (closed by default).
ROUTE_SCOPES = {
    ("GET", "/api/search"): "search",
    ("GET", "/api/articles/{article_id:path}"): "search",
    ("POST", "/api/suggest"): "suggest",
    ("POST", "/api/feedback"): "feedback",
    ("GET", "/api/feedback/summary"): "analytics",
    ("GET", "/"): "search",
    ("GET", "/articles/{article_id:path}"): "search",
    ("GET", "/suggest"): "suggest",
    ("POST", "/suggest"): "suggest",
    ("POST", "/feedback"): "feedback",
    ("GET", "/health/content"): "search",
    ("GET", "/reports"): "analytics",
    ("GET", "/metrics"): ("analytics", "admin"),
}
PREFIX_SCOPES = (("/api/webhooks/", "suggest"), ("/api/analytics/", "analytics"), ("/api/events", "feedback"),
                 ("/api/admin/", "admin"))


@dataclass(frozen=True)
class Principal:
    """The caller: a key, an agent (signed in, or named by a trusted proxy), the admin token, or anyone
    (`open`: keys are not required here)."""

    kind: str                # key | agent | token | open
    name: str
    scopes: frozenset[str]

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"{self.kind}:{self.name}"

    @property
    def sees_internal(self) -> bool:
        return "internal" in self.scopes


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def keys_required(settings: Settings) -> bool:
    """KB_AUTH=required, or auto on a bind address other than loopback."""
    if settings.auth == "off":
        return False
    return settings.auth == "required" or not is_loopback(settings.host)


def check_bind(settings: Settings, insecure: bool = False) -> None:
    """Refuse KB_AUTH=off on an address other than loopback unless the operator said --insecure."""
    if settings.auth == "off" and not is_loopback(settings.host) and not insecure:
        raise BadRequest(f"KB_AUTH=off with --host {settings.host} would let anyone who reaches the port search, "
                         "read internal articles and start builds: use KB_AUTH=auto (API keys from `kb keys create`) "
                         "or pass --insecure if a proxy in front of the service already checks every request")
    if keys_required(settings):
        log.info("API keys are required (KB_AUTH=%s, bound to %s): kb keys create NAME --scope SCOPE",
                 settings.auth, settings.host)
    elif settings.auth == "off":
        log.warning("KB_AUTH=off: no API keys are checked on %s", settings.host)


def parse_networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for item in value.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise BadRequest(f"KB_TRUSTED_PROXIES: {item!r} is not an address or CIDR range") from None
    return tuple(networks)


def required_scope(method: str, path: str, route_path: str | None) -> str | tuple[str, ...] | None:
    """The scope a request needs (a tuple: any one of them), or None for an open route."""
    template = route_path or path
    if template in OPEN_ROUTES or path.startswith("/static/"):
        return None
    scope = ROUTE_SCOPES.get((method if method != "HEAD" else "GET", template))
    if scope:
        return scope
    return next((scope for prefix, scope in PREFIX_SCOPES if path.startswith(prefix)), "admin")


def presented_key(request: Request) -> str | None:
    """The key of `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class Authenticator:
    """Resolves a request to a Principal and checks the scope its route needs (one place for every route)."""

    def __init__(self, settings: Settings, keys: KeyStore | None = None, audit: AuditLog | None = None):
        self.settings = settings
        self.required = keys_required(settings)
        self.keys = keys or KeyStore(side_database(settings, "keys"))
        self.audit = audit or AuditLog(side_database(settings, "audit"))
        self.proxies = parse_networks(settings.trusted_proxies)
        self.analytics_users = {u.strip().lower() for u in settings.analytics_users.split(",") if u.strip()}
        self._session_key: bytes | None = None

    # ---- sessions (sign-in with a personal key) --------------------------------------------------
    def session_key(self) -> bytes:
        if self._session_key is None:
            self._session_key = self.keys.service_secret("session")
        return self._session_key

    def sign(self, payload: str) -> str:
        mac = hmac.new(self.session_key(), payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def session_value(self, key: ApiKey, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.settings.session_hours * 3600)
        payload = f"{key.id}.{expires}"
        return f"{payload}.{self.sign(payload)}"

    def session_key_id(self, value: str, now: float | None = None) -> str | None:
        """The key id of a valid, unexpired session cookie; None otherwise."""
        parts = value.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        payload = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self.sign(payload), parts[2]) or int(parts[1]) <= (now or time.time()):
            return None
        return parts[0]

    def sign_in(self, secret: str) -> tuple[ApiKey, str]:
        """Check a personal key for the sign-in page; (key, cookie value)."""
        key = self.keys.verify(secret)
        if "search" not in key.scopes:
            raise Forbidden(f"key {key.name!r} has no `search` scope: agents sign in with a key that may search")
        self.audit.record(f"key:{key.name}", "signin", key.name)
        return key, self.session_value(key)

    # ---- requests --------------------------------------------------------------------------------
    def trusted_peer(self, request: Request) -> bool:
        peer = request.client.host if request.client else ""
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.proxies)

    def identify(self, request: Request) -> Principal | None:
        """Who sent `request`: a key, the admin token, a proxy-named agent, a session; None if nobody."""
        secret = presented_key(request)
        token = self.settings.admin_token
        if secret and token and hmac.compare_digest(secret.encode(), token.encode()):
            return Principal("token", "KB_ADMIN_TOKEN", frozenset({"admin"}))
        if secret:
            key = self.keys.verify(secret)
            return Principal("key", key.name, frozenset(key.scopes))
        if self.proxies and self.trusted_peer(request):
            user = request.headers.get(self.settings.proxy_user_header, "").strip()
            if user:
                user = user[:200]
                extra = {"analytics"} if user.lower() in self.analytics_users else set()
                return Principal("agent", user, AGENT_SCOPES | extra)
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            key_id = self.session_key_id(cookie)
            if key_id:
                key = self.keys.by_id(key_id)
                return Principal("agent", key.name, frozenset(key.scopes) | {"internal"})
        return None

    def reads_store(self) -> bool:
        """Whether authorizing a request may read the keys store (keys are required, or KB_ADMIN_TOKEN guards the
        admin routes and another key may be presented): then `authorize` waits on a database, so it runs off the
        event loop."""
        return self.required or bool(self.settings.admin_token)

    def authorize(self, request: Request) -> Principal:
        """The caller of `request`, allowed to call its route; 401 / 403 / 429 otherwise."""
        route = request.scope.get("route")
        scope = required_scope(request.method, request.url.path, getattr(route, "path", None))
        if not self.required:
            principal = Principal("open", request.client.host if request.client else "local", frozenset(SCOPES))
            if scope == "admin" and self.settings.admin_token:  # KB_ADMIN_TOKEN still guards admin on loopback
                caller = self.identify_quietly(request)
                if caller is None or "admin" not in caller.scopes:
                    raise Unauthorized("admin endpoints need `Authorization: Bearer <KB_ADMIN_TOKEN>` or a key "
                                       "with the admin scope")
                return caller
            return principal
        if scope is None:
            return self.identify_quietly(request) or Principal("anonymous", "", frozenset())
        principal = self.identify(request)
        if principal is None:
            raise SignInRequired("this service requires an API key: send `Authorization: Bearer <key>` or "
                                 "`X-API-Key: <key>` (kb keys create)")
        needed = (scope,) if isinstance(scope, str) else scope
        if not principal.scopes.intersection(needed):
            wanted = " or ".join(f"`{s}`" for s in needed)
            raise Forbidden(f"the {wanted} scope is required for {request.method} {request.url.path}; "
                            f"{principal.kind} {principal.name!r} has {', '.join(sorted(principal.scopes)) or 'none'}")
        return principal

    def identify_quietly(self, request: Request) -> Principal | None:
        """`identify`, treating bad credentials as none (open routes never fail on a stale cookie)."""
        try:
            return self.identify(request)
        except KeyInvalid:
            return None


class SignInRequired(Unauthorized):
    """No credentials at all: API callers get 401, a browser asking for a page is sent to /signin."""

    code = "unauthorized"


BEARER = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>` (kb keys create).")
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key in the X-API-Key header.")


async def authorize(request: Request,
                    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
                    _key: Annotated[str | None, Depends(API_KEY)]) -> Principal:
    """FastAPI dependency of every route: sets request.state.principal (see Authenticator.authorize).

    In the thread pool when it may read the keys store; on the event loop otherwise (open on loopback: it only reads
    the request), saving a hop to a worker thread and back (docs/benchmarks.md, "What HTTP adds"). The two security
    dependencies only declare the schemes in the OpenAPI document; `presented_key` reads them.
    """
    auth: Authenticator = request.app.state.auth
    principal = await run_in_threadpool(auth.authorize, request) if auth.reads_store() else auth.authorize(request)
    request.state.principal = principal
    return principal


def caller(request: Request) -> Principal:
    """The principal `authorize` resolved for this request (open when auth never ran, e.g. in unit tests)."""
    return getattr(request.state, "principal", None) or Principal("open", "local", frozenset(SCOPES))


async def _caller(request: Request) -> Principal:
    """`caller` as a dependency, run on the event loop (it reads request state only) rather than in a thread."""
    return caller(request)


CallerDep = Annotated[Principal, Depends(_caller)]
