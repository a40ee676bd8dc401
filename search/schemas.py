"""Response models of the JSON API: the contract helpdesk tools rely on, carried by the OpenAPI document."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field
from pydantic_core import PydanticCustomError

# ---- errors --------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. bad_request, article_not_found.")
    message: str = Field(description="What went wrong, for people.")


class ErrorResponse(BaseModel):
    """Every error of the JSON API: `{"error": {"code", "message"}}`."""

    error: ErrorDetail


ERRORS = {
    400: "Bad input: empty or whitespace query, query over KB_MAX_QUERY_CHARS characters, k outside 1..100, "
         "unknown mode, article id with `..` or a leading `/`, malformed JSON.",
    401: "Missing or wrong credentials (API key, or the admin bearer token).",
    403: "The credentials are valid but may not use this route.",
    404: "No such article, job or route.",
    409: "A build is already running.",
    413: "Request body too large.",
    422: "Wrongly typed or missing fields.",
    429: "Too many requests: slow down and retry after the Retry-After header's seconds.",
    503: "No index in service yet (run `kb index`), or the index on disk does not match the model; on feedback and "
         "event routes also a store that cannot be written (store_unavailable: read-only or full disk).",
}
API_ERRORS = (401, 403, 429)  # every /api route: API keys and rate limits apply to all of them
# k's bounds, documented in the schema but checked by the searcher, so that a k outside them stays the README's
# 400 bad_request (FastAPI's own ge/le would answer 422), as it is for `kb search` and the pages.
K_BOUNDS = {"minimum": 1, "maximum": 100}
INTEGER_TEXT = re.compile(r"-?[0-9]+")


def integer_text(value: object) -> object:
    """A query parameter's integer as a client writes one: ASCII digits, optionally after a minus sign.

    Pydantic's lax mode also reads "7.0", " 5", "+5" and "5_0" as integers, and its strict mode reads no text at
    all (every query parameter is text): "wrongly typed fields (422)", as the README promises, needs this rule.
    """
    if isinstance(value, str) and not INTEGER_TEXT.fullmatch(value):
        raise PydanticCustomError("int_parsing", "Input should be an integer written in digits, such as 5")
    return value


QueryInt = Annotated[int, BeforeValidator(integer_text)]  # query parameters: "5" and "-1" are integers, "5.0" is not


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route: the ErrorResponse model with a description for each status."""
    return {status: {"model": ErrorResponse, "description": ERRORS[status]} for status in sorted(set(statuses))}


# ---- search and suggest --------------------------------------------------------------------


class Passage(BaseModel):
    """A passage of an article with the sentences matching the query marked."""

    article_id: str
    passage_id: str
    title: str = Field(description="Title of the article.")
    heading_path: list[str] = Field(description="Headings from H2 down to the passage's section; empty for the "
                                                "article's introduction.")
    anchor: str = Field(description="Anchor of the section in the article page; may be empty.")
    url: str = Field(description="Link to the section (KB_BASE_URL/id#anchor).")
    snippet: str = Field(description="The passage text.")
    highlights: list[tuple[int, int]] = Field(description="[start, end) character offsets of the marked "
                                                          "sentences in `snippet`.")
    snippet_html: str = Field(description="The escaped snippet with <mark> around the highlights.")
    score: float


class SearchHit(BaseModel):
    """An article found by a search, scored as its best passage."""

    id: str = Field(description="Article id: its path in the content folder without .md.")
    title: str
    summary: str
    product: str
    language: str
    url: str
    score: float
    passages: list[Passage] = Field(description="Its best passages (at most 3), best first.")


class SearchResponse(BaseModel):
    query: str = Field(description="The search words as received (trimmed).")
    searched_as: str | None = Field(None, description="The words embedded for the dense search when they differ from "
                                    "`query`: the English rendering of an Indonesian query; null otherwise.")
    total: int = Field(description="Number of results.")
    confident: bool | None = Field(description="Whether the best result is a good answer; null for mode=lexical.")
    confidence: float | None = Field(description="Calibrated probability behind `confident`; null for mode=lexical.")
    not_covered: str | None = Field(None, description="A product the query names that no article mentions (another "
                                    "vendor's, such as Zoom on a Microsoft 365 knowledge base), when it names no "
                                    "product the knowledge base covers: why `confident` is false; null otherwise.")
    results: list[SearchHit]
    answer_id: str | None = Field(None, description="Id of this answer (16 hexadecimal characters): send it back with "
                                                    "POST /api/events and POST /api/feedback.")


class SuggestQuery(BaseModel):
    """What retrieval made of the ticket."""

    text: str = Field(description="The cleaned query text that was embedded (English rendering for Indonesian).")
    codes: list[str] = Field(description="Error codes found in the ticket (0x8004010F, 5.7.57, AADSTS50076...).")
    language: str = Field(description="Language of the ticket, given or detected (en, id).")


class Section(BaseModel):
    """A section of a suggested article that matched the ticket."""

    heading_path: list[str]
    anchor: str
    url: str
    score: float


class SuggestedArticle(BaseModel):
    id: str
    title: str
    summary: str
    url: str
    score: float
    sections: list[Section] = Field(description="Its matched sections (at most 3), best first.")


class SuggestResponse(BaseModel):
    query: SuggestQuery
    confident: bool = Field(description="Whether the knowledge base has a good answer for the ticket.")
    confidence: float = Field(description="Calibrated probability behind `confident`.")
    not_covered: str | None = Field(None, description="A product the query names that no article mentions (another "
                                    "vendor's, such as Zoom on a Microsoft 365 knowledge base), when it names no "
                                    "product the knowledge base covers: why `confident` is false; null otherwise.")
    answers: list[Passage] = Field(description="The k best passages, at most 2 from one article.")
    articles: list[SuggestedArticle] = Field(description="The k best articles.")
    answer_id: str | None = Field(None, description="Id of this answer (16 hexadecimal characters): send it back with "
                                                    "POST /api/events and POST /api/feedback instead of ticket text.")


