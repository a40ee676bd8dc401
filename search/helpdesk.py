"""Helpdesk webhooks without HTTP: payloads -> Ticket, Zendesk signatures, JSON-pointer maps, the replay cache."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from html.parser import HTMLParser
from typing import Any, Callable, Generic, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from kb.errors import (BadRequest, EmptyTicket, InvalidPayload, MalformedJSON, SignatureInvalid, SignatureStale,
                       UnsupportedEvent)

SOURCES = ("zendesk", "freshdesk", "generic")
# Zendesk webhook event types (developer.zendesk.com, "Ticket events") answered: the ticket was created, or what
# suggestions are computed from changed. Every ticket event carries the ticket in `detail`, but a status, assignee or
# deletion event is no reason to suggest articles (nor to post another note).
ZENDESK_EVENTS = tuple(f"zen:event-type:ticket.{name}" for name in
                       ("created", "subject_changed", "description_changed", "tags_changed"))
GENERIC_FIELDS = ("subject", "body", "tags", "language", "ticket_id")
GENERIC_MAP_SETTING = "KB_GENERIC_WEBHOOK_MAP"
MAX_TICKET_ID_CHARS = 200
LANGUAGE_NAMES = {"english": "en", "indonesian": "id", "bahasa indonesia": "id", "bahasa": "id"}
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(?:[-_][a-z0-9]{2,8})*")
_BAD_ESCAPE = re.compile(r"~(?![01])")
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
MISSING = object()


@dataclass(frozen=True)
class Ticket:
    """What a webhook says about a ticket: enough to call Searcher.suggest and to write a note back."""

    source: str
    ticket_id: str | None
    subject: str = ""
    body: str = ""
    tags: tuple[str, ...] = ()
    language: str | None = None

    @property
    def key(self) -> tuple[str, str] | None:
        """Replay-cache key: the same ticket from the same helpdesk; None without a ticket id."""
        return (self.source, self.ticket_id) if self.ticket_id else None

    def require_text(self) -> "Ticket":
        if not self.subject.strip() and not self.body.strip():
            raise EmptyTicket(f"the {self.source} ticket has neither a subject nor a description: nothing to "
                              f"suggest articles for")
        return self


# ---- payload models (also the OpenAPI request bodies) ----------------------------------------------------------

class ZendeskTicketFields(BaseModel):
    """Ticket fields of a Zendesk event's `detail` or of a trigger body's `ticket` object."""

    model_config = ConfigDict(extra="ignore")
    id: int | str | None = Field(None, description="Ticket number ({{ticket.id}}).")
    subject: str | None = Field(None, description="Ticket subject ({{ticket.title}}).")
    description: str | None = Field(None, description="First comment of the ticket ({{ticket.description}}).")
    tags: list[str] | str | None = Field(None, description="A list, or the space-separated {{ticket.tags}}.")
    language: str | None = Field(None, description="Optional language code (en, id); detected when absent.")


class ZendeskEvent(BaseModel):
    """A Zendesk webhook subscribed to ticket events (zen:event-type:ticket.created and the updates listed)."""

    model_config = ConfigDict(extra="ignore")
    type: str = Field(..., description="One of: " + ", ".join(ZENDESK_EVENTS) + ".")
    detail: ZendeskTicketFields


class ZendeskTrigger(BaseModel):
    """The JSON body of a Zendesk trigger or automation that notifies the webhook."""

    model_config = ConfigDict(extra="ignore")
    ticket: ZendeskTicketFields


class FreshdeskTicketFields(BaseModel):
    """A Freshdesk automation rule's webhook body: keys with or without the `ticket_` prefix."""

    model_config = ConfigDict(extra="ignore")
    ticket_id: int | str | None = Field(None, validation_alias=AliasChoices("ticket_id", "id"),
                                        description="Ticket number ({{ticket.id}}).")
    subject: str | None = Field(None, validation_alias=AliasChoices("ticket_subject", "subject"),
                                description="{{ticket.subject}}.")
    description_text: str | None = Field(None, validation_alias=AliasChoices("ticket_description_text",
                                                                         "description_text"),
                                         description="Plain-text description; preferred when present.")
    description: str | None = Field(None, validation_alias=AliasChoices("ticket_description", "description"),
                                    description="{{ticket.description}} (HTML; reduced to its text).")
    tags: list[str] | str | None = Field(None, validation_alias=AliasChoices("ticket_tags", "tags"),
                                         description="A list, or the comma-separated {{ticket.tags}}.")
    language: str | None = Field(None, validation_alias=AliasChoices("ticket_language", "language"),
                                 description="Optional language code (en, id); detected when absent.")


