"""Reports over the analytics event log: filters, the read-only log, volume and latency, top queries, self-service."""
from __future__ import annotations

import datetime as dt
import sqlite3
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from kb.errors import BadRequest

ANSWERS = "('search', 'suggest')"
DEFAULT_DAYS = 30          # a report without `since` covers the 30 days up to `until` (default: today, UTC)
MAX_DAYS = 3660            # ten years: anything longer is a typo
WEEKLY_AFTER_DAYS = 60     # volume by day up to 60 days, by week (Monday to Sunday) beyond
TOP_QUERIES = 50


def utc_today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


@dataclass(frozen=True)
class ReportFilters:
    """Which events a report covers: days `since`..`until` (inclusive, UTC) and optionally one language and product.

    `language` is the language of the query. `product` selects searches filtered to that product or whose first
    result is one of its articles (suggestions carry no product of their own), and in the article report that
    product's articles.
    """

    since: dt.date
    until: dt.date
    language: str | None = None
    product: str | None = None

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1

    @property
    def weekly(self) -> bool:
        return self.days > WEEKLY_AFTER_DAYS

    @property
    def middle(self) -> dt.date:
        """First day of the second half of the range (trends compare the two halves)."""
        return self.since + dt.timedelta(days=self.days // 2)

    def to_dict(self) -> dict:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(), "language": self.language,
                "product": self.product, "days": self.days}