class ArticleResponse(BaseModel):
    id: str
    title: str
    summary: str
    product: str
    tags: list[str]
    language: str
    audience: str = Field(description="public or internal.")
    owner: str = Field(description="May be empty.")
    reviewed: str = Field(description="Date of the last review, YYYY-MM-DD; empty when unknown.")
    url: str
    html: str = Field(description="The article rendered by markdown-it-py with raw HTML disabled.")


# ---- feedback ------------------------------------------------------------------------------


class FeedbackResponse(BaseModel):
    id: int
    recorded: bool = True


class EventResponse(BaseModel):
    recorded: bool = Field(description="false only when the event log's queue was full and the event was dropped.")


class ArticleFeedback(BaseModel):
    article_id: str
    helpful: int
    not_helpful: int
    total: int


class FeedbackSummaryResponse(BaseModel):
    total: int = Field(description="Feedback answers over all articles.")
    helpful: int
    not_helpful: int
    article_count: int = Field(description="Articles with feedback, over all pages.")
    limit: int
    offset: int
    next_offset: int | None = Field(description="`offset` of the next page; null on the last one.")
    articles: list[ArticleFeedback] = Field(description="One page of the articles, most feedback first.")


# ---- admin: build jobs ---------------------------------------------------------------------


class JobProgress(BaseModel):
    stage: str = Field(description="scanning, embedding or writing; empty before the build starts.")
    done: int
    total: int


class BuildProblem(BaseModel):
    path: str
    line: int
    severity: Literal["error", "warning"]
    message: str


class BuildOutcome(BaseModel):
    build_id: str | None = Field(description="The version written; null when nothing changed.")
    articles: int
    passages: int
    parsed: int
    reused: int
    deleted: int
    drafts: int
    embedded: int
    seconds: float
    errors: int
    warnings: int
    summary: str
    problems: list[BuildProblem] = Field(description="At most 200.")


class JobResponse(BaseModel):
    id: str
    trigger: str = Field(description="api, watch or start.")
    state: Literal["queued", "running", "succeeded", "failed"]
    progress: JobProgress
    created: str
    started: str | None
    finished: str | None
    report: BuildOutcome | None
    error: ErrorDetail | None


class ReindexResponse(BaseModel):
    job: JobResponse
    status_url: str = Field(description="Where to poll the job: /api/admin/jobs/{id}.")


# ---- health --------------------------------------------------------------------------------


class FailedBuild(BaseModel):
    finished: str | None = Field(description="When it failed (UTC).")
    error: ErrorDetail = Field(description="Why, e.g. disk_full naming the index folder, content_error.")


class ReloadStatus(BaseModel):
    watching: bool = Field(description="This process watches the content folder.")
    watch_refused: str | None = Field(description="Why it does not watch although asked to.")
    build_running: str | None = Field(description="Id of the build job running in this process.")
    failed_versions: dict[str, str] = Field(description="Build id -> why it was not put into service (or was "
                                                        "taken out of it: damaged).")
    error: ErrorDetail | None
    failed_build: FailedBuild | None = Field(None, description="The last build that failed (this service's, "
                                             "`kb index` or `kb watch`), until a build succeeds.")


class IntegrityStatus(BaseModel):
    checksums: Literal["verified", "absent"] = Field(description="The files in service matched the checksums of "
                                                     "their manifest (absent: a version built before checksums).")
    verified_at: str | None = Field(description="When they last did (on open, then every KB_VERIFY_SECONDS).")
    current: str | None = Field(description="The version CURRENT names: another than index_version while it is "
                                "damaged or refused; null when CURRENT itself is unreadable.")


class IndexCounts(BaseModel):
    articles: int
    passages: int


class HealthResponse(BaseModel):
    """200: an index version is in service (`degraded`: another failed its checks, or was found damaged and an
    intact one answers instead, or the last build failed)."""

    status: Literal["ok", "degraded"]
    index_version: str
    created: str
    model: str
    query_engine: str = Field(description="onnx-int8, onnx or torch: the engine queries really use.")
    counts: IndexCounts
    reload: ReloadStatus
    integrity: IntegrityStatus
    pid: int = Field(description="Process id of the worker that answered (kb serve --workers N).")
    writeback: dict[str, Any] | None = Field(None, description="Helpdesk write-back status, when configured.")


class NoIndexResponse(BaseModel):
    """503: no index version is loaded (`no_index`), or the index engine does not answer (`unavailable`: a Milvus
    server out of reach; `index_version` is the version that answers again when it is back)."""

    status: Literal["no_index", "unavailable"]
    model: str
    index_version: str | None = None
    error: ErrorDetail | None
    reload: ReloadStatus
    pid: int
    writeback: dict[str, Any] | None = None


# ---- content health ------------------------------------------------------------------------


class HealthFinding(BaseModel):
    kind: str
    severity: Literal["error", "warning"]
    path: str
    line: int
    message: str
    related: str


class ContentHealthResponse(BaseModel):
    """The `kb check` report (GET /health/content?format=json)."""

    status: Literal["ok", "updating"] = Field(description="updating: a newer report is being computed.")
    content_dir: str
    today: str
    index_version: str | None
    articles: int
    files: int
    errors: int
    warnings: int
    counts: dict[str, int]
    seconds: dict[str, float]
    notes: list[str]
    findings: list[HealthFinding]


class ComputingResponse(BaseModel):
    """202: the first report is still being computed."""

    status: Literal["computing"]
