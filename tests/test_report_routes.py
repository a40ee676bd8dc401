"""The analytics API (/api/analytics/*) and the /reports page through the service, over a log with known answers."""
import csv
import io
import re
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from indexer.build import build_index
from kb.settings import load_settings
from search.app import create_app
from search.i18n import translate
from search.reports import Reports, parse_filters
from search.routes.reports import page_notes
from tests.report_log import A, C, write_known_log

RANGE = {"since": "2026-03-01", "until": "2026-03-14"}
HTML = {"accept": "text/html"}


def make_settings(tmp_path, **extra):
    from tests.conftest import FIXTURE_CONTENT

    # retention of ten years: the service's event log writer would otherwise delete the log's March 2026 events
    return load_settings({}, **{"content_dir": FIXTURE_CONTENT, "index_dir": tmp_path / "index",
                                "feedback_db": tmp_path / "fb.sqlite", "usage_db": tmp_path / "usage.sqlite",
                                "auth_db": tmp_path / "auth.sqlite", "reload_poll_seconds": 0,
                                "analytics_db": tmp_path / "events.sqlite", "analytics_retention_days": 3650,
                                **extra})


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    from tests.conftest import TinyEncoder

    root = tmp_path_factory.mktemp("report-routes")
    build_index(make_settings(root), TinyEncoder(), progress=False)
    return root / "index"


@contextmanager
def client_for(tmp_path, index_dir, **extra):
    from tests.conftest import TinyEncoder

    settings = make_settings(tmp_path, **extra)
    settings = type(settings)(**{**settings.__dict__, "index_dir": index_dir})
    with TestClient(create_app(settings, encoder=TinyEncoder()), follow_redirects=False) as client:
        state = client.app.state.kb
        yield client
    state.feedback.close()  # the service leaves these to the end of the process (a PostgreSQL session each)
    state.usage.close()


def log_settings(db) -> dict:
    """The settings that put the event log in `db`: its SQLite file, or KB_DATABASE_URL (every side store there)."""
    return {"analytics_db": db.path} if db.engine == "sqlite" else {"database_url": db.target}


@pytest.fixture
def client(tmp_path, index_dir, side_db):
    """The service over the known log, on SQLite and on a real PostgreSQL; `client.log` is the log's database."""
    db = write_known_log(side_db("analytics"))
    with client_for(tmp_path, index_dir, **log_settings(db)) as client:
        client.log = db
        yield client


def test_summary_json(client):
    response = client.get("/api/analytics/summary", params=RANGE)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["filters"] == {**RANGE, "language": None, "product": None, "days": 14}
    assert body["totals"]["searches"] == 5 and body["totals"]["suggestions"] == 5
    assert body["latency_ms"]["all"] == {"p50": 40.0, "p95": 90.0, "count": 10}
    assert body["self_service"]["share"] == 0.6 and len(body["volume"]) == 14
    teams = client.get("/api/analytics/summary", params={**RANGE, "product": "Teams"}).json()
    assert (teams["totals"]["searches"], teams["totals"]["suggestions"]) == (2, 1)  # product of the index in service
    assert client.get("/api/analytics/summary", params={**RANGE, "language": "id"}).json()["totals"]["answers"] == 2


def test_the_response_models_keep_every_key_of_the_reports(client):
    from search.reports import Catalog, Reports, parse_filters

    state = client.app.state.kb
    reports = Reports(client.log, Catalog.from_searcher(state.searcher))
    filters = parse_filters(RANGE["since"], RANGE["until"])
    for name, report in (("summary", reports.summary(filters)), ("queries", reports.queries(filters)),
                         ("gaps", reports.gaps(filters)), ("articles", reports.articles(filters))):
        assert client.get(f"/api/analytics/{name}", params=RANGE).json() == report, name


