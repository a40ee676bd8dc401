"""Agent pages in a real browser: Debian's chromium driven by Playwright against the real server and model."""
import shutil
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import FIXTURES, running_server

pytestmark = pytest.mark.model
REPO = Path(__file__).parent.parent
SHOTS = REPO / "test-output" / "screenshots"
SERVED: dict[str, Path] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory, embedder):
    """Fixture articles plus hostile ones, indexed with the real model and served by a real uvicorn process."""
    from indexer.build import build_index
    from kb.settings import load_settings

    root = tmp_path_factory.mktemp("browser")
    content = root / "content"
    shutil.copytree(FIXTURES / "content", content)
    (content / "Security").mkdir()
    shutil.copy(FIXTURES / "hostile" / "outlook-hostile-markup.md", content / "Security")
    build_index(load_settings({}, content_dir=content, index_dir=root / "index"), embedder, progress=False)
    SERVED["analytics"] = root / "analytics.sqlite"  # running_server puts the event log there
    with running_server(root / "index", root, {"KB_MODEL_CACHE_DIR": str(root / "models"),
                                               "KB_LOG_LEVEL": "warning", "KB_CONTENT_DIR": str(content)}) as (base, _):
        yield base


@pytest.fixture
def page(browser, server):
    context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    assert page.dialogs == [], f"a dialog opened: {page.dialogs}"
    assert errors == [], f"JavaScript errors: {errors}"
    context.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_search_from_the_keyboard(page):
    page.goto("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("outlook keeps asking for my password")
    page.keyboard.press("Enter")
    page.wait_for_selector("ol.results li.result")
    first = page.locator("ol.results li.result h3").first.inner_text()
    assert "Outlook keeps asking for your password" in first
    assert page.locator(".result-count").inner_text().strip()
    assert page.locator("ol.results mark").count() > 0
    shot(page, "search")
    page.set_viewport_size({"width": 360, "height": 800})
    shot(page, "search-360")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360


def test_slash_focuses_the_search_box(page):
    page.goto("/?q=teams")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"


def test_filter_by_product(page):
    page.goto("/?q=password+camera+microphone")
    page.select_option("#filter-product", "Teams")
    page.locator("form.search-form button[type=submit]").click()
    page.wait_for_selector("ol.results li.result")
    products = page.locator("ol.results .badge-product").all_inner_texts()
    assert products and all(p.strip().endswith("Teams") for p in products)


def test_open_an_article_and_copy_a_section(page, server):
    page.goto("/?q=ndr+5.7.124")
    page.locator("ol.results li.result h3 a").first.click()
    page.wait_for_selector("article.doc h1")
    assert "5.7.124" in page.locator("article.doc h1").inner_text()
    button = page.locator("button.copy").first
    button.click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert "/articles/Exchange/ndr-5-7-124" in copied and len(copied) > 60
    shot(page, "article")
    # The click opened the article from result 1 of that search, and the copy went to the event log with it.
    deadline, actions = time.monotonic() + 10, []
    while time.monotonic() < deadline and len(actions) < 2:
        time.sleep(0.2)
        with sqlite3.connect(SERVED["analytics"]) as db:
            actions = db.execute("SELECT e.kind, e.source, e.position, e.article_id, a.kind, a.source FROM events e "
                                 "JOIN events a ON a.answer_id = e.answer_id AND a.kind = 'search' "
                                 "WHERE e.kind IN ('open', 'copy') ORDER BY e.id").fetchall()
    assert actions[-2:] == [("open", "page", 1, "Exchange/ndr-5-7-124", "search", "page"),
                            ("copy", "page", 1, "Exchange/ndr-5-7-124", "search", "page")]


def test_paste_a_ticket(page):
    page.goto("/suggest")
    page.fill("#subject", "Mail to the sales list bounced")
    page.fill("#body", "Hi team,\nwhen I mail the sales distribution group I get '550 5.7.124 Sender not allowed'."
                       "\nBest regards,\nTom\nSales | +1 555 0100")
    page.locator("form.suggest-form button[type=submit]").click()
    page.wait_for_selector("ol.results li.result")
    assert "5.7.124" in page.locator("ol.results li.result").first.inner_text()
    assert page.locator(".notice-good").count() == 1
    shot(page, "suggest")


def test_feedback_is_recorded(page, server):
    before = httpx.get(server + "/api/feedback/summary").json()["total"]
    page.goto("/?q=onedrive+sync+pending")
    form = page.locator("form.feedback").first
    form.locator("button[value=yes]").click()
    # Not wait_for_function: once it polls, it evaluates its string with eval, which the pages' CSP refuses.
    page.locator("form.feedback .feedback-status:not(:empty)").first.wait_for()
    assert httpx.get(server + "/api/feedback/summary").json()["total"] == before + 1


def test_hostile_queries_and_articles_execute_nothing(page):
    page.goto("/?q=" + httpx.QueryParams({"x": "<script>alert('q')</script><img src=x onerror=alert('q2')>"})["x"])
    assert "<script>alert('q')</script>" in page.locator("#q").input_value()
    page.goto("/?q=outlook+calendar+sync+notes")
    page.locator("ol.results li.result h3 a", has_text="calendar sync notes").first.click()
    page.wait_for_selector("article.doc h1")
    shot(page, "hostile-article")
    for link in page.locator("article.doc a").all():
        link.hover()
        link.click(modifiers=["Control"], timeout=2000, no_wait_after=True)
    page.locator("article.doc").hover()
    bad = page.evaluate("""() => {
        const out = [];
        for (const el of document.querySelectorAll('main *')) {
            for (const attr of el.attributes) {
                const v = attr.value.replace(/[\\s\\u0000-\\u001f]/g, '').toLowerCase();
                if (attr.name.startsWith('on')) out.push(el.tagName + ' ' + attr.name);
                if (['href', 'src', 'action', 'formaction'].includes(attr.name) &&
                    /^(javascript|vbscript|data):/.test(v)) out.push(el.tagName + ' ' + attr.name + '=' + v);
            }
            if (el.tagName === 'SCRIPT' || el.tagName === 'IFRAME' || el.tagName === 'OBJECT') out.push(el.tagName);
        }
        return out;
    }""")
    assert bad == []


CONTRAST = """() => {
    const parse = c => c.match(/[\\d.]+/g).map(Number);
    const lum = ([r, g, b]) => {
        const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = el => {
        for (; el; el = el.parentElement) {
            const c = parse(getComputedStyle(el).backgroundColor);
            if (c.length < 4 || c[3] > 0) return c;
        }
        return [255, 255, 255];
    };
    const worst = [];
    for (const el of document.querySelectorAll('h1, h2, h3, p, a, label, button, .badge, .hint, dt, dd, li, mark')) {
        if (!el.offsetParent || !el.textContent.trim()) continue;
        const fg = lum(parse(getComputedStyle(el).color)), bg = lum(background(el));
        const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
        if (ratio < 4.5) worst.push(el.tagName + '.' + el.className + ' ' + ratio.toFixed(2));
    }
    return worst;
}"""


@pytest.mark.parametrize("url", ["/?q=outlook+password", "/suggest", "/articles/Exchange/ndr-5-7-124"])
def test_text_contrast_is_at_least_4_5(page, url):
    page.goto(url)
    assert page.evaluate(CONTRAST) == []


def test_results_are_reachable_with_the_tab_key(page):
    page.goto("/?q=teams+microphone")
    page.wait_for_selector("ol.results li.result")
    first_result = page.locator("ol.results li.result h3 a").first.get_attribute("href")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('href')") == first_result:
            break
    else:
        pytest.fail("the first result link was not reached with Tab")
    page.keyboard.press("Enter")
    page.wait_for_selector("article.doc h1")


def test_unknown_page_is_an_html_404(page):
    response = page.goto("/no/such/page")
    assert response.status == 404 and page.locator("main").inner_text().strip()
    assert page.locator("a[href='/']").count() >= 1
    shot(page, "not-found")


def test_content_health_page_lists_findings_that_lead_to_articles(page):
    page.goto("/")
    page.locator("nav.site-nav a[href$='/health/content']").click()  # writers find it from every page
    page.wait_for_load_state()
    for _ in range(60):  # a big knowledge base answers "being computed" first; this one takes a moment
        if page.locator("table.health-counts").count():
            break
        page.wait_for_timeout(500)
        page.reload()
    assert page.locator("h1").inner_text().strip()
    stale = page.locator("section.health-kind", has=page.locator("h2#kind-stale"))
    assert stale.count() == 1 and stale.locator("li.finding").count() >= 1
    assert page.locator("table.health-counts th a[href='#kind-stale']").count() == 1
    shot(page, "content-health")
    link = stale.locator("li.finding a").first
    path = link.inner_text()
    link.click()
    page.wait_for_load_state()
    assert page.url.endswith("/articles/" + path.removesuffix(".md")) and page.locator("article h1, h1").count()
    page.goto("/health/content")
    page.set_viewport_size({"width": 360, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
