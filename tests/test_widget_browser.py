"""The ticket-sidebar widget in Debian's chromium: framed by a host on another origin, refused by others, and the
pages under the Content-Security-Policy (real model, real `kb serve`)."""
import json
import shutil
import sqlite3
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from cli.integrations import ZAF_SDK, write_zendesk_app
from tests.conftest import FIXTURES, free_port, running_server
from tests.test_browser import shot

pytestmark = pytest.mark.model

TICKET = {"type": "kb:ticket", "ticket_id": 4242, "tags": ["email"],
          "subject": "Mail to the sales list bounced",
          "body": "Hi team,\nwhen I mail the sales distribution group I get '550 5.7.124 Sender not allowed'."
                  "\nBest regards,\nTom\nSales | +1 555 0100"}
TEAMS = {"type": "kb:ticket", "ticket_id": 4243, "subject": "Teams microphone not working",
         "body": "Nobody can hear me in Teams meetings, the microphone shows no input."}
TICKET_WORDS = ("sales", "bounced", "Tom", "microphone")

HOST_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>helpdesk</title></head>
<body>
<iframe id="kb" src="{widget}" width="{width}" height="700"></iframe>
<iframe id="other" src="{other}" width="10" height="10"></iframe>
<script>
  window.received = [];
  window.addEventListener("message", function (event) {{
    if (event.source === document.getElementById("kb").contentWindow)
      window.received.push({{origin: event.origin, data: event.data}});
  }});
</script>
</body></html>
"""
# A frame of yet another origin inside the host page, posting a ticket at the widget: it must be ignored.
OTHER_FRAME = """<!doctype html><meta charset="utf-8"><script>
  window.addEventListener("message", function (event) {
    if (event.data === "attack") parent.frames[0].postMessage(
      {type: "kb:ticket", subject: "Outlook password prompt", body: "Outlook keeps asking for the password"}, "*");
  });
</script>"""
FAKE_ZAF = """window.FAKE = { invoked: [], handlers: {}, settings: {kb_api_key: "zendesk-test-key"},
  values: { "ticket.id": 777, "ticket.subject": "Mail to the sales list bounced",
            "ticket.description": "I get 550 5.7.124 Sender not allowed from the sales distribution group",
            "ticket.tags": ["email"], "currentUser.locale": "id" },
  fire: function (name) { (this.handlers[name] || []).forEach(function (f) { f(); }); } };
window.ZAFClient = { init: function () { return {
  invoke: function (name, arg) { FAKE.invoked.push([name, arg]); return Promise.resolve({}); },
  get: function (keys) { var out = {}; [].concat(keys).forEach(function (k) { out[k] = FAKE.values[k]; });
                          return Promise.resolve(out); },
  on: function (name, f) { (FAKE.handlers[name] = FAKE.handlers[name] || []).push(f); },
  metadata: function () { return Promise.resolve({ settings: FAKE.settings }); } }; } };
