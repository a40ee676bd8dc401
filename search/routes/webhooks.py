"""Helpdesk webhooks: POST /api/webhooks/{zendesk,freshdesk,generic} answer in the shape of /api/suggest."""
from __future__ import annotations

import logging
from time import perf_counter
from typing import Annotated, Any, Callable
from urllib.parse import quote, urljoin

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from kb.database import side_database
from kb.errors import PayloadTooLarge
from kb.settings import Settings
from kb.webhook_log import WebhookLog
from search.auth import CallerDep, Principal
from search.helpdesk import (GENERIC_FIELDS, ZENDESK_EVENTS, FreshdeskTicketFields, FreshdeskWebhook, ReplayCache,
                             Ticket, WebhookMap, ZendeskEvent, ZendeskTrigger, freshdesk_ticket, generic_ticket,
                             parse_json, parse_webhook_map, verify_zendesk, zendesk_ticket)
from search.routes.deps import SearcherDep
from search.routes.events import answered
from search.schemas import API_ERRORS, K_BOUNDS, SuggestResponse, error_responses
from search.searcher import Filters
from search.writeback import HELPDESKS, Note, WriteBack

log = logging.getLogger("kb.webhooks")
router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])


class Webhooks:
    """What the webhook routes keep while the service runs: the generic map (checked at start-up), the replay
    cache of first answers per ticket (this process), the webhook log of tickets answered (every worker process,
    KB_WEBHOOK_DB), and the write-back worker with its counters (shown by /healthz)."""

    def __init__(self, settings: Settings, writeback: WriteBack | None = None):
        self.settings = settings
        self.generic_map: WebhookMap = parse_webhook_map(settings.generic_webhook_map)
        self.replays: ReplayCache[dict] = ReplayCache(settings.webhook_replay_seconds)
        self.log = WebhookLog(side_database(settings, "webhooks"), settings.webhook_replay_seconds)
        self.writeback = writeback if writeback is not None else WriteBack.from_settings(settings)

    def start(self) -> None:
        if not self.settings.zendesk_webhook_secret:
            log.info("Zendesk webhook signatures are not checked: KB_ZENDESK_WEBHOOK_SECRET is not set")
        if self.writeback is not None:
            self.writeback.start()

    def stop(self) -> None:
        if self.writeback is not None:
            self.writeback.stop()
        self.log.close()

    def status(self) -> dict:
        """The write-back counters for /healthz ({"enabled": false} when write-back is not configured) and how
        often KB_WEBHOOK_DB could not be written (each time, replays were recognised within this process only)."""
        counters = self.writeback.counters() if self.writeback is not None else {"enabled": False}
        return {**counters, "webhook_db_errors": self.log.errors}

    def answer(self, ticket: Ticket, public_only: bool, suggest: Callable[[], dict],
               on_fresh: Callable[[dict], None],
               note: Callable[[dict], Note | None] | None = None) -> tuple[dict, bool, bool | None]:
        """(answer, replayed, queued): the first answer for this ticket within the replay window, or a fresh one.

        Once per ticket and window, across the worker processes: the process that first answers it claims it in
        the webhook log; only then do `on_fresh` and the write-back of `note(answer)` (None: no note) run. Another
        process's delivery of the same ticket is computed again from its index, flagged replayed, and neither
        counted nor written back; its answer is kept in its own replay cache. `queued` is None when no note was
        submitted, else whether the write-back queue took it.

        The key is (source, ticket id) plus the caller's visibility, so a caller who may not see internal articles
        is never answered from a result computed for one who may.
        """
        claimed_elsewhere: list[bool] = []
        queued: list[bool] = []

        def compute() -> dict:
            result = suggest()
            if ticket.key and not self.log.claim(*ticket.key, not public_only):
                claimed_elsewhere.append(True)  # another worker answered this ticket within the window
                return result
            on_fresh(result)
            made = note(result) if note is not None and self.writeback is not None else None
            if made is not None:
                queued.append(self.writeback.submit(made))
                if queued[0] and ticket.key:
                    self.log.noted(*ticket.key, not public_only)
            return result

        key = (*ticket.key, public_only) if ticket.key else None
        result, replayed = self.replays.answer(key, compute)
        return result, replayed or bool(claimed_elsewhere), (queued[0] if queued else None)


