"""Daily rollups (kb/event_rollups.py): reports from rollups plus today's events equal reports from the events alone,
on SQLite and on a real PostgreSQL (the `side_db` fixture)."""
import datetime as dt
import json
import time

import numpy as np
import pytest

from kb import event_rollups
from kb.events import EventLog
from kb.settings import load_settings
from search.reports import Catalog, Reports, parse_filters, rollup_days
from tests.report_log import A, ARTICLE_VECTORS, B, C, D, SYNTHETIC, LogWriter, unit

TODAY = dt.date(2026, 3, 15)
START = TODAY - dt.timedelta(days=9)  # offsets 0..9: nine closed days and today
ARTICLES = {A: {"title": "Outlook password", "product": "Outlook", "owner": "mail", "reviewed": "2025-01-01"},
            B: {"title": "Teams microphone", "product": "Teams", "owner": "collab", "reviewed": "2026-03-01"},
            C: {"title": "OneDrive sync", "product": "OneDrive", "owner": "mail", "reviewed": "2026-02-01"},
            D: {"title": "Kamera Teams", "product": "Teams", "owner": "collab", "reviewed": "2026-01-10"}}
SOURCES = ["page", "widget", "api:crm", "webhook:zendesk", "cli"]
LANGUAGES = ["en", "id", "EN", None]
REPORTS = ("summary", "queries", "gaps", "articles")


def day(offset: int) -> str:
    return (START + dt.timedelta(days=offset)).isoformat()


def settings_for(db, tmp_path, **extra):
    """Settings whose event log is `db` (its SQLite file, or KB_DATABASE_URL)."""
    where = {"analytics_db": db.path} if db.engine == "sqlite" else {"database_url": db.target}
    return load_settings({}, feedback_db=tmp_path / "feedback.sqlite", **where, **extra)


def run_sql(db, sql, params=()):
    """One statement on a connection of its own (behind the writer's back); its rows, or its row count."""
    conn = db.connect()
    try:
        cursor = conn.execute(sql, params)
        return [tuple(row) for row in cursor] if cursor.description else cursor.rowcount
    finally:
        conn.close()


def write_log(path, store_text: bool, seed: int = 3) -> LogWriter:
    """About 200 answers and their actions over the ten days, in time order, and one action dated before its
    answer (offset 4: a clock set back)."""
    rng = np.random.default_rng(seed)
    log = LogWriter(path, START, store_text=store_text)
    queries, articles = list(SYNTHETIC), list(ARTICLE_VECTORS)
    for n in range(200):
        offset = int(n * 10 / 200)
        kind = "suggest" if rng.random() < 0.45 else "search"
        name = log.answer(
            f"r{n}", offset, kind, SOURCES[int(rng.integers(len(SOURCES)))],
            LANGUAGES[int(rng.integers(len(LANGUAGES)))], queries[int(rng.integers(len(queries)))],
            [1, 0, None][int(rng.integers(3))], float(rng.integers(5, 300)),
            [] if rng.random() < 0.08 else list(rng.choice(articles, size=int(rng.integers(1, 4)), replace=False)),
            product=["Teams", "outlook", None, None][int(rng.integers(4))], vector=rng.random() > 0.05)
        for kind_ in ("open", "copy", "insert", "link", "feedback"):
            if rng.random() < 0.3:
                later = min(9, offset + int(rng.integers(0, 2)))  # often the next day
                log.action(later, kind_, articles[int(rng.integers(len(articles)))], name,
                           helpful=int(rng.integers(2)) if kind_ == "feedback" else None,
                           product=["Teams", "Outlook", None][int(rng.integers(3))])
    log.action(3, "insert", A, "r85")  # r85 is an answer of offset 4
    log.commit()
    return log


def catalog() -> Catalog:
    ids = list(ARTICLE_VECTORS)
    return Catalog(ARTICLES, ids, np.stack([unit(ARTICLE_VECTORS[a]) for a in ids]).astype(np.float32))


def cases():
    for since, until in ((0, 9), (2, 7), (5, 9), (9, 9), (0, 3)):  # (0, 3): every day rolled up, none raw
        for language in (None, "id", "EN"):
            for product in (None, "Teams", "outlook"):
                yield parse_filters(day(since), day(until), language, product, today=TODAY)


def assert_same_reports(path) -> None:
    fast = Reports(path, catalog(), today=TODAY)
    scratch = Reports(path, catalog(), today=TODAY, rollups=False)
    for filters in cases():
        for name in REPORTS:
            got, expected = (json.dumps(getattr(r, name)(filters), sort_keys=True) for r in (fast, scratch))
            assert got == expected, (name, filters)


def rolled(path, since=0, until=9) -> tuple[str, ...]:
    with Reports(path).log.connect() as conn:
        return rollup_days(conn, parse_filters(day(since), day(until), today=TODAY)).rolled


def update(db) -> int:
    conn = db.connect()
    try:
        return event_rollups.update(conn, TODAY)
    finally:
        conn.close()


