"""HTML pages for agents: search (/), ticket suggestions (/suggest) and articles (/articles/{id}), Jinja2."""
from __future__ import annotations

import html
import re
from importlib import resources
from html.parser import HTMLParser
from pathlib import Path
from time import perf_counter
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from kb.errors import BadRequest, KBError
from search.cards import passage_card
from search.i18n import LANGUAGE_NAMES, LANGUAGES, choose_language, normalise, translate
from search.related import related_articles
from search.routes.deps import get_searcher, release_versions
from search.routes.events import ANSWER_ID, acted, answered, parse_position
from search.searcher import Filters, Searcher

WEB_DIR = Path(str(resources.files("search") / "web"))  # templates and static files ship inside the package
TEMPLATES = Jinja2Templates(env=Environment(loader=FileSystemLoader(WEB_DIR / "templates"), autoescape=True,
                                            trim_blocks=True, lstrip_blocks=True))
TEMPLATES.env.globals["passage_card"] = passage_card  # result cards: lead, whole passage, lists as lists
LANG_COOKIE_AGE = 365 * 24 * 3600
RESULTS_PER_PAGE = 10
ANSWERS_PER_TICKET = 5

router = APIRouter(include_in_schema=False, dependencies=[Depends(release_versions)])  # get_searcher leases


# ---- helpers -------------------------------------------------------------------------------
def article_path(root: str, article_id: str, anchor: str = "", q: str = "", answer: str | None = None,
                 pos: int | None = None) -> str:
    """Link to the article page (ids are paths: each segment is percent-encoded), with an agent's own search words
    (`q`, from / only) and the answer and position it was listed at (`from`, `pos`: the page records the open).
    Ticket text never goes into it."""
    path = f"{root}/articles/{quote(article_id, safe='/')}"
    params = {"q": q} if q else {}
    if answer:
        params.update({"from": answer, **({"pos": pos} if pos else {})})
    if params:
        path += "?" + urlencode(params)
    return path + (f"#{quote(anchor, safe='')}" if anchor else "")


def filter_options(searcher: Searcher) -> dict[str, list[str]]:
    """Distinct product, language and audience values of the articles in service, sorted."""
    return {field: sorted({a[field] for a in searcher.articles.values() if a.get(field)}, key=str.lower)
            for field in ("product", "language", "audience")}


def ui_language(request: Request) -> str:
    """The page's language: `?lang=`, else the cookie, else Accept-Language, else English."""
    return choose_language(normalise(request.query_params.get("lang")), request.cookies.get("lang"),
                           request.headers.get("accept-language"))


def article_facts(searcher: Searcher, ids) -> dict[str, dict[str, str]]:
    """Product, language and audience of the listed articles: the badges of their result cards."""
    return {i: {k: searcher.articles[i].get(k) or "" for k in ("product", "language", "audience")}
            for i in ids if i in searcher.articles}


def render(request: Request, name: str, context: dict, status: int = 200) -> Response:
    """Render a page in the request's language; `?lang=` also remembers the choice in a cookie."""
    param = normalise(request.query_params.get("lang"))
    lang = ui_language(request)
    root = request.scope.get("root_path", "").rstrip("/")
    kept = {k: v for k, v in request.query_params.items() if k not in ("from", "pos")}  # a switch is no new open
    languages = [{"code": code, "name": LANGUAGE_NAMES[code], "current": code == lang,
                  "href": "?" + urlencode({**kept, "lang": code})} for code in LANGUAGES]
    base = {"lang": lang, "t": translate(lang), "root": root, "languages": languages,
            "who": getattr(request.state, "principal", None),
            "href": lambda article_id, anchor="", q="", answer=None, pos=None: article_path(
                root, article_id, anchor, q, answer, pos)}
    response = TEMPLATES.TemplateResponse(request, name, {**base, **context}, status_code=status)
    if param:
        response.set_cookie("lang", param, max_age=LANG_COOKIE_AGE, samesite="lax", httponly=True)
    return response


NOT_READY = ("index_not_found", "index_mismatch")  # error codes meaning "no usable index in service yet"


