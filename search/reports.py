"""Reports over the analytics event log: filters, the read-only log, the index in service, and the four reports."""
from __future__ import annotations

import datetime as dt
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from kb.database import Connection, Database, as_database
from kb.errors import BadRequest, KBError

if TYPE_CHECKING:
    from search.coverage import Coverage

ANSWERS = "('search', 'suggest')"
DEFAULT_DAYS = 30          # a report without `since` covers the 30 days up to `until` (default: today, UTC)
MAX_DAYS = 3660            # ten years: anything longer is a typo
WEEKLY_AFTER_DAYS = 60     # volume by day up to 60 days, by week (Monday to Sunday) beyond
EARLIEST, LATEST = dt.date(2000, 1, 1), dt.date(2999, 12, 31)  # dates outside are typos (and overflow date maths)


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
        date = dt.date.fromisoformat(value.strip())
    except ValueError:
        raise BadRequest(f"{name} must be a date as YYYY-MM-DD, got {value!r}") from None
    if not EARLIEST <= date <= LATEST:
        raise BadRequest(f"{name} must be between {EARLIEST} and {LATEST}, got {date}")
    return date


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
    coverage: Coverage | None = None  # which other vendors' products no article mentions (search/coverage.py)

    @classmethod
    def from_searcher(cls, searcher) -> Catalog:
        from search.related import article_vectors

        vectors = article_vectors(searcher)
        return cls(searcher.articles, vectors.ids, vectors.centroids, searcher.coverage)

    def title(self, article_id: str) -> str:
        return str(self.articles.get(article_id, {}).get("title") or article_id)

    def product_articles(self, product: str) -> list[str]:
        return [a for a, meta in self.articles.items() if str(meta.get("product") or "").lower() == product.lower()]


def has_table(conn: Connection, name: str) -> bool:
    sql = ("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?" if conn.engine == "sqlite"
           else "SELECT count(*) FROM pg_tables WHERE tablename = ? AND schemaname = current_schema()")
    return conn.execute(sql, (name,)).fetchone()[0] > 0


def indexed_by(conn: Connection, index: str) -> str:
    """SQLite's INDEXED BY hint where the reports name the index its planner should take (PostgreSQL plans alone)."""
    return f"INDEXED BY {index}" if conn.engine == "sqlite" else ""


class EventLog:
    """Read-only access to the event log (kb/event_schema.py): a SQLite file, or its tables in KB_DATABASE_URL; never
    creates or writes them."""

    def __init__(self, where: Database | Path):
        self.database = as_database(where, "KB_ANALYTICS_DB", 10.0)
        self.path = self.database.where

    def _open(self) -> Connection:
        if self.database.engine == "sqlite":  # read-only; rows as plain tuples
            return Connection(sqlite3.connect(self.database.path.resolve().as_uri() + "?mode=ro", uri=True,
                                              timeout=10, check_same_thread=False, isolation_level=None), "sqlite")
        from psycopg.rows import tuple_row

        conn = self.database.connect()
        # plain tuples here too: the reports read hundreds of thousands of rows by position, and a row that also
        # answers to column names costs a Python call each (0.58-0.76 against 0.37-0.53 s for 98,000 rollup_gaps rows)
        conn.raw.row_factory = tuple_row
        return conn

    @contextmanager
    def connect(self, filters: ReportFilters | None = None, catalog: Catalog | None = None
                ) -> Iterator[Connection | None]:
        """A connection in one snapshot (None when there is no log yet); for a product filter it holds the product's
        articles (product_articles) and the answers whose first result is one of them (product_answers), temporary
        tables of this connection."""
        if not self.database.exists():
            yield None
            return
        conn = self._open()
        try:
            if not has_table(conn, "events"):
                yield None
                return
            if conn.engine == "sqlite":
                conn.execute("PRAGMA temp_store = MEMORY")
                conn.execute("PRAGMA cache_size = -65536")
            # one snapshot for all of a report's statements (rollups move while it reads)
            with conn.transaction(snapshot=True):
                if filters is not None and filters.product:
                    conn.execute("CREATE TEMP TABLE product_articles (article_id TEXT PRIMARY KEY)")
                    articles = set((catalog or Catalog()).product_articles(filters.product))
                    conn.executemany("INSERT INTO product_articles VALUES (?)", [(a,) for a in sorted(articles)])
                    # answers whose first result is one of the product's articles: one pass over results_article
                    conn.execute("CREATE TEMP TABLE product_answers (id BIGINT PRIMARY KEY)")
                    conn.execute(f"INSERT INTO product_answers SELECT DISTINCT event_id FROM results "
                                 f"{indexed_by(conn, 'results_article')} WHERE article_id IN "
                                 "(SELECT article_id FROM product_articles) AND position = 1")
                yield conn
        finally:
            conn.close()


