"""KBError tree: every error knows its HTTP status and a stable code; one handler renders them."""
from __future__ import annotations


class KBError(Exception):
    """Base of all KB Search errors."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

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


class ContentError(KBError):
    """Content problems made fatal (`--strict`) or no articles at all."""

    status = 422
    code = "content_error"


class FeedbackUnavailable(KBError):
    """The service was started without a feedback store."""

    status = 503
    code = "feedback_unavailable"


class Unauthorized(KBError):
    """An admin endpoint was called without the configured bearer token."""

    status = 401
    code = "unauthorized"