class FreshdeskWebhook(BaseModel):
    """`{"freshdesk_webhook": {...}}`, the body Freshdesk's webhook placeholders are usually wrapped in."""

    model_config = ConfigDict(extra="ignore")
    freshdesk_webhook: FreshdeskTicketFields


def _validate(model: type[BaseModel], value: Any, where: str) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:  # the message names fields and expectations, never the values sent
        problems = "; ".join(".".join([where, *(str(p) for p in e["loc"])]).strip(".") + ": " + e["msg"]
                             for e in exc.errors())
        raise InvalidPayload(problems) from None


# ---- reading values -------------------------------------------------------------------------------------------

def parse_json(raw: bytes) -> dict:
    """The body as a JSON object; 400 when it is not JSON, 422 when it is JSON but not an object."""
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJSON(f"request body is not valid JSON: {getattr(exc, 'msg', 'undecodable bytes')}") \
            from None
    if not isinstance(payload, dict):
        raise InvalidPayload(f"request body must be a JSON object, got a JSON {type(payload).__name__}")
    return payload


def parse_tags(value: Any, where: str = "tags") -> tuple[str, ...]:
    """A list of tags, or one string: comma-separated when it has commas (Freshdesk), else space-separated."""
    if value is None or value is MISSING:
        return ()
    if isinstance(value, str):
        parts = value.split(",") if "," in value else value.split()
    elif isinstance(value, list) and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        parts = [str(v) for v in value]
    else:
        raise InvalidPayload(f"{where} must be a list of strings or a string")
    return tuple(p.strip() for p in parts if p.strip())


def parse_language(value: Any) -> str | None:
    """A language code for Searcher.suggest; names helpdesks put in placeholders ("English") are mapped, anything
    else is left to detection rather than refused (the ticket should still get an answer)."""
    if not isinstance(value, str) or not value.strip():
        return None
    lowered = value.strip().lower()
    if lowered in LANGUAGE_NAMES:
        return LANGUAGE_NAMES[lowered]
    return lowered if _LANGUAGE_CODE.fullmatch(lowered) else None


def helpdesk_ticket_id(value: Any, where: str) -> str | None:
    """Zendesk and Freshdesk tickets are numbered; anything else is refused (the id goes into write-back URLs)."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        return str(int(value.strip()))
    raise InvalidPayload(f"{where} must be a ticket number")


class _TextOfHTML(HTMLParser):
    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def html_to_text(text: str) -> str:
    """The text of an HTML fragment (Freshdesk descriptions), line breaks kept at block elements."""
    if "<" not in text and "&" not in text:
        return text
    parser = _TextOfHTML()
    parser.feed(text)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


# ---- the three sources -----------------------------------------------------------------------------------------

def zendesk_ticket(payload: dict) -> Ticket:
    """A Zendesk ticket event (`{"type": "zen:event-type:ticket.created", "detail": {...}}`) or trigger body
    (`{"ticket": {...}}`)."""
    if "type" in payload:
        event_type = payload["type"]
        if event_type not in ZENDESK_EVENTS:
            shown = event_type if isinstance(event_type, str) and len(event_type) <= 100 else "(not a string)"
            raise UnsupportedEvent(f"Zendesk event type {shown!r} is not answered; this webhook answers "
                                   f"{', '.join(ZENDESK_EVENTS)}")
        fields = _validate(ZendeskEvent, payload, "").detail
        where = "detail"
    elif "ticket" in payload:
        fields = _validate(ZendeskTrigger, payload, "").ticket
        where = "ticket"
    else:
        raise InvalidPayload('not a Zendesk payload: expected a ticket event {"type": "zen:event-type:ticket.'
                             'created", "detail": {...}} or a trigger body {"ticket": {"id", "subject", '
                             '"description", "tags"}}')
    return Ticket("zendesk", helpdesk_ticket_id(fields.id, f"{where}.id"), fields.subject or "",
                  fields.description or "", parse_tags(fields.tags, f"{where}.tags"),
                  parse_language(fields.language)).require_text()


def freshdesk_ticket(payload: dict) -> Ticket:
    """A Freshdesk automation webhook: `{"freshdesk_webhook": {"ticket_id", "ticket_subject", ...}}` or flat
    `{"ticket_id", "subject", "description" | "description_text", "tags"}`."""
    if "freshdesk_webhook" in payload:
        fields, where = _validate(FreshdeskWebhook, payload, "").freshdesk_webhook, "freshdesk_webhook"
    else:
        fields, where = _validate(FreshdeskTicketFields, payload, ""), "body"
    body = fields.description_text if fields.description_text else html_to_text(fields.description or "")
    return Ticket("freshdesk", helpdesk_ticket_id(fields.ticket_id, f"{where}.ticket_id"), fields.subject or "",
                  body, parse_tags(fields.tags, f"{where}.ticket_tags"),
                  parse_language(fields.language)).require_text()


# ---- RFC 6901 JSON pointers and the generic map ---------------------------------------------------------------

def parse_pointer(pointer: str) -> tuple[str, ...]:
    """Reference tokens of a JSON pointer ("" is the whole document); ValueError when it is not one."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ValueError(f"JSON pointer {pointer!r} must be empty or start with '/'")
    tokens = pointer[1:].split("/")
    if any(_BAD_ESCAPE.search(token) for token in tokens):
        raise ValueError(f"JSON pointer {pointer!r} has a '~' not followed by 0 or 1")
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in tokens)