@dataclass(frozen=True)
class Days:
    """The days of a report's range that its daily rollups answer (kb/event_rollups.py) and those read from the
    events: days not rolled up (today, a day with an action dated before its answer) and days touched since."""

    rolled: tuple[str, ...] = ()
    raw: tuple[str, ...] | None = None    # None: the whole range, from the events

    def raw_filter(self, filters: ReportFilters, alias: str = "e") -> tuple[str, list]:
        """SQL condition and parameters selecting the days of the range read from the events."""
        if self.raw is None:
            return f"{alias}.day BETWEEN ? AND ?", [filters.since.isoformat(), filters.until.isoformat()]
        if not self.raw:  # every day of the range rolled up (PostgreSQL refuses an empty IN list)
            return "1 = 0", []
        return f"{alias}.day IN ({', '.join('?' * len(self.raw))})", list(self.raw)

    def rollup_filter(self, filters: ReportFilters, alias: str = "e") -> tuple[str, list]:
        """SQL condition and parameters selecting a rollup table's rows of the rolled-up days (and the language)."""
        spans: list[list[str]] = []  # runs of consecutive days: a range or two instead of a list of 90 days
        for day in self.rolled:
            if spans and dt.date.fromisoformat(spans[-1][1]) + dt.timedelta(days=1) == dt.date.fromisoformat(day):
                spans[-1][1] = day
            else:
                spans.append([day, day])
        sql = "(" + " OR ".join(f"{alias}.day BETWEEN ? AND ?" for _ in spans) + ")"
        params = [day for span in spans for day in span]
        if filters.language:
            sql += f" AND {same_text(alias + '.language')}"
            params.append(filters.language)
        return sql, params


def same_text(column: str) -> str:
    """SQL condition: `column` equals the parameter, ignoring the case of ASCII letters (SQLite's NOCASE; both
    engines read lower() so)."""
    return f"lower({column}) = lower(?)"


def rollup_days(conn: Connection, filters: ReportFilters) -> Days:
    """Which days of the range the rollups answer exactly: rolled-up regular days untouched after the watermark."""
    from kb.event_rollups import touched_days, watermark

    if not has_table(conn, "rollup_days"):
        return Days()
    mark = watermark(conn)
    if mark is None:
        return Days()
    since, until = filters.since.isoformat(), filters.until.isoformat()
    rolled = {day for (day,) in conn.execute(
        "SELECT day FROM rollup_days WHERE day BETWEEN ? AND ? AND regular = 1", (since, until))}
    rolled -= touched_days(conn, mark)
    if not rolled:
        return Days()
    every = [day.isoformat() for day, _ in periods(filters, weekly=False)]
    return Days(tuple(sorted(rolled)), tuple(day for day in every if day not in rolled))


def answer_filter(filters: ReportFilters, alias: str = "e", days: Days | None = None) -> tuple[str, list]:
    """SQL condition and parameters selecting the searches and suggestions `filters` covers (of the days read from
    the events when `days` splits the range)."""
    e = alias
    day_sql, params = (days or Days()).raw_filter(filters, e)
    sql = [day_sql, f"{e}.kind IN {ANSWERS}"]
    if filters.language:
        sql.append(same_text(f"{e}.language"))
        params.append(filters.language)
    if filters.product:
        sql.append(f"({same_text(e + '.product')} OR ({e}.product IS NULL AND {e}.id IN "
                   "(SELECT id FROM product_answers)))")
        params.append(filters.product)
    return " AND ".join(sql), params


