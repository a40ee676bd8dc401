"""Request bodies checked before routing: over KB_MAX_BODY_BYTES answered 413 unread; JSON with lone surrogates 400."""
from __future__ import annotations

import json
import logging
import re

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kb.errors import KBError, MalformedJSON, PayloadTooLarge
from kb.settings import Settings
from search.security import app_path, render_error

log = logging.getLogger("kb.limits")

WEBHOOKS = "/api/webhooks/"  # their limit is KB_WEBHOOK_MAX_BYTES (they read the raw body and check it again)
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")  # percent-encoded text: no surrogate escapes
# How JSON text can carry a UTF-16 surrogate: a \uD800-\uDFFF escape, or a surrogate's bytes in UTF-8 form (ED A0-BF
# ..), which json.loads decodes with surrogatepass. Cheap tests of the raw bytes, JSON parsed only on a hit: each
# pattern starts with a literal, which re finds fast (12 us for a 2 KB ticket, 3 ms for 1 MiB on the loaded 2-core
# machine; one alternation of both took 55 us and 42 ms).
ESCAPE_HINT = re.compile(rb"\\u[dD][89a-fA-F]")
BYTES_HINT = re.compile(rb"\xed[\xa0-\xbf]")
SURROGATE = re.compile("[\ud800-\udfff]")  # what is left in a str of a surrogate without its pair
MAX_SHOWN = 60  # characters of a key shown in an error's path


class BodyLimits:
    """ASGI middleware: a request body is read here, whole, before the app sees it (FastAPI would read it whole
    anyway), and refused before routing when it is too large or holds text that is not Unicode.

    - Content-Length over the limit: 413 at once, nothing read, and the connection closed (the body is not
      drained); chunked bodies are counted as they arrive and refused with 413 as soon as they pass the limit.
    - JSON holding a lone UTF-16 surrogate ("\\ud800"): 400 malformed_json naming where. Python's json module
      accepts it, but no UTF-8 encoder does, so it used to fail later as a 500 (in the response, SQLite, the event
      log), and a 500 drops the keep-alive connection. Here the body was read to its end: the connection is kept.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, webhook_max_bytes: int):
        self.app, self.max_bytes, self.webhook_max_bytes = app, max_bytes, webhook_max_bytes

    def limit_for(self, scope: Scope) -> tuple[int, str]:
        if app_path(scope).startswith(WEBHOOKS):
            return self.webhook_max_bytes, "KB_WEBHOOK_MAX_BYTES"
        return self.max_bytes, "KB_MAX_BODY_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if "chunked" not in headers.get("transfer-encoding", "").lower() and declared in (None, "0"):
            await self.app(scope, receive, send)  # no body: nothing to check
            return
        limit, setting = self.limit_for(scope)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await refuse(scope, send, PayloadTooLarge(f"request body of {int(declared)} bytes is over the "
                                                      f"{limit}-byte limit ({setting})"), close=True)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: nobody is left to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await refuse(scope, send, PayloadTooLarge(f"request body is over the {limit}-byte limit ({setting})"),
                             close=True)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        where = None if content_type in FORMS else lone_surrogate(body)
        if where is not None:
            await refuse(scope, send, MalformedJSON(
                f"request body is not valid JSON text: {where} holds a lone UTF-16 surrogate (such as \\ud800 "
                f"without the \\udc00-\\udfff that must follow it); send text as valid Unicode"), close=False)
            return
        await self.app(scope, replay(body, receive), send)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the body already read, in one message, then whatever the client sends next
    (http.disconnect, which streaming responses listen for)."""
    sent = False

    async def receive_again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


async def refuse(scope: Scope, send: Send, exc: KBError, close: bool) -> None:
    """Answer `exc` as the app's error handlers would; `close`: the rest of the body is not read, so the connection
    cannot carry another request."""
    log.info("refused %s %s: %s", scope.get("method"), app_path(scope), exc.message)
    response = render_error(Request(scope), exc)
    if close:
        response.headers["Connection"] = "close"

    async def nothing() -> Message:  # the response never reads the request
        return {"type": "http.disconnect"}

    await response(scope, nothing, send)


def lone_surrogate(body: bytes) -> str | None:
    """Where a JSON body holds a string with a lone surrogate (`$.body`, `$.tags[2]`, `a key in $`); None when it
    holds none, or is not JSON at all (the route then says how it is malformed)."""
    if ESCAPE_HINT.search(body) is None and BYTES_HINT.search(body) is None and b"\x00" not in body[:4]:
        return None  # (a NUL in the first 4 bytes: UTF-16 or UTF-32 JSON, looked inside)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    stack = [(data, "$")]
    while stack:  # not recursive: nesting is as deep as the client likes
        value, where = stack.pop()
        if isinstance(value, str):
            if SURROGATE.search(value):
                return where
        elif isinstance(value, dict):
            items = []
            for key, item in value.items():
                if SURROGATE.search(key):
                    return f"a key in {where}"
                items.append((item, f"{where}.{key[:MAX_SHOWN]}"))
            stack.extend(reversed(items))
        elif isinstance(value, list):
            stack.extend(reversed([(item, f"{where}[{n}]") for n, item in enumerate(value)]))
    return None


def install_limits(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(BodyLimits, max_bytes=settings.max_body_bytes, webhook_max_bytes=settings.webhook_max_bytes)