def resolve_pointer(document: Any, tokens: tuple[str, ...]) -> Any:
    """The value at `tokens` in `document`, or MISSING when the pointer leads nowhere."""
    for token in tokens:
        if isinstance(document, dict):
            if token not in document:
                return MISSING
            document = document[token]
        elif isinstance(document, list):
            if not _ARRAY_INDEX.fullmatch(token) or int(token) >= len(document):
                return MISSING
            document = document[int(token)]
        else:
            return MISSING
    return document


@dataclass(frozen=True)
class WebhookMap:
    """KB_GENERIC_WEBHOOK_MAP parsed: ticket field -> (pointer text, tokens)."""

    pointers: dict[str, tuple[str, tuple[str, ...]]]


def parse_webhook_map(raw: str) -> WebhookMap:
    """Validate KB_GENERIC_WEBHOOK_MAP once, at start-up; every problem names the setting."""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"{GENERIC_MAP_SETTING} is not valid JSON ({exc}); give an object such as "
                         f'{{"subject": "/subject", "body": "/body"}}') from None
    if not isinstance(value, dict):
        raise BadRequest(f"{GENERIC_MAP_SETTING} must be a JSON object mapping fields to JSON pointers")
    unknown = sorted(set(value) - set(GENERIC_FIELDS))
    if unknown:
        raise BadRequest(f"{GENERIC_MAP_SETTING} has unknown field(s) {', '.join(unknown)}; the fields are "
                         f"{', '.join(GENERIC_FIELDS)}")
    if "subject" not in value and "body" not in value:
        raise BadRequest(f"{GENERIC_MAP_SETTING} must map at least one of subject and body")
    pointers = {}
    for name, pointer in value.items():
        if not isinstance(pointer, str):
            raise BadRequest(f"{GENERIC_MAP_SETTING}: {name} must be a JSON pointer string such as \"/{name}\"")
        try:
            pointers[name] = (pointer, parse_pointer(pointer))
        except ValueError as exc:
            raise BadRequest(f"{GENERIC_MAP_SETTING}: {name}: {exc} (RFC 6901)") from None
    return WebhookMap(pointers)


def _text(value: Any, where: str) -> str:
    if value is None or value is MISSING:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("type") == "doc":  # Atlassian document format (Jira descriptions)
        return _adf_text(value).strip()
    raise InvalidPayload(f"{where} must be a string")


def _adf_text(node: Any) -> str:
    """Text of an Atlassian document: text nodes joined within paragraphs and headings, blocks on new lines."""
    if not isinstance(node, dict):
        return ""
    if node.get("type") == "text":
        return node["text"] if isinstance(node.get("text"), str) else ""
    if node.get("type") == "hardBreak":
        return "\n"
    content = node.get("content")
    children = [_adf_text(child) for child in content] if isinstance(content, list) else []
    return ("" if node.get("type") in ("paragraph", "heading") else "\n").join(children)


def generic_ticket(payload: dict, mapping: WebhookMap) -> Ticket:
    """Any JSON body (Jira Service Management "Send web request", ...) read through KB_GENERIC_WEBHOOK_MAP."""
    def value(name: str) -> tuple[Any, str]:
        if name not in mapping.pointers:
            return MISSING, name
        pointer, tokens = mapping.pointers[name]
        return resolve_pointer(payload, tokens), f"{name} (at {json.dumps(pointer)})"

    subject, subject_where = value("subject")
    body, body_where = value("body")
    tags, tags_where = value("tags")
    language, _ = value("language")
    ticket_id, id_where = value("ticket_id")
    if ticket_id is MISSING or ticket_id is None or ticket_id == "":
        ticket_id = None
    elif isinstance(ticket_id, bool) or not isinstance(ticket_id, (str, int)) or \
            len(str(ticket_id)) > MAX_TICKET_ID_CHARS:
        raise InvalidPayload(f"{id_where} must be a string or a number of at most {MAX_TICKET_ID_CHARS} characters")
    return Ticket("generic", str(ticket_id) if ticket_id is not None else None, _text(subject, subject_where),
                  _text(body, body_where), parse_tags(tags, tags_where), parse_language(language)).require_text()