def used_sql(since: dt.date, alias: str = "e") -> tuple[str, list]:
    """SQL condition: the answer `alias` was used, an article of it inserted into a reply, linked to the ticket, or
    marked helpful, on `since` or later (looked up per answer in events_answer)."""
    return (f"EXISTS (SELECT 1 FROM events a WHERE a.answer_id = {alias}.answer_id AND a.day >= ? AND "
            "(a.kind IN ('insert', 'link') OR (a.kind = 'feedback' AND a.helpful = 1)))", [since.isoformat()])


NOTES = {  # what the reports say about their data, in English (the API and `kb report`); pages: i18n "note_<key>"
    "no_events": "no events recorded yet ({path} does not exist or holds no event table)",
    "queries_text_not_stored": "query text is not stored (KB_ANALYTICS_STORE_TEXT=false): queries are shown by "
                               "their key",
    "topics_text_not_stored": "query text is not stored (KB_ANALYTICS_STORE_TEXT=false): topics come without "
                              "examples",
    "without_vector": "{count} gap events carry no topic vector and are counted but not grouped",
}


class Note(str):
    """A report's note: its English text (a plain string to JSON, CSV and the CLI) that keeps its key and values,
    so a page can say it in its own language."""

    key: str
    values: dict

    def __new__(cls, key: str, **values) -> Note:
        note = super().__new__(cls, NOTES[key].format(**values))
        note.key, note.values = key, values
        return note


class EventLogUnreadable(KBError):
    """The event log exists but cannot be read (a damaged or unreadable file; a PostgreSQL server out of reach)."""

    status = 503
    code = "event_log_unreadable"


@contextmanager
def readable(database: Database) -> Iterator[None]:
    try:
        yield
    except database.errors as exc:
        raise EventLogUnreadable(f"the analytics event log {database.where} ({database.setting}) cannot be read: "
                                 f"{exc}") from None


class Reports:
    """The reports of one event log against the index in service; `today` fixes what "stale" is measured from."""

    def __init__(self, log: Database | Path, catalog: Catalog | None = None, stale_days: int = 180,
                 model: str = "all-MiniLM-L6-v2", today: dt.date | None = None, rollups: bool = True):
        self.log = EventLog(log)
        self.catalog = catalog or Catalog()
        self.stale_days, self.model, self.today = stale_days, model, today
        self.rollups = rollups  # False: every report from the events alone (what the rollups are checked against)

    def days(self, conn: Connection, filters: ReportFilters, usable: bool = True) -> Days:
        """How a report splits its range between rollups and events; all events when rollups are off or `usable`
        is False (a filter the rollups do not keep)."""
        return rollup_days(conn, filters) if self.rollups and usable else Days()

    def notes(self, conn: Connection | None) -> list[str]:
        if conn is None:
            return [Note("no_events", path=self.log.path)]
        return []

    # ---- the reports, each in its own module ----------------------------------------------------
    def summary(self, filters: ReportFilters) -> dict:
        from search.report_summary import summary_report

        with readable(self.log.database):
            return summary_report(self, filters)

    def queries(self, filters: ReportFilters, limit: int = 50) -> dict:
        from search.top_queries import queries_report

        with readable(self.log.database):
            return queries_report(self, filters, limit)

    def gaps(self, filters: ReportFilters, limit: int = 30) -> dict:
        from search.content_gaps import gap_report

        with readable(self.log.database):
            return gap_report(self, filters, limit)

    def articles(self, filters: ReportFilters, limit: int | None = 100) -> dict:
        from search.article_performance import article_report

        with readable(self.log.database):
            return article_report(self, filters, limit)