def test_queries_gaps_and_articles_use_titles_of_the_index_in_service(client):
    queries = client.get("/api/analytics/queries", params={**RANGE, "limit": 2}).json()
    assert [(q["query"], q["count"]) for q in queries["queries"]] == [("outlook password", 3), ("vpn drops", 2)]
    assert queries["queries"][0]["top_article"]["title"] == "Outlook keeps asking for your password"
    gaps = client.get("/api/analytics/gaps", params=RANGE).json()
    assert [t["size"] for t in gaps["topics"]] == [3, 2] and gaps["topics"][0]["trend"] == "rising"
    assert gaps["topics"][0]["nearest_article"] is None  # the log's 8-dim vectors are not the index's 64-dim ones
    articles = client.get("/api/analytics/articles", params=RANGE).json()
    rows = {a["id"]: a for a in articles["articles"]}
    assert rows[A]["shown"] == 5 and rows[A]["owner"] == "support-outlook" and rows[A]["in_index"]
    assert rows[C]["title"] == 'OneDrive is stuck on "Processing changes" or "Sync pending"'
    assert [p["product"] for p in articles["products"]] == ["Teams", "Outlook", "OneDrive"]
    # the fixture articles were reviewed in 2023-2024: a popular one would be stale, but none is shown 20 times
    assert articles["flag_counts"]["popular_stale"] == 0 and articles["stale_days"] == 180


@pytest.mark.parametrize("name, first_column", [("summary", "period"), ("queries", "query_key"), ("gaps", "rank"),
                                                 ("articles", "id")])