def check_settings(settings: Settings) -> None:
    """Refuse to start with a KB_GENERIC_WEBHOOK_MAP that is not a valid map (BadRequest naming it)."""
    parse_webhook_map(settings.generic_webhook_map)


def webhooks_of(request: Request) -> Webhooks:
    return request.app.state.kb.webhooks


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body (signatures cover its bytes), refused with 413 past `limit` bytes: by Content-Length before
    reading, and while reading (chunked bodies, or a Content-Length that lies)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {int(declared)} bytes is over the {limit}-byte limit "
                              f"(KB_WEBHOOK_MAX_BYTES)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the {limit}-byte limit (KB_WEBHOOK_MAX_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


def absolute_links(request: Request) -> Callable[[str], str]:
    """Article URLs as absolute links: KB_BASE_URL when it is absolute, else this service's own base URL."""
    base = str(request.base_url)
    return lambda url: urljoin(base, quote(url, safe=":/?#[]@!$&'()*+,;=%~"))


async def answer(request: Request, searcher: Any, who: Principal, ticket: Ticket, k: int,
                 response: Response) -> dict:
    """Searcher.suggest for the ticket, as POST /api/suggest calls it (internal articles only for callers who may
    see them), through the replay cache and the webhook log; a fresh answer is counted in the usage log, recorded
    in the event log (source webhook:<helpdesk>; a replay keeps the first answer's answer_id) and written back."""
    hooks = webhooks_of(request)
    links = absolute_links(request)
    public_only = not who.sees_internal
    took: list[float] = []  # seconds the suggest took (the webhook log's claim after it is not its latency)

    def suggest() -> dict:
        started = perf_counter()
        result = searcher.suggest(ticket.subject, ticket.body, list(ticket.tags), ticket.language, k,
                                  Filters(public_only=public_only))
        took.append(perf_counter() - started)
        return result

    def fresh(result: dict) -> None:
        answered(request, "suggest", result, perf_counter() - took[-1], source=f"webhook:{ticket.source}")

    def note(result: dict) -> Note | None:
        if ticket.source in HELPDESKS and ticket.ticket_id and result.get("articles"):
            return Note.from_result(ticket.source, ticket.ticket_id, result, links)
        return None

    result, replayed, queued = await run_in_threadpool(hooks.answer, ticket, public_only, suggest, fresh, note)
    response.headers["X-KB-Replayed"] = "true" if replayed else "false"
    response.headers["X-KB-Writeback"] = "none" if queued is None else "queued" if queued else "dropped"
    return result


K = Annotated[int, Query(description="How many answers and articles to return (1..100). A ticket answered again "
                                     "within the replay window gets its first answer, whatever k (on another worker "
                                     "process: computed again with this k).",
                         json_schema_extra=K_BOUNDS)]
RESPONSES = dict(response_model=SuggestResponse, responses=error_responses(400, 413, 422, 503, *API_ERRORS))
ANSWER = ("Answers in the shape of POST /api/suggest. The same ticket id again within KB_WEBHOOK_REPLAY_SECONDS "
          "is answered from the first result (header X-KB-Replayed: true) and posts no second note. That holds "
          "across the worker processes of `kb serve --workers N`: they share KB_WEBHOOK_DB (ticket ids and times, "
          "no ticket text), so a replay that reaches another worker posts no note either (X-KB-Replayed: true), "
          "but its answer is computed again from the index in service, as only the first worker kept the answer. With "
          "KB_HELPDESK_API_URL and KB_HELPDESK_API_TOKEN set, the top articles are added to the ticket as a private "
          "note in the background (header X-KB-Writeback: queued). Bodies over KB_WEBHOOK_MAX_BYTES: 413.")


