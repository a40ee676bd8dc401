"""Content gaps: searches and suggestions without a confident answer, or answered not helpful, grouped into topics."""
from __future__ import annotations

import numpy as np

from search.reports import Days, Note, ReportFilters, Reports, answer_filter, share
from search.topics import group_topics, threshold_for, topic_centroids, unit

EXAMPLES = 3
RISING, FALLING = 0.25, -0.25   # change of the daily rate between the two halves of the range that counts as a trend


def gap_rows(reports: Reports, filters: ReportFilters) -> dict:
    """Distinct gap queries (by query_key; events without one stand alone) with their counts and one topic vector.

    A gap is a search or suggestion in the filters with no confident answer (`confident = 0`, or no result at all),
    or whose answer an agent marked not helpful (a feedback event with helpful = 0 on its answer_id, on any day
    from `since`).
    """
    out: dict = {"keys": [], "texts": [], "counts": np.zeros(0, np.int64), "late": np.zeros(0, np.int64),
                 "not_confident": np.zeros(0, np.int64), "not_helpful": np.zeros(0, np.int64),
                 "vectors": np.zeros((0, 1), np.float32), "without_vector": 0, "events": 0}
    with reports.log.connect(filters, reports.catalog) as conn:
        out["notes"] = reports.notes(conn)
        if conn is None:
            return out
        days = reports.days(conn, filters, usable=not filters.product)  # rollups keep no answer's product
        where, params = answer_filter(filters, days=days)
        # counted from the covering index alone; then one row per distinct query is read for its text and vector
        # (common table expressions, not temporary tables: a read-only PostgreSQL, a failover, can run them), each
        # looked up by id: joined instead, PostgreSQL overestimates the groups (32,000 for 3,500 with a product filter)
        # and merges them with all of events_pkey (30 days of raw events out of 1,000,000: 1.15 against 0.73 s; with
        # a product filter 0.9 against 0.24 s; 90 days of raw events, 53,000 groups: 1.12x slower on both engines)
        unhelpful = "answer_id IN (SELECT answer_id FROM not_helpful)"
        rows = [list(row) for row in conn.execute(
            "WITH not_helpful AS (SELECT answer_id FROM events WHERE day >= ? AND kind = 'feedback' AND helpful = 0 "
            "AND answer_id IS NOT NULL), "
            "gaps AS (SELECT COALESCE(query_key, 'event:' || id) AS k, count(*) AS n, "
            "count(*) FILTER (WHERE day >= ?) AS late, "
            "count(*) FILTER (WHERE confident = 0 OR result_count = 0) AS bad, "
            f"count(*) FILTER (WHERE {unhelpful}) AS unhelpful, max(id) AS last FROM events e WHERE {where} AND "
            f"(confident = 0 OR result_count = 0 OR {unhelpful}) GROUP BY COALESCE(query_key, 'event:' || id)) "
            "SELECT g.k, g.n, g.late, g.bad, g.unhelpful, (SELECT e.query FROM events e WHERE e.id = g.last), "
            "(SELECT e.topic_vector FROM events e WHERE e.id = g.last), g.last FROM gaps g",
            [filters.since.isoformat(), filters.middle.isoformat()] + params)]
        if days.rolled:
            rows = merged_gaps(conn, filters, days, rows)
        rows.sort(key=lambda row: row[0])  # one order whichever days came from rollups (topic sampling uses it)
        missing = {row[0]: row for row in rows if row[6] is None and row[1] > 1}
        if missing:  # the latest event of a query has no vector (not computed): take one of its others (the
            # greatest text and vector, compared as bytes: PostgreSQL has no max() of BYTEA)
            where, params = answer_filter(filters)  # every day of the range
            marks = ", ".join("?" * len(missing))
            found: dict[str, list] = {}
            for key, text, blob in conn.execute(
                    f"SELECT query_key, query, topic_vector FROM events e WHERE {where} AND query_key IN ({marks}) "
                    "AND (query IS NOT NULL OR topic_vector IS NOT NULL)", params + list(missing)):
                best = found.setdefault(key, [None, None])
                best[0] = text if best[0] is None or (text is not None and text > best[0]) else best[0]
                best[1] = bytes(blob) if blob is not None and (best[1] is None or bytes(blob) > best[1]) else best[1]
            for key, (text, blob) in found.items():
                missing[key][5], missing[key][6] = missing[key][5] or text, blob
    blobs = [row[6] for row in rows]
    lengths = np.fromiter((len(b) if b else 0 for b in blobs), dtype=np.int64, count=len(rows))
    dims, votes = np.unique(lengths[lengths > 0], return_counts=True)
    dim = int(dims[np.argmax(votes)]) if len(dims) else 0  # vectors of another model's size: counted, not grouped
    columns = list(zip(*rows)) or [()] * 8
    counts = np.array(columns[1], dtype=np.int64)
    keep = np.flatnonzero(lengths == dim) if dim else np.zeros(0, np.int64)
    out["events"] = int(counts.sum())
    out["without_vector"] = out["events"] - int(counts[keep].sum())
    out["keys"] = [rows[i][0] for i in keep]
    out["texts"] = [rows[i][5] for i in keep]
    out["counts"] = counts[keep]
    for column, name in ((2, "late"), (3, "not_confident"), (4, "not_helpful")):
        out[name] = np.array(columns[column], dtype=np.float64)[keep].astype(np.int64)
    vectors = np.frombuffer(b"".join(blobs[i] for i in keep), dtype=np.int8).reshape(len(keep), max(dim, 1))
    out["vectors"] = unit(vectors.astype(np.float32), in_place=True)
    return out


