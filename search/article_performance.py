"""Article performance: how often each article was shown and used, per owner and product, and articles to look at."""
from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict

import numpy as np

from kb.database import Connection
from search.reports import (ANSWERS, Days, ReportFilters, Reports, answer_filter, indexed_by, same_text,
                            share, utc_today)

ACTIONS = {"open": "opened", "copy": "copied", "insert": "inserted", "link": "linked"}
COUNTS = ("shown", "opened", "copied", "inserted", "linked", "helpful", "not_helpful")
POPULAR_MIN_SHOWN = 20      # popular: shown at least this often and among the 20% most shown articles
POPULAR_QUANTILE = 80
NEVER_OPENED_MIN_SHOWN = 20  # often shown but never opened: shown at least this often, opened never
LOW_HELPFUL_MIN_VOTES = 5    # low helpful rate: at least this many yes/no answers, and under half of them yes
LOW_HELPFUL_RATE = 0.5
TOP_ARTICLES = 100
ANSWER_LOOKBACK_DAYS = 7     # an action in the range may act on an answer given up to a week before it


def id_range(conn: Connection, where: str, params: list) -> tuple[int | None, int | None]:
    """The least and greatest id of the events `where` selects. count(*) keeps PostgreSQL's planner from finding min
    and max by walking events_pkey from either end past every event outside them (0.24-0.57 s against 0.002-0.04 s over
    1,000,000 events); both engines read the covering index."""
    lo, hi, _ = conn.execute(f"SELECT min(id), max(id), count(*) FROM events e WHERE {where}", params).fetchone()
    return lo, hi


def shown_counts(conn: Connection, filters: ReportFilters, days: Days = Days()) -> dict[str, int]:
    """Per article, how many searches and suggestions in the filters listed it (rows of `results`).

    Without a language filter, the answers of a date range are found as a range of event ids (the log writes
    events in time order) and their results counted from the covering index results_article; answers inside the
    id range but dated outside the range (written out of order around midnight) are subtracted, so the count is
    exact either way. With a language filter each answer's results are looked up, and so are those of the days
    read from events when the others come from rollups (rollup_shown).
    """
    where, params = answer_filter(filters)
    product_only = " AND r.article_id IN (SELECT article_id FROM product_articles)" if filters.product else ""
    if filters.language:
        rows = conn.execute(f"SELECT r.article_id, count(*) FROM events e JOIN results r ON r.event_id = e.id "
                            f"WHERE {where}{product_only} GROUP BY r.article_id", params)
        return dict(rows.fetchall())
    if days.rolled:  # the answer's own product does not matter here: the product's articles do
        where, params = answer_filter(ReportFilters(filters.since, filters.until), days=days)
        # the join bounded by the answers' id range: without it PostgreSQL hashes all of `results` (0.3-0.7 s against
        # 0.05 s for the last two days of 1,000,000 events)
        lo, hi = id_range(conn, where, params)
        counts: Counter[str] = Counter(dict(conn.execute(
            f"SELECT r.article_id, count(*) FROM events e JOIN results r ON r.event_id = e.id "
            f"WHERE {where} AND r.event_id BETWEEN ? AND ? GROUP BY r.article_id", params + [lo, hi]).fetchall()
            if lo is not None else ()))
        if filters.product:  # kept here, not in SQL: there SQLite would take the product's 270,000 results over 90
            # days first and look up each one's wide event row (0.8 s) instead of the few days' answers' results
            kept = {a for (a,) in conn.execute("SELECT article_id FROM product_articles")}
            counts = Counter({a: n for a, n in counts.items() if a in kept})
        rolled, rolled_params = days.rollup_filter(filters, "r")
        counts.update(dict(conn.execute(f"SELECT r.article_id, sum(r.shown) FROM rollup_shown r WHERE {rolled}"
                                        f"{product_only} GROUP BY r.article_id", rolled_params).fetchall()))
        return {a: n for a, n in counts.items() if n > 0}
    if filters.product:  # the answer's own product does not matter here: the product's articles do
        where, params = answer_filter(ReportFilters(filters.since, filters.until))
    lo, hi = id_range(conn, where, params)
    if lo is None:
        return {}
    counts = dict(conn.execute(f"SELECT article_id, count(*) FROM results r {indexed_by(conn, 'results_article')} "
                               f"WHERE event_id BETWEEN ? AND ?{product_only} GROUP BY article_id", (lo, hi)))
    # answers dated before or after the range: two scans of the (day, kind) index, which holds the id too; the
    # table itself, scanned over the id range, is the wide rows (0.35 s against 0.05 s over 90 days of 1,000,000)
    by_day = indexed_by(conn, "events_day_kind")
    outside = " UNION ALL ".join(f"SELECT id FROM events {by_day} WHERE kind IN {ANSWERS} AND day {op} ? AND "
                                 "id BETWEEN ? AND ?" for op in ("<", ">"))
    strays = conn.execute(f"SELECT r.article_id, count(*) FROM results r WHERE r.event_id IN ({outside})"
                          f"{product_only} GROUP BY r.article_id",
                          (filters.since.isoformat(), lo, hi, filters.until.isoformat(), lo, hi)).fetchall()
    for article_id, n in strays:
        counts[article_id] -= n
    return {a: n for a, n in counts.items() if n > 0}