def error_page(request: Request, exc: KBError) -> Response:
    """An error as a page for agents. A 4xx message is theirs to act on and shown; a server-side problem (5xx)
    is shown as a plain sentence only, as its message names server folders and admin commands (the service
    log, /healthz and the JSON API keep those for administrators)."""
    message_key = None if exc.status < 500 else "error_not_ready" if exc.code in NOT_READY else "error_server"
    return render(request, "error.html", {"page": "error", "status": exc.status,
                                          "message": exc.message, "message_key": message_key}, exc.status)


class TextOf(HTMLParser):
    """Plain text of rendered article HTML, for the clipboard: blocks on their own lines, list items as "- "."""

    BLOCKS = {"p", "div", "pre", "table", "blockquote", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out = ""
        self.lists: list[list[int]] = []  # one [counter] per open <ol>, [-1] per <ul>
        self.in_pre = 0
        self.after_marker = False  # just wrote "- " or "1. ": the item's first block stays on that line
        self.first_cell = True

    def emit(self, text: str) -> None:
        self.out += text
        self.after_marker = False

    def newlines(self, n: int) -> None:
        """End the current line with at least `n` newlines (none at the start or right after a list marker)."""
        if self.after_marker or not self.out.strip():
            return
        self.out = self.out.rstrip(" ")
        have = len(self.out) - len(self.out.rstrip("\n"))
        self.out += "\n" * max(n - have, 0)

    def handle_starttag(self, tag, attrs):
        self.in_pre += tag == "pre"
        if tag == "li":
            counter = self.lists[-1] if self.lists else [-1]
            if counter[0] >= 0:
                counter[0] += 1
            self.newlines(1)
            indent = "  " * max(len(self.lists) - 1, 0)
            self.emit(f"{indent}{counter[0]}. " if counter[0] >= 0 else f"{indent}- ")
            self.after_marker = True
        elif tag == "tr":
            self.newlines(1)
            self.first_cell = True
        elif tag in ("td", "th"):
            if not self.first_cell:
                self.out = self.out.rstrip(" ")
                self.emit(" | ")
            self.first_cell = False
        elif tag == "br":
            self.emit("\n")
        elif tag in self.BLOCKS:
            self.newlines(1 if self.lists else 2)
        if tag in ("ul", "ol"):
            self.lists.append([0 if tag == "ol" else -1])

    def handle_endtag(self, tag):
        self.in_pre -= tag == "pre" and self.in_pre > 0
        if tag in ("ul", "ol") and self.lists:
            self.lists.pop()
        if tag in self.BLOCKS:
            self.newlines(1 if self.lists else 2)

    def handle_data(self, data):
        if self.in_pre:
            self.emit(data)
        elif data.strip():
            self.emit(re.sub(r"\s*\n\s*", " ", data))  # soft line breaks inside a paragraph
        elif not self.after_marker and not self.out.endswith(("\n", " ")) and self.out:
            self.emit(" ")  # layout whitespace between inline tags

    def text(self) -> str:
        lines = [line.rstrip() for line in self.out.split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def text_of(fragment: str) -> str:
    parser = TextOf()
    parser.feed(fragment)
    parser.close()
    return parser.text()


HEADING = re.compile(r'<h([1-6])(?: id="([^"]*)")?>(.*?)</h\1>', re.S)


def split_sections(body_html: str, title: str) -> tuple[str, str, list[dict]]:
    """(intro HTML, anchor of the title, sections) of markdown-it output, cut at its headings.

    A section is its heading (level, anchor, inner HTML, text), the HTML up to the next heading, and the
    text a copy button puts on the clipboard: the heading and everything under it, sub-sections included.
    A first H1 repeating the title is dropped (the page shows the title itself) and its anchor kept.
    """
    matches = list(HEADING.finditer(body_html))
    intro = body_html[: matches[0].start()] if matches else body_html
    sections = []
    for i, m in enumerate(matches):
        level = int(m[1])
        end = matches[i + 1].start() if i + 1 < len(matches) else len(body_html)
        stop = next((n.start() for n in matches[i + 1:] if int(n[1]) <= level), len(body_html))
        heading_text = text_of(m[3])
        sections.append({"level": level, "anchor": html.unescape(m[2] or ""), "heading_html": m[3],
                         "heading_text": heading_text, "body_html": body_html[m.end():end],
                         "text": f"{heading_text}\n\n{text_of(body_html[m.end():stop])}".strip()})
    title_anchor = ""
    if sections and sections[0]["level"] == 1 and sections[0]["heading_text"].strip().lower() == title.strip().lower():
        first = sections.pop(0)
        intro, title_anchor = intro + first["body_html"], first["anchor"]
    return intro, title_anchor, sections


def absolute_link(request: Request, searcher: Searcher, article_id: str, anchor: str = "") -> str:
    """Link pasted into replies: KB_BASE_URL when it is absolute, else this service's article page."""
    url = searcher.url(article_id, anchor)
    if re.match(r"^[a-z][a-z0-9+.-]*://", url, re.I):
        return url
    return str(request.base_url).rstrip("/") + article_path("", article_id, anchor)


# ---- pages ---------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
def search_page(request: Request, q: str = "", product: str = "", language: str = "", audience: str = ""):
    selected = {"product": product, "language": language, "audience": audience}
    try:
        searcher = get_searcher(request)
        results, elapsed_ms = None, None
        if q.strip():
            started = perf_counter()
            results = searcher.search(q, RESULTS_PER_PAGE, Filters(**{k: v or None for k, v in selected.items()}),
                                      prefer=ui_language(request))  # the agent's language first
            elapsed_ms = round((perf_counter() - started) * 1000)
            answered(request, "search", results, started, source="page", product=product or None)
        options = filter_options(searcher)
    except KBError as exc:
        return error_page(request, exc)
    return render(request, "search.html", {
        "page": "search", "q": q, "selected": selected, "options": options, "results": results,
        "facts": article_facts(searcher, [r["id"] for r in results["results"]]) if results else {},
        "elapsed_ms": elapsed_ms, "filtered": any(selected.values()),
        "unfiltered_href": "?" + urlencode({"q": q})})


@router.get("/suggest", response_class=HTMLResponse)
def suggest_form(request: Request):
    try:
        get_searcher(request)
    except KBError as exc:
        return error_page(request, exc)
    return render(request, "suggest.html", {"page": "suggest", "subject": "", "body": "", "result": None})


@router.post("/suggest", response_class=HTMLResponse)
def suggest_page(request: Request, subject: Annotated[str, Form()] = "", body: Annotated[str, Form()] = ""):
    context = {"page": "suggest", "subject": subject, "body": body, "result": None, "positions": {}, "facts": {}}
    try:
        started = perf_counter()
        searcher = get_searcher(request)
        result = searcher.suggest(subject, body, k=ANSWERS_PER_TICKET, prefer=ui_language(request))
        context["facts"] = article_facts(searcher, [a["article_id"] for a in result["answers"]])
        context["result"] = answered(request, "suggest", result, started, source="page")
        # links and feedback carry the answer id and the article's position, never the ticket's text
        context["positions"] = {article["id"]: n for n, article in enumerate(result["articles"], 1)}
    except BadRequest as exc:  # keep what the agent pasted: show the form again with the problem
        return render(request, "suggest.html", {**context, "error": exc.message}, exc.status)
    except KBError as exc:
        return error_page(request, exc)
    return render(request, "suggest.html", context)


@router.get("/articles/{article_id:path}", response_class=HTMLResponse)
def article_page(request: Request, article_id: str, q: str = "",
                 answer: Annotated[str, Query(alias="from")] = "", pos: str = ""):
    try:
        searcher = get_searcher(request)
        article = searcher.article(article_id)
    except KBError as exc:
        return error_page(request, exc)
    answer_id = answer if ANSWER_ID.match(answer) else None
    position = parse_position(pos) if answer_id else None
    if answer_id:  # opened from a result of the search or suggest page (?from=<answer id>&pos=N)
        acted(request, "open", article["id"], answer_id, position, source="page")
    intro, title_anchor, sections = split_sections(article["html"], article["title"])
    for section in sections:
        link = absolute_link(request, searcher, article["id"], section["anchor"])
        section["copy_text"] = f"{section['text']}\n\n{article['title']}: {link}"
    return render(request, "article.html", {
        "page": "article", "article": article, "q": q, "answer_id": answer_id, "position": position,
        "intro_html": intro,
        "title_anchor": title_anchor or "article-title", "sections": sections,
        "related": related_articles(searcher, article["id"], 5)})
