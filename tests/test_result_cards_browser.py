"""Result cards in Debian's chromium at 1280x900 over the starter knowledge base: four results at a glance on / and
/suggest, and the expand control shows the whole passage (real model, real `kb serve`)."""
import shutil
from pathlib import Path

import pytest

from tests.conftest import running_server
from tests.test_browser import shot

pytestmark = pytest.mark.model
REPO = Path(__file__).parent.parent
VIEWPORT = {"width": 1280, "height": 900}

# Cards at least partly inside the viewport (top above its bottom edge, bottom below its top edge).
IN_VIEW = """selector => [...document.querySelectorAll(selector)].filter(el => {
    const box = el.getBoundingClientRect();
    return box.height > 0 && box.top < window.innerHeight && box.bottom > 0;
}).length"""
ANSWERS = "section[aria-labelledby=answers-heading] ol.results > li.result"
RESULTS = "ol.results > li.result"


@pytest.fixture(scope="module")
def server(tmp_path_factory, embedder):
    """content/ (the starter knowledge base, boilerplate and all) indexed with the real model and served."""
    from indexer.build import build_index
    from kb.settings import load_settings

    root = tmp_path_factory.mktemp("cards")
    content = root / "content"
    shutil.copytree(REPO / "content", content)
    build_index(load_settings({}, content_dir=content, index_dir=root / "index"), embedder, progress=False)
    with running_server(root / "index", root, {"KB_MODEL_CACHE_DIR": str(root / "models"),
                                               "KB_LOG_LEVEL": "warning", "KB_CONTENT_DIR": str(content)}) as (base, _):
        yield base


@pytest.fixture
def page(browser, server):
    context = browser.new_context(base_url=server, viewport=VIEWPORT)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    assert errors == [], f"JavaScript errors: {errors}"
    context.close()


@pytest.mark.parametrize("query", ["outlook keeps asking for password", "teams microphone not working",
                                   "onedrive files stuck on sync pending", "mailbox full cannot send"])
def test_four_search_results_are_visible_without_scrolling(page, query):
    page.goto("/?" + "q=" + query.replace(" ", "+"))
    page.wait_for_selector(RESULTS)
    assert page.evaluate("window.scrollY") == 0
    assert page.evaluate(IN_VIEW, RESULTS) >= 4
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
    if query.startswith("outlook"):
        shot(page, "cards-search")


def test_four_ticket_answers_are_visible_without_scrolling(page):
    page.goto("/suggest")
    page.fill("#subject", "Outlook keeps asking for my password")
    page.fill("#body", "Hi team,\nsince I changed my password yesterday Outlook asks for it again every few minutes, "
                       "even though I type it correctly. Webmail works fine.\nThanks,\nRina\nFinance | ext. 4411")
    page.locator("form.suggest-form button[type=submit]").click()
    page.wait_for_selector(ANSWERS)
    assert page.locator(ANSWERS).count() >= 4
    assert page.evaluate(IN_VIEW, ANSWERS) >= 4
    assert page.locator(ANSWERS + " .badge-product").count() >= 4
    shot(page, "cards-suggest")


def test_the_expand_control_shows_the_whole_passage(page):
    page.goto("/?q=outlook+keeps+asking+for+password")
    card = page.locator(RESULTS, has=page.locator("details.passage")).first
    lead, details = card.locator(".lead"), card.locator("details.passage")
    full = details.locator(".passage-full")
    last = full.locator("p, li").last  # the end of the passage, which the lead leaves out
    assert lead.is_visible() and not full.is_visible() and not last.is_visible()
    summary = details.locator("summary")
    assert summary.inner_text().strip() == "Show the whole passage"
    summary.click()
    assert full.is_visible() and last.is_visible() and last.inner_text().strip()
    assert not lead.is_visible()  # the whole passage takes the lead's place
    assert summary.inner_text().strip() == "Show less"
    shot(page, "cards-expanded")
    summary.focus()
    page.keyboard.press("Enter")  # a <details> element: the keyboard works without script
    assert not full.is_visible() and lead.is_visible()


def test_lists_in_a_passage_are_shown_as_lists(page):
    page.goto("/?q=outlook+credential+manager+remove+saved+password")
    card = page.locator(RESULTS, has=page.locator(".passage-full li")).first
    card.locator("details.passage summary").click()
    items = card.locator(".passage-full li")
    assert items.count() >= 2
    box = [items.nth(n).bounding_box() for n in range(2)]
    assert box[1]["y"] >= box[0]["y"] + box[0]["height"] - 1  # one item under the other, not run together
    assert page.evaluate("getComputedStyle(document.querySelector('.passage-full li')).display") == "list-item"


def test_cards_on_a_phone_do_not_scroll_sideways(page):
    page.set_viewport_size({"width": 360, "height": 800})
    page.goto("/?q=outlook+keeps+asking+for+password&lang=id")
    page.locator(RESULTS + " details.passage summary").first.click()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    shot(page, "cards-search-360-id")