def action_counts(conn: Connection, filters: ReportFilters, days: Days = Days()
                  ) -> dict[str, dict[str, int]]:
    """Per article: opened, copied, inserted, linked, helpful, not_helpful within the filters (those of rolled-up
    days from rollup_actions, without a language filter)."""
    day_sql, params = days.raw_filter(filters, "a")
    sql = [day_sql, "a.kind IN ('open', 'copy', 'insert', 'link', 'feedback')", "a.article_id IS NOT NULL"]
    if filters.language:  # an action's language is its query's: its own column (the writer leaves it empty), else
        # its answer's, among the answers of that language from a week before the range on (one covering-index scan)
        sql.append(f"({same_text('a.language')} OR (a.language IS NULL AND a.answer_id IN (SELECT x.answer_id "
                   f"FROM events x WHERE x.day BETWEEN ? AND ? AND x.kind IN {ANSWERS} AND {same_text('x.language')} "
                   "AND x.answer_id IS NOT NULL)))")
        params += [filters.language, (filters.since - dt.timedelta(days=ANSWER_LOOKBACK_DAYS)).isoformat(),
                   filters.until.isoformat(), filters.language]
    product_sql = f"(a.article_id IN (SELECT article_id FROM product_articles) OR {same_text('a.product')})"
    if filters.product:
        sql.append(product_sql)
        params.append(filters.product)
    out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    # counted in Python: a Counter over the fetched rows took 0.37-0.47 s over 90 days of 1,000,000 events where
    # SQLite's GROUP BY article_id, kind (a sort of every action) took 0.53-0.60 s
    rows = conn.execute(f"SELECT a.article_id, a.kind, a.helpful FROM events a WHERE {' AND '.join(sql)}", params)
    counted = Counter(rows.fetchall())
    if days.rolled:
        rolled, rolled_params = days.rollup_filter(filters, "a")
        if filters.product:
            rolled += f" AND {product_sql}"
            rolled_params.append(filters.product)
        for article_id, kind, helpful, n in conn.execute(
                f"SELECT a.article_id, a.kind, a.helpful, sum(a.actions) FROM rollup_actions a WHERE {rolled} "
                "GROUP BY a.article_id, a.kind, a.helpful", rolled_params):
            counted[(article_id, kind, helpful)] += n
    for (article_id, kind, helpful), n in counted.items():
        if kind != "feedback":
            out[article_id][ACTIONS[kind]] += n
        elif helpful is not None:
            out[article_id]["helpful" if helpful else "not_helpful"] += n
    return out


def is_stale(reviewed: str, today: dt.date, stale_days: int) -> bool:
    """`reviewed` older than `stale_days`, or no review date at all."""
    try:
        return (today - dt.date.fromisoformat(str(reviewed or "")[:10])).days > stale_days
    except ValueError:
        return True


def with_rate(row: dict) -> dict:
    return {**row, "helpful_rate": share(row["helpful"], row["helpful"] + row["not_helpful"])}


def article_report(reports: Reports, filters: ReportFilters, limit: int | None = TOP_ARTICLES) -> dict:
    """Per article shown / opened / copied / inserted / linked / helpful counts and flags, most shown first, with
    totals per owner and per product."""
    with reports.log.connect(filters, reports.catalog) as conn:
        notes = reports.notes(conn)
        # rollups keep no action's language (that of its answer, within the range)
        days = reports.days(conn, filters, usable=not filters.language) if conn is not None else Days()
        shown = shown_counts(conn, filters, days) if conn is not None else {}
        actions = action_counts(conn, filters, days) if conn is not None else {}
    catalog, today = reports.catalog, reports.today or utc_today()
    rows = []
    for article_id in set(shown) | set(actions):
        meta = catalog.articles.get(article_id, {})
        counts = {**dict.fromkeys(COUNTS, 0), **actions.get(article_id, {}), "shown": shown.get(article_id, 0)}
        rows.append(with_rate({"id": article_id, "title": catalog.title(article_id),
                               "product": meta.get("product") or "", "owner": meta.get("owner") or "",
                               "reviewed": str(meta.get("reviewed") or ""), "in_index": article_id in catalog.articles,
                               **counts}))
    rows.sort(key=lambda row: (-row["shown"], -row["opened"], row["id"]))
    shown_values = [row["shown"] for row in rows if row["shown"]]
    popular = max(POPULAR_MIN_SHOWN, float(np.percentile(shown_values, POPULAR_QUANTILE)) if shown_values else 0)
    flag_counts = {"popular_stale": 0, "never_opened": 0, "low_helpful": 0}
    for row in rows:
        flags = []
        if row["in_index"] and row["shown"] >= popular and is_stale(row["reviewed"], today, reports.stale_days):
            flags.append("popular_stale")
        if row["shown"] >= NEVER_OPENED_MIN_SHOWN and row["opened"] == 0:
            flags.append("never_opened")
        votes = row["helpful"] + row["not_helpful"]
        if votes >= LOW_HELPFUL_MIN_VOTES and row["helpful"] / votes < LOW_HELPFUL_RATE:
            flags.append("low_helpful")
        row["flags"] = flags
        for flag in flags:
            flag_counts[flag] += 1
    return {"filters": filters.to_dict(), "stale_days": reports.stale_days, "today": today.isoformat(),
            "popular_min_shown": round(popular, 1), "total_articles": len(rows), "flag_counts": flag_counts,
            "articles": rows[:limit] if limit else rows, "flagged": [row for row in rows if row["flags"]],
            "owners": grouped(rows, "owner"), "products": grouped(rows, "product"), "notes": notes}


def grouped(rows: list[dict], key: str) -> list[dict]:
    """Counts summed per owner or product (empty: "unknown"), most shown first."""
    groups: dict[str, dict] = defaultdict(lambda: {"articles": 0, **dict.fromkeys(COUNTS, 0)})
    for row in rows:
        group = groups[row[key] or "unknown"]
        group["articles"] += 1
        for name in COUNTS:
            group[name] += row[name]
    return [with_rate({key: name, **values}) for name, values in
            sorted(groups.items(), key=lambda kv: (-kv[1]["shown"], kv[0]))]
