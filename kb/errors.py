"""KBError tree: every error knows its HTTP status and a stable code; one handler renders them."""
from __future__ import annotations


class KBError(Exception):
    """Base of all KB Search errors."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the response must carry (WWW-Authenticate, Retry-After)."""
        return {}

    def to_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(KBError):
    status = 400
    code = "bad_request"


class NotFound(KBError):
    status = 404
    code = "not_found"


class ArticleNotFound(NotFound):
    code = "article_not_found"


class Conflict(KBError):
    status = 409
    code = "conflict"


class IndexNotFound(KBError):
    """No index version is in service yet (run `kb index`)."""

    status = 503
    code = "index_not_found"


class IndexMismatch(KBError):
    """The index on disk was built with another model or format version."""

    status = 503
    code = "index_mismatch"


class IndexDamaged(KBError):
    """An index version whose files fail their checks (checksums, sizes, unit-length vectors, SQLite): `kb index`
    builds a new one; meanwhile the service answers from the newest intact version."""

    status = 503
    code = "index_damaged"


class IndexUnavailable(KBError):
    """The index engine (a Milvus server) does not answer: searches answer 503 with Retry-After, /healthz says
    `unavailable`, and both recover by themselves when it answers again (kb/index/milvus/connection.py)."""

    status = 503
    code = "index_unavailable"
    retry_after = 5

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class DiskFull(KBError):
    """No space left (or over quota) while a build writes into the index folder; the version in service stays."""

    status = 507
    code = "disk_full"


class ContentError(KBError):
    """Content problems made fatal (`--strict`) or no articles at all."""

    status = 422
    code = "content_error"


class FeedbackUnavailable(KBError):
    """The service was started without a feedback store."""

    status = 503
    code = "feedback_unavailable"


class StoreUnavailable(KBError):
    """A side store (feedback, analytics events) that cannot be written right now, a read-only or full disk: only its
    own routes answer 503 (with Retry-After), searches go on (kb/side_store.py)."""

    status = 503
    code = "store_unavailable"
    retry_after = 30

    def __init__(self, message: str, store: str):
        super().__init__(message)
        self.store = store

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class MalformedJSON(BadRequest):
    """A request body that is not valid JSON (webhooks read their raw body themselves)."""

    code = "malformed_json"


class PayloadTooLarge(KBError):
    """A request body over its size limit (KB_WEBHOOK_MAX_BYTES for webhooks)."""

    status = 413
    code = "payload_too_large"


class InvalidPayload(KBError):
    """Valid JSON in a shape the route does not read (wrong types, missing objects)."""

    status = 422
    code = "invalid_payload"


class UnsupportedEvent(InvalidPayload):
    """A webhook event type this service does not answer (e.g. a Zendesk user or ticket-deleted event)."""

    code = "unsupported_event"


class EmptyTicket(InvalidPayload):
    """A webhook ticket with neither subject nor body: nothing to suggest from."""

    code = "empty_ticket"


class SignatureInvalid(KBError):
    """A webhook whose signature is missing or does not match the shared secret."""

    status = 401
    code = "signature_invalid"


class SignatureStale(SignatureInvalid):
    """A signed webhook whose timestamp is outside the replay window (KB_WEBHOOK_REPLAY_SECONDS)."""

    code = "signature_stale"


class Unauthorized(KBError):
    """No credentials, or credentials that are not valid (401 with WWW-Authenticate)."""

    status = 401
    code = "unauthorized"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="kb-search"'}


class KeyInvalid(Unauthorized):
    """An unknown, revoked or expired API key; `reason` says which (RFC 6750 invalid_token for the last two)."""

    def __init__(self, message: str, reason: str = "unknown"):
        super().__init__(message)
        self.reason = reason
        self.code = {"unknown": "unauthorized", "revoked": "key_revoked", "expired": "key_expired"}[reason]

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": f'Bearer realm="kb-search", error="invalid_token", '
                                    f'error_description="{self.reason} key"'}


class Forbidden(KBError):
    """Authenticated, but without the scope (or origin) the request needs."""

    status = 403
    code = "forbidden"


class RateLimited(KBError):
    """Over a key's per-minute rate: 429 with Retry-After."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Overloaded(KBError):
    """More requests than the service admits (KB_MAX_IN_FLIGHT busy and KB_MAX_QUEUE waiting, or no slot within
    KB_MAX_QUEUE_WAIT_MS): 503 with Retry-After, answered at once rather than queued without bound."""

    status = 503
    code = "overloaded"

    def __init__(self, message: str, reason: str, retry_after: int = 1):
        super().__init__(message)
        self.reason, self.retry_after = reason, retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
