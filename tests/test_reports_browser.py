"""The /reports page in Debian's chromium against a real kb serve reading a log this test writes (KB_ANALYTICS_DB)."""
import csv
import datetime as dt
import io
import re
from pathlib import Path

import pytest

from tests.conftest import running_server
from tests.report_log import write_known_log

pytestmark = pytest.mark.model
REPO = Path(__file__).parent.parent
SHOTS = REPO / "test-output" / "screenshots"
START = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=20)  # recent: inside the log's retention
RANGE = f"since={START}&until={START + dt.timedelta(days=13)}"
# every CSP violation the page causes, from the browser's own event (the init script is injected by the driver)
CSP_WATCH = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
             "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


@pytest.fixture(scope="module")
def server(tmp_path_factory, real_index, embedder):
    """kb serve over the fixture index with the real model; the log's topic vectors are real embeddings."""
    root = tmp_path_factory.mktemp("reports-browser")
    write_known_log(root / "analytics.sqlite", START, vector=lambda text: embedder.encode_queries([text])[0])
    with running_server(real_index.index_dir, root, {"KB_ANALYTICS_DB": str(root / "analytics.sqlite"),
                                                     "KB_MODEL_CACHE_DIR": str(root / "models"),
                                                     "KB_LOG_LEVEL": "warning"}) as (base, _):
        yield base


@pytest.fixture
def page(browser, server):
    context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.add_init_script(CSP_WATCH)
    page = context.new_page()
    console, errors = [], []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("requestfailed", lambda request: errors.append(f"request failed: {request.url}"))
    external = []
    page.on("request", lambda request: None if request.url.startswith(server) else external.append(request.url))
    yield page
    violations = page.evaluate("window.__csp || []")
    assert violations == [], f"CSP violations: {violations}"
    assert not [m for m in console if "Content Security Policy" in m or "Refused to" in m], console
    assert errors == [] and external == [], (errors, external)
    context.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def kpi(page, label: str) -> str:
    return page.locator(".kpis div", has_text=label).locator("dd").inner_text().strip()


def test_charts_tables_and_header_link(page):
    page.goto("/")
    page.locator(".site-nav a", has_text="Reports").click()
    page.wait_for_url("**/reports")
    assert page.locator("h1").inner_text() == "Reports"
    page.goto(f"/reports?{RANGE}")
    assert page.locator("svg.chart").count() == 5
    assert page.locator("#volume svg.chart-columns rect.bar-search").count() == 4  # days 0, 1, 8 and 9
    assert page.locator("#volume svg.chart-columns rect.bar-suggest").count() == 5
    assert page.locator("#volume svg.chart-bars rect.bar").count() == 6  # 4 sources, 2 languages
    assert page.locator("#articles svg rect.bar-article").count() == 4
    box = page.locator("#volume svg.chart-columns").bounding_box()
    assert box["width"] > 300 and box["height"] > 100  # drawn, not collapsed
    assert (kpi(page, "Searches"), kpi(page, "Ticket suggestions"), kpi(page, "Suggestions used")) == ("5", "5", "60%")
    gaps = page.locator("#gaps table tbody tr")
    assert gaps.count() >= 1 and "vpn drops" in gaps.first.inner_text()  # "kamera teams" is no English
    nearest = gaps.first.locator("td").nth(4).inner_text()  # no fixture article is about VPNs: a real gap
    assert float(re.search(r"\((0\.\d+)\)$", nearest)[1]) < 0.4, nearest
    assert page.locator("#queries tbody tr").first.locator("th").inner_text() == "outlook password"
    shot(page, "reports")


def test_filters_change_every_report(page):
    page.goto(f"/reports?{RANGE}")
    page.select_option("#filter-product", "Teams")
    page.locator("form.report-filters button[type=submit]").click()
    page.wait_for_url("**product=Teams**")
    assert (kpi(page, "Searches"), kpi(page, "Ticket suggestions")) == ("2", "1")
    titles = page.locator("#articles table.articles-table tbody th a").all_inner_texts()
    assert titles == ["Microphone doesn't work in Microsoft Teams meetings",
                      "Kamera tidak berfungsi di Microsoft Teams"]
    page.select_option("#filter-product", "")
    page.select_option("#filter-language", "id")
    page.fill("#since", str(START + dt.timedelta(days=1)))
    page.fill("#until", str(START + dt.timedelta(days=8)))
    page.locator("form.report-filters button[type=submit]").click()
    page.wait_for_url("**language=id**")
    assert (kpi(page, "Searches"), kpi(page, "Ticket suggestions")) == ("1", "1")  # a7 and a4
    assert "8 days" in page.locator(".result-summary").inner_text()


def test_csv_downloads(page):
    page.goto(f"/reports?{RANGE}")
    for section, name, header in (("#volume", "summary", "period"), ("#gaps", "gaps", "rank"),
                                  ("#queries", "queries", "query_key"), ("#articles", "articles", "id")):
        with page.expect_download() as info:
            page.locator(f"{section} .csv-link a").first.click()
        download = info.value
        assert download.suggested_filename == f"kb-{name}-{START}-{START + dt.timedelta(days=13)}.csv"
        rows = list(csv.reader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
        assert rows[0][0] == header and len(rows) > 1


def test_readable_at_360_px_without_page_scroll(page):
    page.set_viewport_size({"width": 360, "height": 800})
    page.goto(f"/reports?{RANGE}")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    for chart in page.locator("svg.chart").all():
        box = chart.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 360
    wide = page.locator(".table-scroll").evaluate_all("els => els.filter(e => e.scrollWidth > e.clientWidth).length")
    assert wide >= 1  # the article table scrolls inside its own box
    shot(page, "reports-360")


def test_indonesian(page):
    page.goto(f"/reports?{RANGE}&lang=id")
    assert page.locator("h1").inner_text() == "Laporan"
    assert page.locator(".site-nav a[aria-current=page]").inner_text() == "Laporan"
    assert "Celah konten" in page.locator("#gaps h2").inner_text()
    shot(page, "reports-id")