"""


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def origins():
    """Ports of the host (allowed to frame the widget), another host (not allowed) and a third origin."""
    return {"host": free_port(), "evil": free_port(), "other": free_port()}


@pytest.fixture(scope="module")
def server(tmp_path_factory, embedder, origins):
    from indexer.build import build_index
    from kb.settings import load_settings

    root = tmp_path_factory.mktemp("widget-browser")
    content = root / "content"
    shutil.copytree(FIXTURES / "content", content)
    build_index(load_settings({}, content_dir=content, index_dir=root / "index"), embedder, progress=False)
    env = {"KB_MODEL_CACHE_DIR": str(root / "models"), "KB_LOG_LEVEL": "warning", "KB_CONTENT_DIR": str(content),
           "KB_FRAME_ANCESTORS": f"http://127.0.0.1:{origins['host']}"}
    with running_server(root / "index", root, env) as (base, _):
        yield base, root


@pytest.fixture(scope="module")
def hosts(tmp_path_factory, server, origins):
    """Static sites on other loopback ports: the helpdesk (allowed), an unlisted site, a third-party frame."""
    base, _ = server
    sites, threads = {}, []
    for name, port in origins.items():
        folder = tmp_path_factory.mktemp(f"site-{name}")
        other = f"http://127.0.0.1:{origins['other']}/other.html"
        for width in (360, 320):
            (folder / f"host-{width}.html").write_text(HOST_PAGE.format(widget=base + "/widget", other=other,
                                                                        width=width))
        (folder / "other.html").write_text(OTHER_FRAME)
        write_zendesk_app(base, folder / "zendesk")
        httpd = ThreadingHTTPServer(("127.0.0.1", port), partial(QuietHandler, directory=str(folder)))
        threads.append((httpd, threading.Thread(target=httpd.serve_forever, daemon=True)))
        threads[-1][1].start()
        sites[name] = f"http://127.0.0.1:{port}"
    yield sites
    for httpd, thread in threads:
        httpd.shutdown()
        thread.join(timeout=5)
        httpd.server_close()


@pytest.fixture
def page(browser, server):
    """A page that records console messages, page errors and every request URL (of all frames)."""
    base, _ = server
    context = browser.new_context(viewport={"width": 1024, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page = context.new_page()
    page.console, page.errors, page.urls = [], [], []
    page.on("console", lambda message: page.console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("request", lambda request: page.urls.append(request.url))
    yield page
    context.close()


def received(page, kind: str, count: int = 1) -> list[dict]:
    page.wait_for_function(f"window.received.filter(m => m.data && m.data.type === {kind!r}).length >= {count}")
    return [m for m in page.evaluate("window.received") if m["data"].get("type") == kind]


def send(page, ticket: dict, kb_origin: str) -> None:
    page.evaluate("([t, o]) => document.getElementById('kb').contentWindow.postMessage(t, o)", [ticket, kb_origin])


def no_csp_violations(page) -> None:
    violations = [m for m in page.console if "Content Security Policy" in m or "Refused to" in m]
    assert violations == [] and page.errors == [], (violations, page.errors)


# ---- framed by the helpdesk ----------------------------------------------------------------------
def test_a_ticket_from_the_host_gets_suggestions_and_insert_goes_back(page, server, hosts):
    base, root = server
    page.goto(hosts["host"] + "/host-360.html")
    ready = received(page, "kb:ready")
    assert ready[0]["origin"] == base
    widget = page.frame_locator("#kb")
    send(page, TICKET, base)
    first = widget.locator("li.answer").first
    first.wait_for()
    assert "5.7.124" in first.locator(".answer-title").inner_text()
    assert first.locator(".answer-snippet mark").count() >= 1
    assert widget.locator(".widget-confidence.good").is_visible()
    shot(page, "widget-host")

    first.locator("button[data-action=insert]").click()
    insert = received(page, "kb:insert")[0]
    assert insert["origin"] == base
    data = insert["data"]
    assert data["article_id"] == "Exchange/ndr-5-7-124" and "5.7.124" in data["title"]
    assert data["url"].startswith(base + "/articles/Exchange/ndr-5-7-124") and data["url"] in data["text"]
    assert "?" not in data["url"]

    first.locator("button[data-action=link]").click()
    link = received(page, "kb:link")[0]["data"]
    assert link == {"type": "kb:link", "url": data["url"], "title": data["title"],
                    "article_id": "Exchange/ndr-5-7-124", "ticket_id": 4242}
    assert first.locator(".answer-status").inner_text().strip()

    before = httpx.get(base + "/api/feedback/summary").json()["total"]
    first.locator("button[data-action=helpful][value=yes]").click()
    first.locator("button[value=yes][aria-pressed=true]").wait_for()
    assert httpx.get(base + "/api/feedback/summary").json()["total"] == before + 1
    with sqlite3.connect(root / "feedback.sqlite") as db:
        query, source, article = db.execute("SELECT query, source, article_id FROM feedback "
                                            "ORDER BY id DESC LIMIT 1").fetchone()
    assert source == "suggest" and article == "Exchange/ndr-5-7-124"
    assert query == ""  # the widget sends the answer's id, never text from the ticket

    # What the agent did went to the event log by id and position: insert, link, feedback, source widget.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with sqlite3.connect(root / "analytics.sqlite") as db:
            actions = db.execute("SELECT kind, source, answer_id, article_id, position, helpful FROM events "
                                 "WHERE kind IN ('insert', 'link', 'feedback') ORDER BY id").fetchall()
            answers = db.execute("SELECT answer_id, source FROM events WHERE kind = 'suggest'").fetchall()
        if len(actions) == 3:
            break
        time.sleep(0.2)
    assert [a[0] for a in actions] == ["insert", "link", "feedback"]
    assert {a[1] for a in actions} == {"widget"} and {a[3] for a in actions} == {"Exchange/ndr-5-7-124"}
    assert actions[0][2] in {answer_id for answer_id, answer_source in answers if answer_source == "widget"}
    assert {a[2] for a in actions} == {actions[0][2]} and actions[0][4] == 1 and actions[2][5] == 1

    # An updated ticket refreshes the suggestions.
    send(page, TEAMS, base)
    widget.locator("li.answer .answer-title", has_text="microphone").first.wait_for()
    assert "microphone" in widget.locator("li.answer .answer-title").first.inner_text().lower()

    # The ticket text travelled in message and request bodies only, never in a URL.
    leaked = [url for url in page.urls if any(word.lower() in url.lower() for word in TICKET_WORDS)]
    assert leaked == []
    no_csp_violations(page)


def test_a_frame_that_is_not_the_host_cannot_send_a_ticket(page, server, hosts):
    base, _ = server
    page.goto(hosts["host"] + "/host-360.html")
    received(page, "kb:ready")
    page.evaluate("document.getElementById('other').contentWindow.postMessage('attack', '*')")
    page.wait_for_timeout(1500)
    widget = page.frame_locator("#kb")
    assert widget.locator("li.answer").count() == 0
    assert not any("/api/suggest" in url for url in page.urls)


def test_the_key_goes_in_a_header_and_a_weak_match_says_so(page, server, hosts):
    base, _ = server
    seen = []

    def fake_suggest(route):
        seen.append(route.request)
        route.fulfill(status=200, content_type="application/json", body=json.dumps({
            "query": {"text": "printer on fire", "codes": [], "language": "en"}, "confident": False,
            "confidence": 0.12, "not_covered": "Zoom<img src=x onerror=alert(3)>", "articles": [],
            "answers": [{"article_id": "Outlook/outlook-password-prompt", "passage_id": "p1", "title": "<b>Title</b>",
                         "heading_path": ["Cause"], "anchor": "cause", "url": "/articles/Outlook/outlook-password-prompt#cause",
                         "snippet": "x", "highlights": [], "score": 0.1,
                         "snippet_html": "Before &lt;img src=x onerror=alert(1)&gt; <mark>marked</mark> "
                                         "<img src=x onerror=alert(2)>"}]}))

    page.route("**/api/suggest", fake_suggest)
    page.goto(hosts["host"] + "/host-360.html")
    received(page, "kb:ready")
    send(page, {"type": "kb:ticket", "subject": "Printer on fire", "body": "", "key": "kb_test_key"}, base)
    widget = page.frame_locator("#kb")
    widget.locator("li.answer").first.wait_for()
    request = seen[0]
    assert request.headers.get("x-api-key") == "kb_test_key" and request.method == "POST"
    assert json.loads(request.post_data)["subject"] == "Printer on fire"
    cue = widget.locator(".widget-confidence.warn")
    assert cue.inner_text().startswith("No good article found")
    assert "No article here mentions Zoom<img src=x onerror=alert(3)>: this knowledge base" in cue.inner_text()
    assert cue.locator("img").count() == 0  # the product as text, never markup
    answer = widget.locator("li.answer").first
    assert answer.locator(".answer-title a").inner_text() == "<b>Title</b>"
    assert answer.locator(".answer-snippet mark").inner_text() == "marked"
    assert answer.locator(".answer-snippet img").count() == 0
    assert answer.locator(".answer-title a").get_attribute("href") == "/articles/Outlook/outlook-password-prompt#cause"
    page.wait_for_timeout(300)
    assert page.errors == []


def test_the_widget_is_usable_at_320_px(page, server, hosts):
    base, _ = server
    page.goto(hosts["host"] + "/host-320.html")
    received(page, "kb:ready")
    send(page, TICKET, base)
    frame = page.frame(url=lambda url: url.startswith(base + "/widget"))
    frame.wait_for_selector("li.answer")
    assert frame.evaluate("document.documentElement.scrollWidth") <= frame.evaluate("window.innerWidth") <= 320
    for button in frame.locator("li.answer").first.locator("button").all():
        box = button.bounding_box()
        assert button.is_visible() and box["width"] > 20 and box["x"] >= 0
        assert frame.evaluate("b => b.getBoundingClientRect().right", button.element_handle()) <= 320
    shot(page, "widget-320")


def test_an_unlisted_site_cannot_frame_the_widget(page, server, hosts):
    base, _ = server
    page.goto(hosts["evil"] + "/host-360.html")
    page.wait_for_timeout(1500)
    frame = page.main_frame.child_frames[0]  # the iframe that points at /widget
    assert not frame.url.startswith(base)  # chromium replaces a frame refused by frame-ancestors with an error page
    assert page.evaluate("window.received") == []  # the widget never ran: no kb:ready
    assert any("frame-ancestors" in m for m in page.console), page.console


# ---- the Zendesk app written by `kb integrations zendesk-app` --------------------------------------
def test_the_generated_zendesk_app_drives_the_widget(page, server, hosts):
    base, _ = server
    page.route(ZAF_SDK, lambda route: route.fulfill(status=200, content_type="application/javascript",
                                                    body=FAKE_ZAF))
    suggest = []
    page.on("request", lambda r: suggest.append(r) if r.url.endswith("/api/suggest") else None)
    page.goto(hosts["host"] + "/zendesk/assets/iframe.html")
    widget = page.frame_locator("#kb-widget")
    first = widget.locator("li.answer").first
    first.wait_for()
    assert "5.7.124" in first.locator(".answer-title").inner_text()
    assert suggest[0].headers.get("x-api-key") == "zendesk-test-key"
    insert = first.locator("button[data-action=insert]")
    assert insert.inner_text() == "Sisipkan ke balasan"  # currentUser.locale "id"
    insert.click()
    page.wait_for_function("FAKE.invoked.some(c => c[0] === 'ticket.editor.insert')")
    first.locator("button[data-action=link]").click()
    page.wait_for_function("FAKE.invoked.some(c => c[0] === 'ticket.tags.add')")
    invoked = dict((name, arg) for name, arg in page.evaluate("FAKE.invoked"))
    assert base + "/articles/Exchange/ndr-5-7-124" in invoked["ticket.editor.insert"]
    assert invoked["ticket.tags.add"] == ["kb_linked", "kb_exchange_ndr_5_7_124"]
    page.evaluate("FAKE.values['ticket.subject'] = 'Teams microphone not working'; "
                  "FAKE.values['ticket.description'] = 'Nobody hears me in Teams meetings';"
                  "FAKE.fire('ticket.subject.changed')")
    widget.locator("li.answer .answer-title", has_text="microphone").first.wait_for()
    no_csp_violations(page)


# ---- the service's own pages under the policy --------------------------------------------------------
def test_pages_work_under_the_policy(page, server):
    base, _ = server
    response = page.goto(base + "/?q=outlook+password")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("ol.results li.result")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.locator("form.feedback").first.locator("button[value=yes]").click()
    page.locator("form.feedback .feedback-status:not(:empty)").first.wait_for()  # no wait_for_function: CSP
    page.goto(base + "/suggest")
    page.fill("#subject", "Mail to the sales list bounced")
    page.fill("#body", "I get 550 5.7.124 Sender not allowed")
    page.locator("form.suggest-form button[type=submit]").click()
    page.wait_for_selector("ol.results li.result")
    page.goto(base + "/articles/Exchange/ndr-5-7-124")
    page.locator("button.copy").first.click()
    assert "/articles/Exchange/ndr-5-7-124" in page.evaluate("navigator.clipboard.readText()")
    page.goto(base + "/no/such/page")
    no_csp_violations(page)


def test_the_widget_alone_reads_query_parameters_and_copies_instead_of_inserting(page, server):
    base, _ = server
    page.goto(base + "/widget?" + httpx.QueryParams({"subject": "Mail to the sales list bounced",
                                                     "body": "550 5.7.124 Sender not allowed"}).__str__())
    first = page.locator("li.answer").first
    first.wait_for()
    assert first.locator("button[data-action=link]").is_hidden()  # no host, no ticket to link to
    first.locator("button[data-action=insert]").click()
    first.locator(".answer-status", has_text="Copied").wait_for()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert "5.7.124" in copied and base + "/articles/Exchange/ndr-5-7-124" in copied
    no_csp_violations(page)
