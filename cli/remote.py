"""A running `kb serve` as the answerer of `kb search` / `kb suggest`: /api/search and /api/suggest over HTTP."""
from __future__ import annotations

from pathlib import Path

from kb.errors import BadRequest, KBError

TIMEOUT_S = 30.0


class ServiceError(KBError):
    """An error answer of the service, carrying its HTTP status and code."""

    def __init__(self, message: str, status: int, code: str):
        super().__init__(message)
        self.status, self.code = status, code


class Unreachable(KBError):
    """No service answers at the URL (nothing listening, refused, timed out)."""

    status = 503
    code = "service_unreachable"


def read_key(path: str | None) -> str | None:
    """The API key kept in the file `path` (its first line), so that it never appears in the process list."""
    if not path:
        return None
    try:
        key = Path(path).read_text().strip().splitlines()
    except OSError as exc:
        raise BadRequest(f"cannot read the API key file {path}: {exc.strerror}") from None
    if not key or not key[0].strip():
        raise BadRequest(f"the API key file {path} is empty")
    return key[0].strip()


class Service:
    """One service at `url`; `key` (if any) goes in `Authorization: Bearer`."""

    def __init__(self, url: str, key: str | None = None):
        if not url.startswith(("http://", "https://")):
            raise BadRequest(f"--url must start with http:// or https://, got {url!r}")
        self.url, self.key = url.rstrip("/"), key

    def search(self, q: str, k: int, product: str | None, language: str | None, mode: str) -> dict:
        params = {"q": q, "k": k, "mode": mode, **{name: value for name, value in
                                                    (("product", product), ("language", language)) if value}}
        return self._call("GET", "/api/search", params=params)

    def suggest(self, subject: str, body: str, k: int) -> dict:
        return self._call("POST", "/api/suggest", json={"subject": subject, "body": body, "k": k})

    def _call(self, method: str, path: str, **request) -> dict:
        import httpx

        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        try:
            response = httpx.request(method, self.url + path, headers=headers, timeout=TIMEOUT_S, **request)
        except httpx.TransportError as exc:
            raise Unreachable(f"no kb serve answers at {self.url} ({exc.__class__.__name__}: {exc})") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict):
            return body
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message, code = str(error.get("message", "")), str(error.get("code", "error"))
        else:
            message, code = f"{self.url}{path} answered {response.status_code} and no KB Search error", "bad_response"
        if response.status_code in (401, 403):
            message += " (give a key with the search and suggest scopes: --api-key-file FILE; kb keys create)"
        raise ServiceError(f"{self.url}: {message}", response.status_code, code)
