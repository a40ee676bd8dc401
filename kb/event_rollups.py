"""Daily rollups: the reports' counts of each closed UTC day, written beside the events (kb/event_schema.py).

The same SQL on SQLite and PostgreSQL (kb/database.py). Several writers may roll up at once (`kb serve --workers`,
replicas on one KB_DATABASE_URL): each rollup, watermark move and retention delete is one transaction under the
rollups' lock (SQLite's write lock; a PostgreSQL advisory lock), a day's rollups are never replaced by older ones,
and the watermark moves only forward and only past days rolled up over every event that touched them.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict

import numpy as np

from kb.database import Connection

ANSWERS = "('search', 'suggest')"
ACTIONS = "('open', 'copy', 'insert', 'link', 'feedback')"
# actions that say something about their answer: used (self-service) or not helpful (content gaps)
VERDICTS = "('insert', 'link', 'feedback')"
USED = "(a.kind IN ('insert', 'link') OR (a.kind = 'feedback' AND a.helpful = 1))"
NOT_HELPFUL = "(a.kind = 'feedback' AND a.helpful = 0)"
TABLES = ("rollup_answers", "rollup_latency", "rollup_queries", "rollup_gaps", "rollup_shown", "rollup_actions")
WATERMARK = "rollup_last_id"   # meta: every rolled-up day counts at least the events up to this id
ROLLUP_LOCK = 0x6B625F726F6C  # "kb_rol": PostgreSQL advisory lock of rollups, watermark and retention


def lock(conn: Connection, key: int) -> None:
    """Inside a transaction: wait for `key` (PostgreSQL, released at commit); SQLite's write transaction is the lock."""
    if conn.engine == "postgres":
        conn.execute("SELECT pg_advisory_xact_lock(?)", (key,))


