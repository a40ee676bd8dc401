"""Reports for support-operations managers: GET /api/analytics/* (JSON or CSV) and the /reports page."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from kb.database import Database, side_database
from kb.errors import BadRequest, KBError
from search import charts
from search.i18n import choose_language, normalise, translate
from search.report_csv import filename, to_csv
from search.report_schemas import ArticlesResponse, GapsResponse, QueriesResponse, SummaryResponse
from search.reports import Catalog, Note, ReportFilters, Reports, parse_filters
from search.routes.pages import error_page, filter_options, render
from search.schemas import API_ERRORS, ErrorResponse, error_responses

router = APIRouter(tags=["analytics"])

Since = Annotated[str | None, Query(description="First day, YYYY-MM-DD (UTC); default: 29 days before `until`.")]
Until = Annotated[str | None, Query(description="Last day, inclusive, YYYY-MM-DD (UTC); default: today.")]
Language = Annotated[str | None, Query(description="Only queries in this language (en, id, ...).")]
Product = Annotated[str | None, Query(description="Only answers about this product: searches filtered to it or whose "
                                                  "first result is one of its articles; for articles, its articles.")]
Format = Annotated[str, Query(description="json (default) or csv: text/csv with a Content-Disposition file name.")]
CSV = {200: {"content": {"text/csv": {"schema": {"type": "string"}}},
             "description": "The report as JSON, or as CSV with format=csv."}}
RESPONSES = {**CSV, **error_responses(400, 422, *API_ERRORS),
             503: {"model": ErrorResponse,
                   "description": "The event log (KB_ANALYTICS_DB, or KB_DATABASE_URL) cannot be read."}}
LIMITS = {"queries": (50, 500), "gaps": (30, 200), "articles": (100, 5000)}  # default, maximum
PAGE_ROWS = {"queries": 20, "gaps": 15, "articles": 25}  # rows the page shows; its CSV links give the defaults
CACHE_SECONDS = 60  # a report is computed at most once a minute per filter set (the page, then its CSV links)
CACHE_SIZE = 32
REPORTS = ("summary", "queries", "gaps", "articles")
_CREATE = threading.Lock()


class ReportCache:
    """Recently computed reports by (report, filters, limit, index version), kept CACHE_SECONDS; least recent out."""

    def __init__(self, seconds: float = CACHE_SECONDS, size: int = CACHE_SIZE):
        self.seconds, self.size = seconds, size
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, compute) -> dict:
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and now - hit[0] < self.seconds:
                self._entries.move_to_end(key)
                return hit[1]
        report = compute()
        with self._lock:
            self._entries[key] = (now, report)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return report


def log_database(request: Request) -> Database:
    """The event log's database, one per app: a PostgreSQL server out of reach is then not tried again by every
    report for a few seconds (kb/database.py), so the reports answer 503 at once."""
    with _CREATE:
        database = getattr(request.app.state, "analytics_database", None)
        if database is None:
            database = request.app.state.analytics_database = side_database(request.app.state.kb.settings,
                                                                            "analytics")
        return database


def reports_for(request: Request) -> Reports:
    """Reports over the event log (KB_ANALYTICS_DB, or KB_DATABASE_URL) against the index in service (without one:
    ids instead of titles, no nearness)."""
    state = request.app.state.kb
    settings = state.settings
    catalog = Catalog.from_searcher(state.searcher) if state.searcher is not None else Catalog()
    return Reports(log_database(request), catalog, settings.stale_days, settings.model)


def compute(request: Request, name: str, filters: ReportFilters, limit: int | None = None) -> dict:
    """One report, from the app's cache when it was computed for the same filters within CACHE_SECONDS."""
    with _CREATE:
        cache = getattr(request.app.state, "report_cache", None)
        if cache is None:
            cache = request.app.state.report_cache = ReportCache()
    searcher = request.app.state.kb.searcher
    limit = None if name == "summary" else check_limit(name, limit)
    key = (name, filters, limit, searcher.version.build_id if searcher is not None else None)

    def run() -> dict:
        reports = reports_for(request)
        return reports.summary(filters) if name == "summary" else getattr(reports, name)(filters, limit)

    return cache.get(key, run)


def check_limit(name: str, limit: int | None) -> int:
    default, most = LIMITS[name]
    if limit is None:
        return default
    if not 1 <= limit <= most:
        raise BadRequest(f"limit must be from 1 to {most}, got {limit}")
    return limit