def json_body(*models: type[BaseModel]) -> dict:
    """OpenAPI request body of a route that reads its raw body itself (the schemas are documentation)."""
    schemas = [inline_refs(m.model_json_schema()) for m in models]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def inline_refs(schema: dict) -> dict:
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.rsplit("/", 1)[1]])
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    return walk(schema)


@router.post("/zendesk", summary="Suggestions for a Zendesk ticket (webhook)", **RESPONSES,
             openapi_extra=json_body(ZendeskEvent, ZendeskTrigger),
             description="Takes a Zendesk ticket event (`type` one of " + ", ".join(f"`{t}`" for t in ZENDESK_EVENTS)
             + "; other event types: 422 unsupported_event) or a trigger body `{\"ticket\": {\"id\", \"subject\", "
             "\"description\", \"tags\"}}` (tags a list or the space-separated `{{ticket.tags}}`). With "
             "KB_ZENDESK_WEBHOOK_SECRET set, `X-Zendesk-Webhook-Signature` (base64 HMAC-SHA256 of the "
             "`X-Zendesk-Webhook-Signature-Timestamp` value + the raw body) is required and the timestamp must be "
             "within KB_WEBHOOK_REPLAY_SECONDS (401 otherwise). **Without that secret, signatures are not checked**: "
             "the route is then protected by the API key alone. " + ANSWER)
async def zendesk(request: Request, searcher: SearcherDep, who: CallerDep, response: Response, k: K = 5) -> dict:
    hooks = webhooks_of(request)
    raw = await read_body(request, hooks.settings.webhook_max_bytes)
    if hooks.settings.zendesk_webhook_secret:
        verify_zendesk(hooks.settings.zendesk_webhook_secret, raw,
                       request.headers.get("x-zendesk-webhook-signature"),
                       request.headers.get("x-zendesk-webhook-signature-timestamp"),
                       hooks.settings.webhook_replay_seconds)
    return await answer(request, searcher, who, zendesk_ticket(parse_json(raw)), k, response)


@router.post("/freshdesk", summary="Suggestions for a Freshdesk ticket (automation-rule webhook)", **RESPONSES,
             openapi_extra=json_body(FreshdeskWebhook, FreshdeskTicketFields),
             description="Takes the JSON body of a Freshdesk automation rule's \"Trigger webhook\" action: "
             "`{\"freshdesk_webhook\": {\"ticket_id\", \"ticket_subject\", \"ticket_description\", \"ticket_tags\"}}` "
             "or flat `{\"ticket_id\", \"subject\", \"description\" or \"description_text\", \"tags\"}` (HTML "
             "descriptions are reduced to their text; tags a list or comma-separated). " + ANSWER)
async def freshdesk(request: Request, searcher: SearcherDep, who: CallerDep, response: Response,
                    k: K = 5) -> dict:
    raw = await read_body(request, webhooks_of(request).settings.webhook_max_bytes)
    return await answer(request, searcher, who, freshdesk_ticket(parse_json(raw)), k, response)


@router.post("/generic", summary="Suggestions for a ticket from any tool (JSON pointers)", **RESPONSES,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "type": "object", "description": "Any JSON object, read through KB_GENERIC_WEBHOOK_MAP."}}}}},
             description="Reads " + ", ".join(GENERIC_FIELDS) + " from any JSON object through the JSON pointers "
             "(RFC 6901) of KB_GENERIC_WEBHOOK_MAP, e.g. for Jira Service Management automation's \"Send web "
             "request\": `{\"subject\": \"/fields/summary\", \"body\": \"/fields/description\", \"tags\": "
             "\"/fields/labels\", \"ticket_id\": \"/key\"}` (a description in Atlassian document format is reduced "
             "to its text). No signature and no write-back: protected by the API key. " + ANSWER)
async def generic(request: Request, searcher: SearcherDep, who: CallerDep, response: Response, k: K = 5) -> dict:
    hooks = webhooks_of(request)
    raw = await read_body(request, hooks.settings.webhook_max_bytes)
    return await answer(request, searcher, who, generic_ticket(parse_json(raw), hooks.generic_map), k, response)
