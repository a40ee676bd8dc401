"""The top queries report: searches and suggestions grouped by query_key, most asked first."""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from typing import Iterable, Mapping

import numpy as np

from search.reports import Note, ReportFilters, Reports, answer_filter, indexed_by, share

TOP_QUERIES = 50


def most_asked(asked: Mapping[str, int], limit: int) -> list[tuple[str, int]]:
    """The `limit` most asked (key, count), ties by key; only counts at or above the limit-th largest are ranked."""
    items: Iterable[tuple[str, int]] = asked.items()
    if len(asked) > 4 * limit:
        counts = np.fromiter(asked.values(), dtype=np.int64, count=len(asked))
        floor = np.partition(counts, len(counts) - limit)[len(counts) - limit]
        items = [(key, n) for key, n in items if n >= floor]
    return heapq.nsmallest(limit, items, key=lambda kv: (-kv[1], kv[0]))


def queries_report(reports: Reports, filters: ReportFilters, limit: int = TOP_QUERIES) -> dict:
    """The most asked queries (grouped by query_key) with their redacted text, share not confident and top article.

    The answers are grouped in one pass in Python over the covering index: SQLite's GROUP BY query_key sorts every
    key first (most tickets are asked once), which took twice as long over 645,000 answers (docs/benchmarks.md).
    """
    out: list[dict] = []
    total = 0
    asked: Counter[str] = Counter()
    text_seen = False
    with reports.log.connect(filters, reports.catalog) as conn:
        notes = reports.notes(conn)
        if conn is not None:
            days = reports.days(conn, filters, usable=not filters.product)  # rollups keep no answer's product
            where, params = answer_filter(filters, days=days)
            bad: Counter[str] = Counter()
            rated: Counter[str] = Counter()
            if days.rolled:  # the rolled-up days' answers, one row per query: grouped in the order of the covering
                # index (the planner would take the day index and sort half a million rows by key)
                rolled, rolled_params = days.rollup_filter(filters)
                rows = conn.execute(
                    "SELECT query_key, sum(answers), sum(rated), sum(not_confident) FROM rollup_queries e "
                    f"{indexed_by(conn, 'rollup_queries_key')} WHERE {rolled} GROUP BY query_key",
                    rolled_params).fetchall()
                total = sum(n for _, n, _, _ in rows)
                asked = Counter({key: n for key, n, _, _ in rows if key is not None})
                rated = Counter({key: n for key, _, n, _ in rows if key is not None and n})
                bad = Counter({key: n for key, _, _, n in rows if key is not None and n})
                del rows
            for key, confident in conn.execute(f"SELECT query_key, confident FROM events e WHERE {where}", params):
                total += 1
                if key is None:
                    continue
                asked[key] += 1
                if confident is not None:
                    rated[key] += 1
                    if not confident:
                        bad[key] += 1
            top = most_asked(asked, limit)
            keys = [key for key, _ in top]
            texts: dict[str, str | None] = {}
            articles: dict[str, tuple[str, int]] = {}
            if keys:  # each top query's answers: their first article, and the latest one's text (redacted when
                # written; NULL when text is not stored)
                marks = ", ".join("?" * len(keys))
                latest: dict[str, int] = {}
                firsts: dict[str, Counter[str]] = defaultdict(Counter)
                for key, event_id, article_id in conn.execute(
                        f"SELECT e.query_key, e.id, r.article_id FROM events e LEFT JOIN results r ON r.event_id = e.id "
                        f"AND r.position = 1 WHERE {where} AND e.query_key IN ({marks})", params + keys):
                    latest[key] = max(latest.get(key, event_id), event_id)
                    if article_id is not None:
                        firsts[key][article_id] += 1
                if days.rolled:
                    for key, article_id, n, event_id in conn.execute(
                            "SELECT query_key, first_article, sum(answers), max(last_id) FROM rollup_queries e "
                            f"WHERE {rolled} AND e.query_key IN ({marks}) GROUP BY query_key, first_article",
                            rolled_params + keys):
                        latest[key] = max(latest.get(key, event_id), event_id)
                        if article_id is not None:
                            firsts[key][article_id] += n
                texts = dict(conn.execute(f"SELECT query_key, query FROM events WHERE id IN ({marks})",
                                          [latest[key] for key in keys]))
                articles = {key: min(counts.items(), key=lambda kv: (-kv[1], kv[0])) for key, counts in firsts.items()}
            for key, n in top:
                first = articles.get(key)
                text_seen = text_seen or texts.get(key) is not None
                out.append({"query_key": key, "query": texts.get(key), "count": n,
                            "not_confident": bad[key], "not_confident_share": share(bad[key], rated[key]),
                            "top_article": None if first is None else {
                                "id": first[0], "title": reports.catalog.title(first[0]), "count": first[1]}})
    if out and not text_seen:
        notes.append(Note("queries_text_not_stored"))
    return {"filters": filters.to_dict(), "answers": total, "distinct_queries": len(asked), "queries": out,
            "notes": notes}