def respond(name: str, report: dict, format: str) -> dict | Response:
    if format == "csv":
        return Response(to_csv(name, report), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="{filename(name, report["filters"])}"'})
    return report


def run(request: Request, name: str, since: str | None, until: str | None, language: str | None,
        product: str | None, format: str, limit: int | None = None) -> dict | Response:
    if format not in ("", "json", "csv"):
        raise BadRequest(f"format must be json or csv, got {format!r}")
    return respond(name, compute(request, name, parse_filters(since, until, language, product), limit), format)


@router.get("/api/analytics/summary", response_model=SummaryResponse, responses=RESPONSES,
            summary="Searches and suggestions over time, by source and language; latency; confidence; self-service")
def summary(request: Request, since: Since = None, until: Until = None, language: Language = None,
            product: Product = None, format: Format = "json"):
    return run(request, "summary", since, until, language, product, format)


@router.get("/api/analytics/queries", response_model=QueriesResponse, responses=RESPONSES,
            summary="Top queries: how often asked, share not confident, the article they got first")
def queries(request: Request, since: Since = None, until: Until = None, language: Language = None,
            product: Product = None, format: Format = "json",
            limit: Annotated[int | None, Query(description="How many queries (1..500, default 50).")] = None):
    return run(request, "queries", since, until, language, product, format, limit)


@router.get("/api/analytics/gaps", response_model=GapsResponse, responses=RESPONSES,
            summary="Content gaps: unanswered or unhelpful queries grouped into topics, what to write next first")
def gaps(request: Request, since: Since = None, until: Until = None, language: Language = None,
         product: Product = None, format: Format = "json",
         limit: Annotated[int | None, Query(description="How many topics (1..200, default 30).")] = None):
    return run(request, "gaps", since, until, language, product, format, limit)


@router.get("/api/analytics/articles", response_model=ArticlesResponse, responses=RESPONSES,
            summary="Article performance: shown, opened, inserted, linked, helpful; per owner and product; flags")
def articles(request: Request, since: Since = None, until: Until = None, language: Language = None,
             product: Product = None, format: Format = "json",
             limit: Annotated[int | None, Query(description="How many articles, most shown first (1..5000, "
                                                            "default 100); flagged ones are always listed.")] = None):
    return run(request, "articles", since, until, language, product, format, limit)


# ---- the page -----------------------------------------------------------------------------------
def all_reports(request: Request, filters: ReportFilters) -> dict[str, dict]:
    """The four reports with the API's default limits (the CSV links then come from the cache), two at a time:
    SQLite and numpy release the GIL while they work."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="report") as pool:
        futures = {name: pool.submit(compute, request, name, filters) for name in REPORTS}
        return {name: future.result() for name, future in futures.items()}


def page_charts(data: dict[str, dict], t) -> dict:
    summary, articles = data["summary"], data["articles"]
    volume = summary["volume"]
    periods = [row["period"] for row in volume]
    weeks = summary["self_service"]["weeks"]
    return {
        "volume": charts.columns(periods, [(t("legend_searches"), "bar-search", [r["searches"] for r in volume]),
                                           (t("legend_suggestions"), "bar-suggest",
                                            [r["suggestions"] for r in volume])],
                                 t("reports_volume_title"), t("reports_no_data")),
        "sources": charts.bars([(r["source"], r["total"], f"{r['total']:,}") for r in summary["sources"]],
                               t("reports_sources_title"), "bar", t("reports_no_data")),
        "languages": charts.bars([(r["language"], r["total"], f"{r['total']:,}") for r in summary["languages"]],
                                 t("reports_languages_title"), "bar", t("reports_no_data")),
        "articles": charts.bars([(a["title"], a["shown"], f"{a['shown']:,}") for a in articles["articles"][:10]
                                 if a["shown"]], t("reports_top_articles_title"), "bar-article", t("reports_no_data")),
        "self_service": charts.shares([w["week"] for w in weeks], [w["share"] for w in weeks],
                                      t("reports_self_service_title"), t("reports_no_data")),
    }


def page_notes(data: dict[str, dict], t) -> dict[str, list[str]]:
    """Each report's notes in the page's language (the API and the cache keep them in English)."""
    return {name: [t("note_" + note.key, **note.values) if isinstance(note, Note) else note
                   for note in report["notes"]] for name, report in data.items()}


@router.get("/reports", response_class=HTMLResponse, include_in_schema=False)
def reports_page(request: Request, since: str = "", until: str = "", language: str = "", product: str = ""):
    t = translate(choose_language(normalise(request.query_params.get("lang")), request.cookies.get("lang"),
                                  request.headers.get("accept-language")))
    state = request.app.state.kb
    options = filter_options(state.searcher) if state.searcher is not None else {"product": [], "language": []}
    form = {"since": since, "until": until, "language": language, "product": product}
    context = {"page": "reports", "form": form, "options": options, "data": None, "error": None}
    try:
        filters = parse_filters(since, until, language, product)
    except BadRequest as exc:  # keep what was typed: the form again with the problem
        return render(request, "reports.html", {**context, "error": exc.message}, exc.status)
    form.update(since=filters.since.isoformat(), until=filters.until.isoformat())
    try:
        data = all_reports(request, filters)
    except KBError as exc:
        return error_page(request, exc)
    query = urlencode({k: v for k, v in {**form, "format": "csv"}.items() if v})
    return render(request, "reports.html", {
        **context, "data": data, "filters": filters, "charts": page_charts(data, t), "notes": page_notes(data, t),
        "rows": PAGE_ROWS,
        "csv": {name: f"/api/analytics/{name}?{query}" for name in ("summary", "queries", "gaps", "articles")}})