def watermark(conn: Connection) -> int | None:
    """The id up to which every rolled-up day is exact; None when nothing was rolled up yet."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (WATERMARK,)).fetchone()
    return None if row is None else int(row[0])


def touched_days(conn: Connection, after: int) -> set[str]:
    """Days whose events, or answers acted on, were written after event id `after` (late or back-dated events,
    and today's insert / link / feedback on an earlier day's answer)."""
    return {day for (day,) in conn.execute(
        "SELECT day FROM events WHERE id > ? "
        "UNION SELECT s.day FROM events a JOIN events s ON s.answer_id = a.answer_id "
        f"WHERE a.id > ? AND a.kind IN {VERDICTS} AND s.kind IN {ANSWERS}", (after, after))}


# (day, id) of every event with an id in (?, ?] and of every verdict in it on an answer (the answer's day)
TOUCHES = ("SELECT day, id FROM events WHERE id > ? AND id <= ? UNION ALL SELECT s.day, a.id FROM events a "
           f"JOIN events s ON s.answer_id = a.answer_id WHERE a.id > ? AND a.id <= ? AND a.kind IN {VERDICTS} "
           f"AND s.kind IN {ANSWERS}")


def pending(conn: Connection, today: dt.date) -> tuple[int, list[str]]:
    """(newest event id, closed days to roll up): days before `today` with events and no rollup yet, and rolled-up
    days touched after the watermark."""
    newest = conn.execute("SELECT max(id) FROM events").fetchone()[0] or 0
    closed = today.isoformat()
    days = {day for (day,) in conn.execute(
        "SELECT DISTINCT day FROM events WHERE day < ? AND day NOT IN (SELECT day FROM rollup_days)", (closed,))}
    mark = watermark(conn)
    if mark is not None and mark < newest:
        days |= {day for day in touched_days(conn, mark) if day < closed}
    return newest, sorted(days)


def roll_up(conn: Connection, day: str, last_id: int) -> bool:
    """(Re)write the rollups of one closed day from its events with id <= last_id, in one transaction; False (nothing
    written) when the day is already rolled up that far, or `last_id` is behind the watermark (another writer moved
    it since this one looked: the day is rolled up again in the next round)."""
    with conn.transaction(write=True):
        lock(conn, ROLLUP_LOCK)
        mark = watermark(conn)
        held = conn.execute("SELECT last_id FROM rollup_days WHERE day = ?", (day,)).fetchone()
        if (mark is not None and last_id < mark) or (held is not None and held[0] >= last_id):
            return False
        for table in TABLES + ("rollup_days",):
            conn.execute(f"DELETE FROM {table} WHERE day = ?", (day,))
        # an action dated before its answer (a clock set back) would count for report ranges that start after it but
        # not for others: such a day gets no rollups and the reports read its events
        early = conn.execute(
            "SELECT 1 FROM events s JOIN events a ON a.answer_id = s.answer_id WHERE s.day = ? AND s.id <= ? "
            f"AND s.kind IN {ANSWERS} AND a.id <= ? AND a.kind IN {VERDICTS} AND a.day < s.day LIMIT 1",
            (day, last_id, last_id)).fetchone()
        conn.execute("INSERT INTO rollup_days (day, last_id, regular) VALUES (?, ?, ?)",
                     (day, last_id, 0 if early else 1))
        if early:
            return True
        # each answer of the day with its verdicts (actions up to last_id, on any day: none is dated before it)
        conn.execute("DROP TABLE IF EXISTS day_answers")
        conn.execute("CREATE TEMP TABLE day_answers (id BIGINT, day TEXT, kind TEXT, source TEXT, language TEXT, "
                     "query_key TEXT, confident INTEGER, latency_ms DOUBLE PRECISION, result_count INTEGER, "
                     "used INTEGER, unhelpful INTEGER)")
        conn.execute(
            "INSERT INTO day_answers SELECT e.id, e.day, e.kind, e.source, e.language, e.query_key, "
            "e.confident, e.latency_ms, e.result_count, "
            f"CASE WHEN EXISTS (SELECT 1 FROM events a WHERE a.answer_id = e.answer_id AND a.id <= ? AND {USED}) "
            "THEN 1 ELSE 0 END, "
            "CASE WHEN EXISTS (SELECT 1 FROM events a WHERE a.answer_id = e.answer_id AND a.id <= ? AND "
            f"{NOT_HELPFUL}) THEN 1 ELSE 0 END FROM events e WHERE e.day = ? AND e.kind IN {ANSWERS} AND e.id <= ?",
            (last_id, last_id, day, last_id))
        conn.execute(
            "INSERT INTO rollup_answers (day, kind, source, language, answers, confident, rated, no_results, used) "
            "SELECT day, kind, source, language, count(*), count(*) FILTER (WHERE confident = 1), count(confident), "
            "count(*) FILTER (WHERE result_count = 0), count(*) FILTER (WHERE kind = 'suggest' AND used = 1) "
            "FROM day_answers GROUP BY day, kind, source, language")
        latencies: dict[tuple, list[float]] = defaultdict(list)
        for kind, language, latency in conn.execute(
                "SELECT kind, language, latency_ms FROM day_answers WHERE latency_ms IS NOT NULL"):
            latencies[(kind, language)].append(latency)
        conn.executemany("INSERT INTO rollup_latency (day, kind, language, latencies) VALUES (?, ?, ?, ?)",
                         [(day, kind, language, np.asarray(values, dtype="<f8").tobytes())
                          for (kind, language), values in latencies.items()])
        conn.execute(
            "INSERT INTO rollup_queries (query_key, day, language, first_article, answers, rated, not_confident, "
            "last_id) SELECT e.query_key, e.day, e.language, r.article_id, count(*), count(e.confident), "
            "count(*) FILTER (WHERE e.confident = 0), max(e.id) FROM day_answers e "
            "LEFT JOIN results r ON r.event_id = e.id AND r.position = 1 "
            "GROUP BY e.query_key, e.day, e.language, r.article_id")
        # a gap: no confident answer, no result at all, or marked not helpful
        conn.execute(
            "INSERT INTO rollup_gaps (gap_key, day, language, events, not_confident, not_helpful, last_id) "
            "SELECT COALESCE(query_key, 'event:' || id), day, language, count(*), "
            "count(*) FILTER (WHERE confident = 0 OR result_count = 0), count(*) FILTER (WHERE unhelpful = 1), max(id) "
            "FROM day_answers WHERE confident = 0 OR result_count = 0 OR unhelpful = 1 "
            "GROUP BY COALESCE(query_key, 'event:' || id), day, language")
        conn.execute("UPDATE rollup_gaps SET (query, topic_vector) = "
                     "(SELECT e.query, e.topic_vector FROM events e WHERE e.id = rollup_gaps.last_id) WHERE day = ?",
                     (day,))
        conn.execute(
            "INSERT INTO rollup_shown (day, article_id, shown) SELECT e.day, r.article_id, count(*) "
            "FROM day_answers e JOIN results r ON r.event_id = e.id GROUP BY e.day, r.article_id")
        conn.execute(
            "INSERT INTO rollup_actions (day, article_id, kind, helpful, product, actions) "
            "SELECT day, article_id, kind, helpful, product, count(*) FROM events "
            f"WHERE day = ? AND kind IN {ACTIONS} AND article_id IS NOT NULL AND id <= ? "
            "GROUP BY day, article_id, kind, helpful, product", (day, last_id))
        conn.execute("DROP TABLE day_answers")
    return True


def set_watermark(conn: Connection, last_id: int) -> bool:
    """Move the watermark forward to `last_id`, unless a rolled-up day was touched by an event it does not count
    up to there (rolled up by a writer that looked earlier); False when it stays."""
    with conn.transaction(write=True):
        lock(conn, ROLLUP_LOCK)
        mark = watermark(conn)
        if mark is not None and last_id <= mark:
            return False
        low = mark if mark is not None else conn.execute("SELECT min(last_id) FROM rollup_days").fetchone()[0]
        if low is not None and low < last_id and conn.execute(
                f"SELECT 1 FROM ({TOUCHES}) t JOIN rollup_days r ON r.day = t.day WHERE t.id > r.last_id LIMIT 1",
                (low, last_id, low, last_id)).fetchone():
            return False
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = "
                     "excluded.value", (WATERMARK, str(last_id)))
        return True


def update(conn: Connection, today: dt.date) -> int:
    """Roll up every pending closed day, then move the watermark; the number of days rolled up."""
    newest, days = pending(conn, today)
    rolled = sum(roll_up(conn, day, newest) for day in days)
    set_watermark(conn, newest)
    return rolled


def delete_through(conn: Connection, day: str) -> None:
    """Forget the rollups of `day` and every day before it (retention: those days lost some or all events; a
    closed day that still has events is rolled up again). Inside the caller's transaction, under the rollups' lock."""
    for table in TABLES + ("rollup_days",):
        conn.execute(f"DELETE FROM {table} WHERE day <= ?", (day,))