# ---- Zendesk signatures ----------------------------------------------------------------------------------------

def zendesk_signature(secret: str, timestamp: str, body: bytes) -> str:
    """base64(HMAC-SHA256(key=secret, msg=timestamp + body)), as Zendesk signs webhook requests."""
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def parse_timestamp(value: str) -> float:
    """Seconds since the epoch of an ISO 8601 time (2024-01-01T00:00:00Z); UTC when it names no zone."""
    moment = datetime.fromisoformat(value.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def verify_zendesk(secret: str, body: bytes, signature: str | None, timestamp: str | None, window: float,
                   now: float | None = None) -> None:
    """Raise SignatureInvalid unless `signature` signs `timestamp + body` with `secret`, SignatureStale when the
    timestamp is more than `window` seconds from now (either direction)."""
    if not signature or not timestamp:
        missing = "X-Zendesk-Webhook-Signature" if not signature else "X-Zendesk-Webhook-Signature-Timestamp"
        raise SignatureInvalid(f"{missing} header missing: KB_ZENDESK_WEBHOOK_SECRET is set, so Zendesk requests "
                               f"must be signed")
    try:
        sent_at = parse_timestamp(timestamp)
    except (ValueError, OverflowError):
        raise SignatureInvalid("X-Zendesk-Webhook-Signature-Timestamp is not an ISO 8601 time such as "
                               "2024-01-01T00:00:00Z") from None
    expected = zendesk_signature(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode("utf-8", "replace")):
        raise SignatureInvalid("X-Zendesk-Webhook-Signature does not match the body and timestamp signed with "
                               "KB_ZENDESK_WEBHOOK_SECRET")
    age = (time.time() if now is None else now) - sent_at
    if abs(age) > window:
        when = f"{age:.0f} s old" if age > 0 else f"{-age:.0f} s in the future"
        raise SignatureStale(f"stale signature: X-Zendesk-Webhook-Signature-Timestamp is {when}; requests are "
                             f"accepted within {window:g} s of this server's clock (a replay, or a clock to fix)")


# ---- the replay cache ------------------------------------------------------------------------------------------

T = TypeVar("T")


class _Entry:
    __slots__ = ("done", "value", "expires")

    def __init__(self):
        self.done = threading.Event()
        self.value: Any = MISSING
        self.expires: float | None = None  # None while the first answer is being computed


class ReplayCache(Generic[T]):
    """The first answer per key, kept `ttl` seconds; at most `max_entries` (oldest dropped first).

    Concurrent deliveries of one ticket compute once: later callers wait for the first and get its answer.
    A computation that raises is not kept, so the next delivery tries again.
    """

    def __init__(self, ttl: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.ttl, self.max_entries, self.clock = ttl, max_entries, clock
        self._entries: OrderedDict[Any, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def answer(self, key: Any, compute: Callable[[], T]) -> tuple[T, bool]:
        """(value, replayed): the kept value for `key` (replayed=True) or a freshly computed one."""
        if key is None:
            return compute(), False
        while True:
            with self._lock:
                now = self.clock()
                self._expire(now)
                entry = self._entries.get(key)
                if entry is not None and entry.expires is not None and entry.expires <= now:
                    del self._entries[key]  # expired, though behind a younger entry in the queue
                    entry = None
                mine = entry is None
                if mine:
                    entry = self._entries[key] = _Entry()
                    while len(self._entries) > self.max_entries:
                        self._entries.popitem(last=False)
            if mine:
                return self._compute(key, entry, compute), False
            entry.done.wait()
            if entry.value is not MISSING:
                return entry.value, True
            # the first computation failed and was forgotten: go round and compute (or wait for another try)

    def _compute(self, key: Any, entry: _Entry, compute: Callable[[], T]) -> T:
        try:
            value = compute()
        except BaseException:
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
            entry.done.set()
            raise
        with self._lock:
            entry.value, entry.expires = value, self.clock() + self.ttl
        entry.done.set()
        return value

    def _expire(self, now: float) -> None:
        """Drop expired answers from the oldest end (answers expire in about the order they were asked for)."""
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires is None or entry.expires > now:
                return
            del self._entries[key]