def parse_date(value: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise BadRequest(f"{name} must be a date as YYYY-MM-DD, got {value!r}") from None


def parse_filters(since: str | None = None, until: str | None = None, language: str | None = None,
                  product: str | None = None, today: dt.date | None = None) -> ReportFilters:
    """Filters from query parameters or flags; BadRequest for malformed dates and empty or oversized ranges."""
    end = parse_date(until, "until") if until and until.strip() else (today or utc_today())
    start = parse_date(since, "since") if since and since.strip() else end - dt.timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise BadRequest(f"since ({start}) is after until ({end}): the range is empty")
    if (end - start).days + 1 > MAX_DAYS:
        raise BadRequest(f"the range {start}..{end} is longer than {MAX_DAYS} days")
    return ReportFilters(start, end, (language or "").strip() or None, (product or "").strip() or None)


def periods(filters: ReportFilters, weekly: bool) -> list[tuple[dt.date, int]]:
    """(first day, days in range) of each day, or of each Monday-to-Sunday week clipped to the range."""
    out, day = [], filters.since
    while day <= filters.until:
        end = day if not weekly else min(day + dt.timedelta(days=6 - day.weekday()), filters.until)
        out.append((day, (end - day).days + 1))
        day = end + dt.timedelta(days=1)
    return out


def period_of(day: str, filters: ReportFilters, weekly: bool) -> str:
    """The period (its first day in the range, YYYY-MM-DD) that `day` falls into."""
    if not weekly:
        return day
    date = dt.date.fromisoformat(day)
    return max(date - dt.timedelta(days=date.weekday()), filters.since).isoformat()


def percentile(values: np.ndarray, p: float) -> float | None:
    """The nearest-rank percentile (a value that occurred), rounded to 0.1; None without values."""
    if not len(values):
        return None
    return round(float(np.percentile(values, p, method="inverted_cdf")), 1)


def share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass(frozen=True)
class Catalog:
    """The index in service as reports see it: article metadata and per-article centroid vectors (may be empty)."""

    articles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    ids: Sequence[str] = ()
    centroids: np.ndarray | None = None   # (len(ids), dim) float32, L2-normalised

    @classmethod
    def from_searcher(cls, searcher) -> Catalog:
        from search.related import article_vectors

        vectors = article_vectors(searcher)
        return cls(searcher.articles, vectors.ids, vectors.centroids)

    def title(self, article_id: str) -> str:
        return str(self.articles.get(article_id, {}).get("title") or article_id)

    def product_articles(self, product: str) -> list[str]:
        return [a for a, meta in self.articles.items() if str(meta.get("product") or "").lower() == product.lower()]


class EventLog:
    """Read-only access to the event log's SQLite file (kb/event_schema.py); never creates or writes it."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextmanager
    def connect(self, filters: ReportFilters | None = None, catalog: Catalog | None = None
                ) -> Iterator[sqlite3.Connection | None]:
        """A read-only connection (None when there is no log yet); for a product filter it holds the product's
        articles (temp.product_articles) and the answers whose first result is one of them (temp.product_answers)."""
        if not self.path.is_file():
            yield None
            return
        conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=10,
                               check_same_thread=False)
        try:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone():
                yield None
                return
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("PRAGMA cache_size = -65536")
            if filters is not None and filters.product:
                conn.execute("CREATE TEMP TABLE product_articles (article_id TEXT PRIMARY KEY) WITHOUT ROWID")
                conn.executemany("INSERT OR IGNORE INTO product_articles VALUES (?)",
                                 [(a,) for a in (catalog or Catalog()).product_articles(filters.product)])
                # answers whose first result is one of the product's articles: one pass over results_article
                conn.execute("CREATE TEMP TABLE product_answers (id INTEGER PRIMARY KEY)")
                conn.execute("INSERT OR IGNORE INTO product_answers SELECT event_id FROM results INDEXED BY "
                             "results_article WHERE article_id IN temp.product_articles AND position = 1")
            yield conn
        finally:
            conn.close()


def answer_filter(filters: ReportFilters, alias: str = "e") -> tuple[str, list]:
    """SQL condition and parameters selecting the searches and suggestions `filters` covers."""
    e = alias
    sql = [f"{e}.day BETWEEN ? AND ?", f"{e}.kind IN {ANSWERS}"]
    params: list = [filters.since.isoformat(), filters.until.isoformat()]
    if filters.language:
        sql.append(f"{e}.language = ? COLLATE NOCASE")
        params.append(filters.language)
    if filters.product:
        sql.append(f"({e}.product = ? COLLATE NOCASE OR ({e}.product IS NULL AND {e}.id IN temp.product_answers))")
        params.append(filters.product)
    return " AND ".join(sql), params


def used_answers_sql(since: dt.date) -> tuple[str, list]:
    """Answers an agent used: an article inserted into a reply, linked to the ticket, or marked helpful."""
    return ("SELECT answer_id FROM events WHERE day >= ? AND answer_id IS NOT NULL AND "
            "(kind IN ('insert', 'link') OR (kind = 'feedback' AND helpful = 1))", [since.isoformat()])


class Reports:
    """The reports of one event log against the index in service; `today` fixes what "stale" is measured from."""

    def __init__(self, log_path: Path, catalog: Catalog | None = None, stale_days: int = 180,
                 model: str = "all-MiniLM-L6-v2", store_text: bool = True, today: dt.date | None = None):
        self.log = EventLog(log_path)
        self.catalog = catalog or Catalog()
        self.stale_days, self.model, self.store_text = stale_days, model, store_text
        self.today = today

    def notes(self, conn: sqlite3.Connection | None) -> list[str]:
        if conn is None:
            return [f"no events recorded yet ({self.log.path} does not exist or holds no event table)"]
        return []

    # ---- volume, latency, self-service -------------------------------------------------------
    def summary(self, filters: ReportFilters) -> dict:
        weekly = filters.weekly
        slots = periods(filters, weekly)
        volume = {p.isoformat(): {"period": p.isoformat(), "days": n, "searches": 0, "suggestions": 0,
                                  "confident": 0, "rated": 0} for p, n in slots}
        sources: dict[str, dict] = defaultdict(lambda: {"searches": 0, "suggestions": 0})
        languages: dict[str, dict] = defaultdict(lambda: {"searches": 0, "suggestions": 0})
        totals = {"searches": 0, "suggestions": 0, "confident": 0, "rated": 0, "no_results": 0}
        latency: dict[str, np.ndarray] = {"search": np.zeros(0), "suggest": np.zeros(0)}
        with self.log.connect(filters, self.catalog) as conn:
            notes = self.notes(conn)
            if conn is not None:
                where, params = answer_filter(filters)
                for day, kind, source, language, n, confident, rated, empty in conn.execute(
                        "SELECT day, kind, source, language, count(*), total(confident = 1), count(confident), "
                        f"total(result_count = 0) FROM events e WHERE {where} GROUP BY day, kind, source, language",
                        params):
                    column = "searches" if kind == "search" else "suggestions"
                    row = volume[period_of(day, filters, weekly)]
                    row[column] += n
                    row["confident"] += int(confident)
                    row["rated"] += rated
                    sources[source or "unknown"][column] += n
                    languages[language or "unknown"][column] += n
                    totals[column] += n
                    totals["confident"] += int(confident)
                    totals["rated"] += rated
                    totals["no_results"] += int(empty)
                for kind in latency:  # fetched as arrays: cheaper than grouping by value in SQL
                    rows = conn.execute(f"SELECT latency_ms FROM events e WHERE {where} AND e.kind = ? "
                                        "AND latency_ms IS NOT NULL", params + [kind]).fetchall()
                    latency[kind] = np.fromiter((r[0] for r in rows), dtype=np.float64, count=len(rows))
                self_service = self._self_service(conn, filters)
            else:
                self_service = self._self_service_rows(filters, [])
        latency["all"] = np.concatenate([latency["search"], latency["suggest"]])
        return {
            "filters": filters.to_dict(), "granularity": "week" if weekly else "day",
            "totals": {"answers": totals["searches"] + totals["suggestions"], "searches": totals["searches"],
                       "suggestions": totals["suggestions"], "no_results": totals["no_results"],
                       "confident": totals["confident"], "rated": totals["rated"],
                       "confident_share": share(totals["confident"], totals["rated"])},
            "latency_ms": {kind: {"p50": percentile(values, 50), "p95": percentile(values, 95), "count": len(values)}
                           for kind, values in latency.items()},
            "volume": [{**{k: v for k, v in row.items() if k not in ("confident", "rated")},
                        "confident_share": share(row["confident"], row["rated"])} for row in volume.values()],
            "sources": ranked(sources, "source"), "languages": ranked(languages, "language"),
            "self_service": self_service, "notes": notes,
        }

    def _self_service(self, conn: sqlite3.Connection, filters: ReportFilters) -> dict:
        where, params = answer_filter(filters)
        used_sql, used_params = used_answers_sql(filters.since)
        rows = conn.execute(
            f"SELECT day, source, language, count(*), total(e.answer_id IN ({used_sql})) FROM events e "
            f"WHERE {where} AND e.kind = 'suggest' GROUP BY day, source, language", used_params + params).fetchall()
        return self._self_service_rows(filters, rows)

    def _self_service_rows(self, filters: ReportFilters, rows: list[tuple]) -> dict:
        weeks = {p.isoformat(): {"week": p.isoformat(), "days": n, "suggestions": 0, "used": 0}
                 for p, n in periods(filters, weekly=True)}
        by: dict[str, dict[str, dict]] = {"source": defaultdict(lambda: {"suggestions": 0, "used": 0}),
                                          "language": defaultdict(lambda: {"suggestions": 0, "used": 0})}
        total = {"suggestions": 0, "used": 0}
        for day, source, language, n, used in rows:
            for bucket in (weeks[period_of(day, filters, True)], by["source"][source or "unknown"],
                           by["language"][language or "unknown"], total):
                bucket["suggestions"] += n
                bucket["used"] += int(used)

        def with_share(row: dict) -> dict:
            return {**row, "share": share(row["used"], row["suggestions"])}

        return {**with_share(total), "weeks": [with_share(w) for w in weeks.values()],
                "sources": [with_share({"source": k, **v}) for k, v in
                            sorted(by["source"].items(), key=lambda kv: (-kv[1]["suggestions"], kv[0]))],
                "languages": [with_share({"language": k, **v}) for k, v in
                              sorted(by["language"].items(), key=lambda kv: (-kv[1]["suggestions"], kv[0]))]}

    # ---- top queries -------------------------------------------------------------------------
    def queries(self, filters: ReportFilters, limit: int = TOP_QUERIES) -> dict:
        out: list[dict] = []
        total = distinct = 0
        text_seen = False
        with self.log.connect(filters, self.catalog) as conn:
            notes = self.notes(conn)
            if conn is not None:
                where, params = answer_filter(filters)
                total = conn.execute(f"SELECT count(*) FROM events e WHERE {where}", params).fetchone()[0]
                conn.execute("CREATE TEMP TABLE asked AS SELECT query_key, count(*) AS n, total(confident = 0) AS "
                             f"bad, count(confident) AS rated, max(id) AS last FROM events e WHERE {where} "
                             "AND query_key IS NOT NULL GROUP BY query_key", params)
                distinct = conn.execute("SELECT count(*) FROM temp.asked").fetchone()[0]
                top = conn.execute("SELECT query_key, n, bad, rated, last FROM temp.asked ORDER BY n DESC, query_key "
                                   "LIMIT ?", (limit,)).fetchall()
                keys = [row[0] for row in top]
                marks = ", ".join("?" * len(keys))
                texts, articles = {}, defaultdict(list)
                if keys:  # the text of each query's latest event (redacted when written; NULL when text is not stored)
                    texts = dict(conn.execute(f"SELECT query_key, query FROM events WHERE id IN ({marks})",
                                              [row[4] for row in top]))
                    for key, article_id, n in conn.execute(
                            f"SELECT e.query_key, r.article_id, count(*) AS n FROM events e JOIN results r "
                            f"ON r.event_id = e.id AND r.position = 1 WHERE {where} AND e.query_key IN ({marks}) "
                            "GROUP BY e.query_key, r.article_id ORDER BY n DESC, r.article_id", params + keys):
                        articles[key].append((article_id, n))
                for key, n, not_confident, rated, _ in top:
                    first = articles[key][0] if articles[key] else None
                    text_seen = text_seen or texts.get(key) is not None
                    out.append({"query_key": key, "query": texts.get(key), "count": n,
                                "not_confident": int(not_confident),
                                "not_confident_share": share(int(not_confident), rated),
                                "top_article": None if first is None else {
                                    "id": first[0], "title": self.catalog.title(first[0]), "count": first[1]}})
        if out and not text_seen:
            notes.append("query text is not stored (KB_ANALYTICS_STORE_TEXT=false): queries are shown by their key")
        return {"filters": filters.to_dict(), "answers": total, "distinct_queries": distinct, "queries": out,
                "notes": notes}

    # ---- the other reports live in their own modules -----------------------------------------
    def gaps(self, filters: ReportFilters, limit: int = 30) -> dict:
        from search.content_gaps import gap_report

        return gap_report(self, filters, limit)

    def articles(self, filters: ReportFilters, limit: int | None = 100) -> dict:
        from search.article_performance import article_report

        return article_report(self, filters, limit)


def ranked(groups: Mapping[str, dict], name: str) -> list[dict]:
    """{key: {"searches", "suggestions"}} as rows with a total, most first."""
    rows = [{name: key, **value, "total": value["searches"] + value["suggestions"]} for key, value in groups.items()]
    return sorted(rows, key=lambda row: (-row["total"], row[name]))