@pytest.mark.parametrize("store_text", [True, False])
def test_reports_from_rollups_equal_reports_from_events(side_db, store_text):
    path = side_db("analytics")
    log = write_log(path, store_text)
    assert update(path) == 9  # the closed days; today stays raw
    # every closed day but offset 4 (an action dated before its answer) is answered from rollups
    assert rolled(path) == tuple(day(o) for o in range(9) if o != 4)
    assert_same_reports(path)

    # written after the rollups: a back-dated answer, an insert today on an answer of offset 5 (used later),
    # not-helpful feedback today on a confident answer of offset 6 (a gap from then on), an open of offset 7
    log.answer("late", 2, "suggest", "widget", "id", "teams camera", 1, 33, [B, D])
    offset5 = next(r for r in range(200) if r * 10 // 200 == 5)
    offset6 = next(r for r in range(200) if r * 10 // 200 == 6)
    log.action(9, "insert", C, f"r{offset5}")
    log.action(9, "feedback", A, f"r{offset6}", helpful=0)
    log.action(7, "open", B, f"r{offset6}")
    log.commit()
    touched = {day(2), day(5), day(6), day(7)}
    assert set(rolled(path)) == {day(o) for o in range(9) if o != 4} - touched  # read from events until rolled again
    assert_same_reports(path)

    assert update(path) == 4  # the touched days, rolled up again; the watermark moves past the new events
    assert set(rolled(path)) == {day(o) for o in range(9) if o != 4}
    assert_same_reports(path)
    log.close()


def test_reports_read_the_rollups_of_closed_days(side_db):
    path = side_db("analytics")
    write_log(path, True).close()
    update(path)
    full = parse_filters(day(0), day(9), today=TODAY)
    before = Reports(path, catalog(), today=TODAY).summary(full)["totals"]["answers"]
    # behind the rollups' back (nothing does this but the test)
    gone = run_sql(path, "DELETE FROM events WHERE day = ? AND kind IN ('search', 'suggest')", (day(1),))
    assert gone > 0
    assert Reports(path, catalog(), today=TODAY).summary(full)["totals"]["answers"] == before
    assert Reports(path, catalog(), today=TODAY, rollups=False).summary(full)["totals"]["answers"] == before - gone


def test_retention_deletes_rollups_with_the_events_and_the_cut_day_is_rolled_up_again(side_db, tmp_path):
    path = side_db("analytics")
    log = write_log(path, True)
    log.insert(3, {"kind": "search", "source": "page", "answer_id": "evening", "query_key": "k", "confident": 1,
                   "latency_ms": 12, "result_count": 0}, at="20:00:00.000")
    log.close()
    update(path)
    settings = settings_for(path, tmp_path, analytics_retention_days=5)
    # the cutoff falls in offset 3 at noon: its 10:00 events go, its 20:00 answer stays
    retention = EventLog(settings)
    retention.purge(now=dt.datetime.fromisoformat(f"{day(8)}T12:00:00+00:00"))
    retention.close()
    for table in event_rollups.TABLES + ("rollup_days",):
        assert run_sql(path, f"SELECT count(*) FROM {table} WHERE day <= ?", (day(3),)) == [(0,)]
    assert run_sql(path, "SELECT count(*) FROM events WHERE day = ?", (day(3),)) == [(1,)]
    assert_same_reports(path)
    assert update(path) == 1 and day(3) in rolled(path)
    assert_same_reports(path)


def test_the_writer_rolls_up_closed_days_it_finds(side_db, tmp_path):
    today = dt.datetime.now(dt.timezone.utc).date()
    path = side_db("analytics")
    log = LogWriter(path, today - dt.timedelta(days=2))
    log.answer("w1", 0, "search", "page", "en", "vpn drops", 0, 10, [C])
    log.answer("w2", 1, "suggest", "widget", "id", "teams camera", 1, 20, [B])
    log.action(1, "insert", B, "w2")
    log.close()
    settings = settings_for(path, tmp_path)
    writer = EventLog(settings)
    writer.start()
    try:
        assert writer.record_answer("search", "page", "w3", "outlook password", [(A, 0.9)], "en", None, 0.8, True, 9)
        assert writer.flush(10)
        deadline = time.monotonic() + 10
        conn = path.connect()
        try:
            while time.monotonic() < deadline and event_rollups.watermark(conn) is None:
                time.sleep(0.05)
            assert event_rollups.watermark(conn) in (3, 4)  # past the closed days' events (4: the answer w3 too)
            assert [r[0] for r in conn.execute("SELECT day FROM rollup_days ORDER BY day")] == [
                (today - dt.timedelta(days=d)).isoformat() for d in (2, 1)]
            assert tuple(conn.execute("SELECT sum(answers), sum(used) FROM rollup_answers").fetchone()) == (2, 1)
        finally:
            conn.close()
    finally:
        writer.close()
    filters = parse_filters((today - dt.timedelta(days=2)).isoformat(), today.isoformat(), today=today)
    for name in REPORTS:
        assert (getattr(Reports(path, catalog()), name)(filters)
                == getattr(Reports(path, catalog(), rollups=False), name)(filters))