def merged_gaps(conn, filters: ReportFilters, days: Days, rows: list[list]) -> list[list]:
    """The gap rows of the days read from events joined by key with those of the rolled-up days (rollup_gaps):
    counts added, the text and vector of the latest event kept."""
    by_key = {row[0]: row for row in rows}
    rolled, params = days.rollup_filter(filters)
    middle = filters.middle.isoformat()
    for key, day, n, bad, unhelpful, last, text, blob in conn.execute(
            "SELECT gap_key, day, events, not_confident, not_helpful, last_id, query, topic_vector FROM rollup_gaps e "
            f"WHERE {rolled}", params):
        row = by_key.get(key)
        if row is None:
            by_key[key] = [key, n, n if day >= middle else 0, bad, unhelpful, text, blob, last]
            continue
        row[1] += n
        row[2] += n if day >= middle else 0
        row[3] += bad
        row[4] += unhelpful
        if last > row[7]:
            row[5], row[6], row[7] = text, blob, last
    return list(by_key.values())


def trend(first: int, second: int, filters: ReportFilters) -> tuple[str, float | None]:
    """("new" | "rising" | "falling" | "steady", change of the daily rate) from the first half to the second."""
    first_days = (filters.middle - filters.since).days
    second_days = filters.days - first_days
    if first_days == 0 or first == 0:
        return ("new" if second else "steady"), None
    change = (second / second_days) / (first / first_days) - 1
    label = "rising" if change >= RISING else "falling" if change <= FALLING else "steady"
    return label, round(change, 3)


def nearest_articles(reports: Reports, centroids: np.ndarray) -> list[dict | None]:
    """For each topic centroid, the article whose centroid is nearest and their cosine (None without vectors)."""
    catalog = reports.catalog
    if catalog.centroids is None or not len(catalog.ids) or catalog.centroids.shape[1] != centroids.shape[1]:
        return [None] * len(centroids)
    sims = centroids @ np.asarray(catalog.centroids, dtype=np.float32).T
    best = sims.argmax(axis=1) if len(centroids) else np.zeros(0, np.int64)
    return [{"id": catalog.ids[b], "title": catalog.title(catalog.ids[b]), "cosine": round(float(sims[t, b]), 4)}
            for t, b in enumerate(best)]


def not_covered(reports: Reports, examples: list[str]) -> str | None:
    """The other vendor's product that a topic's examples are about (the first example that names one no article
    mentions, and no product the knowledge base covers: search/coverage.py), or None."""
    coverage = reports.catalog.coverage
    return next((found for found in map(coverage.outside, examples) if found), None) if coverage else None


def gap_report(reports: Reports, filters: ReportFilters, limit: int = 30) -> dict:
    """Topics of content gaps, most events first (what to write next), each with its trend, examples, the nearest
    existing article (cosine of the topic's centroid to the article centroids of the index in service) and, when its
    examples are about another vendor's product that no article mentions, that product (`not_covered`: write about
    it, or route such tickets elsewhere)."""
    rows = gap_rows(reports, filters)
    threshold = threshold_for(reports.model)
    grouping = group_topics(rows["vectors"], rows["counts"], threshold)
    topics = []
    shown = min(grouping.count, limit)
    nearest = nearest_articles(reports, topic_centroids(grouping, rows["vectors"], rows["counts"], shown))
    for t in range(shown):
        members = np.flatnonzero(grouping.labels == t)
        counts = rows["counts"][members]
        late = int(rows["late"][members].sum())
        size = int(counts.sum())
        label, change = trend(size - late, late, filters)
        texts = [(int(counts[i]), rows["texts"][m]) for i, m in enumerate(members) if rows["texts"][m]]
        examples = []
        for _, text in sorted(texts, key=lambda pair: -pair[0]):  # most asked first, each text once
            if text not in examples:
                examples.append(text)
            if len(examples) == EXAMPLES:
                break
        topics.append({
            "rank": t + 1, "size": size, "queries": len(members),
            "not_confident": int(rows["not_confident"][members].sum()),
            "not_helpful": int(rows["not_helpful"][members].sum()),
            "first_half": size - late, "second_half": late, "trend": label, "change": change,
            "examples": examples, "nearest_article": nearest[t], "not_covered": not_covered(reports, examples)})
    clustered = int(grouping.sizes.sum())
    notes = rows["notes"]
    if rows["without_vector"]:
        notes.append(Note("without_vector", count=rows["without_vector"]))
    if topics and not any(topic["examples"] for topic in topics):
        notes.append(Note("topics_text_not_stored"))
    return {"filters": filters.to_dict(), "gap_events": rows["events"],
            "not_confident": int(rows["not_confident"].sum()), "not_helpful": int(rows["not_helpful"].sum()),
            "grouped": clustered, "ungrouped": rows["events"] - clustered, "topic_count": grouping.count,
            "threshold": threshold, "halves": [filters.since.isoformat(), filters.middle.isoformat()],
            "grouped_share": share(clustered, rows["events"]), "topics": topics, "notes": notes}