def test_csv_downloads(client, name, first_column):
    response = client.get(f"/api/analytics/{name}", params={**RANGE, "language": "en", "format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == \
        f'attachment; filename="kb-{name}-2026-03-01-2026-03-14-en.csv"'
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0][0] == first_column and len(rows) > 1


@pytest.mark.parametrize("params, message", [
    ({"since": "2026-02-30"}, "since must be a date as YYYY-MM-DD, got '2026-02-30'"),
    ({"until": "14/03/2026"}, "until must be a date as YYYY-MM-DD"),
    ({"since": "2026-03-15", "until": "2026-03-14"}, "since (2026-03-15) is after until (2026-03-14)"),
    ({"since": "2010-01-01", "until": "2026-03-14"}, "longer than 3660 days"),
    ({"since": "9999-12-30", "until": "9999-12-31"}, "until must be between 2000-01-01 and 2999-12-31"),
    ({**RANGE, "format": "xml"}, "format must be json or csv, got 'xml'"),
    ({**RANGE, "limit": "0"}, "limit must be from 1 to 500, got 0"),
])
def test_bad_parameters_are_400_with_a_clear_message(client, params, message):
    response = client.get("/api/analytics/queries", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request" and message in response.json()["error"]["message"]
    assert client.get("/api/analytics/gaps", params={**RANGE, "limit": "many"}).status_code == 422


def test_an_empty_log_gives_empty_reports(tmp_path, index_dir):
    with client_for(tmp_path, index_dir, analytics_db=tmp_path / "new" / "events.sqlite") as client:
        body = client.get("/api/analytics/summary", params=RANGE).json()
        assert body["totals"]["answers"] == 0 and len(body["volume"]) == 14
        assert client.get("/api/analytics/gaps", params=RANGE).json()["topics"] == []
        page = client.get("/reports", params=RANGE)
        assert page.status_code == 200 and "No events in this range." in page.text


def test_the_reports_page_gives_the_notes_in_its_language_and_the_api_in_english(tmp_path, index_dir):
    english = "query text is not stored (KB_ANALYTICS_STORE_TEXT=false): topics come without examples"
    write_known_log(tmp_path / "events.sqlite", store_text=False)
    with client_for(tmp_path, index_dir) as client:
        assert english in client.get("/api/analytics/gaps", params={**RANGE, "lang": "id"}).json()["notes"]
        indonesian = client.get("/reports", params={**RANGE, "lang": "id"}).text
        assert "teks kueri tidak disimpan (KB_ANALYTICS_STORE_TEXT=false): topik tampil tanpa contoh" in indonesian
        assert english not in indonesian
        assert english in client.get("/reports", params={**RANGE, "lang": "en"}).text
    # the service creates its log at start; without one (a reader without the service) the note names the file
    missing = tmp_path / "none.sqlite"
    summary = Reports(missing).summary(parse_filters(**RANGE))
    assert summary["notes"] == [f"no events recorded yet ({missing} does not exist or holds no event table)"]
    assert page_notes({"summary": summary}, translate("id")) == {"summary": [
        f"belum ada peristiwa yang tercatat ({missing} tidak ada atau tidak berisi tabel peristiwa)"]}


def test_reports_page_has_charts_tables_filters_and_csv_links(client):
    page = client.get("/reports", params={**RANGE, "product": "Teams"})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    assert html.count("<svg class=\"chart") == 5 and len(re.findall(r'<rect class="bar-(?:search|suggest)"', html)) >= 3
    assert 'value="2026-03-01"' in html and '<option value="Teams" selected>' in html
    assert 'href="/api/analytics/gaps?since=2026-03-01&amp;until=2026-03-14&amp;product=Teams&amp;format=csv"' in html
    assert "Kamera tidak berfungsi di Microsoft Teams" in html  # Teams articles, shown and acted on
    assert "teams camera" in html and 'aria-current="page">Reports</a>' in html
    assert "style=" not in html and "<script>" not in html  # the CSP allows neither
    indonesian = client.get("/reports", params={**RANGE, "lang": "id"}).text
    assert "<h1>Laporan</h1>" in indonesian and "Celah konten" in indonesian and "Unduh CSV" in indonesian


def test_reports_page_defaults_to_the_last_30_days_and_shows_bad_dates_in_the_form(client):
    page = client.get("/reports")
    assert page.status_code == 200 and "30 days, UTC" in page.text
    bad = client.get("/reports", params={"since": "2026-03-20", "until": "2026-03-01"}, headers=HTML)
    assert bad.status_code == 400 and "is after until" in bad.text and 'value="2026-03-20"' in bad.text


def test_reports_need_the_analytics_scope(tmp_path, index_dir):
    write_known_log(tmp_path / "events.sqlite")
    with client_for(tmp_path, index_dir, auth="required") as client:
        keys = client.app.state.auth.keys
        _, agent = keys.create("agent", ["search", "suggest"])
        _, manager = keys.create("manager", ["search", "analytics"])
        assert client.get("/api/analytics/summary", params=RANGE).status_code == 401
        denied = client.get("/api/analytics/gaps", params=RANGE, headers={"X-API-Key": agent})
        assert denied.status_code == 403 and "analytics" in denied.json()["error"]["message"]
        assert client.get("/reports", headers={"X-API-Key": agent}).status_code == 403
        assert "/reports" not in client.get("/", headers={"X-API-Key": agent}).text  # no header link
        for name in ("summary", "queries", "gaps", "articles"):
            assert client.get(f"/api/analytics/{name}", params=RANGE, headers={"X-API-Key": manager}).status_code == 200
        page = client.get("/", headers={"X-API-Key": manager}).text
        assert 'href="/reports"' in page


def test_openapi_documents_the_reports(client):
    spec = client.get("/openapi.json").json()
    for name, model in (("summary", "SummaryResponse"), ("queries", "QueriesResponse"), ("gaps", "GapsResponse"),
                        ("articles", "ArticlesResponse")):
        operation = spec["paths"][f"/api/analytics/{name}"]["get"]
        content = operation["responses"]["200"]["content"]
        assert content["application/json"]["schema"]["$ref"].endswith(model) and "text/csv" in content
        assert {p["name"] for p in operation["parameters"]} >= {"since", "until", "language", "product", "format"}
        assert "400" in operation["responses"]
    assert "/reports" not in spec["paths"]


def test_reports_are_cached_for_a_minute_per_filter_set(client, tmp_path):
    from search.routes.reports import ReportCache
    from tests.report_log import LogWriter

    first = client.get("/api/analytics/summary", params=RANGE).json()
    log = LogWriter(client.log)  # one more search on 2 March
    log.answer("late", 1, "search", "page", "en", "vpn drops", 0, 10, [A])
    log.close()
    assert client.get("/api/analytics/summary", params=RANGE).json() == first  # within the minute: as computed
    csv_after_page = client.get("/api/analytics/summary", params={**RANGE, "format": "csv"})
    assert csv_after_page.text.splitlines()[2].startswith("2026-03-02,1,1,1,")  # the cached report, as CSV
    fresh = client.get("/api/analytics/summary", params={**RANGE, "language": "en"}).json()  # other filters
    assert fresh["totals"]["searches"] == 5  # a1 a2 a3 a11 + the new one; a7 is Indonesian
    calls = []
    cache = ReportCache(seconds=60, size=2)
    for key in ("a", "a", "b", "c", "a"):
        cache.get((key,), lambda: calls.append(key) or {"key": key})
    assert calls == ["a", "b", "c", "a"]  # "a" was evicted by b and c (size 2)
    expired = ReportCache(seconds=0)
    expired.get(("x",), lambda: calls.append("x") or {})
    expired.get(("x",), lambda: calls.append("x") or {})
    assert calls[-2:] == ["x", "x"]



def test_reports_read_what_the_service_records(tmp_path, index_dir, side_db):
    """End to end with the real event log writer (kb/events.py): answers and actions in, the same numbers out, on
    SQLite and on a real PostgreSQL."""
    with client_for(tmp_path, index_dir, **log_settings(side_db("analytics"))) as client:
        page = {"X-KB-Source": "page"}
        search = client.get("/api/search", params={"q": "outlook password prompt", "k": 3}, headers=page).json()
        client.get("/api/search", params={"q": "outlook password prompt", "k": 3}, headers=page)
        ticket = client.post("/api/suggest", json={"subject": "Teams microphone", "body": "Nobody hears me in "
                                                   "Teams meetings, the microphone does not work.", "k": 3},
                             headers={"X-KB-Source": "widget"}).json()
        inserted = ticket["articles"][0]["id"]
        assert client.post("/api/events", json={"kind": "insert", "answer_id": ticket["answer_id"],
                                                "article_id": inserted, "position": 1,
                                                "source": "widget"}).status_code == 202
        assert client.post("/api/events", json={"kind": "open", "answer_id": search["answer_id"],
                                                "article_id": search["results"][0]["id"], "position": 1,
                                                "source": "page"}).status_code == 202
        assert client.app.state.kb.events.flush()
        summary = client.get("/api/analytics/summary").json()  # today, in the default 30 days
        assert (summary["totals"]["searches"], summary["totals"]["suggestions"]) == (2, 1)
        assert {s["source"]: s["total"] for s in summary["sources"]} == {"page": 2, "widget": 1}
        assert summary["self_service"]["used"] == 1 and summary["self_service"]["share"] == 1.0
        assert summary["latency_ms"]["all"]["count"] == 3 and summary["latency_ms"]["all"]["p50"] is not None
        queries = client.get("/api/analytics/queries").json()["queries"]
        assert (queries[0]["query"], queries[0]["count"]) == ("outlook password prompt", 2)
        assert queries[0]["top_article"]["id"] == search["results"][0]["id"]
        rows = {a["id"]: a for a in client.get("/api/analytics/articles").json()["articles"]}
        assert rows[inserted]["inserted"] == 1 and rows[search["results"][0]["id"]]["opened"] == 1
        assert rows[search["results"][0]["id"]]["shown"] >= 2
        gaps = client.get("/api/analytics/gaps").json()  # the tiny encoder is not confident about the searches
        assert (gaps["gap_events"], gaps["topics"][0]["size"]) == (2, 2)  # the same query twice: one topic
        # topic vectors come from the writer with the index's own model: the nearest article can be found
        assert gaps["topics"][0]["nearest_article"]["id"] == search["results"][0]["id"]


def test_a_gap_about_a_product_no_article_mentions_names_it_in_the_api_csv_and_page(tmp_path, index_dir):
    from search.i18n import STRINGS

    with client_for(tmp_path, index_dir) as client:
        for _ in range(2):
            found = client.get("/api/search", params={"q": "webex screen share greyed out", "k": 3}).json()
            assert found["not_covered"] == "webex" and found["confident"] is False
        assert client.app.state.kb.events.flush()
        topic = client.get("/api/analytics/gaps").json()["topics"][0]
        assert (topic["size"], topic["not_covered"]) == (2, "webex")
        header, row = client.get("/api/analytics/gaps", params={"format": "csv"}).text.splitlines()[:2]
        assert header.endswith(",not_covered") and row.endswith(",webex")
        page = client.get("/reports", headers=HTML).text
        assert STRINGS["en"]["gap_not_covered"].format(product="webex") in page


def test_an_unreadable_log_is_a_503_that_says_so(tmp_path, index_dir):
    with client_for(tmp_path, index_dir, analytics_db=tmp_path / "broken.sqlite") as client:
        client.app.state.kb.events.flush()
        (tmp_path / "broken.sqlite").write_bytes(b"not a database at all" * 200)
        for suffix in ("-wal", "-shm"):
            (tmp_path / f"broken.sqlite{suffix}").unlink(missing_ok=True)
        response = client.get("/api/analytics/gaps", params=RANGE)
        assert response.status_code == 503 and response.json()["error"]["code"] == "event_log_unreadable"
        assert "cannot be read" in response.json()["error"]["message"]
        page = client.get("/reports", params=RANGE, headers=HTML)
        assert page.status_code == 503 and "broken.sqlite" not in page.text  # no server paths on pages

