"""The top queries report: searches and suggestions grouped by query_key, most asked first."""
from __future__ import annotations

from collections import defaultdict

from search.reports import Note, ReportFilters, Reports, answer_filter, share

TOP_QUERIES = 50


def queries_report(reports: Reports, filters: ReportFilters, limit: int = TOP_QUERIES) -> dict:
    """The most asked queries (grouped by query_key) with their redacted text, share not confident and top article."""
    out: list[dict] = []
    total = distinct = 0
    text_seen = False
    with reports.log.connect(filters, reports.catalog) as conn:
        notes = reports.notes(conn)
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
                                "id": first[0], "title": reports.catalog.title(first[0]), "count": first[1]}})
    if out and not text_seen:
        notes.append(Note("queries_text_not_stored"))
    return {"filters": filters.to_dict(), "answers": total, "distinct_queries": distinct, "queries": out,
            "notes": notes}
